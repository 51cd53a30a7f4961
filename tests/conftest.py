"""Shared fixtures. Tests never write to the real outputs/ or the real cache."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """Point the cache and the outputs at a temporary folder."""
    monkeypatch.setenv("RESURFACE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("RESURFACE_OUTPUTS", str(tmp_path / "outputs"))
    return tmp_path


@pytest.fixture(scope="session")
def smoke_cache(tmp_path_factory):
    """One artifact cache for the whole session, so smoke artifacts are built once."""
    return tmp_path_factory.mktemp("smoke-cache")


@pytest.fixture(scope="session")
def smoke_zoo(smoke_cache):
    from resurface.cache import Cache
    from resurface.config import load_config
    from resurface.runtime import go_offline
    from resurface.zoo import build_zoo
    go_offline(smoke_cache / "hf_home")
    cfg = load_config("smoke")
    return build_zoo(cfg, Cache(smoke_cache))
