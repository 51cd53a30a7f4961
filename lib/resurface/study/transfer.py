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

import numpy as np
import pandas as pd

from resurface.analysis import verdicts
from resurface.analysis.findings import headline
from resurface.builders.synthetic import synthetic_corpus
from resurface.builders.zoo import Zoo, model_size
from resurface.compute.pool import Job, build_all
from resurface.frame.cache import Cache
from resurface.frame.schema import StudyConfig
from resurface.builders.evaluations import item_margins
from resurface.study.matrix import CONTROL_SOURCES, base_evaluation, eval_tasks, plan, run_plan
from resurface.study.recipe import matrix_recipe


def run_matrix(cfg: StudyConfig, cache: Cache, zoo: Zoo, recipe: tuple[str, int] | None = None
               ) -> tuple[pd.DataFrame, dict]:
    """The matrix of finding 1 on the TEST items, with the recipe notebook 01 chose (`recipe`: its product;
    without it, the choice is recomputed from the cached grid). The untouched students' DEV evaluations, which
    the resurfacing bins read, are built in the same pool."""
    recipe = tuple(recipe) if recipe is not None else matrix_recipe(cfg, cache, zoo)
    table, arts = run_plan(cfg, cache, zoo, plan(cfg, recipe), eval_tasks(cfg, cache, zoo), extra=_margin_jobs(
        cfg, cache, zoo, list(cfg.transfer.students), ("dev",)))
    arts["recipe"] = recipe
    return table, arts


def _margin_jobs(cfg: StudyConfig, cache: Cache, zoo: Zoo, students: list[str], splits) -> list[Job]:
    """The untouched students' evaluations on each split, as pool jobs (labelled `student split`)."""
    items = {split: eval_tasks(cfg, cache, zoo, split) for split in splits}
    return [Job(model_size(cfg.zoo.models[s]), f"{s} {split}", base_evaluation, (zoo, items[split], s))
            for split in splits for s in students]


def run_table(table: pd.DataFrame, labels: pd.DataFrame, tasks: list[str]) -> pd.DataFrame:
    """One row per run: its headline delta, its source's label check and strength gap, and whether it enters
    the verdict (self always; other sources when their label held; never a control)."""
    runs = headline(table, tasks).merge(labels[["student", "source", "label_ok", "gap_bpb"]],
                                        on=["student", "source"], how="left")
    runs["in_verdict"] = runs["label_ok"].fillna(False).astype(bool) & runs["relation"].isin(verdicts.RELATIONS)
    runs["gap_bpb"] = np.where(runs["relation"] == "self", 0.0, runs["gap_bpb"])
    runs["in_verdict"] |= runs["relation"] == "self"
    return runs


def thresholds(cfg: StudyConfig, score: str | None = None) -> verdicts.Thresholds:
    """The rules' thresholds for a score (SCORE_RULE; default: the profile's primary score), its SESOI in its unit."""
    a = cfg.analysis
    score = score or a.score
    sesoi = a.logloss_sesoi_nats if score == "logloss" else a.sesoi_points
    return verdicts.Thresholds(alpha=a.alpha, power=a.power, sesoi=sesoi, proxy_rho0=a.proxy_rho0,
                               bootstrap=a.bootstrap, seed=cfg.seed)


def add_outcomes(runs: pd.DataFrame, deltas: dict[str, list[np.ndarray]], score: str) -> pd.DataFrame:
    """Per run, the headline delta in the primary `score` (SCORE_RULE) with its item noise (`item_se`), and every
    outcome's mean over the headline tasks beside it (`deltas[kind]`: item_deltas of that kind)."""
    runs = runs.copy()
    primary = deltas[verdicts.score_kind(score)]
    runs["headline_delta"] = verdicts.run_means(primary)
    runs["item_se"] = verdicts.per_run_paired_se(primary)
    for kind, col in (("items", "accuracy_delta"), ("logloss", "logloss_delta"), ("margins", "margin_delta")):
        if kind in deltas:
            runs[col] = verdicts.run_means(deltas[kind])
    return runs


def base_margins(cfg: StudyConfig, cache: Cache, zoo: Zoo, students: list[str], tasks: list[str]
                 ) -> dict[str, dict[str, list[np.ndarray]]]:
    """Per split (dev, test) and student, the untouched student's per-item margins on each task (the
    evaluations `run_matrix` built; anything missing is built in the worker pool)."""
    splits = ("dev", "test")
    built = build_all(cache, _margin_jobs(cfg, cache, zoo, students, splits), cfg.workers,
                      desc="untouched students' margins").results
    return {split: {s: [np.asarray(item_margins(built[f"{s} {split}"])[t], float) for t in tasks] for s in students}
            for split in splits}


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
