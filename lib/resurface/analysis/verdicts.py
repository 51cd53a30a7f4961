"""Pre-registered decision rules for the fair test (findings 1 and 2, the recipe, the zoo's checks).

Everything here is numpy only: it reads numbers that the builds produced (per-item scores, per-document
bits, per-run deltas) and returns verdicts with their effect sizes, confidence bounds and minimum
detectable effects. The rules are written out as text (the `*_RULE` strings) and printed in the notebooks
*before* the results; tests apply them to synthetic data where the right answer is known.

Two ideas run through all of it:
- **Items and seeds are both sources of noise.** A benchmark delta is measured on a finite set of items,
  shared by every run, and on a finite set of fine-tuning seeds. Confidence bounds come from a hierarchical
  bootstrap that resamples items (the same resample for every run, so comparisons stay paired) and, within
  each (student, source, temperature) cell, the seeds.
- **An underpowered comparison is `inconclusive`, never a failure.** A claim `A > B` *holds* when the
  one-sided lower bound of A - B is above zero; it *fails* when the data rule out an effect that would matter
  (the upper bound below the smallest effect of interest, SESOI, stated in params before any result, with an
  MDE no larger than the SESOI), or show a significant reversal (the upper bound below zero). Every
  comparison reports its minimum detectable effect (MDE) at the stated power.
"""
from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import pandas as pd

# ------------------------------------------------------------------ the rules, as printed in the notebooks

COMPARISON_RULE = (
    "Each comparison is a difference of means with a one-sided bound at level alpha / m (Bonferroni over the "
    "m comparisons of one verdict), from a hierarchical bootstrap that resamples benchmark items (shared by "
    "all runs) and seeds (within each student x source x temperature cell). A claim `A > B` HOLDS when the "
    "lower bound of A - B is above 0, FAILS when the upper bound is below the smallest effect of interest "
    "(SESOI) while its MDE does not exceed the SESOI (the data rule out an effect that matters, with the power "
    "to see one), or when the upper bound is below 0 (a significant reversal), and is INCONCLUSIVE otherwise. A "
    "claim `A >= B` (non-inferiority) HOLDS when the lower bound is above -SESOI and FAILS when the upper bound "
    "is below -SESOI. The minimum detectable effect is MDE = (z[1 - alpha/m] + z[power]) x bootstrap SE; a "
    "comparison whose MDE exceeds the SESOI cannot fail for lack of an effect, only by a significant reversal. "
    "A comparison whose bootstrap has no spread at all (no item changed in any run) is INCONCLUSIVE: its SE of 0 "
    "would claim a power that the data cannot show.")

TRANSFER_RULE = (
    "Finding 1, per student and pooled over students (the pooled verdict is the headline). Outcome: the "
    "headline delta of a fine-tuning run = mean over the headline tasks of (accuracy after - accuracy of the "
    "untouched student) on the TEST items, in points. Relations: self; same_lineage (pooled over the weaker, "
    "equal and stronger members and checkpoints of the student's lineage); stronger_different; cross_family. "
    "A source whose label fails its zoo check for a student leaves that student's verdict. Four comparisons "
    "(m = 4): (1) self-training helps: self > 0; (2) self >= same_lineage; (3) same_lineage > "
    "stronger_different; (4) cross-family is lowest: min(self, same_lineage, stronger_different) > "
    "cross_family. `supported` when all four hold, `not supported` when any fails, `inconclusive` otherwise. "
    "Relation beyond strength (reported, not part of the verdict): the per-run delta regressed on the source's "
    "held-out bits/byte minus the student's and an indicator of the student's own lineage (self or "
    "same_lineage); the lineage coefficient is judged like `A > B`.")

PROXY_RULE = (
    "Finding 2. One point per (student, source, temperature): the delta averaged over seeds, against each "
    "score computed before fine-tuning on the seed-0 corpus. Association = Spearman correlation with the "
    "student, the relation and the temperature partialled out (ranks residualised on their indicators), 95 % "
    "bootstrap CI over points. A score PREDICTS when its CI lies entirely above +rho0 or below -rho0, FAILS "
    "TO PREDICT when its CI lies inside (-rho0, +rho0) (equivalence), and is INCONCLUSIVE otherwise; rho0 is "
    "stated in params. `supported` (intrinsic proxies fail) when every intrinsic score fails to predict; "
    "`not supported` when any intrinsic score predicts; `inconclusive` otherwise. The relational score is "
    "judged the same way and reported beside them.")

