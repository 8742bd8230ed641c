"""``medgen audit`` itself (issue 13.7): an unknown run, a run in another store, a mistyped store
and a malformed run id are each one line on stderr, exit 2 - and reading never creates a store."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import clean_env, medgen

UNKNOWN = "0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """``tour/demo_out/mlflow.db`` holds a sealed run; ``tour/empty.db`` is a store without it."""
    from medgen.audit import seal_run
    from medgen.track import ensure_store, start_run

    tour = tmp_path_factory.mktemp("tour")
    other = "sqlite:///" + str(tour / "demo_out" / "mlflow.db")
    with start_run("elsewhere", tracking_uri=other) as run:
        run.log_metrics({"x": 1.0})
        seal_run(run, kind="note")
    ensure_store("sqlite:///" + str(tour / "empty.db"))
    return tour, other, run.run_id


def _one_line(r) -> str:
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stdout == ""
    return lines[0]


def _listing(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")}


def test_no_default_store_names_the_store_that_has_the_run(stores):
    tour, other, rid = stores
    before = _listing(tour)
    line = _one_line(medgen("audit", rid, cwd=tour))
    assert "mlflow.db: no MLflow store there (nothing was created)" in line
    assert f"run {rid} is in {other}" in line
    assert _listing(tour) == before  # no mlflow.db, no lock file, no report folder


def test_run_in_another_store(stores):
    tour, other, rid = stores
    empty = "sqlite:///" + str(tour / "empty.db")
    line = _one_line(medgen("audit", rid, "--tracking-uri", empty, cwd=tour))
    assert line == (f"error: run {rid} is not in the MLflow store {empty}; it is in {other} "
                    f"(pass --tracking-uri {other})")


def test_unknown_run(stores):
    tour, other, _ = stores
    line = _one_line(medgen("audit", UNKNOWN, "--tracking-uri", other, cwd=tour))
    assert f"run {UNKNOWN} is not in the MLflow store {other}" in line
    assert "no store in the current folder has it either" in line


def test_mistyped_store_is_not_created(stores, tmp_path):
    tour, _, rid = stores
    typo = tmp_path / "sub" / "x.db"
    line = _one_line(medgen("audit", rid, "--tracking-uri", f"sqlite:///{typo}", cwd=tour))
    assert "x.db: no MLflow store there (nothing was created)" in line
    assert not typo.exists() and not typo.parent.exists()
    assert not list(tmp_path.rglob("*"))
    # a file that is not an MLflow store is refused, not migrated
    junk = tmp_path / "notes.db"
    junk.write_bytes(b"not a database")
    line = _one_line(medgen("audit", rid, "--tracking-uri", f"sqlite:///{junk}", cwd=tour))
    assert "not an MLflow store" in line and junk.read_bytes() == b"not a database"


@pytest.mark.parametrize("bad", ["not-a-run!", "../../etc/passwd", "x" * 300])
def test_malformed_run_id(stores, bad):
    tour, other, _ = stores
    line = _one_line(medgen("audit", bad, "--tracking-uri", other, cwd=tour))
    assert "is not a run id" in line
    assert not (tour / "audit_reports").exists()


def test_unknown_run_on_a_server(mlflow_server, tmp_path):
    uri, _ = mlflow_server
    line = _one_line(medgen("audit", UNKNOWN, "--tracking-uri", uri, cwd=tmp_path))
    assert f"run {UNKNOWN} is not in the MLflow store {uri}" in line
    down = _one_line(medgen("audit", UNKNOWN, "--tracking-uri", "http://127.0.0.1:9", cwd=tmp_path))
    assert "tracking server not reachable" in down


def test_environment_store_is_the_default(stores):
    tour, other, rid = stores
    r = medgen("audit", rid, "--out", str(tour / "rep"), cwd=tour,
               env=clean_env(MLFLOW_TRACKING_URI=other))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"MLflow store: {other}" in r.stderr and "PASS" in r.stdout
    assert "INFO" not in r.stderr
