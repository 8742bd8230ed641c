"""Audits work wherever the data lives (issue 14, ``medgen demo --out /tmp/x``): a training run and
a batch-denoise job whose data, model and store are all outside the working folder are audited
from yet another folder; moved data is found again with ``--data-root NAME=DIR``."""

from __future__ import annotations

import json
import shutil

import pytest

from .conftest import TINY_TRAIN, medgen, phantom_manifest


@pytest.fixture(scope="module")
def elsewhere(tmp_path_factory):
    """Data in ``base/data``, work in ``base/proj`` (store there), audits from ``base/auditor``."""
    base = tmp_path_factory.mktemp("roots")
    manifest = phantom_manifest(base / "data")
    proj, auditor = base / "proj", base / "auditor"
    proj.mkdir()
    auditor.mkdir()
    (proj / "cfg.yaml").write_text(TINY_TRAIN.format(manifest=manifest, steps=2, val=2))
    uri = "sqlite:///" + str(proj / "mlflow.db")
    r = medgen("train", "cfg.yaml", "-q", cwd=proj)
    assert r.returncode == 0, r.stderr
    train = json.loads(r.stdout.strip().splitlines()[-1])
    best = proj / train["best"]
    r = medgen("denoise", "--model", str(best), str(base / "data" / "vols"), str(base / "out"),
               "--quiet", "--device", "cpu", cwd=proj)
    assert r.returncode == 0, r.stderr
    from mlflow import MlflowClient

    c = MlflowClient(uri)
    exp = c.get_experiment_by_name("medgen-denoise")
    job = c.search_runs([exp.experiment_id])[0].info.run_id
    return {"base": base, "uri": uri, "auditor": auditor, "train": train["mlflow_run_id"], "job": job}


def test_nothing_absolute_reaches_the_sealed_record(elsewhere):
    from mlflow import MlflowClient
    from mlflow.artifacts import download_artifacts

    for rid in (elsewhere["train"], elsewhere["job"]):
        p = download_artifacts(run_id=rid, artifact_path="audit.json", tracking_uri=elsewhere["uri"],
                               dst_path=str(elsewhere["base"] / "dl" / rid))
        text = open(p).read()
        assert str(elsewhere["base"]) not in text
        rec = json.loads(text)
        # roots outside the working folder are named only; one inside it keeps a relative hint
        outside = {"train": ["data", "manifest"], "job": ["input"]}
        kind = "train" if rid == elsewhere["train"] else "job"
        assert all(rec["roots"][name] == {"relative": None} for name in outside[kind])
        if kind == "job":
            assert rec["roots"]["model"]["relative"].startswith("runs/")
        assert MlflowClient(elsewhere["uri"]).get_run(rid).data.tags["medgen.audit.sha256"]


def test_training_audit_from_another_folder(elsewhere, monkeypatch):
    from medgen.audit import audit_run

    monkeypatch.chdir(elsewhere["auditor"])
    rep = audit_run(elsewhere["train"], tracking_uri=elsewhere["uri"], rerun=1)
    assert rep.passed, rep.failures
    assert "3 file(s) of manifest 'train' re-hashed: unchanged" in rep.checks
    assert "data root 'data' found (from the local root index)" in rep.checks


def test_job_audit_with_rerun_from_another_folder(elsewhere, monkeypatch):
    from medgen.audit import audit_run

    monkeypatch.chdir(elsewhere["auditor"])
    rep = audit_run(elsewhere["job"], tracking_uri=elsewhere["uri"], rerun=1)
    assert rep.passed, rep.failures
    text = " | ".join(rep.checks)
    assert "input item(s) re-hashed: unchanged" in text and "re-run output bit-identical" in text


def test_moved_data_needs_and_accepts_data_root(elsewhere, monkeypatch):
    from medgen.audit import audit_run

    monkeypatch.chdir(elsewhere["auditor"])
    data, moved = elsewhere["base"] / "data", elsewhere["base"] / "moved"
    shutil.move(data, moved)
    try:
        rep = audit_run(elsewhere["train"], tracking_uri=elsewhere["uri"])
        assert not rep.passed
        assert any("pass --data-root data=DIR" in x for x in rep.failures), rep.failures
        job = audit_run(elsewhere["job"], tracking_uri=elsewhere["uri"])
        assert any("pass --data-root input=DIR" in x for x in job.failures), job.failures
        rep = audit_run(elsewhere["train"], tracking_uri=elsewhere["uri"],
                        data_root={"data": str(moved / "vols"), "manifest": str(moved)})
        assert rep.passed, rep.failures
        assert "data root 'data' found (from --data-root)" in rep.checks
        r = medgen("audit", elsewhere["job"], "--tracking-uri", elsewhere["uri"],
                   "--data-root", f"input={moved / 'vols'}", cwd=elsewhere["auditor"])
        assert r.returncode == 0, r.stdout + r.stderr
        # a changed input file is named
        f = sorted((moved / "vols").iterdir())[0]
        orig = f.read_bytes()
        f.write_bytes(orig + b"\0")
        try:
            rep = audit_run(elsewhere["job"], tracking_uri=elsewhere["uri"],
                            data_root={"input": str(moved / "vols")})
        finally:
            f.write_bytes(orig)
        assert any("was changed" in x for x in rep.failures), rep.failures
    finally:
        shutil.move(moved, data)
