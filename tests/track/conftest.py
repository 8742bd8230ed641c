"""Fixtures for medgen.track: a real embedded sqlite store in a temp folder (chdir'd into)."""

from __future__ import annotations

from pathlib import Path

import pytest


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


# ``mlflow_server`` (a real server on 127.0.0.1, session-scoped) lives in tests/conftest.py so the
# training, inference and audit tests share the one instance.
