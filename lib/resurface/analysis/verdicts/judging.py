"""How one comparison is judged: bounds, SESOI, MDE and the outcome (`COMPARISON_RULE`), and t quantiles."""
from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np



COMPARISON_RULE = (
    "Each comparison is a difference of means with one-sided bounds at level alpha / m (Bonferroni over the m "
    "comparisons of one verdict), from a hierarchical bootstrap that resamples every level the claim generalises "
    "over, each draw shared wherever the thing drawn is shared: benchmark items (one resample for every run, so "
    "comparisons stay paired), the seeds of each corpus (one draw for every student fine-tuned on it), the sources "
    "of each relation (one draw of source weights for every student) and the students (one draw for every "
    "relation); each level's resampled deviation is scaled by sqrt(n / (n - 1)) for its n units. The minimum "
    "detectable effect is MDE = (z[1 - alpha/m] + z[power]) x bootstrap SE. A claim `A > B` HOLDS when the lower "
    "bound of A - B is above 0; it FAILS on a significant reversal (the upper bound below 0), or when the data "
    "rule out an effect that matters with the power to see one (the upper bound below the smallest effect of "
    "interest, SESOI, and the MDE at most the SESOI): an underpowered comparison cannot fail for lack of an "
    "effect. A claim `A >= B` (non-inferiority) HOLDS when the lower bound is above -SESOI and FAILS when the "
    "upper bound is below -SESOI. Everything else is INCONCLUSIVE. The bounds and the MDE carry Monte-Carlo "
    "error from the finite bootstrap (estimated from 20 batches of the replicates, and reported): an outcome "
    "that changes when the bounds and the MDE move by 2 Monte-Carlo SEs is INCONCLUSIVE (knife-edge), and so "
    "is a bootstrap without spread (no item changed in any run). A comparison that rests on a single unit at a "
    "level the claim generalises over (one source of a relation, each student's own model counting as a source "
    "of self; one sampling seed per corpus; one student, for the pooled comparisons) has no estimate of that "
    "level's variance: it is INCONCLUSIVE (not replicated) whatever its bounds, and names the level. A "
    "comparison whose runs are missing is NOT ESTIMABLE.")


SCORE_RULE = (
    "One per-item score is the outcome of findings 1 and 2 and of every check that picks or validates their "
    "headline (CAPABILITY_RULE, HEADLINE_RULE, INSTRUMENT_RULE, TRANSFER_RULE, ROBUSTNESS_RULE, PROXY_RULE): "
    "analysis.score, fixed in params before any result. `accuracy`: right or wrong, in points. `logloss`: the "
    "proper score, minus the log of the right choice's probability when the choices' likelihoods are normalised "
    "over the choices, in nats, signed so that a gain is positive; every item contributes how sure the model is, "
    "not only whether it crossed the decision boundary, and a sharper but wrong model loses. Its smallest effect "
    "of interest is analysis.logloss_sesoi_nats. The other score is reported beside it as the secondary outcome, "
    "judged by the same rules with its own instrument check; the resurfacing analysis counts items gained and "
    "lost, in accuracy, whichever score is primary.")


SCORE_KINDS = {"accuracy": ("items", "points"), "logloss": ("logloss", "nats")}


def effect(v: float, sign: str = "+") -> str:
    """An effect for a table cell: two decimals (accuracy points: +0.50), three significant digits below 0.1
    (a log-loss change of a few thousandths of a nat: -0.0104)."""
    if v != v:
        return "nan"
    return format(v, f"{sign}.2f") if abs(v) >= 0.1 or v == 0 else format(v, f"{sign}.3g")


def score_kind(score: str) -> str:
    """SCORE_RULE: the `item_deltas` kind of a score (`items` for accuracy, `logloss` for the proper score)."""
    return SCORE_KINDS[score][0]


def score_unit(score: str) -> str:
    return SCORE_KINDS[score][1]


def other_score(score: str) -> str:
    """SCORE_RULE: the secondary outcome."""
    return next(s for s in SCORE_KINDS if s != score)


@dataclass(frozen=True)
class Thresholds:
    """What the verdicts need to know before any result (params `analysis`)."""
    alpha: float = 0.05
    power: float = 0.8
    sesoi: float = 0.5            # in the score's unit: points of accuracy, nats of log-loss (SCORE_RULE)
    proxy_rho0: float = 0.3
    bootstrap: int = 2000
    seed: int = 0


def _z(p: float) -> float:
    return NormalDist().inv_cdf(p)


NOT_ESTIMABLE = "not estimable"


