"""Finding 3 (notebook 04): does self-training erase verbatim memory while capability stays?"""
from __future__ import annotations

import numpy as np
import pandas as pd

from resurface.names import CONTROLS
from resurface.analysis.verdicts.bootstrap import _inflated
from resurface.analysis.verdicts.judging import Thresholds, _z, judge


MEMORIZATION_RULE = (
    "Finding 3, on the canary twin (embedded) or the students (Hub). PRIMARY measure, the paper's: exact "
    "extraction (greedy 32-token suffix from the 32-token prefix, all tokens right) of the MEMORIZED SET, the "
    "held-out sequences the untouched model extracts (dev canaries may guide choices, never the verdict). "
    "SECONDARY measure (planted canaries only): the likelihood advantage of each held-out canary, the "
    "never-planted passages' mean suffix NLL minus the canary's (nats per token, teacher-forced from the same "
    "prefix); it moves where greedy extraction cannot. For each measure: after = mean over sequences of each "
    "sequence's mean over a source's runs (seeds x temperatures); relative drop = 1 - after / before. CIs (95 %) "
    "and one-sided bounds at alpha from a bootstrap that resamples sequences (the same resample for every "
    "source, so comparisons stay paired) and, within each temperature, the seeds (their resampled deviation "
    "scaled by sqrt(n / (n - 1)), n seeds, which removes the bootstrap's variance bias; with two seeds the "
    "seed term still rests on one degree of freedom). Capability: the "
    "headline delta on the TEST items of finding 1, items and seeds resampled (seeds scaled the same way); non-inferior when its one-sided lower "
    "bound is above -margin (analysis.noninferiority_points), inferior when its upper bound is below -margin. "
    "Verdict on `self`, per measure: `supported` when the drop's one-sided lower bound (level alpha) is at least "
    "0.95 and capability is non-inferior; `not supported` when the drop's upper bound is below 0.95 or capability is inferior; "
    "`inconclusive` otherwise. Preconditions, each making a verdict `inconclusive`: something to forget (at "
    "least memorization.min_memorized memorized held-out sequences for extraction; a before level with its "
    "lower 95 % bound above 0 for the advantage) and the validity gate (the share of the model's own BOS-sample "
    "tokens inside a match of 16 or more tokens with any canary) at most 1 %. The finding's verdict is the "
    "primary one. Reported beside it: the same numbers for every other source and control, and exact sign "
    "tests over sequences (untouched vs each source; self vs each other source). On the exact-extraction "
    "measure, a drop's one-sided lower bound is the smaller of the bootstrap's and an exact one: 1 minus the "
    "Clopper-Pearson upper bound (level alpha) on the share of memorized sequences that any of the source's runs "
    "still extracts, over the before level (a bootstrap of sequences none of which is extracted has no spread; "
    "0 of n bounds the share by 1 - alpha^(1/n), so a 95 % drop at alpha 0.05 needs at least 59 sequences). If a "
    "control's drop is not shown to be below 95 % (its upper bound reaches it), the drop is not attributable to "
    "self-training: it may belong to any fine-tuning in this regime.")


def exact_sign_test(wins: int, losses: int) -> float:
    """Two-sided exact binomial p-value for paired binary outcomes (McNemar's exact test on the discordant
    pairs): `wins` pairs went one way, `losses` the other."""
    from math import comb
    n = wins + losses
    if n == 0:
        return 1.0
    k = min(wins, losses)
    p = sum(comb(n, i) for i in range(k + 1)) / 2 ** n
    return float(min(1.0, 2 * p))


def clopper_pearson_upper(k: int, n: int, alpha: float) -> float:
    """One-sided exact upper bound (level alpha) on a binomial rate after k successes in n trials: the p at
    which P(X <= k) = alpha (bisection on the binomial CDF; numpy only)."""
    from math import comb
    if n <= 0:
        return float("nan")
    if k >= n:
        return 1.0
    cdf = lambda p: sum(comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(k + 1))  # noqa: E731
    lo, hi = k / n, 1.0
    for _ in range(80):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) > alpha else (lo, mid)
    return hi


