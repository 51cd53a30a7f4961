"""Fine-tuning under `accelerate launch` (two CPU processes over gloo) and micro-batching.

The launcher runs tests/ddp_worker.py, which trains through the same `collective_build` +
`train_lm` as the students: both ranks must end with the same weights, equal (up to float
rounding of the averaged gradients) to one process on the whole batch, with one artifact."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "ddp_worker.py"


def _run(cmd: list[str], tmp: Path) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "lib"), str(ROOT / "tests")]),
           "TQDM_DISABLE": "1", "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, cwd=tmp)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    return p.stdout


def _checksums(out: str) -> dict[int, float]:
    return {int(r): float(v) for r, v in re.findall(r"rank-checksum (\d+) ([-\d.]+)", out)}


def _launch(cache: Path, micro: str, tmp: Path) -> str:
    accelerate = Path(sys.executable).with_name("accelerate")
    # `--multi_gpu` is accelerate's name for "several local processes"; with no GPU visible it uses gloo on CPU
    return _run([str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                 "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29517",
                 str(WORKER), str(cache), micro], tmp)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp-ref")
    out = _run([sys.executable, str(WORKER), str(tmp / "cache"), "none"], tmp)
    return _checksums(out)[0]


def test_two_processes_train_like_one(reference, tmp_path):
    out = _launch(tmp_path / "cache", "none", tmp_path)
    sums = _checksums(out)
    assert set(sums) == {0, 1}, out
    assert "rank-shape 1 processes=2 local=4 micro=4" in out  # each rank took half of the global batch of 8
    assert sums[0] == sums[1]  # DDP keeps the ranks' weights identical
    assert sums[0] == pytest.approx(reference, rel=1e-5)  # the same optimisation as one process
    arts = [p for p in (tmp_path / "cache" / "students").iterdir() if not p.name.endswith(".lock")]
    assert len(arts) == 1 and not arts[0].name.startswith(".tmp"), arts  # rank 0 wrote it, once
    assert (arts[0] / "model.safetensors").exists()
    assert out.count(f"artifact {arts[0]}") == 2  # both ranks return the published artifact


def test_micro_batches_accumulate_to_the_whole_batch(reference, tmp_path):
    one = _checksums(_run([sys.executable, str(WORKER), str(tmp_path / "c1"), "2"], tmp_path))[0]
    assert one == pytest.approx(reference, rel=1e-5)
    out = _launch(tmp_path / "c2", "2", tmp_path)
    assert "rank-shape 0 processes=2 local=4 micro=2" in out
    two = _checksums(out)
    assert two[0] == two[1] == pytest.approx(reference, rel=1e-5)


def test_a_batch_that_does_not_split_says_so():
    import numpy as np
    import torch
    from resurface.lm.training import train_lm
    with pytest.raises(ValueError, match="must split evenly"):
        train_lm(torch.nn.Linear(2, 2), np.zeros((4, 8), dtype=np.int32), steps=1, batch_size=6, lr=1e-3,
                 warmup_steps=0, micro_batch_size=4)
