"""The worker pool (resurface.compute.pool): it changes wall time, never a number, and fails loudly."""
from __future__ import annotations

import json

import numpy as np
import pytest

from resurface.frame.cache import Cache, NotBuilt
from resurface.compute.pool import Job, build_all, pending


def _train_job(cache: Cache, name: str, seed: int) -> None:
    """A small pretraining through the cache, as the zoo does (module level: workers import it)."""
    def build(tmp):
        import torch
        from transformers import AutoModelForCausalLM, GPTNeoXConfig
        from resurface.lm.training import train_lm
        torch.manual_seed(seed)
        cfg = GPTNeoXConfig(vocab_size=512, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=256, max_position_embeddings=64, rotary_pct=0.25)
        model = AutoModelForCausalLM.from_config(cfg)
        blocks = np.random.default_rng(seed).integers(0, 512, (64, 64)).astype(np.uint16)
        res = train_lm(model, blocks, steps=6, batch_size=16, lr=3e-3, warmup_steps=1)
        model.save_pretrained(str(tmp / "main"), safe_serialization=True)
        return {"loss": res["history"][-1][1], "threads": torch.get_num_threads()}
    cache.get_or_build("zoo", name, {"seed": seed}, build, stage="zoo")


def _slow_job(cache: Cache) -> None:
    def build(tmp):
        import time
        time.sleep(120)
    cache.get_or_build("zoo", "slow", {}, build, stage="zoo")


def _failing_job(cache: Cache) -> None:
    def build(tmp):
        (tmp / "half-written").write_text("x")
        raise ValueError("boom in a worker")
    cache.get_or_build("zoo", "broken", {}, build, stage="zoo")


def _env_job(cache: Cache, name: str) -> None:
    """Records what a pooled worker starts with."""
    def build(tmp):
        import os
        import sys
        import torch
        from tqdm.auto import tqdm
        return {"pid": os.getpid(), "ppid": os.getppid(), "threads": torch.get_num_threads(),
                "bar_disabled": tqdm(range(1)).disable,
                "preloaded": "transformers.models.llama.modeling_llama" in sys.modules}
    cache.get_or_build("zoo", name, {}, build, stage="zoo")


JOBS = [Job(1.0, "a", _train_job, ("a", 0)), Job(2.0, "b", _train_job, ("b", 1))]


def _manifests(root) -> dict:
    return {p.parent.name: (json.loads(p.read_text())["files"], json.loads(p.read_text())["meta"])
            for p in sorted(root.glob("zoo/*/manifest.json"))}


@pytest.mark.slow
def test_two_workers_give_the_bytes_of_one(tmp_path):
    """Two worker processes and one in-process build write byte-identical weights (every build is
    single-threaded), and the parent records who built what."""
    pooled, alone = Cache(tmp_path / "pooled"), Cache(tmp_path / "alone")
    r2 = build_all(pooled, JOBS, workers=2, desc="pooled")
    r1 = build_all(alone, JOBS, workers=1, desc="alone")
    assert (r2.workers, r2.built, r1.workers, r1.built) == (2, 2, 1, 2)
    assert r2.results == {"a": None, "b": None}  # each job's result by its label (these jobs return nothing)
    a, b = _manifests(pooled.root), _manifests(alone.root)
    assert len(a) == 2 and a == b  # same names, same keys, same file checksums, same losses
    assert all(meta["threads"] == 1 for _, meta in a.values())
    built = [t for t in pooled.timings if t.status == "built"]
    assert sorted(t.artifact.split("-")[0] for t in built) == ["zoo/a", "zoo/b"]
    assert {t.worker for t in built} <= {1, 2}
    assert all(t.worker == 0 for t in alone.timings)


def test_cached_jobs_are_not_rerun(tmp_path):
    cache = Cache(tmp_path / "c")
    build_all(cache, JOBS[:1], workers=1)
    assert pending(cache, JOBS) == [JOBS[1]]
    cache.timings.clear()
    again = build_all(cache, JOBS[:1], workers=2)
    assert (again.built, again.workers, again.seconds) == (0, 0, 0.0) and cache.timings == []


def test_job_labels_are_unique_so_results_can_be_read_by_label(tmp_path):
    with pytest.raises(ValueError, match="job labels must be unique"):
        build_all(Cache(tmp_path / "c"), [Job(1.0, "a", _env_job, ("x",)), Job(1.0, "a", _env_job, ("y",))])


def test_probe_builds_nothing(tmp_path):
    cache = Cache(tmp_path / "c")
    with pytest.raises(NotBuilt), cache.probe():
        _train_job(cache, "a", 0)
    assert not (tmp_path / "c" / "zoo").exists() and cache.timings == []


@pytest.mark.slow
def test_a_failing_worker_stops_the_pool_and_leaves_nothing(tmp_path):
    cache = Cache(tmp_path / "c")
    jobs = [Job(5.0, "broken", _failing_job), Job(1.0, "a", _train_job, ("a", 0))]
    with pytest.raises(ValueError, match="boom in a worker") as exc:
        build_all(cache, jobs, workers=2)
    assert any("job: broken" in note for note in exc.value.__notes__)  # the parent says which job failed
    assert not list((tmp_path / "c" / "zoo").glob("broken-*"))  # no published or half-written artifact
    assert not list((tmp_path / "c" / "zoo").glob(".tmp-broken*"))


@pytest.mark.slow
def test_a_failure_does_not_wait_for_the_other_workers_builds(tmp_path):
    """An error (or an interrupted kernel) stops the builds still running, instead of waiting minutes for them."""
    import time
    cache = Cache(tmp_path / "c")
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="boom in a worker"):
        build_all(cache, [Job(9.0, "slow", _slow_job), Job(1.0, "broken", _failing_job)], workers=2)
    assert time.perf_counter() - t0 < 60  # the slow build sleeps 120 s
    assert not list((tmp_path / "c" / "zoo").glob("slow-*"))  # killed mid-build: nothing published


@pytest.mark.slow
def test_workers_fork_from_a_preloaded_server(tmp_path):
    """Workers come from the fork server, not from this process: its imports done, one thread, silent bars."""
    import os
    from multiprocessing import forkserver
    from resurface.compute.pool import warm_up
    assert not warm_up(workers=1) and not warm_up(workers="auto", device="cuda")
    if forkserver._forkserver._forkserver_pid is None:  # else an earlier test's pool started it
        assert warm_up(workers=2)
        assert os.environ.get("TQDM_DISABLE") is None  # set for the server only
    cache = Cache(tmp_path / "c")
    build_all(cache, [Job(1.0, "x", _env_job, ("x",)), Job(1.0, "y", _env_job, ("y",))], workers=2)
    metas = [json.loads(p.read_text())["meta"] for p in sorted(tmp_path.glob("c/zoo/*/manifest.json"))]
    server = forkserver._forkserver._forkserver_pid
    assert len(metas) == 2 and all(m["ppid"] == server and m["pid"] != os.getpid() for m in metas)
    assert all(m["threads"] == 1 and m["bar_disabled"] and m["preloaded"] for m in metas)