def exact_drop_lower(values: pd.DataFrame, column: str, before: float, alpha: float) -> dict[str, float]:
    """Per source, on a 0/1 measure: the exact one-sided lower bound of the relative drop, 1 - the
    Clopper-Pearson upper bound on the share of sequences that any of the source's runs still scores 1, over
    `before` (conservative: a sequence one seed keeps counts as kept)."""
    kept = values.groupby(["source", "canary_id"])[column].max().groupby("source")
    return {src: 1 - clopper_pearson_upper(int(g.sum()), int(g.size), alpha) / before for src, g in kept}


def source_boot(values: pd.DataFrame, column: str, th: Thresholds) -> dict:
    """Per source: (point, bootstrap replicates) of the mean of `column` over sequences, each sequence first
    averaged over the source's runs. Sequences are resampled once for all sources (paired); within each
    temperature, the seeds are resampled, their deviation scaled by sqrt(n / (n - 1)) (as in the transfer
    bootstrap).

    `values`: one row per (run, sequence) with columns source, temperature, seed, canary_id and `column`; the
    untouched model is a source with one run."""
    rng = np.random.default_rng(th.seed)
    ids = np.sort(values["canary_id"].unique())
    pick = rng.integers(0, len(ids), (th.bootstrap, len(ids)))  # shared by every source: paired
    v = values.assign(temperature=values["temperature"].fillna(-1.0), seed=values["seed"].fillna(-1))
    out = {}
    for source, g in v.groupby("source", sort=True):
        m = g.pivot_table(index=["temperature", "seed"], columns="canary_id", values=column, aggfunc="mean")
        m = m.reindex(columns=ids).astype(float)
        temps = m.index.get_level_values(0).to_numpy()
        reps = []
        for t in np.unique(temps):
            rows = m.to_numpy()[temps == t]
            seeds = rng.integers(0, len(rows), (th.bootstrap, len(rows)))
            # (boot, sequences): seeds resampled, their deviation scaled up (two seeds are not a precise mean)
            per_seq = _inflated(rows.mean(0), rows[seeds].mean(1), len(rows))
            reps.append(np.nanmean(np.take_along_axis(per_seq, pick, axis=1), axis=1))
        point = float(np.mean([np.nanmean(m.to_numpy()[temps == t], axis=0).mean() for t in np.unique(temps)]))
        out[source] = (point, np.mean(reps, axis=0))
    return out


