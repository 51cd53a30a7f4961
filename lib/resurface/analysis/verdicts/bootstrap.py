"""The hierarchical bootstrap: items, seeds, sources and students resampled, each draw shared wherever the thing drawn is shared."""
from __future__ import annotations

import numpy as np
import pandas as pd

from resurface.analysis.verdicts.judging import Thresholds


def item_resampled_scores(deltas_by_task: list[np.ndarray], n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, runs): each run's mean over tasks of its mean item delta, items resampled with replacement.

    `deltas_by_task[t]` is (runs, items of task t). The same item resample serves every run, so differences
    between runs stay paired on items."""
    total = 0.0
    for d in deltas_by_task:
        n = d.shape[1]
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)
        total = total + counts @ d.T.astype(np.float64) / n
    return total / len(deltas_by_task)


def cell_means(runs: pd.DataFrame, scores: np.ndarray, point: np.ndarray, group: list[str],
               stratum: list[str], rng: np.random.Generator) -> dict:
    """Per group (e.g. student x relation): the mean over strata (source x temperature) of the mean over seeds,
    as a point estimate and as bootstrap replicates with the seeds of each stratum resampled (their deviation
    scaled by sqrt(n / (n - 1)), as in `hierarchical_means`)."""
    out = {}
    n_boot = scores.shape[0]
    for key, g in runs.groupby(group, sort=True, dropna=False):
        est, reps = [], []
        for _, s in g.groupby(stratum, sort=True, dropna=False):
            idx = s.index.to_numpy()
            pick = idx[rng.integers(0, len(idx), (n_boot, len(idx)))]
            drawn = scores[np.arange(n_boot)[:, None], pick].mean(1)
            reps.append(_inflated(scores[:, idx].mean(1), drawn, len(idx)))
            est.append(point[idx].mean())
        out[key if isinstance(key, tuple) else (key,)] = (float(np.mean(est)), np.mean(reps, axis=0))
    return out


def _inflated(center: np.ndarray, resampled: np.ndarray, n: int) -> np.ndarray:
    """A bootstrap of n units underestimates the variance of their mean by (n - 1) / n: scale the resampled
    deviation back up (no variation at all from a single unit)."""
    return center + (np.sqrt(n / (n - 1)) if n > 1 else 0.0) * (resampled - center)


def hierarchical_means(runs: pd.DataFrame, scores: np.ndarray, point: np.ndarray, by: list[str],
                       rng: np.random.Generator) -> tuple[dict, dict, dict]:
    """Means per (student, *by) and pooled over students, with bootstrap replicates that resample every level
    the verdicts generalise over, each draw shared wherever the thing drawn is shared:

    - items: already in `scores` (n_boot, runs), one resample for every run;
    - seeds within a corpus (source, temperature): one draw per corpus, used by every student fine-tuned on it;
    - sources within a group: one draw of source weights per group (e.g. relation), used by every student;
    - students: one draw of student weights, used by every group.
    Each level's resampled deviation is scaled by sqrt(n / (n - 1)) (n: its units), so two seeds or three
    sources do not pass for a precise mean. Returns (cells keyed (student, source, temperature), groups keyed
    (student, *by), pooled keyed (*by,)), each value (point estimate, replicates)."""
    n_boot = scores.shape[0]
    r = runs.assign(_t=runs["temperature"].fillna(-1.0))
    # seeds: one draw per corpus and number of seeds
    picks = {}
    cells = {}
    for (student, source, t), g in r.groupby(["student", "source", "_t"], sort=True):
        idx = g.sort_values("seed").index.to_numpy()
        key = (source, t, len(idx))
        if key not in picks:
            picks[key] = rng.integers(0, len(idx), (n_boot, len(idx)))
        items = scores[:, idx].mean(1)
        drawn = np.take_along_axis(scores[:, idx], picks[key], axis=1).mean(1)
        cells[(student, source, t)] = (float(point[idx].mean()), _inflated(items, drawn, len(idx)))
    # sources within each group: one weight draw per group, over the union of its sources
    groups = {}
    src_weights = {}
    for key, g in r.groupby(["student", *by], sort=True):
        rest = tuple(key[1:])
        strata = sorted({(s, t) for s, t in zip(g["source"], g["_t"])})
        names = sorted({s for s, _ in strata})
        if rest not in src_weights:
            union = sorted(r.loc[(r[by] == pd.Series(rest, index=by)).all(axis=1), "source"].unique())
            w = rng.multinomial(len(union), np.full(len(union), 1 / len(union)), size=n_boot).astype(float)
            src_weights[rest] = dict(zip(union, w.T))
        reps = np.array([cells[(key[0], s, t)][1] for s, t in strata])          # (strata, n_boot)
        w = np.array([src_weights[rest][s] for s, _ in strata])                 # (strata, n_boot)
        plain = reps.mean(0)
        total = w.sum(0)
        weighted = np.where(total > 0, (w * reps).sum(0) / np.where(total > 0, total, 1.0), plain)
        est = float(np.mean([cells[(key[0], s, t)][0] for s, t in strata]))
        groups[key] = (est, _inflated(plain, weighted, len(names)))
    # students: one weight draw, shared by every group; pooled only over groups every student has
    students = sorted(r["student"].unique())
    sw = rng.multinomial(len(students), np.full(len(students), 1 / len(students)), size=n_boot).astype(float).T
    pooled = {}
    for rest in sorted({k[1:] for k in groups}):
        got = [groups.get((s, *rest)) for s in students]
        if any(v is None for v in got):
            continue
        reps = np.array([v[1] for v in got])
        plain = reps.mean(0)
        total = sw.sum(0)
        weighted = (sw * reps).sum(0) / total
        pooled[rest] = (float(np.mean([v[0] for v in got])), _inflated(plain, weighted, len(students)))
    return cells, groups, pooled


def bootstrap_runs(deltas_by_task: list[np.ndarray], th: Thresholds) -> tuple[np.ndarray, np.ndarray, np.random.Generator]:
    """(replicates (n_boot, runs), point estimates (runs,), the generator for the draws that follow)."""
    rng = np.random.default_rng(th.seed)
    scores = item_resampled_scores(deltas_by_task, th.bootstrap, rng)
    return scores, run_means(deltas_by_task), rng


def run_means(deltas_by_task: list[np.ndarray]) -> np.ndarray:
    """Per run: its headline delta, the mean over tasks of each task's mean per-item change."""
    return np.mean([d.mean(1) for d in deltas_by_task], axis=0)


def per_run_paired_se(deltas_by_task: list[np.ndarray]) -> np.ndarray:
    """Per run: the standard error (points) of its headline delta from item noise alone."""
    var = np.sum([d.var(axis=1, ddof=1) / d.shape[1] for d in deltas_by_task], axis=0) / len(deltas_by_task) ** 2
    return np.sqrt(var)
