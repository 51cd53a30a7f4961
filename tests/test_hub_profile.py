"""The paper's own setting, end to end, offline: `params/pythia.yaml`, scaled down by overrides only, runs all five
notebooks on random look-alikes of every model and data set it pins (GPTNeoX, Qwen2, Llama, BLOOM and OPT models at
their pinned revisions, with their real context lengths; the deduplicated Pile and pythia-memorized-evals in their schemas; the registry benchmarks'
request files), from a local Hugging Face cache with HF_HUB_OFFLINE=1 and the network cut. `resurface check` prices
the real profile from the same cache, and fails in one sentence on a missing revision or an unreachable Hub."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from conftest import ROOT, no_network_prefix
from resurface.builders.lookalikes import SCALED_DOWN, write_lookalike_hub, write_registry_lookalike
from resurface.frame.cache import Cache
from resurface.frame.profiles import load_config, parse_overrides

NOTEBOOKS = ["00_zoo", "01_recipe", "02_transfer", "03_proxies", "04_memorization"]


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory):
    cfg = load_config("pythia", parse_overrides(SCALED_DOWN))
    hub = tmp_path_factory.mktemp("hf") / "hub"
    written = write_lookalike_hub(cfg, hub)
    return hub, written


@pytest.fixture(scope="module")
def pythia_run(tmp_path_factory, hub_cache, smoke_cache, smoke_zoo):
    """./run_all.sh --profile pythia with the scaled-down overrides, offline, into a temporary outputs folder. The
    smoke zoo's corpora are shared (same sources and sizes); everything else is built here."""
    hub, _ = hub_cache
    cache = tmp_path_factory.mktemp("pythia-cache")
    for kind in ("sources", "corpora"):
        (cache / kind).symlink_to(smoke_cache / kind)
    cfg = load_config("pythia", parse_overrides(SCALED_DOWN))
    write_registry_lookalike(Cache(cache), list(cfg.benchmarks.registry))
    out = tmp_path_factory.mktemp("outputs")
    env = {**os.environ, "RESURFACE_CACHE": str(cache), "RESURFACE_OUTPUTS": str(out), "HF_HUB_OFFLINE": "1",
           "HF_HUB_CACHE": str(hub)}
    args = ["./run_all.sh", "--profile", "pythia", *[a for s in SCALED_DOWN for a in ("--set", s)]]
    proc = subprocess.run(no_network_prefix() + args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out / "pythia"


def test_the_lookalikes_cover_every_pinned_model_and_architecture(hub_cache):
    hub, written = hub_cache
    cfg = load_config("pythia")
    for m in cfg.zoo.models.values():
        assert f"{m.hub_id}@{m.revision}" in written
    assert "EleutherAI/pythia-160m-deduped@step36000" in written  # the capability axis's checkpoints too
    archs = {json.loads(p.read_text())["model_type"] for p in hub.glob("models--*/snapshots/*/config.json")}
    assert archs == {"gpt_neox", "qwen2", "llama", "bloom", "opt"}
    assert not list(hub.rglob("*.bin"))


@pytest.mark.slow
def test_the_pythia_profile_runs_every_notebook_offline(pythia_run):
    out = pythia_run
    for nb in NOTEBOOKS:
        assert (out / f"{nb}.ipynb").exists() and not (out / f"{nb}.failed.ipynb").exists()
        assert (out / "findings" / f"{nb.replace('_zoo', '_zoo_checks')}.json").exists() or nb == "00_zoo"
    assert (out / "findings" / "00_zoo_checks.json").exists() and (out / "REPORT.md").exists()
    zoo = pd.read_csv(out / "tables" / "zoo_models.csv")
    assert set(zoo["architecture"]) == {"gpt_neox", "qwen2", "llama", "bloom", "opt"}
    runs = pd.read_csv(out / "tables" / "transfer_runs.csv")
    assert set(runs["student"]) == {"pythia-160m-deduped", "pythia-410m-deduped"}
    assert {"self", "same_lineage", "stronger_different", "cross_family", "real_text", "replay"} <= set(runs["relation"])
    assert set(runs["seed"]) == {0, 1}
    # the recipe rule ran on the grid and picked a re-warming schedule (real weights have no optimizer state)
    recipe = json.loads((out / "findings" / "01_recipe.json").read_text())
    assert str(recipe["schedule"]).startswith("rewarm") and recipe["n_seeds"] == 3
    # finding 3 on the first student's memorized-evals sequences, before and after every run, behind the gate
    seqs = pd.read_csv(out / "tables" / "memorization_per_sequence.csv")
    assert set(seqs["student"]) == {"pythia-160m-deduped"} and len(seqs) == 8
    assert {"extracted_before", "extracted_pythia-160m-deduped", "extracted_replay"} <= set(seqs.columns)
    gate = pd.read_csv(out / "tables" / "memorization_gate.csv")
    assert len(gate) == 2 and (gate["tokens"] > 0).all()  # the student's own samples, one corpus per seed
    design = json.loads((out / "findings" / "04_memorization.json").read_text())["design"]
    assert design["splits"] == ["deduped.160m", "deduped.410m"]
    for name in ("02_transfer", "03_proxies", "04_memorization"):
        verdicts = json.loads((out / "findings" / f"{name}.json").read_text())
        assert verdicts  # computed, whatever they say on random weights


def _check(hub, *args, **env):
    full = {**os.environ, "HF_HUB_CACHE": str(hub), **env}
    return subprocess.run([sys.executable, "-m", "resurface.study.cli", "check", "--profile", "pythia", *args],
                          cwd=ROOT, env=full, capture_output=True, text=True, timeout=300)


def test_check_prints_every_pin_the_memory_and_the_gpu_hours(hub_cache):
    hub, _ = hub_cache
    proc = _check(hub, HF_HUB_OFFLINE="1")
    assert proc.returncode == 0, proc.stderr
    cfg = load_config("pythia")
    for m in cfg.zoo.models.values():
        assert m.hub_id in proc.stdout
    for nb in NOTEBOOKS:
        assert nb in proc.stdout
    assert "GPU-hours" in proc.stdout and "GPU memory" in proc.stdout and "step36000" in proc.stdout
    assert "EleutherAI/the_pile_deduplicated" in proc.stdout and "EleutherAI/pythia-memorized-evals" in proc.stdout


def test_check_fails_in_one_sentence_without_a_revision_or_the_hub(hub_cache):
    hub, _ = hub_cache
    missing = _check(hub, "zoo.models.pythia-1b-deduped.revision=step1", HF_HUB_OFFLINE="1")
    assert missing.returncode == 1 and len(missing.stderr.strip().splitlines()) == 1
    assert "`EleutherAI/pythia-1b-deduped` at revision `step1`" in missing.stderr
    short = _check(hub, "zoo.seq_len=4096", HF_HUB_OFFLINE="1")  # longer than Pythia's 2,048 positions
    assert short.returncode == 1 and "reads 2048 positions, fewer than zoo.seq_len = 4096" in short.stderr
    unreachable = _check(hub, HF_HUB_OFFLINE="0", HF_ENDPOINT="http://127.0.0.1:9")
    assert unreachable.returncode == 1 and len(unreachable.stderr.strip().splitlines()) == 1
    assert "unreachable" in unreachable.stderr


def test_the_gpu_script_says_why_it_does_not_run_without_a_gpu(tmp_path):
    import torch
    if torch.cuda.is_available():
        pytest.skip("a GPU is here: test_the_gpu_script_runs_the_lookalike_profile_on_cuda checks the script")
    proc = subprocess.run([sys.executable, "scripts/gpu_lookalike_pythia.py", "--out", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("skipped: no CUDA device")
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.slow
def test_the_gpu_script_runs_the_lookalike_profile_on_cuda(tmp_path, smoke_cache, smoke_zoo):
    import torch
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device: the GPU path of the pythia profile is checked where one exists")
    proc = subprocess.run([sys.executable, "scripts/gpu_lookalike_pythia.py", "--out", str(tmp_path),
                           "--seed-cache", str(smoke_cache)], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / "gpu_lookalike_pythia.json").read_text())
    assert set(result["notebook_seconds"]) == set(NOTEBOOKS) and result["total_seconds"] < 600


def test_a_schedule_that_needs_optimizer_state_is_refused_for_hub_students():
    from resurface.frame.schema import ConfigError
    with pytest.raises(ConfigError, match=r"\['continue'\] need the student's own optimizer state"):
        load_config("pythia", parse_overrides(["recipe.schedules=[continue,rewarm@1e-05]"]))
    assert load_config("pythia").recipe.fallback[0].startswith("rewarm")  # the fallback the profile states


def test_hub_sources_are_labelled_by_their_size_within_the_lineage():
    from resurface.study.matrix import strength_label
    cfg = load_config("pythia")
    small, large = "pythia-160m-deduped", "pythia-410m-deduped"
    assert strength_label(cfg, small, "pythia-160m-seed1") == "equal"
    assert strength_label(cfg, small, large) == "stronger"
    assert strength_label(cfg, large, "pythia-1b-deduped") == "stronger"
    assert strength_label(cfg, large, "pythia-160m-seed1") == "weaker"
    assert strength_label(cfg, small, f"{small}@step71000") == "weaker"
    assert strength_label(cfg, small, "qwen2.5-0.5b") == "stronger_different"
