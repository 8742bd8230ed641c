"""Against a real ``mlflow server`` on 127.0.0.1 (started by the session fixture): runs, params,
metrics and proxied artifacts, the MLFLOW_TRACKING_URI route, and FAILED status."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from medgen.track import client_for, ensure_store, start_run


def test_run_on_server_with_proxied_artifacts(mlflow_server, tmp_path):
    uri, artifacts_dir = mlflow_server
    assert ensure_store(uri) == uri
    with start_run("medgen-server", "remote", tracking_uri=uri, tags={"medgen.task": "denoise"}) as run:
        digest = run.log_config({"model": "unet", "optim": {"lr": 0.01}})
        run.log_metrics({"val/psnr": 30.5}, step=10)
        run.log_figure_grid({"noisy": np.ones((6, 6, 6)), "clean": np.zeros((6, 6, 6))}, "val", 10)
        ckpt = tmp_path / "ckpt"
        ckpt.mkdir()
        (ckpt / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
        (ckpt / "config.json").write_text('{"model": "unet"}\n')
        run.log_artifact(ckpt, "checkpoints/best")
    client = client_for(uri)
    r = client.get_run(run.run_id)
    assert r.info.status == "FINISHED" and r.info.run_name == "remote"
    assert r.info.artifact_uri.startswith("mlflow-artifacts:")
    assert r.data.params == {"model": "unet", "optim.lr": "0.01"}
    assert r.data.tags["medgen.config_sha256"] == digest
    assert r.data.tags["medgen.task"] == "denoise"
    assert r.data.metrics["val/psnr"] == 30.5
    # the server stored the artifacts under its --artifacts-destination
    on_disk = {p.relative_to(artifacts_dir).as_posix() for p in artifacts_dir.rglob("*") if p.is_file()}
    rid = run.run_id
    assert any(p.endswith(f"{rid}/artifacts/checkpoints/best/model.safetensors") for p in on_disk)
    assert any(p.endswith(f"{rid}/artifacts/figures/val/step_0000010.png") for p in on_disk)
    got = Path(client.download_artifacts(rid, "checkpoints/best/config.json", str(tmp_path / "dl")))
    assert hashlib.sha256(got.read_bytes()).hexdigest() == \
        hashlib.sha256((ckpt / "config.json").read_bytes()).hexdigest()


def test_env_tracking_uri_and_failed_status(mlflow_server, monkeypatch, tmp_path):
    uri, _ = mlflow_server
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with pytest.raises(ValueError):
        with start_run("medgen-server", "fails") as run:
            raise ValueError("bad batch")
    assert run.tracking_uri == uri
    assert not (tmp_path / "mlflow.db").exists()  # nothing went to a local store
    r = client_for(uri).get_run(run.run_id)
    assert r.info.status == "FAILED" and r.data.tags["medgen.error"] == "ValueError: bad batch"


def test_unreachable_server_fails_fast_with_one_line():
    import socket
    import time

    from medgen.track import TrackingServerError

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t = time.monotonic()
    with pytest.raises(TrackingServerError) as err:
        with start_run("medgen-server", "nowhere", tracking_uri=f"http://user:secret@127.0.0.1:{port}"):
            pass
    assert time.monotonic() - t < 15
    msg = str(err.value)
    assert "\n" not in msg and "secret" not in msg and f"127.0.0.1:{port}" in msg