RECIPE_RULE = (
    "The recipe (fine-tuning schedule and budget) of the transfer matrix is the one under which the real-text "
    "control gains most on the DEV items (mean headline delta over the grid's students and seeds). Only the "
    "control is looked at: never self, lineage or any relational ordering. Ties (equal to 1e-9) go to the "
    "smaller budget, then to the schedule listed first in params. Sampling temperatures are fixed in params "
    "and not chosen; T = 1.0 is always among them.")

CAPABILITY_RULE = (
    "A task enters the headline only if it rises along the lineage on the DEV items: every step of the "
    "capability axis (earlier checkpoint -> later checkpoint -> final -> larger member) improves its accuracy "
    "by more than the step's paired standard error. A task that does not is reported and left out. If no task "
    "passes, every accuracy task is reported, and no verdict of findings 1 and 2 can be more than "
    "`inconclusive`: the benchmarks do not measure what a resurfaced capability would change.")

NO_CAPABILITY = "no benchmark task rose along the capability axis (CAPABILITY_RULE)"


def without_capability(verdict: dict, axis_ok: bool) -> dict:
    """CAPABILITY_RULE's last sentence, applied to a finished verdict."""
    if axis_ok:
        return verdict
    return {**verdict, "verdict": "inconclusive", "verdict_before_capability_rule": verdict["verdict"],
            "why": NO_CAPABILITY}

LABEL_RULE = (
    "Every relation label is checked per student on held-out lineage text (documents no benchmark uses), as "
    "source minus student bits per byte with a 95 % bootstrap CI over documents: a weaker same-lineage source "
    "must be worse (CI above 0), a stronger one better (CI below 0), an equal-strength sibling within "
    "+-tolerance (CI inside it), and stronger_different better (CI below 0). Cross-family needs no strength: its "
    "label is structural (another architecture and tokenizer). A source that fails its check leaves that "
    "student's verdict.")


# ------------------------------------------------------------------ comparisons


@dataclass(frozen=True)
class Thresholds:
    """What the verdicts need to know before any result (params `analysis`)."""
    alpha: float = 0.05
    power: float = 0.8
    sesoi: float = 0.5            # points of accuracy
    proxy_rho0: float = 0.3
    bootstrap: int = 2000
    seed: int = 0


def _z(p: float) -> float:
    return NormalDist().inv_cdf(p)


def judge(estimate: float, boot: np.ndarray, kind: str, sesoi: float, alpha: float, power: float) -> dict:
    """One comparison: estimate, one-sided bounds at `alpha`, bootstrap SE, MDE and outcome."""
    boot = np.asarray(boot, float)
    boot = boot[np.isfinite(boot)]
    if not np.isfinite(estimate) or len(boot) < 20:
        return {"estimate": float(estimate), "lower": float("nan"), "upper": float("nan"), "se": float("nan"),
                "mde": float("nan"), "outcome": "inconclusive", "why": "missing data"}
    se = float(boot.std(ddof=1))
    lo, hi = float(np.quantile(boot, alpha)), float(np.quantile(boot, 1 - alpha))
    mde = (_z(1 - alpha) + _z(power)) * se
    if se == 0.0:  # every resample the same: nothing varied, so nothing says how precise the estimate is
        return {"estimate": float(estimate), "lower": lo, "upper": hi, "se": se, "mde": float("nan"),
                "outcome": "inconclusive", "why": "no spread: no item changed in any run"}
    # COMPARISON_RULE: a claim fails on a significant reversal, or when the data rule out the SESOI with the
    # power to see it; a comparison whose MDE exceeds the SESOI cannot fail for lack of an effect
    powered = mde <= sesoi
    if kind == "greater":
        reversed_, absent = hi < 0, hi < sesoi and powered
        outcome = "holds" if lo > 0 else "fails" if reversed_ or absent else "inconclusive"
    elif kind == "noninferior":
        reversed_, absent = hi < -sesoi, False
        outcome = "holds" if lo > -sesoi else "fails" if reversed_ else "inconclusive"
    else:
        raise ValueError(f"unknown comparison kind {kind}")
    why = {"holds": "bound clears the threshold",
           "fails": "a significant reversal" if reversed_ else "the data rule out an effect of the SESOI",
           "inconclusive": "MDE exceeds the SESOI" if mde > sesoi else "the CI straddles the thresholds"}[outcome]
    return {"estimate": float(estimate), "lower": lo, "upper": hi, "se": se, "mde": float(mde),
            "outcome": outcome, "why": why}


