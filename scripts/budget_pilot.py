"""Do the positive controls register at larger fine-tuning budgets? A measurement for choosing the budget.

Fine-tunes the small-budget profile's first two students on the two positive controls (real held-out text, replay of
their own pretraining data) at each budget and schedule, over three seeds, and scores them on the DEV items of
the capability-axis tasks and on held-out bits/byte (notebook 01's grid, controls only). Nothing here reads a
test item or a synthetic corpus. Writes outputs/bench/budget_pilot.csv (one row per run) and prints the means.

    .venv/bin/python scripts/budget_pilot.py --budgets 393216,786432 --schedules continue
"""
from __future__ import annotations

import argparse
import time

from resurface.builders import zoo
from resurface.frame.cache import Cache
from resurface.frame.profiles import load_config
from resurface.frame.paths import ROOT, cache_root
from resurface.study import recipe


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budgets", default="393216,786432", help="student tokens per run, comma-separated")
    ap.add_argument("--schedules", default="continue", help="fine-tuning schedules, comma-separated")
    ap.add_argument("--tasks", default="minimal_pairs,word_cloze")
    ap.add_argument("--lr", type=float, default=None, help="peak learning rate of `rewarm` (default: the profile's)")
    ap.add_argument("--out", default="budget_pilot.csv", help="file name under outputs/bench/")
    args = ap.parse_args()
    budgets = [int(b) for b in args.budgets.split(",")]
    base = load_config("small-budget")
    students = list(base.transfer.students)[:2]
    cfg = load_config("small-budget", {"recipe.students": students, "recipe.sources": {s: [] for s in students},
                                  "recipe.budgets": budgets, "recipe.schedules": args.schedules.split(","),
                                  "recipe.fallback": None, "recipe.seeds": [0, 1, 2],
                                  "sampling.tokens_per_corpus": max(budgets),
                                  **({"finetune.lr": args.lr} if args.lr else {})})
    cache = Cache(cache_root(cfg.cache_dir))
    the_zoo = zoo.build_zoo(cfg, cache)
    t0 = time.time()
    grid, _ = recipe.run_grid(cfg, cache, the_zoo, args.tasks.split(","))
    out = ROOT / "outputs" / "bench" / args.out
    grid.to_csv(out, index=False)
    print(grid.groupby(["schedule", "budget", "relation"])[["headline_delta", "bpb_gain", "item_se"]]
          .agg(["mean", "std", "count"]).round(4).to_string())
    print(f"{time.time() - t0:.0f} s; {out}")


if __name__ == "__main__":
    main()
