"""Confidence intervals and pre-registered verdict rules."""
from __future__ import annotations

import numpy as np


def bootstrap_ci(values, n_boot: int = 4000, seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """Mean and percentile bootstrap CI of the mean."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return float("nan"), float("nan"), float("nan")
    if len(v) == 1:
        return float(v[0]), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), (n_boot, len(v)))].mean(axis=1)
    a = (1 - level) / 2
    return float(v.mean()), float(np.quantile(means, a)), float(np.quantile(means, 1 - a))


def bootstrap_diff_ci(a, b, n_boot: int = 4000, seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """mean(a) - mean(b) with a percentile bootstrap CI (groups resampled independently)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or len(b) < 2:
        return float(a.mean() - b.mean()) if len(a) and len(b) else float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    d = (a[rng.integers(0, len(a), (n_boot, len(a)))].mean(1) - b[rng.integers(0, len(b), (n_boot, len(b)))].mean(1))
    q = (1 - level) / 2
    return float(a.mean() - b.mean()), float(np.quantile(d, q)), float(np.quantile(d, 1 - q))


TRANSFER_RULE = (
    "Each fine-tuning run gets one headline score: its mean improvement over the untouched student on the "
    "accuracy tasks, in points. Per relation we report the mean over runs with a 95 % bootstrap CI. "
    "`supported` when the means are ordered self >= same_lineage >= stronger_different >= cross_family AND "
    "the CI of (self - cross_family) lies above zero; `not supported` when the CI of (self - cross_family) "
    "lies below zero, or any adjacent pair in that order is reversed with its CI excluding zero; "
    "`inconclusive` otherwise."
)

ORDER = ["self", "same_lineage", "stronger_different", "cross_family"]


def transfer_verdict(per_run: dict[str, list[float]], seed: int = 0) -> dict:
    """Apply TRANSFER_RULE to the headline scores of each relation."""
    present = [r for r in ORDER if len(per_run.get(r, [])) > 0]
    summary = {r: dict(zip(("mean", "ci_low", "ci_high"), bootstrap_ci(per_run[r], seed=seed)), n=len(per_run[r]))
               for r in per_run}
    pairs = {}
    for a, b in zip(present, present[1:]):
        pairs[f"{a} - {b}"] = dict(zip(("diff", "ci_low", "ci_high"), bootstrap_diff_ci(per_run[a], per_run[b], seed=seed)))
    if "self" in present and "cross_family" in present:
        pairs["self - cross_family"] = dict(zip(("diff", "ci_low", "ci_high"),
                                                bootstrap_diff_ci(per_run["self"], per_run["cross_family"], seed=seed)))
    ordered = all(summary[a]["mean"] >= summary[b]["mean"] for a, b in zip(present, present[1:]))
    sc = pairs.get("self - cross_family")
    reversed_sig = any(p["ci_high"] < 0 for k, p in pairs.items() if k != "self - cross_family")
    if sc is None or len(present) < len(ORDER):
        verdict = "inconclusive"
    elif ordered and sc["ci_low"] > 0:
        verdict = "supported"
    elif sc["ci_high"] < 0 or reversed_sig:
        verdict = "not supported"
    else:
        verdict = "inconclusive"
    observed = sorted(present, key=lambda r: -summary[r]["mean"])
    return {"verdict": verdict, "rule": TRANSFER_RULE, "per_relation": summary, "differences": pairs,
            "ordering_observed": observed, "ordering_claimed": ORDER}