def combine(outcomes: list[str]) -> str:
    """All hold -> supported; any fails -> not supported; else inconclusive."""
    if outcomes and all(o == "holds" for o in outcomes):
        return "supported"
    if any(o == "fails" for o in outcomes):
        return "not supported"
    return "inconclusive"


# ------------------------------------------------------------------ the hierarchical bootstrap


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
    as a point estimate and as bootstrap replicates with the seeds of each stratum resampled."""
    out = {}
    n_boot = scores.shape[0]
    for key, g in runs.groupby(group, sort=True, dropna=False):
        est, reps = [], []
        for _, s in g.groupby(stratum, sort=True, dropna=False):
            idx = s.index.to_numpy()
            pick = idx[rng.integers(0, len(idx), (n_boot, len(idx)))]
            reps.append(scores[np.arange(n_boot)[:, None], pick].mean(1))
            est.append(point[idx].mean())
        out[key if isinstance(key, tuple) else (key,)] = (float(np.mean(est)), np.mean(reps, axis=0))
    return out


# ------------------------------------------------------------------ finding 1

RELATIONS = ("self", "same_lineage", "stronger_different", "cross_family")
FINDING1_COMPARISONS = ("self_training_helps", "self_at_least_same_lineage", "same_lineage_beats_stronger_different",
                        "cross_family_lowest")


def _finding1_comparisons(means: dict[str, tuple[float, np.ndarray]], th: Thresholds) -> dict:
    m = len(FINDING1_COMPARISONS)
    a = th.alpha / m
    zero = (0.0, np.zeros_like(next(iter(means.values()))[1])) if means else None

    def diff(x, y):
        if x not in means or (y != "zero" and y not in means):
            return float("nan"), np.array([])
        ex, bx = means[x]
        ey, by = zero if y == "zero" else means[y]
        return ex - ey, bx - by

    out = {"self_training_helps": judge(*diff("self", "zero"), "greater", th.sesoi, a, th.power),
           "self_at_least_same_lineage": judge(*diff("self", "same_lineage"), "noninferior", th.sesoi, a, th.power),
           "same_lineage_beats_stronger_different": judge(*diff("same_lineage", "stronger_different"), "greater",
                                                          th.sesoi, a, th.power)}
    others = [r for r in ("self", "same_lineage", "stronger_different") if r in means]
    if "cross_family" in means and len(others) == 3:
        est = min(means[r][0] for r in others) - means["cross_family"][0]
        boot = np.min([means[r][1] for r in others], axis=0) - means["cross_family"][1]
        out["cross_family_lowest"] = judge(est, boot, "greater", th.sesoi, a, th.power)
    else:
        out["cross_family_lowest"] = judge(float("nan"), np.array([]), "greater", th.sesoi, a, th.power)
    return out


def transfer_verdict(runs: pd.DataFrame, deltas_by_task: list[np.ndarray], th: Thresholds,
                     strength_gap: np.ndarray | None = None) -> dict:
    """Apply TRANSFER_RULE.

    `runs`: one row per fine-tuning run (index 0..R-1) with student, relation, source, temperature, seed and a
    boolean `in_verdict` (False for runs whose label failed its zoo check, and for the controls). `deltas_by_task`:
    per headline task, the (R, items) per-item deltas in points. `strength_gap`: per run, source minus student
    held-out bits/byte (NaN for the controls), for the relation-beyond-strength analysis."""
    runs = runs.reset_index(drop=True)
    rng = np.random.default_rng(th.seed)
    scores = item_resampled_scores(deltas_by_task, th.bootstrap, rng)
    point = np.mean([d.mean(1) for d in deltas_by_task], axis=0)
    keep = runs[runs["in_verdict"] & runs["relation"].isin(RELATIONS)]
    cells = cell_means(keep, scores, point, ["student", "relation"], ["source", "temperature"], rng)
    students = sorted(keep["student"].unique())
    per_student, summary = {}, []
    for s in students:
        means = {rel: v for (st, rel), v in cells.items() if st == s}
        comps = _finding1_comparisons(means, th)
        per_student[s] = {"comparisons": comps, "verdict": combine([c["outcome"] for c in comps.values()])}
    pooled_means = {}
    for rel in RELATIONS:
        got = [cells[(s, rel)] for s in students if (s, rel) in cells]
        if len(got) == len(students) and got:  # pooled only over students that have the relation
            pooled_means[rel] = (float(np.mean([g[0] for g in got])), np.mean([g[1] for g in got], axis=0))
    pooled = _finding1_comparisons(pooled_means, th)
    q = (1 - 0.95) / 2
    for (s, rel), (est, boot) in sorted(cells.items()):
        summary.append({"student": s, "relation": rel, "mean": est, "ci_low": float(np.quantile(boot, q)),
                        "ci_high": float(np.quantile(boot, 1 - q)), "se": float(boot.std(ddof=1)),
                        "n_runs": int(((keep["student"] == s) & (keep["relation"] == rel)).sum())})
    for rel, (est, boot) in pooled_means.items():
        summary.append({"student": "pooled", "relation": rel, "mean": est, "ci_low": float(np.quantile(boot, q)),
                        "ci_high": float(np.quantile(boot, 1 - q)), "se": float(boot.std(ddof=1)),
                        "n_runs": int((keep["relation"] == rel).sum())})
    out = {"verdict": combine([c["outcome"] for c in pooled.values()]), "rule": TRANSFER_RULE,
           "comparison_rule": COMPARISON_RULE, "thresholds": th.__dict__, "pooled": pooled,
           "per_student": per_student, "per_relation": summary,
           "ordering_observed": [r for r, _ in sorted(pooled_means.items(), key=lambda kv: -kv[1][0])],
           "ordering_claimed": list(RELATIONS)}
    if strength_gap is not None:
        out["beyond_strength"] = beyond_strength(runs, scores, point, np.asarray(strength_gap, float), th)
    return out


def beyond_strength(runs: pd.DataFrame, scores: np.ndarray, point: np.ndarray, gap: np.ndarray,
                    th: Thresholds) -> dict:
    """Delta ~ 1 + per-student intercepts + gap + own-lineage indicator, by least squares, per item resample."""
    sel = (runs["in_verdict"] & runs["relation"].isin(RELATIONS)).to_numpy() & np.isfinite(gap)
    r = runs[sel]
    if len(r) < 6 or r["relation"].isin(["self", "same_lineage"]).all() or not r["relation"].isin(
            ["self", "same_lineage"]).any():
        return {"lineage_coefficient": judge(float("nan"), np.array([]), "greater", th.sesoi, th.alpha, th.power)}
    students = sorted(r["student"].unique())
    x = np.column_stack([(r["student"] == s).to_numpy(float) for s in students]
                        + [gap[sel], r["relation"].isin(["self", "same_lineage"]).to_numpy(float)])
    pinv = np.linalg.pinv(x)
    beta = pinv @ point[sel]
    boot = (pinv @ scores[:, sel].T)  # (coefficients, n_boot)
    return {"lineage_coefficient": judge(beta[-1], boot[-1], "greater", th.sesoi, th.alpha, th.power),
            "gap_slope_points_per_bpb": {"estimate": float(beta[-2]), "ci_low": float(np.quantile(boot[-2], 0.025)),
                                         "ci_high": float(np.quantile(boot[-2], 0.975))},
            "n_runs": int(sel.sum())}


def per_run_paired_se(deltas_by_task: list[np.ndarray]) -> np.ndarray:
    """Per run: the standard error (points) of its headline delta from item noise alone."""
    var = np.sum([d.var(axis=1, ddof=1) / d.shape[1] for d in deltas_by_task], axis=0) / len(deltas_by_task) ** 2
    return np.sqrt(var)


# ------------------------------------------------------------------ finding 2


def _rank(v: np.ndarray) -> np.ndarray:
    return pd.Series(v).rank(method="average").to_numpy(float)


def partial_spearman(x: np.ndarray, y: np.ndarray, covariates: np.ndarray) -> float:
    """Spearman correlation of x and y after regressing both ranks on the covariates (with an intercept)."""
    c = np.column_stack([np.ones(len(x)), covariates]) if covariates.size else np.ones((len(x), 1))
    rx, ry = _rank(x), _rank(y)
    ex = rx - c @ np.linalg.lstsq(c, rx, rcond=None)[0]
    ey = ry - c @ np.linalg.lstsq(c, ry, rcond=None)[0]
    den = np.sqrt((ex @ ex) * (ey @ ey))
    return float(ex @ ey / den) if den > 1e-12 else float("nan")


def _dummies(df: pd.DataFrame, cols: list[str]) -> np.ndarray:
    parts = []
    for col in cols:
        levels = sorted(df[col].astype(str).unique())
        parts += [(df[col].astype(str) == lv).to_numpy(float) for lv in levels[1:]]
    return np.column_stack(parts) if parts else np.empty((len(df), 0))


def proxy_association(points: pd.DataFrame, score: str, outcome: str, covariates: list[str], th: Thresholds) -> dict:
    d = points[[score, outcome, *covariates]].dropna()
    n = len(d)
    if n < 6:
        return {"n": n, "rho": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "mde": float("nan"),
                "outcome": "inconclusive"}
    cov = _dummies(d, covariates)
    x, y = d[score].to_numpy(float), d[outcome].to_numpy(float)
    rho = partial_spearman(x, y, cov)
    rng = np.random.default_rng(th.seed)
    boot = []
    for _ in range(th.bootstrap):
        i = rng.integers(0, n, n)
        boot.append(partial_spearman(x[i], y[i], cov[i]))
    boot = np.asarray(boot)
    boot = boot[np.isfinite(boot)]
    if len(boot) < 20 or not np.isfinite(rho):  # the covariates leave (almost) nothing to correlate
        return {"n": n, "rho": rho, "ci_low": float("nan"), "ci_high": float("nan"), "mde": float("nan"),
                "outcome": "inconclusive"}
    lo, hi = float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))
    # the correlation detectable with the stated power (Fisher z, n minus the partialled covariates)
    dof = max(1, n - 3 - cov.shape[1])
    mde = float(np.tanh((_z(1 - th.alpha / 2) + _z(th.power)) / np.sqrt(dof)))
    r0 = th.proxy_rho0
    outcome_ = ("predicts" if lo > r0 or hi < -r0 else "fails to predict" if -r0 < lo and hi < r0
                else "inconclusive")
    return {"n": n, "rho": rho, "ci_low": lo, "ci_high": hi, "mde": mde, "outcome": outcome_}


def proxy_verdict(points: pd.DataFrame, scores: dict[str, str], outcome: str, covariates: list[str],
                  th: Thresholds) -> dict:
    """Apply PROXY_RULE. `scores`: name -> 'intrinsic' or 'relational'."""
    assoc = {s: {"type": kind, **proxy_association(points, s, outcome, covariates, th)} for s, kind in scores.items()}
    intrinsic = [a["outcome"] for a in assoc.values() if a["type"] == "intrinsic"]
    if intrinsic and all(o == "fails to predict" for o in intrinsic):
        verdict = "supported"
    elif any(o == "predicts" for o in intrinsic):
        verdict = "not supported"
    else:
        verdict = "inconclusive"
    return {"verdict": verdict, "rule": PROXY_RULE, "thresholds": th.__dict__, "associations": assoc,
            "covariates": covariates, "n_points": int(len(points))}


# ------------------------------------------------------------------ the recipe


def choose_recipe(grid: pd.DataFrame, schedules: list[str]) -> dict:
    """Apply RECIPE_RULE to the grid's runs (columns relation, schedule, budget, headline_delta)."""
    ctrl = grid[grid["relation"] == "real_text"]
    if ctrl.empty:
        raise ValueError("the recipe grid has no real-text control runs: the rule cannot choose")
    gains = ctrl.groupby(["schedule", "budget"])["headline_delta"].mean().reset_index()
    gains["order"] = gains["schedule"].map({s: i for i, s in enumerate(schedules)})
    best = gains["headline_delta"].max()
    tied = gains[gains["headline_delta"] >= best - 1e-9].sort_values(["budget", "order"])
    pick = tied.iloc[0]
    return {"rule": RECIPE_RULE, "schedule": str(pick["schedule"]), "budget": int(pick["budget"]),
            "real_text_dev_gain": float(pick["headline_delta"]),
            "gains": gains.drop(columns="order").to_dict("records")}


