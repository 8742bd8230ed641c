"""Fixtures for the de-identification tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from medgen.keys import create_key_file, load_key


@pytest.fixture
def keyfile(tmp_path) -> Path:
    kf = tmp_path / "secrets" / "deid.key"
    create_key_file(kf)
    return kf


@pytest.fixture
def key(keyfile):
    return load_key(keyfile)


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """``medgen ...`` in a fresh process (python -m medgen)."""
    e = {k: v for k, v in os.environ.items() if k not in ("MEDGEN_KEY", "MEDGEN_KEY_FILE")}
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "medgen", *args], capture_output=True, text=True,
                          env=e, timeout=240)
