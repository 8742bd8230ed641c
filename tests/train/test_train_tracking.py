"""Training runs in MLflow: the real embedded sqlite store and a real `mlflow server`; no PHI."""

from __future__ import annotations

import json

import numpy as np
import pytest


@pytest.fixture
def phi_tree(tmp_path):
    """Phantoms under an identifying-looking folder, with a name in the NIfTI header."""
    import nibabel as nib

    from medgen.data import brain_phantom
    from medgen.keys import Key
    from medgen.manifest.build import build_manifest
    from medgen.manifest.ops import split_manifest

    root = tmp_path / "DOE_JOHN_19700101" / "MRN123456"
    root.mkdir(parents=True)
    for i in range(2):
        img = nib.Nifti1Image(brain_phantom((20, 20, 16), seed=i) * 100, np.eye(4))
        img.header["descrip"] = b"DOE^JOHN 19700101"
        nib.save(img, root / f"DOE_JOHN_{i}.nii.gz")
    m = split_manifest(build_manifest(root, Key(b"z" * 32, "t")).manifest,
                       {"train": 0.5, "val": 0.5}, seed=0)
    m.write(root / "m.jsonl")
    return root / "m.jsonl"


def _everything_logged(client, run_id, tmp_path) -> str:
    from mlflow.artifacts import download_artifacts

    run = client.get_run(run_id)
    parts = [json.dumps(run.data.params), json.dumps(run.data.tags), json.dumps(list(run.data.metrics)),
             run.info.run_name]
    dst = tmp_path / "artifacts"
    download_artifacts(run_id=run_id, dst_path=str(dst), tracking_uri=client._tracking_client.tracking_uri)
    for p in dst.rglob("*"):
        parts.append(p.name)
        if p.is_file() and p.suffix in (".json", ".yaml", ".txt", ".diff", ".yml", ""):
            parts.append(p.read_text(errors="ignore"))
    return "\n".join(parts)


def _train_tracked(manifest, out, tiny_config, uri):
    from medgen.train.trainer import train

    cfg = tiny_config(manifest, out, "unet", **{"optim.max_steps": 2, "tracking.enabled": True,
                                                 "tracking.tracking_uri": uri, "val.images": True,
                                                 "data.patch_size": "[16, 16, 16]"})
    return train(cfg)


def test_embedded_store_logs_lineage_without_phi(phi_tree, tmp_path, tiny_config, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    res = _train_tracked(phi_tree, tmp_path / "runs", tiny_config, uri)
    client = MlflowClient(uri)
    run = client.get_run(res.mlflow_run_id)
    tags = run.data.tags
    from medgen.manifest import Manifest

    assert tags["medgen.manifest.train.sha256"] == Manifest.load(phi_tree).digest
    assert len(tags["medgen.config_sha256"]) == 64
    assert tags["medgen.weights_sha256"] == res.weights_sha256
    assert "train/loss" in run.data.metrics and "val/psnr" in run.data.metrics
    assert run.data.params["model.name"] == "unet"
    arts = {a.path for a in client.list_artifacts(res.mlflow_run_id, "checkpoints/last")}
    assert "checkpoints/last/model.safetensors" in arts and "checkpoints/last/card.json" in arts
    text = _everything_logged(client, res.mlflow_run_id, tmp_path)
    for bad in ("DOE", "JOHN", "19700101", "MRN123456", str(tmp_path)):
        assert bad not in text, f"{bad!r} leaked into MLflow"


def test_fresh_named_run_each_time(phantom_manifest, tmp_path, tiny_config, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_RUN_ID", "0" * 32)  # a stale run id in the environment is ignored
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    a = _train_tracked(phantom_manifest, tmp_path / "a", tiny_config, uri)
    b = _train_tracked(phantom_manifest, tmp_path / "b", tiny_config, uri)
    assert a.mlflow_run_id != b.mlflow_run_id


def test_real_mlflow_server(phantom_manifest, tmp_path, tiny_config, mlflow_server):
    from mlflow import MlflowClient

    uri = mlflow_server[0]
    res = _train_tracked(phantom_manifest, tmp_path / "runs", tiny_config, uri)
    run = MlflowClient(uri).get_run(res.mlflow_run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["medgen.weights_sha256"] == res.weights_sha256
