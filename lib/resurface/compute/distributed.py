"""Several processes (`accelerate launch`, `torchrun`): data-parallel fine-tuning, one cache.

A single process never touches this path (`accelerator()` is None), so the default study's
numbers do not depend on it. Under a launcher every rank trains on its share of each global
batch (DDP averages the gradients, so the optimisation is the one-process one up to float
rounding); rank 0 alone writes the artifact, the other ranks wait and then reuse it.
"""
from __future__ import annotations

import os
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


@lru_cache(maxsize=1)
def accelerator():
    """The process group's `accelerate.Accelerator`, or None in a single process."""
    if world_size() <= 1:
        return None
    from accelerate import Accelerator
    from resurface.compute.device import current
    return Accelerator(cpu=current().device == "cpu")


def is_main() -> bool:
    acc = accelerator()
    return acc is None or acc.is_main_process


def collective_build(cache, kind: str, name: str, config: Any, build: Callable[[Path], dict | None],
                     inputs: list = (), stage: str | None = None):
    """`cache.get_or_build` for a build in which every rank must take part (it holds collectives).

    Rank 0 builds through the cache (lock, checksum, atomic publish); the others run the same
    build in a scratch folder they throw away, then wait for rank 0 and reuse its artifact."""
    acc = accelerator()
    if acc is None:
        return cache.get_or_build(kind, name, config, build, inputs=inputs, stage=stage)
    target = cache.path_for(kind, name, cache.key(kind, config, list(inputs)))
    if not target.exists():
        if acc.is_main_process:
            cache.get_or_build(kind, name, config, build, inputs=inputs, stage=stage)
        else:
            with tempfile.TemporaryDirectory(prefix=f"rank{acc.process_index}-") as scratch:
                build(Path(scratch))
    acc.wait_for_everyone()
    return cache.get_or_build(kind, name, config, build, inputs=inputs, stage=stage)
