"""Shared fixtures: the embedded sample, the LFW root (skips when absent), an isolated MLflow store."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from facerec.data.datasets import DATA_ENV, sample_root


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The embedded 50-identity LFW sample (raw 250x250 photos)."""
    return sample_root()


@pytest.fixture(scope="session")
def lfw_root() -> Path:
    """The full LFW root from $FACEREC_DATA; tests using it skip when it is not set."""
    value = os.environ.get(DATA_ENV)
    if not value or not (Path(value) / "pairs.txt").is_file():
        pytest.skip(f"LFW not available: set {DATA_ENV} to an LFW root with the protocol files")
    return Path(value)


@pytest.fixture()
def mlflow_store(tmp_path, monkeypatch) -> str:
    """Point MLflow at a throw-away sqlite store for this test."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri
