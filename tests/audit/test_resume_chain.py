"""A training run killed with ``kill -9`` and resumed keeps its provenance (issue 13.5), and
``--resume --set optim.max_steps=N`` extends it (issue 21): a real ``medgen train`` subprocess,
a real SIGKILL, the default sqlite store of the working folder, the data outside it."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import TINY_TRAIN, clean_env, medgen, phantom_manifest


def _artifact_dir(uri: str, run_id: str) -> Path:
    from urllib.parse import unquote, urlparse

    from mlflow import MlflowClient

    return Path(unquote(urlparse(MlflowClient(uri).get_run(run_id).info.artifact_uri).path))


def _checkpoint_step(proj: Path) -> int:
    for f in proj.glob("runs/*/checkpoints/last/train_state.json"):
        try:
            return int(json.loads(f.read_text())["state"]["extra"]["step"])
        except (OSError, ValueError, KeyError):
            return 0
    return 0


def _start(proj: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "medgen", "train", "cfg.yaml", "-q", *extra],
                            cwd=proj, env=clean_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def _kill_when(p: subprocess.Popen, ready) -> None:
    deadline = time.monotonic() + 300
    while not ready():
        assert p.poll() is None, "training ended before it could be killed: " + p.stderr.read().decode()
        assert time.monotonic() < deadline, "not ready within 300 s"
        time.sleep(0.02)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()


def _attempts(proj: Path) -> int:
    for f in proj.glob("runs/*/attempts.json"):
        try:
            return len(json.loads(f.read_text()))
        except (OSError, ValueError):
            return 0
    return 0


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """Attempt A killed with SIGKILL after a checkpoint; attempt B (``--resume``) killed as soon as
    it has started, before it could train; attempt C resumes and finishes."""
    from mlflow import MlflowClient

    base = tmp_path_factory.mktemp("chain")
    manifest = phantom_manifest(base / "data")  # outside the working folder
    proj = base / "proj"
    proj.mkdir()
    (proj / "cfg.yaml").write_text(TINY_TRAIN.format(manifest=manifest, steps=12, val=6))
    _kill_when(_start(proj), lambda: _checkpoint_step(proj) >= 2)
    killed_at = _checkpoint_step(proj)
    refused = medgen("train", "cfg.yaml", "-q", "--resume", "--set", "optim.lr=0.01", cwd=proj)
    _kill_when(_start(proj, "--resume"), lambda: _attempts(proj) >= 2)
    r = medgen("train", "cfg.yaml", "-q", "--resume", cwd=proj)
    assert r.returncode == 0, r.stderr
    c = json.loads(r.stdout.strip().splitlines()[-1])
    uri = "sqlite:///" + str(proj / "mlflow.db")
    a_id, b_id = MlflowClient(uri).get_run(c["mlflow_run_id"]).data.tags[
        "medgen.resume.attempts"].split(",")
    return {"proj": proj, "uri": uri, "a": a_id, "b": b_id, "c": c["mlflow_run_id"],
            "killed_at": killed_at, "resumed_at": _resumed_at(uri, c["mlflow_run_id"]),
            "refused": refused, "stderr_c": r.stderr}


def _resumed_at(uri: str, rid: str) -> int:
    from mlflow import MlflowClient

    return int(MlflowClient(uri).get_run(rid).data.tags["medgen.resume.at_step"])


def test_resume_refuses_a_changed_setting_naming_it(chain):
    r = chain["refused"]
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "'optim.lr'" in lines[0] and "Traceback" not in r.stderr


def test_killed_attempts_are_marked_and_resumed_run_carries_full_lineage(chain):
    from mlflow import MlflowClient

    c = MlflowClient(chain["uri"])
    a, b, fin = c.get_run(chain["a"]), c.get_run(chain["b"]), c.get_run(chain["c"])
    for att, successor in ((a, chain["b"]), (b, chain["c"])):
        assert att.info.status == "KILLED"
        assert att.data.tags["medgen.resume.successor"] == successor
        assert att.data.tags.get("medgen.audit.sha256")  # sealed by its successor
    assert chain["killed_at"] <= chain["resumed_at"] <= chain["killed_at"] + 1
    assert fin.data.tags["medgen.resume.previous_run_id"] == chain["b"]
    # the resumed run logged everything, not only the first attempt
    assert fin.data.params and fin.data.params.keys() == a.data.params.keys()
    # equal values, but absolute paths: the PHI guard logs them as PATH-<hmac> with a key of its run
    assert {k: v for k, v in fin.data.params.items() if not v.startswith("PATH-")} == \
        {k: v for k, v in a.data.params.items() if not v.startswith("PATH-")}
    for tag in ("medgen.config_sha256", "medgen.manifest.train.sha256", "medgen.git.commit",
                "medgen.env.lock_sha256", "medgen.seed"):
        assert fin.data.tags[tag] == a.data.tags[tag], tag
    arts = {x.path for x in c.list_artifacts(chain["c"], "config")} | \
        {x.path for x in c.list_artifacts(chain["c"], "lineage")}
    assert {"config/resolved.yaml", "lineage/environment.txt"} <= arts
    assert fin.data.tags["medgen.git.dirty"] in ("true", "false")
    assert "INFO" not in chain["stderr_c"]  # MLflow's INFO lines stay off stderr


def test_chain_audit_passes_and_reproves_each_attempt(chain, monkeypatch):
    from medgen.audit import audit_run

    monkeypatch.chdir(chain["proj"])
    rep = audit_run(chain["c"], tracking_uri=chain["uri"], rerun=1)
    assert rep.passed, rep.failures
    text = " | ".join(rep.checks)
    assert f"earlier attempt 1 (run {chain['a']}): PASS" in text
    assert f"earlier attempt 2 (run {chain['b']}): PASS" in text
    assert f"resumed at step {chain['resumed_at']} from the checkpoint run {chain['b']} recorded" in text
    assert "weights bit-identical" in text
    att = audit_run(chain["a"], tracking_uri=chain["uri"])
    assert att.passed and att.kind == "train-attempt"
    assert any(f"by run {chain['b']}" in x for x in att.checks)


def test_changing_an_earlier_attempt_fails_the_chain(chain, monkeypatch):
    from mlflow import MlflowClient

    from medgen.audit import audit_run

    monkeypatch.chdir(chain["proj"])
    c = MlflowClient(chain["uri"])
    c.log_metric(chain["a"], "train/loss", 0.001, step=1)
    try:
        rep = audit_run(chain["c"], tracking_uri=chain["uri"])
    finally:
        db = sqlite3.connect(chain["proj"] / "mlflow.db")
        db.execute("delete from metrics where run_uuid=? and key='train/loss' and value=0.001",
                   (chain["a"],))
        db.commit()
        db.close()
    assert not rep.passed
    assert any(f"earlier attempt 1 (run {chain['a']}): metric 'train/loss' history was changed"
               in x for x in rep.failures), rep.failures
    # the successor pointer is checked too
    c.set_tag(chain["a"], "medgen.resume.successor", "0" * 32)
    try:
        rep = audit_run(chain["c"], tracking_uri=chain["uri"])
    finally:
        c.set_tag(chain["a"], "medgen.resume.successor", chain["b"])
    assert any("does not point to its successor" in x for x in rep.failures)


def test_resealing_an_earlier_attempt_fails_the_chain(chain, monkeypatch):
    """Rewriting an attempt's record AND its seal consistently is caught by the successor's
    seal, which holds the attempt's seal digest."""
    from mlflow import MlflowClient

    from medgen.audit import audit_run, seal_run
    from medgen.track import reopen_run

    monkeypatch.chdir(chain["proj"])
    c = MlflowClient(chain["uri"])
    old = c.get_run(chain["a"]).data.tags["medgen.audit.sha256"]
    sealed = _artifact_dir(chain["uri"], chain["a"]) / "audit.json"
    old_bytes = sealed.read_bytes()
    c.set_tag(chain["a"], "medgen.tampered", "yes")
    handle = reopen_run(chain["a"], tracking_uri=chain["uri"])
    seal_run(handle, kind="train-attempt", lineage={"status": "KILLED", "successor": chain["b"]})
    handle.detach()
    try:
        assert audit_run(chain["a"], tracking_uri=chain["uri"]).passed  # consistent on its own
        rep = audit_run(chain["c"], tracking_uri=chain["uri"])
    finally:
        sealed.write_bytes(old_bytes)
        c.set_tag(chain["a"], "medgen.audit.sha256", old)
        c.delete_tag(chain["a"], "medgen.tampered")
    assert not rep.passed
    assert any("was re-sealed after the run that resumed it" in x for x in rep.failures)
    assert audit_run(chain["c"], tracking_uri=chain["uri"]).passed  # restored


def test_resume_extends_max_steps_and_the_audit_checks_it(chain, monkeypatch):
    from medgen.audit import audit_run

    r = medgen("train", "cfg.yaml", "-q", "--resume", "--set", "optim.max_steps=14",
               cwd=chain["proj"])
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["step"] == 14
    from mlflow import MlflowClient

    tags = MlflowClient(chain["uri"]).get_run(res["mlflow_run_id"]).data.tags
    assert json.loads(tags["medgen.resume.extended"]) == {"optim.max_steps": [12, 14]}
    assert tags["medgen.resume.attempts"] == f"{chain['a']},{chain['b']},{chain['c']}"
    monkeypatch.chdir(chain["proj"])
    rep = audit_run(res["mlflow_run_id"], tracking_uri=chain["uri"])
    assert rep.passed, rep.failures
    text = " | ".join(rep.checks)
    assert f"earlier attempt 1 (run {chain['a']}): PASS" in text
    assert f"earlier attempt 2 (run {chain['b']}): PASS" in text
    assert f"earlier attempt 3 (run {chain['c']}): PASS" in text
    assert "extended optim.max_steps 12 -> 14" in text