def _outcome(kind: str, lo: float, hi: float, sesoi: float, mde: float) -> tuple[str, str]:
    """COMPARISON_RULE on a pair of one-sided bounds and the MDE."""
    if kind == "greater":
        if lo > 0:
            return "holds", "the lower bound is above 0"
        if hi < 0:
            return "fails", "a significant reversal"
        if hi < sesoi and mde <= sesoi:
            return "fails", "the data rule out an effect of the SESOI"
        return "inconclusive", "MDE exceeds the SESOI" if mde > sesoi else "the bounds straddle the thresholds"
    if kind == "noninferior":
        if lo > -sesoi:
            return "holds", "the lower bound is above -SESOI"
        if hi < -sesoi:
            return "fails", "the upper bound is below -SESOI"
        return "inconclusive", "the bounds straddle -SESOI"
    raise ValueError(f"unknown comparison kind {kind}")


def monte_carlo_se(boot: np.ndarray, stat, batches: int = 20) -> float:
    """Monte-Carlo standard error of a bootstrap statistic (`stat`: replicates -> number, e.g. a quantile or
    the SD), from its spread over `batches` equal batches of the replicates (the full-sample statistic's SE is
    the batch SE / sqrt(batches))."""
    n = len(boot) // batches
    if n < 5:
        return float("nan")
    per_batch = [stat(b) for b in boot[: n * batches].reshape(batches, n)]
    return float(np.std(per_batch, ddof=1) / np.sqrt(batches))


def not_estimable(why: str) -> dict:
    nan = float("nan")
    return {"estimate": nan, "lower": nan, "upper": nan, "se": nan, "mde": nan, "mc_se": nan,
            "outcome": NOT_ESTIMABLE, "why": why}


def judge(estimate: float, boot: np.ndarray, kind: str, sesoi: float, alpha: float, power: float) -> dict:
    """One comparison (COMPARISON_RULE): estimate, one-sided bounds at `alpha`, bootstrap SE, the MDE as design
    information, the bounds' Monte-Carlo SE, and the outcome."""
    boot = np.asarray(boot, float)
    boot = boot[np.isfinite(boot)]
    if not np.isfinite(estimate) or len(boot) < 20:
        return not_estimable("missing runs")
    se = float(boot.std(ddof=1))
    lo, hi = float(np.quantile(boot, alpha)), float(np.quantile(boot, 1 - alpha))
    k = _z(1 - alpha) + _z(power)
    mde = k * se
    mc = max(monte_carlo_se(boot, lambda b: np.quantile(b, alpha)), monte_carlo_se(boot, lambda b: np.quantile(b, 1 - alpha)))
    mc_mde = k * monte_carlo_se(boot, lambda b: b.std(ddof=1))
    out = {"estimate": float(estimate), "lower": lo, "upper": hi, "se": se, "mde": float(mde), "mc_se": mc,
           "mc_se_mde": mc_mde}
    if se == 0.0:  # every resample the same: nothing varied, so nothing says how precise the estimate is
        return {**out, "mde": float("nan"), "outcome": "inconclusive", "why": "no spread: no item changed in any run"}
    outcome, why = _outcome(kind, lo, hi, sesoi, mde)
    # knife-edge: the outcome must not depend on the bootstrap's own Monte-Carlo error
    if np.isfinite(mc) and np.isfinite(mc_mde) and any(
            _outcome(kind, lo + d, hi + d, sesoi, mde + e)[0] != outcome
            for d in (-2 * mc, 0.0, 2 * mc) for e in (-2 * mc_mde, 0.0, 2 * mc_mde)):
        outcome, why = "inconclusive", (f"knife-edge: within 2 Monte-Carlo SEs of a threshold (bounds {mc:.3g}, "
                                        f"MDE {mc_mde:.3g})")
    return {**out, "outcome": outcome, "why": why}


def combine(outcomes: list[str]) -> str:
    """All hold -> supported; any fails -> not supported (a failed part refutes a conjunction); else
    inconclusive (a not-estimable part included)."""
    if outcomes and all(o == "holds" for o in outcomes):
        return "supported"
    if any(o == "fails" for o in outcomes):
        return "not supported"
    return "inconclusive"


def t_quantile(p: float, dof: int) -> float:
    """Student's t quantile by the Cornish-Fisher expansion around the normal one (within 1 % of the exact
    value from 3 degrees of freedom on, 0.2 % from 5; numpy has no t distribution and the analysis layer imports nothing else)."""
    z = _z(p)
    return (z + (z ** 3 + z) / (4 * dof) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * dof ** 2)
            + (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / (384 * dof ** 3))


def t_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, lower, upper) of a two-sided t interval; NaN bounds for fewer than 2 values."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if len(v) < 2:
        return (float(v.mean()) if len(v) else float("nan")), float("nan"), float("nan")
    half = t_quantile(1 - (1 - level) / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return float(v.mean()), float(v.mean() - half), float(v.mean() + half)
