"""The paper's setting on a GPU, on look-alikes: `params/pythia.yaml`, scaled down by the test suite's overrides,
runs all five notebooks on CUDA from a local Hugging Face cache of random look-alikes (no Hub), and writes its
timings. It checks the GPU path (placement, bf16 sampling and autocast fine-tuning, lm-eval on CUDA) whenever a
GPU is at hand; without one it says so and exits 0.

    .venv/bin/python scripts/gpu_lookalike_pythia.py --out /tmp/gpu-check [--seed-cache .cache]

`--seed-cache` names a cache whose `sources/` and `corpora/` (the embedded prose, fetched from npm) are reused: a
GPU machine without the registries needs them carried over. Writes OUT/outputs/pythia/ (the executed notebooks)
and OUT/gpu_lookalike_pythia.json (device, wall time per notebook, total).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed-cache", type=Path, help="reuse this cache's embedded corpora (sources/, corpora/)")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="cpu: the same run without a GPU")
    args = ap.parse_args(argv)
    import torch
    if args.device == "cuda" and not torch.cuda.is_available():
        print("skipped: no CUDA device here (torch.cuda.is_available() is False); the GPU path is checked where "
              "one exists")
        return 0
    from resurface.builders.lookalikes import SCALED_DOWN, write_lookalike_hub, write_registry_lookalike
    from resurface.frame.cache import Cache
    from resurface.frame.profiles import load_config, parse_overrides
    sets = [*SCALED_DOWN, f"device={args.device}"]
    cfg = load_config("pythia", parse_overrides(sets))
    out = args.out.resolve()
    hub, cache = out / "hf" / "hub", out / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    write_lookalike_hub(cfg, hub)
    if args.seed_cache:
        for kind in ("sources", "corpora"):
            if (args.seed_cache / kind).exists() and not (cache / kind).exists():
                (cache / kind).symlink_to((args.seed_cache / kind).resolve())
    write_registry_lookalike(Cache(cache), list(cfg.benchmarks.registry))
    setup_s = time.perf_counter() - started
    env = {**os.environ, "RESURFACE_CACHE": str(cache), "RESURFACE_OUTPUTS": str(out / "outputs"),
           "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(hub)}
    proc = subprocess.run(["./run_all.sh", "--profile", "pythia", *[a for s in sets for a in ("--set", s)]],
                          cwd=ROOT, env=env)
    import pandas as pd
    timings = out / "outputs" / "pythia" / "tables" / "timings.csv"
    walls = {}
    if timings.exists():
        t = pd.read_csv(timings)
        walls = {r.notebook: round(r.seconds, 1) for r in t[t["status"] == "wall"].itertuples()}
    result = {"device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
              "torch": torch.__version__, "returncode": proc.returncode, "setup_seconds": round(setup_s, 1),
              "notebook_seconds": walls, "total_seconds": round(time.perf_counter() - started, 1),
              "overrides": sets}
    (out / "gpu_lookalike_pythia.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return proc.returncode


if __name__ == "__main__":
    raise SystemExit(main())