def memorization_verdict(values: pd.DataFrame, column: str, capability: dict, n_memorized: int,
                         gate_share: float, th: Thresholds, margin: float, min_memorized: int,
                         self_source: str, gate_max: float = 0.01, target: float = 0.95) -> dict:
    """Apply MEMORIZATION_RULE.

    `values`: per (run, sequence) the memorization measure `column` (extraction: 0/1 on the memorized set),
    columns source, relation, temperature, seed, canary_id; source `untouched` is the model before fine-tuning.
    `capability[source]`: (point, bootstrap replicates) of the headline delta in points."""
    rates = source_boot(values, column, th) if len(values) else {}
    relation = values.groupby("source")["relation"].first().to_dict() if len(values) else {}
    q = (1 - 0.95) / 2
    z = _z(1 - th.alpha) + _z(th.power)
    binary = len(values) > 0 and bool(values[column].dropna().isin([0, 1]).all())
    if binary:  # a share of sequences: the scaled seed deviation must not carry a replicate outside [0, 1]
        rates = {src: (est, np.clip(boot, 0.0, 1.0)) for src, (est, boot) in rates.items()}
    before, bboot = rates.get("untouched", (float("nan"), np.full(th.bootstrap, np.nan)))
    exact = exact_drop_lower(values, column, before, th.alpha) if binary and before > 0 else {}
    per_source = {}
    for source, (est, boot) in rates.items():
        if source == "untouched":
            continue
        with np.errstate(divide="ignore", invalid="ignore"):
            drop, dboot = 1 - np.float64(est) / before, 1 - boot / bboot
        dboot = dboot[np.isfinite(dboot)]
        cap = capability.get(source)
        cap_j = (judge(cap[0], cap[1], "noninferior", margin, th.alpha, th.power) if cap is not None
                 else judge(float("nan"), np.array([]), "noninferior", margin, th.alpha, th.power))
        ok = len(dboot) > 1
        per_source[source] = {
            "relation": relation.get(source), "before": before, "after": est,
            "after_ci": [float(np.quantile(boot, q)), float(np.quantile(boot, 1 - q))],
            "relative_drop": float(drop),
            "drop_ci": [float(np.quantile(dboot, q)), float(np.quantile(dboot, 1 - q))] if ok else [np.nan] * 2,
            "drop_upper": float(np.quantile(dboot, 1 - th.alpha)) if ok else float("nan"),
            "drop_lower": (min(float(np.quantile(dboot, th.alpha)), exact.get(source, np.inf)) if ok
                           else float("nan")),
            **({"drop_lower_exact": float(exact[source])} if source in exact else {}),
            "drop_mde": float(z * dboot.std(ddof=1)) if ok else float("nan"), "capability": cap_j,
            "capability_ci": ([float(np.quantile(cap[1], q)), float(np.quantile(cap[1], 1 - q))]
                              if cap is not None else [float("nan")] * 2)}
    why, verdict = [], "inconclusive"
    s = per_source.get(self_source)
    before_lo = float(np.quantile(bboot, q)) if np.isfinite(bboot).all() else float("nan")
    if n_memorized < min_memorized:
        why.append(f"only {n_memorized} memorized held-out sequences (the rule needs {min_memorized})")
    elif not before_lo > 0:
        why.append("nothing to forget: the untouched model's level is not above 0")
    if not gate_share <= gate_max:
        why.append(f"contaminated: {100 * gate_share:.2f} % of the model's own sample tokens repeat a canary "
                   f"(gate {100 * gate_max:g} %)")
    if s is None and not why:
        why.append("no self-training runs")
    elif not why:
        cap = s["capability"]["outcome"]
        if s["drop_lower"] >= target and cap == "holds":
            verdict = "supported"
        elif s["drop_upper"] < target or cap == "fails":
            verdict = "not supported"
        else:
            why.append("the drop or the capability bound straddles its threshold")
    # the rule's last sentence, computed: controls whose drop is not shown below the target (upper bound)
    regime = sorted(src for src, r in per_source.items() if r["relation"] in CONTROLS and r["drop_upper"] >= target)
    return {"verdict": verdict, "why": "; ".join(why), "rule": MEMORIZATION_RULE, "measure": column,
            "controls_also_drop": regime,
            "attribution": ("not attributable to self-training: " + ", ".join(regime) + " may drop by the target "
                            "too (upper bound at or above it), so the drop may belong to any fine-tuning here"
                            if regime else "every control's drop is shown below the target"),
            "target_drop": target, "noninferiority_points": margin, "n_memorized": int(n_memorized),
            "before": float(before), "before_ci": [before_lo, float(np.quantile(bboot, 1 - q))]
            if np.isfinite(bboot).all() else [float("nan")] * 2, "gate_share": float(gate_share), "gate_max": gate_max,
            "per_source": per_source}


def paired_sign_tests(values: pd.DataFrame, column: str, self_source: str) -> pd.DataFrame:
    """Exact sign tests over sequences, on each sequence's mean of `column` over a source's runs: the
    untouched model vs each source, and self vs each other source (ties drop out)."""
    per_seq = values.groupby(["source", "canary_id"])[column].mean().unstack("source")
    rows = []

    def test(a: str, b: str):
        d = per_seq[a] - per_seq[b]
        w, l_ = int((d > 0).sum()), int((d < 0).sum())
        rows.append({"comparison": f"{a} vs {b}", "first_higher": w, "second_higher": l_,
                     "p_exact": exact_sign_test(w, l_)})

    others = [c for c in per_seq.columns if c != "untouched"]
    if "untouched" in per_seq.columns:
        for src in others:
            test("untouched", src)
    if self_source in per_seq.columns:
        for src in others:
            if src != self_source:
                test(self_source, src)
    return pd.DataFrame(rows)