# ------------------------------------------------------------------ the zoo's checks


def capability_axis(axis: list[str], items: dict[str, dict[str, list[float]]], tasks: list[str]) -> pd.DataFrame:
    """Apply CAPABILITY_RULE. `axis`: model refs from weakest to strongest; `items[model][task]`: per-item scores.

    One row per (task, step) with the rise in points, its paired SE, and whether the task passes overall."""
    rows = []
    for t in tasks:
        for a, b in zip(axis, axis[1:]):
            x, y = np.asarray(items[a][t], float), np.asarray(items[b][t], float)
            d = y - x
            se = 100 * d.std(ddof=1) / np.sqrt(len(d))
            rows.append({"task": t, "from": a, "to": b, "acc_from": 100 * x.mean(), "acc_to": 100 * y.mean(),
                         "rise": 100 * d.mean(), "paired_se": se, "step_ok": bool(100 * d.mean() > se)})
    df = pd.DataFrame(rows)
    if not df.empty:
        df["task_in_headline"] = df.groupby("task")["step_ok"].transform("all")
    return df


def bpb_gap(bits_src: np.ndarray, bits_student: np.ndarray, n_bytes: np.ndarray, n_boot: int = 2000,
            seed: int = 0) -> dict:
    """Source minus student bits per byte over the same documents, with a bootstrap CI over documents."""
    bits_src, bits_student, n_bytes = (np.asarray(v, float) for v in (bits_src, bits_student, n_bytes))
    est = bits_src.sum() / n_bytes.sum() - bits_student.sum() / n_bytes.sum()
    rng = np.random.default_rng(seed)
    i = rng.integers(0, len(n_bytes), (n_boot, len(n_bytes)))
    b = n_bytes[i].sum(1)
    boot = bits_src[i].sum(1) / b - bits_student[i].sum(1) / b
    return {"gap": float(est), "ci_low": float(np.quantile(boot, 0.025)), "ci_high": float(np.quantile(boot, 0.975))}


