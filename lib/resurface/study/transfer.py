"""The transfer matrix of finding 1: students x sources x temperatures x seeds.

For each source model (or checkpoint) and temperature and seed: sample a
synthetic corpus from BOS; for each student: fine-tune on it with the same token
budget; evaluate with lm-eval; subtract the untouched student's score.
Controls: the untouched student, and the student fine-tuned on real held-out
lineage text (the half of the held-out documents that no benchmark uses).

The runs and how they are built are `matrix.py`; here: the matrix with the recipe notebook 01 chose,
finding 1's verdicts, and the table of its synthetic corpora.
"""
from __future__ import annotations

import pandas as pd

from resurface.analysis import verdicts
from resurface.analysis.findings import headline
from resurface.build.synthetic import synthetic_corpus
from resurface.build.zoo import Zoo
from resurface.frame.cache import Cache
from resurface.frame.config import StudyConfig
from resurface.study.matrix import CONTROL_SOURCES, eval_tasks, item_deltas, plan, run_plan
from resurface.study.recipe import matrix_recipe


def run_matrix(cfg: StudyConfig, cache: Cache, zoo: Zoo) -> tuple[pd.DataFrame, dict]:
    """The matrix of finding 1 on the TEST items, with the recipe the grid chose."""
    recipe = matrix_recipe(cfg, cache, zoo)
    table, arts = run_plan(cfg, cache, zoo, plan(cfg, recipe), eval_tasks(cfg, cache, zoo))
    arts["recipe"] = recipe
    return table, arts


def finding1(cfg: StudyConfig, table: pd.DataFrame, arts: dict, labels: pd.DataFrame, tasks: list[str],
             axis_ok: bool = True):
    """The per-run table and the verdicts of finding 1 (accuracy headline, and margins as a secondary outcome)."""
    import numpy as np

    runs = headline(table, tasks).merge(labels[["student", "source", "label_ok", "gap_bpb"]],
                                        on=["student", "source"], how="left")
    runs["in_verdict"] = runs["label_ok"].fillna(False).astype(bool) & runs["relation"].isin(verdicts.RELATIONS)
    runs["gap_bpb"] = np.where(runs["relation"] == "self", 0.0, runs["gap_bpb"])
    runs["in_verdict"] |= runs["relation"] == "self"
    a = cfg.analysis
    th = verdicts.Thresholds(alpha=a.alpha, power=a.power, sesoi=a.sesoi_points, proxy_rho0=a.proxy_rho0,
                             bootstrap=a.bootstrap, seed=cfg.seed)
    deltas = item_deltas(runs, arts, tasks)
    runs["item_se"] = verdicts.per_run_paired_se(deltas)
    verdict = verdicts.transfer_verdict(runs, deltas, th, runs["gap_bpb"].to_numpy(float))
    margins = item_deltas(runs, arts, tasks, "margins")
    runs["margin_delta"] = np.mean([m.mean(1) for m in margins], axis=0)
    secondary = verdicts.transfer_verdict(runs, margins, verdicts.Thresholds(
        alpha=a.alpha, power=a.power, sesoi=a.margin_sesoi_nats, bootstrap=a.bootstrap, seed=cfg.seed))
    return runs, verdicts.without_capability(verdict, axis_ok), verdicts.without_capability(secondary, axis_ok)


def synthetic_corpus_table(cfg: StudyConfig, cache: Cache, zoo: Zoo) -> pd.DataFrame:
    """One row per synthetic corpus of the plan, with its provenance (each corpus looked up once)."""
    keys = {(r["source"], r["temperature"], r["seed"]) for r in plan(cfg) if r["source"] not in CONTROL_SOURCES}
    cols = ("source_model", "revision", "start_token", "start_rule", "temperature", "seed", "documents", "tokens",
            "tokens_per_s", "wall_seconds")
    rows = []
    for src, t, seed in sorted(keys):
        a = synthetic_corpus(cache, zoo, src, t, seed)
        rows.append({"corpus": a.name, **{k: a.meta.get(k) for k in cols}})
    return pd.DataFrame(rows)
