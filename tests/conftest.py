"""Shared fixtures: real public test files, tiny phantoms, CUDA gating."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


def pytest_collection_modifyitems(config, items):
    if _cuda():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    random.seed(0)
    np.random.seed(0)
    yield


@pytest.fixture(scope="session")
def pydicom_files() -> Path:
    """Folder of pydicom's bundled test files."""
    from pydicom.data import get_testdata_file

    return Path(get_testdata_file("CT_small.dcm")).parent


@pytest.fixture(scope="session")
def ct5n_dir(pydicom_files) -> Path:
    """The real 5-slice CT series under dicomdirtests (98892001/CT5N)."""
    return pydicom_files / "dicomdirtests" / "98892001" / "CT5N"


@pytest.fixture(scope="session")
def pydicom_data_dir() -> Path:
    """Folder of the pydicom-data wheel's files (enhanced multi-frame CT/MR, full-size slices)."""
    import data_store

    return Path(data_store.__file__).parent / "data"


@pytest.fixture(scope="session")
def nibabel_data() -> Path:
    import nibabel

    return Path(nibabel.__file__).parent / "tests" / "data"


@pytest.fixture
def key_env(monkeypatch, tmp_path):
    """A pseudonymization key in $MEDGEN_KEY_FILE for the test."""
    from medgen.keys import create_key_file

    kf = tmp_path / "secrets" / "medgen.key"
    create_key_file(kf)
    monkeypatch.setenv("MEDGEN_KEY_FILE", str(kf))
    return kf


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real ``mlflow server`` (sqlite backend, proxied artifacts) on a free 127.0.0.1 port,
    started once per session and killed afterwards (added by the tracking helper).

    Yields ``(uri, artifacts_dir)``. Its job-execution consumers are switched off (seven extra
    processes that only compete for the test machine's cores).
    """
    import signal
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    root = tmp_path_factory.mktemp("mlflow-server")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    artifacts = root / "artifacts"
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1",
           "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1",
           "--port", str(port), "--backend-store-uri", f"sqlite:///{root / 'server.db'}",
           "--artifacts-destination", str(artifacts), "--workers", "1"]
    logf = open(root / "server.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env, cwd=root,
                            start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError("mlflow server exited: " + (root / "server.log").read_text()[-2000:])
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
