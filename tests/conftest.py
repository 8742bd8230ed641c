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
