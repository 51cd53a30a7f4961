"""Shared fixtures. Tests never write to the real outputs/ or the real cache."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_script(name: str):
    """A tool in scripts/ (outside the package: nothing in `resurface` imports it), loaded for its tests."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
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
    from resurface.frame.cache import Cache
    from resurface.frame.profiles import load_config
    from resurface.study.session import go_offline
    from resurface.builders.zoo import build_zoo
    from resurface.lm.training import set_threads
    go_offline(smoke_cache / "hf_home")
    cfg = load_config("smoke")
    set_threads(cfg.threads)  # as the notebooks do: the same thread count gives the same bits
    return build_zoo(cfg, Cache(smoke_cache))


def no_network_prefix() -> list[str]:
    """A command prefix that runs its command in a new network namespace with only loopback up."""
    if shutil.which("unshare") and shutil.which("ip") and \
            subprocess.run(["unshare", "-rn", "true"], capture_output=True).returncode == 0:
        return ["unshare", "-rn", "sh", "-c", 'ip link set lo up && exec "$@"', "sh"]
    return []


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory, smoke_cache, smoke_zoo):
    """Run ./run_all.sh --profile smoke once, into a temporary outputs folder, with the network cut.

    The zoo fixture has fetched the registry packages (the only step that needs the network); everything
    after it -- tokenizers, pretraining, sampling, fine-tuning, lm-eval, MiniLM -- must work offline."""
    out = tmp_path_factory.mktemp("outputs")
    env = {**os.environ, "RESURFACE_CACHE": str(smoke_cache), "RESURFACE_OUTPUTS": str(out)}
    prefix = no_network_prefix()
    proc = subprocess.run(prefix + ["./run_all.sh", "--profile", "smoke"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out / "smoke", proc, bool(prefix)
