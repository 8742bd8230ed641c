"""Sealed runs and audits: an untouched run passes; each kind of tampering fails and is named."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pytest


@pytest.fixture(scope="module")
def sealed(tmp_path_factory):
    """A tiny deterministic training run, tracked in a real embedded store and sealed."""
    import os

    from medgen.config import load_config
    from medgen.data import brain_phantom
    from medgen.io import Volume
    from medgen.io.nifti import write_nifti
    from medgen.keys import Key
    from medgen.manifest.build import build_manifest
    from medgen.manifest.ops import split_manifest
    from medgen.train.config import TrainConfig
    from medgen.train.trainer import train

    base = tmp_path_factory.mktemp("audit")
    old = os.getcwd()
    os.chdir(base)
    try:
        data = base / "data"
        for i in range(3):
            write_nifti(Volume(brain_phantom((20, 20, 16), seed=i) * 100, np.eye(4), {}),
                        data / f"sub-{i}.nii.gz")
        m = split_manifest(build_manifest(data, Key(b"a" * 32, "t")).manifest,
                           {"train": 0.67, "val": 0.33}, seed=0)
        m.write(base / "m.jsonl")
        uri = f"sqlite:///{base / 'mlflow.db'}"
        cfg = load_config(TrainConfig, data={
            "seed": 0, "deterministic": True, "output_dir": "runs",
            "model": {"name": "unet", "spatial_dims": 3, "channels": [4, 8], "num_res_units": 1},
            "data": {"manifest": "m.jsonl", "patch_size": [16, 16, 16], "batch_size": 2},
            "optim": {"max_steps": 3}, "val": {"every_steps": 3, "images": False},
            "tracking": {"tracking_uri": uri}})
        res = train(cfg)
    finally:
        os.chdir(old)
    return base, uri, res


def _audit(base, uri, run_id, monkeypatch, **kw):
    from medgen.audit import audit_run

    monkeypatch.chdir(base)
    return audit_run(run_id, tracking_uri=uri, **kw)


def _artifact_dir(uri, run_id) -> Path:
    from mlflow import MlflowClient

    return Path(unquote(urlparse(MlflowClient(uri).get_run(run_id).info.artifact_uri).path))


def test_untouched_run_passes_with_rerun(sealed, monkeypatch):
    base, uri, res = sealed
    rep = _audit(base, uri, res.mlflow_run_id, monkeypatch, rerun=1)
    assert rep.passed, rep.failures
    text = " ".join(rep.checks)
    assert "weights bit-identical" in text and "file(s) of manifest 'train'" in text
    jp, hp = rep.write(base / "report")
    assert jp.exists() and "PASS" in hp.read_text()


def _restore(path: Path, data: bytes):
    path.write_bytes(data)


def test_tampered_output_artifact_fails(sealed, monkeypatch):
    base, uri, res = sealed
    f = _artifact_dir(uri, res.mlflow_run_id) / "checkpoints" / "last" / "card.json"
    orig = f.read_bytes()
    f.write_bytes(orig.replace(b'"metrics"', b'"metrics" ', 1))
    try:
        rep = _audit(base, uri, res.mlflow_run_id, monkeypatch)
    finally:
        _restore(f, orig)
    assert not rep.passed
    assert any("artifact 'checkpoints/last/card.json' was changed" in x for x in rep.failures)


def test_tampered_weights_fail(sealed, monkeypatch):
    base, uri, res = sealed
    f = _artifact_dir(uri, res.mlflow_run_id) / "checkpoints" / "last" / "model.safetensors"
    orig = f.read_bytes()
    b = bytearray(orig)
    b[-3] ^= 0xFF
    f.write_bytes(bytes(b))
    try:
        rep = _audit(base, uri, res.mlflow_run_id, monkeypatch)
    finally:
        _restore(f, orig)
    assert any("checkpoints/last/model.safetensors' was changed" in x for x in rep.failures)


def test_tampered_tag_param_and_config_fail(sealed, monkeypatch):
    from mlflow import MlflowClient

    base, uri, res = sealed
    rid = res.mlflow_run_id
    client = MlflowClient(uri)
    old_tag = client.get_run(rid).data.tags["medgen.model"]
    client.set_tag(rid, "medgen.model", "vae")
    db = sqlite3.connect(base / "mlflow.db")
    old_param = db.execute("select value from params where run_uuid=? and key='optim.lr'", (rid,)).fetchone()[0]
    db.execute("update params set value='0.5' where run_uuid=? and key='optim.lr'", (rid,))
    db.commit()
    cfg = _artifact_dir(uri, rid) / "config" / "resolved.yaml"
    orig_cfg = cfg.read_bytes()
    cfg.write_bytes(orig_cfg.replace(b"max_steps: 3", b"max_steps: 30"))
    try:
        rep = _audit(base, uri, rid, monkeypatch)
    finally:
        client.set_tag(rid, "medgen.model", old_tag)
        db.execute("update params set value=? where run_uuid=? and key='optim.lr'", (old_param, rid))
        db.commit()
        db.close()
        _restore(cfg, orig_cfg)
    msgs = " | ".join(rep.failures)
    assert "tag 'medgen.model' was changed" in msgs
    assert "param 'optim.lr' was changed" in msgs
    assert "artifact 'config/resolved.yaml' was changed" in msgs


def test_tampered_metric_fails(sealed, monkeypatch):
    from mlflow import MlflowClient

    base, uri, res = sealed
    rid = res.mlflow_run_id
    MlflowClient(uri).log_metric(rid, "val/psnr", 99.0, step=99)
    rep = _audit(base, uri, rid, monkeypatch)
    assert any("metric 'val/psnr'" in x for x in rep.failures)
    db = sqlite3.connect(base / "mlflow.db")
    db.execute("delete from metrics where run_uuid=? and key='val/psnr' and step=99", (rid,))
    db.execute("update latest_metrics set value=(select value from metrics where run_uuid=? and "
               "key='val/psnr' order by step desc limit 1), step=3 where run_uuid=? and key='val/psnr'",
               (rid, rid))
    db.commit()
    db.close()


def test_tampered_input_file_fails(sealed, monkeypatch):
    base, uri, res = sealed
    f = sorted((base / "data").iterdir())[0]
    orig = f.read_bytes()
    f.write_bytes(orig + b"\0")
    try:
        rep = _audit(base, uri, res.mlflow_run_id, monkeypatch)
    finally:
        _restore(f, orig)
    assert any(f"file '{f.name}' (train) was changed" in x for x in rep.failures)


def test_cli_audit_exit_codes(sealed, tmp_path):
    import subprocess
    import sys

    base, uri, res = sealed
    r = subprocess.run([sys.executable, "-m", "medgen", "audit", res.mlflow_run_id, "--tracking-uri",
                        uri, "--out", str(tmp_path / "rep")], capture_output=True, text=True,
                       cwd=base, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "PASS" in r.stdout and (tmp_path / "rep" / "audit_report.html").exists()