def label_ok(strength: str, gap: dict, tolerance: float) -> bool:
    """Apply LABEL_RULE to one (student, source): `strength` is weaker / equal / stronger / stronger_different
    / cross / self."""
    if strength in ("weaker",):
        return gap["ci_low"] > 0
    if strength in ("stronger", "stronger_different"):
        return gap["ci_high"] < 0
    if strength == "equal":
        return -tolerance < gap["ci_low"] and gap["ci_high"] < tolerance
    return True  # self (gap 0) and cross-family (structural label)


# ------------------------------------------------------------------ finding 3

MEMORIZATION_RULE = (
    "Finding 3, on the canary twin (embedded) or the students (Hub). PRIMARY measure, the paper's: exact "
    "extraction (greedy 32-token suffix from the 32-token prefix, all tokens right) of the MEMORIZED SET, the "
    "held-out sequences the untouched model extracts (dev canaries may guide choices, never the verdict). "
    "SECONDARY measure (planted canaries only): the likelihood advantage of each held-out canary, the "
    "never-planted passages' mean suffix NLL minus the canary's (nats per token, teacher-forced from the same "
    "prefix); it moves where greedy extraction cannot. For each measure: after = mean over sequences of each "
    "sequence's mean over a source's runs (seeds x temperatures); relative drop = 1 - after / before. CIs (95 %) "
    "and one-sided bounds at alpha from a bootstrap that resamples sequences (the same resample for every "
    "source, so comparisons stay paired) and, within each temperature, the seeds. Capability: the headline "
    "delta on the TEST items of finding 1, items and seeds resampled; non-inferior when its one-sided lower "
    "bound is above -margin (analysis.noninferiority_points), inferior when its upper bound is below -margin. "
    "Verdict on `self`, per measure: `supported` when the drop's point estimate is at least 0.95 and capability "
    "is non-inferior; `not supported` when the drop's upper bound is below 0.95 or capability is inferior; "
    "`inconclusive` otherwise. Preconditions, each making a verdict `inconclusive`: something to forget (at "
    "least memorization.min_memorized memorized held-out sequences for extraction; a before level with its "
    "lower 95 % bound above 0 for the advantage) and the validity gate (the share of the model's own BOS-sample "
    "tokens inside a match of 16 or more tokens with any canary) at most 1 %. The finding's verdict is the "
    "primary one. Reported beside it: the same numbers for every other source and control, and exact sign "
    "tests over sequences (untouched vs each source; self vs each other source). If a control also drops by "
    "95 %, the drop belongs to this fine-tuning regime, not to self-training alone.")


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


def source_boot(values: pd.DataFrame, column: str, th: Thresholds) -> dict:
    """Per source: (point, bootstrap replicates) of the mean of `column` over sequences, each sequence first
    averaged over the source's runs. Sequences are resampled once for all sources (paired); within each
    temperature, the seeds are resampled.

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
            per_seq = rows[seeds].mean(1)  # (boot, sequences): seeds resampled
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
    before, bboot = rates.get("untouched", (float("nan"), np.full(th.bootstrap, np.nan)))
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
        if s["relative_drop"] >= target and cap == "holds":
            verdict = "supported"
        elif s["drop_upper"] < target or cap == "fails":
            verdict = "not supported"
        else:
            why.append("the drop or the capability bound straddles its threshold")
    return {"verdict": verdict, "why": "; ".join(why), "rule": MEMORIZATION_RULE, "measure": column,
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
