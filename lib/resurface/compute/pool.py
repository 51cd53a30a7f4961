"""Independent artifacts built side by side on a CPU: one single-threaded process per core.

The zoo's models and the transfer matrix's corpora and students are many small, independent
builds. Their matmuls (width 64-128) keep two threads poorly busy: on 2 cores, two 1-thread
processes do 1.3-1.4x the work of one 2-thread process (`python -m resurface.bench` measures it).

The rule that keeps this honest: on a CPU every build that goes through `build_all` runs on
exactly one thread, in a worker or in this process, whatever `workers` says. So `workers` changes
wall time, never a number (tests/test_workers.py compares the bytes). Each job is a plain
function `job(cache, *args)` that ends in `cache.get_or_build`; the notebook's own loop afterwards
reuses what the pool built. On a GPU, or under `accelerate launch`, jobs run here, one at a time.

Workers are forked from a fork server, a fresh interpreter that has imported torch, transformers' model classes
and this package once (`warm_up` starts it in the background when a notebook starts). Spawned workers paid those
imports, 7-10 s of CPU, in every worker of every pool. The server itself never runs a torch operation, so it
holds no OpenMP threads to fork (forking the kernel would).
"""
from __future__ import annotations

import contextlib
import gc
import logging
import multiprocessing
import os
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from resurface.frame.cache import Cache, NotBuilt, TimingRecord

log = logging.getLogger("resurface")


@dataclass(order=True)
class Job:
    """`fn(cache, *args)`; `cost` only orders the queue (longest first, so no worker idles at the end)."""
    cost: float
    label: str = field(compare=False)
    fn: Callable = field(compare=False)
    args: tuple = field(compare=False, default=())


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def resolve_workers(workers: int | str) -> int:
    """`auto`: one worker per usable core on a CPU; one on a GPU or under a launcher (the GPU is shared)."""
    from resurface.compute.device import current
    from resurface.compute.distributed import world_size
    if current().device != "cpu" or world_size() > 1:
        return 1
    return usable_cores() if workers == "auto" else int(workers)


BUILD_THREADS = 1  # torch threads of a build that runs in this process (StudyConfig.build_threads)


def set_build_threads(n: int) -> None:
    """Threads of the builds run here when the pool has one worker. 1 (the default) keeps every number
    independent of `workers`; a real-weights profile that builds one 270M model at a time gives it the cores."""
    global BUILD_THREADS
    BUILD_THREADS = int(n)


