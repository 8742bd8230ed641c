"""``medgen demo --out /elsewhere`` passes its own audit and lands in the one store of the folder
it was run from (issue 14's new-user joins). Slow: the whole demo pipeline trains a model."""

from __future__ import annotations

import re

import pytest

from .conftest import medgen


@pytest.mark.slow
def test_demo_outside_the_working_folder_passes_its_audit(tmp_path):
    tour, out = tmp_path / "tour", tmp_path / "elsewhere" / "x"
    tour.mkdir()
    r = medgen("demo", "--out", str(out), cwd=tour, timeout=1800)
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    store = "sqlite:///" + str(tour / "mlflow.db")
    assert f"MLflow store: {store}" in r.stderr
    assert not (out / "mlflow.db").exists()
    assert "Traceback" not in r.stderr and " INFO " not in r.stderr
    rid = re.search(r"medgen audit ([0-9a-f]{32})", r.stderr).group(1)
    a = medgen("audit", rid, "--rerun", "1", cwd=tour, timeout=1800)
    assert a.returncode == 0, a.stdout + a.stderr
    assert "PASS" in a.stdout and "step run(s) of the pipeline re-audited" in a.stdout
