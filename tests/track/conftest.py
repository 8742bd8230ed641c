"""Fixtures for medgen.track: a real embedded sqlite store in a temp folder (chdir'd into), and a
real ``mlflow server`` on 127.0.0.1 started once per session and killed afterwards."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory) -> Path:
    """One embedded store per test module (schema creation costs ~1.5 s)."""
    return tmp_path_factory.mktemp("mlflow-store")


@pytest.fixture
def local_store(store_dir, monkeypatch) -> str:
    """chdir into ``store_dir``; no tracking URI in the environment -> the default embedded
    store ``sqlite:///<cwd>/mlflow.db``. Returns that URI."""
    monkeypatch.chdir(store_dir)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    return "sqlite:///" + str(store_dir / "mlflow.db")


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real ``mlflow server`` (sqlite backend, proxied artifacts) on a free local port.

    Yields ``(uri, artifacts_dir)``. Its job-execution consumers are switched off (they start
    seven extra processes that only compete for the test machine's cores).
    """
    root = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    artifacts = root / "artifacts"
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1",
           "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    cmd = [str(mlflow_bin), "server", "--host", "127.0.0.1", "--port", str(port),
           "--backend-store-uri", f"sqlite:///{root / 'server.db'}",
           "--artifacts-destination", str(artifacts), "--workers", "1"]
    logf = open(root / "server.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env, cwd=root,
                            start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError("mlflow server exited: "
                                   + (root / "server.log").read_text()[-2000:])
            try:
                with urllib.request.urlopen(uri + "/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("mlflow server did not answer /health within 90 s")
            time.sleep(0.2)
        yield uri, artifacts
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # the group this fixture started, and only it
            proc.wait(timeout=15)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        logf.close()