@contextlib.contextmanager
def single_threaded():
    """`BUILD_THREADS` torch threads (one, unless the profile says otherwise) for the duration."""
    import torch
    from resurface.compute.device import current
    if current().device != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(BUILD_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def pending(cache: Cache, jobs: list[Job]) -> list[Job]:
    """The jobs whose artifacts are not all in the cache yet (checked without building anything)."""
    out = []
    for job in jobs:
        try:
            with cache.probe():
                job.fn(cache, *job.args)
        except NotBuilt:
            out.append(job)
    return out


# ----------------------------------------------------------------- the fork server
# What every kind of job needs; the server imports them once and each worker inherits them. (lm-eval and
# sentence-transformers, 1-2 s each, are left to the jobs that use them.)
PRELOAD = ["torch", "transformers.models.gpt_neox.modeling_gpt_neox", "transformers.models.llama.modeling_llama",
           "transformers.models.gpt2.modeling_gpt2", "resurface.builders.zoo", "resurface.lm.training"]


def _context():
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def warm_up(workers: int | str = "auto", device: str = "auto") -> bool:
    """Start the fork server now, in the background, when builds may go to a pool (returns whether it did).

    Call it once the environment is final (offline flags, cache paths): the server and every worker forked
    from it keep the environment of this moment. It decides without importing torch, so that the server's
    imports overlap the notebook's own; on a GPU (`auto` cannot tell yet) the server merely idles."""
    from resurface.compute.distributed import world_size
    if device not in ("auto", "cpu") or world_size() > 1 or str(workers) == "1" or usable_cores() <= 1:
        return False
    from multiprocessing import forkserver
    _context()
    # the parent shows one bar for the whole pool; tqdm reads TQDM_DISABLE when imported, i.e. in the server
    before = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"
    try:
        forkserver.ensure_running()  # returns at once; the server imports PRELOAD while the notebook goes on
    finally:
        if before is None:
            del os.environ["TQDM_DISABLE"]
        else:
            os.environ["TQDM_DISABLE"] = before
    return True


# ----------------------------------------------------------------- worker side
_worker_cache: Cache | None = None


def _init_worker(cache_root: str, device: str, dtype: str, builds=None) -> None:
    global _worker_cache
    import torch
    from resurface.compute.device import use
    torch.set_num_threads(1)
    use(device, dtype)
    quiet_libraries()  # (bars are off already: the server imported tqdm under TQDM_DISABLE, see warm_up)
    _worker_cache = Cache(Path(cache_root))
    _worker_cache.builds = builds  # the notebook's pipeline restriction holds in its workers too


def _run_job(fn: Callable, args: tuple) -> tuple[list[dict], int]:
    assert _worker_cache is not None
    n = len(_worker_cache.timings)
    fn(_worker_cache, *args)
    return [t.__dict__ for t in _worker_cache.timings[n:]], os.getpid()


# ----------------------------------------------------------------- parent side
@dataclass
class PoolRun:
    """What `build_all` did, and each job's result by its label: `fn(cache, *args)` once more, in this process,
    when first asked for (everything is in the cache by then, so it only reads)."""
    cache: Cache = field(repr=False)
    jobs: list[Job] = field(repr=False)
    built: int
    workers: int
    seconds: float

    @property
    def results(self) -> dict[str, Any]:
        if not hasattr(self, "_results"):
            self._results = {job.label: job.fn(self.cache, *job.args) for job in self.jobs}
        return self._results

    def __getitem__(self, label: str):
        return self.results[label]


def build_all(cache: Cache, jobs: list[Job], workers: int | str = "auto", desc: str = "build") -> PoolRun:
    """Build every job's artifacts (reusing cached ones), in `workers` processes when there is more than one;
    return what was done and, by label (labels are unique), each job's result."""
    labels = [job.label for job in jobs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"{desc}: job labels must be unique, not {sorted(labels)}")
    done = _build(cache, jobs, workers, desc)
    return PoolRun(cache, jobs, done["built"], done["workers"], done["seconds"])


def _build(cache: Cache, jobs: list[Job], workers: int | str, desc: str) -> dict:
    from tqdm.auto import tqdm
    from resurface.compute.device import current
    todo = sorted(pending(cache, jobs), reverse=True)
    n = min(resolve_workers(workers), len(todo))
    t0 = time.perf_counter()
    if not todo:
        return {"jobs": len(jobs), "built": 0, "workers": 0, "seconds": 0.0}
    if n <= 1:
        for k, job in enumerate(tqdm(todo, desc=desc, mininterval=2)):
            with single_threaded():
                job.fn(cache, *job.args)
            gc.collect()  # a 270M model and its optimizer must be gone before the next build loads another
            progress(desc, k + 1, len(todo), t0)
        return _done(desc, len(jobs), len(todo), 1, t0)
    log.info("%s: %d job(s) on %d single-threaded worker processes", desc, len(todo), n)
    place = current()
    ctx = _context()  # never fork this process: it may hold OpenMP threads
    warm_up(n, current().device)  # no-op when the notebook started the server already
    pids: dict[int, int] = {}
    with ProcessPoolExecutor(n, mp_context=ctx, initializer=_init_worker,
                             initargs=(str(cache.root), place.device, place.dtype, cache.builds)) as pool:
        futures = {pool.submit(_run_job, j.fn, j.args): j for j in todo}
        bar = tqdm(total=len(futures), desc=desc, mininterval=2)
        remaining = set(futures)
        finished = 0  # (a disabled bar does not count)
        try:
            while remaining:
                done, remaining = wait(remaining, return_when=FIRST_COMPLETED)  # report each job as it ends
                for fut in done:
                    if fut.exception() is not None:
                        fut.exception().add_note(f"(in the worker pool, job: {futures[fut].label})")
                    records, pid = fut.result()  # re-raises a worker's exception here
                    worker = pids.setdefault(pid, len(pids) + 1)
                    for r in records:
                        cache.timings.append(TimingRecord(**{**r, "worker": worker}))
                        if r["status"] == "built":
                            log.info("built %s in %.1f s (worker %d)", r["artifact"], r["seconds"], worker)
                    bar.update()
                    finished += 1
                    progress(desc, finished, len(futures), t0)
        except BaseException:  # a failed job or an interrupted kernel: stop the running builds now, not when
            for fut in remaining:  # they end (their half-built folders are debris the next run clears)
                fut.cancel()
            for proc in list((getattr(pool, "_processes", None) or {}).values()):
                proc.terminate()
            raise
        finally:
            bar.close()
    return _done(desc, len(jobs), len(todo), n, t0)


PROGRESS = "progress: "  # the runner shows the run log's lines that carry it at the terminal


def progress(desc: str, done: int, total: int, t0: float) -> None:
    """One stage-level progress line in the log (and so in run.log): what is done out of how many, time left
    (the costliest jobs start first, so the estimate errs long)."""
    elapsed = time.perf_counter() - t0
    left = elapsed / done * (total - done) if done else float("nan")
    log.info("%s%s %d/%d done, %.0f s so far, about %.0f s left", PROGRESS, desc, done, total, elapsed, left)


def _done(desc: str, jobs: int, built: int, workers: int, t0: float) -> dict:
    seconds = time.perf_counter() - t0
    log.info("%s: built %d of %d in %.0f s on %d worker(s)", desc, built, jobs, seconds, workers,
             extra={"summary": True})  # the one line of a stage an executed notebook shows (session.start)
    return {"jobs": jobs, "built": built, "workers": workers, "seconds": seconds}


def quiet_libraries() -> None:
    import datasets
    import transformers
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    transformers.logging.set_verbosity_error()
    # fontTools logs every glyph subset a PDF figure embeds (about a hundred lines per figure cell)
    for name in ("lm-eval", "lm_eval", "httpx", "sentence_transformers", "fontTools", "matplotlib", "PIL"):
        logging.getLogger(name).setLevel(logging.ERROR)
