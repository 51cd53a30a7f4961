"""Pre-registered decision rules for the fair test (findings 1 and 2, the recipe, the zoo's checks).

Everything here is numpy only: it reads numbers that the builds produced (per-item scores, per-document
bits, per-run deltas) and returns verdicts with their effect sizes, confidence bounds and minimum
detectable effects. The rules are written out as text (the `*_RULE` strings) and printed in the notebooks
*before* the results; tests apply them to synthetic data where the right answer is known.

Three ideas run through all of it:
- **The instrument comes first.** No relational verdict is read unless the positive controls (real text,
  replay) moved the same measurement on test items (`instrument_check`).
- **Every level a claim generalises over is a source of noise.** A benchmark delta is measured on a finite set
  of items, fine-tuning seeds, sources per relation and students. Confidence bounds come from a hierarchical
  bootstrap (`hierarchical_means`) that resamples each, drawing once wherever the thing drawn is shared (one
  item resample for every run, one seed draw per corpus for every student fine-tuned on it).
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

from resurface.names import CONTROLS, SOURCE_RELATIONS as RELATIONS  # noqa: F401 (the rules' vocabulary)

# ------------------------------------------------------------------ the rules, as printed in the notebooks

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

TRANSFER_RULE = (
    "Finding 1, per student and pooled over students (the pooled verdict is the headline). Outcome: the "
    "headline delta of a fine-tuning run = mean over the headline tasks of (accuracy after - accuracy of the "
    "untouched student) on the TEST items, in points, at the primary temperature (analysis.primary_temperature; "
    "the other temperatures are a secondary analysis judged the same way). Relations: self; same_lineage, the "
    "members of the student's lineage at least as strong as the student (equal-strength siblings and stronger "
    "members; its weaker checkpoints are reported per strength and never pooled into a comparison); "
    "stronger_different; cross_family. A source whose label fails its zoo check for a student leaves that "
    "student's verdict. Four comparisons (m = 4): (1) self-training helps: self > 0; (2) self >= same_lineage; "
    "(3) same_lineage > stronger_different at matched strength: per student, only the sources of the two "
    "relations whose strength (held-out bits/byte of source minus student) lies inside the range both relations "
    "cover; not estimable when the ranges do not overlap for every student; (4) cross-family is lowest: "
    "min(self, same_lineage, stronger_different) > cross_family. `supported` when all four hold; `not supported` "
    "when any fails (a failed part refutes the conjunction, whatever a missing comparison would show); "
    "`inconclusive` otherwise, including when a comparison is not estimable. Preconditions, each making the "
    "verdict `inconclusive` while the comparisons are still reported: the instrument check (INSTRUMENT_RULE), "
    "the headline tasks (HEADLINE_RULE) and robustness (ROBUSTNESS_RULE). Relation beyond strength (reported, "
    "not part of the verdict): the per-run delta regressed on per-student intercepts, the source's held-out "
    "bits/byte minus the student's and an indicator of the student's own lineage (self or same_lineage); the "
    "lineage coefficient is judged like `A > B`, and is NOT ESTIMABLE when the design is rank deficient or the "
    "strength ranges of own-lineage and other sources do not overlap (the coefficient would be an "
    "extrapolation).")

INSTRUMENT_RULE = (
    "The instrument check, before any relational verdict. The positive controls the profile runs (fine-tuning "
    "on real held-out text, and on replay of the student's own pretraining data where the profile has that "
    "data) must raise the TEST headline: for each control, the headline delta pooled over students (each "
    "student's runs averaged over seeds) has its one-sided lower bound at level alpha / k (Bonferroni over the "
    "k controls), from the hierarchical bootstrap of COMPARISON_RULE, above 0. A profile without a control "
    "fails the check. If any control does not pass, the measurement has not been shown to register the "
    "gain of real data at this budget: findings 1 and 2 are `inconclusive` (never `not supported`), and their "
    "comparisons are reported as measured. Where every control passes but any one's lower bound stays below "
    "the SESOI, the instrument has not shown it could register an effect of that size: no comparison may then "
    "fail because the data rule out the SESOI, nor hold by non-inferiority (both become inconclusive; a "
    "significant reversal still fails). A secondary outcome (the proper score) is read only through its own "
    "instrument check, the same rule on that outcome.")

HEADLINE_RULE = (
    "A task enters the headline only if it rises along the capability axis (CAPABILITY_RULE) and the positive "
    "controls move it on the DEV items by the instrument check's own rule: under the chosen recipe, the "
    "controls are fine-tuned for every student and seed of the matrix (the very runs the instrument check "
    "reads), and INSTRUMENT_RULE is applied to that task's DEV items (each control pooled over students, one-sided "
    "lower bound at alpha / k above 0, students, sources, seeds and items resampled). The gate thus estimates on "
    "dev items the quantity the instrument check tests on test items, never on fewer students. If no task "
    "passes both, the capability-axis tasks stay in the headline and findings 1 and 2 cannot be more than "
    "`inconclusive`: the benchmarks were not shown to register what real data changes.")

ROBUSTNESS_RULE = (
    "Robustness of finding 1's pooled verdict: the verdict recomputed with each source left out (a source "
    "other than self, for every student that has it), with each student left out (where at least two remain), "
    "and on each sampling seed alone (that seed's corpora and fine-tunings; items still resampled). A variant's "
    "verdict combines its comparisons as TRANSFER_RULE does, a comparison the variant cannot estimate keeping "
    "its outcome on all the runs (leaving a source out may remove a design cell, which is no evidence about the "
    "effect). A variant CHANGES the verdict when it reaches the other definite verdict (supported against not "
    "supported) or reverses a comparison (holds against fails); a variant that only loses power (turns a "
    "comparison or the verdict inconclusive) is listed, not counted. A verdict that any variant changes is "
    "reported as `inconclusive (fragile)`, naming the variants; the table lists every variant's verdict and "
    "comparisons.")

PROXY_RULE = (
    "Finding 2. One point per (student, source, temperature): the delta averaged over seeds, against each "
    "score computed before fine-tuning on the seed-0 corpus. Association = Spearman correlation with the "
    "student, the relation and the temperature partialled out (ranks residualised on their c indicator "
    "columns). PRIMARY scores, the paper's two intrinsic proxies: `loglik_per_token` (per-token log-likelihood "
    "of the corpus under the student) and `centroid_similarity` (cosine of the corpus's and the benchmark's "
    "embedding centroids). SECONDARY scores, reported and judged the same way but never deciding the verdict: "
    "`nn_similarity` and `loglik_per_char` (intrinsic) and `gradient_alignment` (relational). CI: percentile "
    "bootstrap that resamples corpora, each with all its points (a source and a temperature give one corpus, "
    "shared by every student), at level 1 - alpha/k for each of the k primary scores (Bonferroni) and 1 - alpha "
    "for a secondary one. A score PREDICTS when its CI lies entirely above +rho0 or below -rho0; it FAILS TO "
    "PREDICT when its CI lies inside (-rho0, +rho0) (equivalence) and there are at least N_needed corpora; it is "
    "INCONCLUSIVE otherwise. Points that share a corpus are not independent, so the counts below are of corpora "
    "(n), not points: N_needed is the fewest corpora n for which, at rho = 0, the Fisher-z interval "
    "tanh(+-z[1 - a/2] / sqrt(n - 3 - c)) at the score's level 1 - a lies inside (-rho0, +rho0): with fewer "
    "corpora equivalence is unreachable, and the score is reported as such. MDE = tanh((z[1 - a/2] + z[power]) "
    "/ sqrt(n - 3 - c)). rho0 is stated in params. `supported` when every primary score fails to predict; `not "
    "supported` when any primary score predicts; `inconclusive` otherwise; the reason is stated. If finding 1's "
    "instrument check fails (INSTRUMENT_RULE: the positive controls did not register the gain of real data at "
    "this budget), the verdict is `inconclusive`: the benchmark could not have seen a corpus that helps.")

PROXY_NO_INSTRUMENT = ("the instrument did not detect the gain of real data at this budget (finding 1's instrument "
                       "check)")

RECIPE_RULE = (
    "The recipe (fine-tuning schedule and budget) of the transfer matrix, chosen on the positive controls and "
    "DEV documents only, never on self, lineage or any relational ordering. Criterion: the held-out bits/byte "
    "gain (untouched minus fine-tuned, on the dev documents of heldout_ppl) of the two controls (real held-out "
    "text and replay), averaged over the grid's students and seeds (at least 3), with a 95 % t interval over "
    "those (student, control, seed) runs. A recipe is EXCLUDED when it makes the real-text "
    "control worse (the upper bound of its real-text gain below 0). Among the remaining recipes the one with "
    "the largest gain is chosen when it is DISTINGUISHABLE from every other remaining recipe (the lower 95 % "
    "bound of the paired difference, a t interval over the runs that share a student, control and seed, above "
    "0); otherwise the fallback fixed in params (recipe.fallback) is "
    "used, unless it is excluded, in which case the largest gain is. Every difference between the chosen "
    "recipe and the others is reported with its CI. Sampling temperatures are fixed in params and not chosen.")

CAPABILITY_RULE = (
    "A task enters the headline only if it rises along the lineage on the DEV items: every step of the "
    "capability axis (earlier checkpoint -> later checkpoint -> final -> larger member) improves its accuracy "
    "by more than the step's paired standard error. A task that does not is reported and left out. If no task "
    "passes, every accuracy task is reported, and no verdict of findings 1 and 2 can be more than "
    "`inconclusive`: the benchmarks do not measure what a resurfaced capability would change.")

HEADROOM_RULE = (
    "A task enters the headline only if every student has room to move on it: on the DEV items, each student's "
    "untouched accuracy is at least analysis.headroom_above_chance_points above chance (the mean over items of "
    "one over the number of choices; 0 for a task scored by greedy decoding) and at least "
    "analysis.headroom_below_ceiling_points below 100. A task at chance or near ceiling for any student is "
    "reported and left out. If no task passes both this rule and CAPABILITY_RULE, every accuracy task is "
    "reported, and no verdict of findings 1 and 2 can be more than `inconclusive`.")

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


# ------------------------------------------------------------------ finding 1

FINDING1_COMPARISONS = ("self_training_helps", "self_at_least_same_lineage", "same_lineage_beats_stronger_different",
                        "cross_family_lowest")
WEAKER = ("weaker", "checkpoint")  # same-lineage sources weaker than the student: reported, never pooled


def bootstrap_runs(deltas_by_task: list[np.ndarray], th: Thresholds) -> tuple[np.ndarray, np.ndarray, np.random.Generator]:
    """(replicates (n_boot, runs), point estimates (runs,), the generator for the draws that follow)."""
    rng = np.random.default_rng(th.seed)
    scores = item_resampled_scores(deltas_by_task, th.bootstrap, rng)
    return scores, np.mean([d.mean(1) for d in deltas_by_task], axis=0), rng


def matched_strength(runs: pd.DataFrame) -> tuple[pd.Series, str]:
    """TRANSFER_RULE, comparison 3: per student, the same-lineage and stronger-different sources whose strength
    (gap_bpb: source minus student held-out bits/byte, lower = stronger) lies inside the range both relations
    cover. Returns (a boolean mask over `runs`, why not estimable: empty when every student has both sides)."""
    mask = pd.Series(False, index=runs.index)
    for s, g in runs.groupby("student", sort=True):
        same = g[g["relation"] == "same_lineage"]
        other = g[g["relation"] == "stronger_different"]
        if same["gap_bpb"].dropna().empty or other["gap_bpb"].dropna().empty:
            return mask, f"{s} lacks a same-lineage or a stronger-different source"
        lo = max(same["gap_bpb"].min(), other["gap_bpb"].min())
        hi = min(same["gap_bpb"].max(), other["gap_bpb"].max())
        if lo > hi:
            return mask, (f"strengths do not overlap for {s}: same lineage spans [{same['gap_bpb'].min():+.3f}, "
                          f"{same['gap_bpb'].max():+.3f}] bits/byte, stronger-different "
                          f"[{other['gap_bpb'].min():+.3f}, {other['gap_bpb'].max():+.3f}]")
        inside = g["relation"].isin(["same_lineage", "stronger_different"]) & g["gap_bpb"].between(lo, hi)
        mask[g.index[inside]] = True
    return mask, ""


def _finding1_comparisons(means: dict[str, tuple[float, np.ndarray]], th: Thresholds,
                          matched: dict[str, tuple[float, np.ndarray]] | None = None, unmatched_why: str = "",
                          registers_sesoi: bool = True) -> dict:
    """The four comparisons. `matched`: same_lineage and stronger_different restricted to their common strength
    range (comparison 3). `registers_sesoi`: whether the controls gained at least the SESOI (INSTRUMENT_RULE);
    if not, no comparison may fail for lack of an effect, nor hold by non-inferiority."""
    m = len(FINDING1_COMPARISONS)
    a = th.alpha / m

    def compare(table: dict, x: str, y: str | None, kind: str) -> dict:
        if x not in table or (y is not None and y not in table):
            missing = [r for r in (x, y) if r is not None and r not in table]
            return not_estimable(f"no runs of {', '.join(missing)}")
        ex, bx = table[x]
        ey, by = table[y] if y is not None else (0.0, 0.0)
        return judge(ex - ey, bx - by, kind, th.sesoi, a, th.power)

    out = {"self_training_helps": compare(means, "self", None, "greater"),
           "self_at_least_same_lineage": compare(means, "self", "same_lineage", "noninferior"),
           "same_lineage_beats_stronger_different": (compare(matched, "same_lineage", "stronger_different", "greater")
                                                     if matched is not None else not_estimable(unmatched_why))}
    others = tuple(r for r in RELATIONS if r != "cross_family")
    if "cross_family" in means and all(r in means for r in others):
        est = min(means[r][0] for r in others) - means["cross_family"][0]
        boot = np.min([means[r][1] for r in others], axis=0) - means["cross_family"][1]
        out["cross_family_lowest"] = judge(est, boot, "greater", th.sesoi, a, th.power)
    else:
        out["cross_family_lowest"] = not_estimable("needs self, same_lineage, stronger_different and cross_family")
    return {k: _below_sesoi_guard(c, k == "self_at_least_same_lineage") for k, c in out.items()} \
        if not registers_sesoi else out


COMPARISON_RELATIONS = {"self_training_helps": ("self",), "self_at_least_same_lineage": ("self", "same_lineage"),
                        "same_lineage_beats_stronger_different": ("same_lineage", "stronger_different"),
                        "cross_family_lowest": RELATIONS}


def unreplicated(runs: pd.DataFrame, relations: tuple[str, ...], pooled: bool) -> list[str]:
    """COMPARISON_RULE: the levels at which the runs of `relations` hold a single unit (one source of a relation,
    one sampling seed per corpus, one student when pooled), so the bootstrap cannot see their variance."""
    r = runs[runs["relation"].isin(relations)]
    if r.empty:
        return []
    # self's sources are the students' own models: one per student
    n_sources = {rel: g["student" if rel == "self" else "source"].nunique() for rel, g in r.groupby("relation")}
    levels = [f"one source of {rel}" for rel in relations if n_sources.get(rel, 2) < 2 and (rel != "self" or pooled)]
    if r.groupby(["student", "source", "temperature"], dropna=False)["seed"].nunique().min() < 2:
        levels.append("one sampling seed per corpus")
    if pooled and r["student"].nunique() < 2:
        levels.append("one student")
    return levels


def _replication_guard(c: dict, levels: list[str]) -> dict:
    """COMPARISON_RULE: a comparison resting on a single unit at some level is inconclusive (not replicated)."""
    if not levels or c["outcome"] not in ("holds", "fails"):
        return c
    return {**c, "outcome": "inconclusive", "outcome_before_replication": c["outcome"],
            "why": "not replicated: " + ", ".join(levels)}


def _below_sesoi_guard(c: dict, noninferiority: bool) -> dict:
    """INSTRUMENT_RULE: controls that did not gain the SESOI cannot license a failure for lack of an effect of
    that size, nor a non-inferiority."""
    absent = c["outcome"] == "fails" and c["why"] == "the data rule out an effect of the SESOI"
    if absent or (noninferiority and c["outcome"] == "holds"):
        return {**c, "outcome": "inconclusive", "outcome_before_instrument": c["outcome"],
                "why": "the positive controls did not gain the SESOI (INSTRUMENT_RULE)"}
    return c


def _summary_rows(groups: dict, pooled: dict, runs: pd.DataFrame, by: list[str]) -> list[dict]:
    q = (1 - 0.95) / 2
    rows = []
    for scope, table in (("student", groups), ("pooled", pooled)):
        for key, (est, boot) in sorted(table.items(), key=lambda kv: str(kv[0])):
            names = ["student", *by] if scope == "student" else by
            sel = np.logical_and.reduce([runs[c] == k for c, k in zip(names, key)])
            row = dict(zip(names, key)) if scope == "student" else {"student": "pooled", **dict(zip(names, key))}
            rows.append({**row, "mean": est, "ci_low": float(np.quantile(boot, q)),
                         "ci_high": float(np.quantile(boot, 1 - q)), "se": float(boot.std(ddof=1)),
                         "n_runs": int(sel.sum()), "n_sources": int(runs.loc[sel, "source"].nunique())})
    return rows


def _replicated(comps: dict, runs: pd.DataFrame, matched: pd.DataFrame, pooled: bool) -> dict:
    """The replication guard of COMPARISON_RULE on each comparison (comparison 3 reads the matched runs)."""
    return {k: _replication_guard(c, unreplicated(matched if k == "same_lineage_beats_stronger_different" else runs,
                                                  COMPARISON_RELATIONS[k], pooled)) for k, c in comps.items()}


def transfer_verdict(runs: pd.DataFrame, deltas_by_task: list[np.ndarray], th: Thresholds,
                     strength_gap: np.ndarray | None = None, temperature: float = 1.0,
                     registers_sesoi: bool = True) -> dict:
    """Apply TRANSFER_RULE's comparisons (the preconditions are `finding1_verdict`'s).

    `runs`: one row per fine-tuning run (index 0..R-1) with student, relation, strength, source, temperature,
    seed and a boolean `in_verdict` (False for runs whose label failed its zoo check, and for the controls).
    `deltas_by_task`: per headline task, the (R, items) per-item deltas. `strength_gap`: per run, source minus
    student held-out bits/byte (NaN for the controls). Only runs at `temperature` enter. `registers_sesoi`: the
    instrument check's word on whether the controls gained the SESOI."""
    runs = runs.reset_index(drop=True)
    if strength_gap is not None:
        runs = runs.assign(gap_bpb=np.asarray(strength_gap, float))
    scores, point, rng = bootstrap_runs(deltas_by_task, th)
    at_t = runs["in_verdict"] & runs["relation"].isin(RELATIONS) & np.isclose(runs["temperature"], temperature)
    keep = runs[at_t & ~runs["strength"].isin(WEAKER)]
    cells, groups, pooled_groups = hierarchical_means(keep, scores, point, ["relation"], rng)
    students = sorted(keep["student"].unique())
    if "gap_bpb" in keep:
        inside, unmatched_why = matched_strength(keep)
    else:
        inside, unmatched_why = pd.Series(False, index=keep.index), "no source strengths given"
    matched_pooled, matched_groups = None, {}
    if not unmatched_why:
        _, matched_groups, matched_pooled_ = hierarchical_means(keep[inside], scores, point, ["relation"], rng)
        matched_pooled = {k[0]: v for k, v in matched_pooled_.items()}
    per_student = {}
    for s in students:
        means = {k[1]: v for k, v in groups.items() if k[0] == s}
        mine = {k[1]: v for k, v in matched_groups.items() if k[0] == s} if matched_pooled is not None else None
        comps = _finding1_comparisons(means, th, mine, unmatched_why, registers_sesoi)
        comps = _replicated(comps, keep[keep["student"] == s], keep[inside & (keep["student"] == s)], pooled=False)
        per_student[s] = {"comparisons": comps, "verdict": combine([c["outcome"] for c in comps.values()])}
    pooled_means = {k[0]: v for k, v in pooled_groups.items()}
    pooled = _finding1_comparisons(pooled_means, th, matched_pooled, unmatched_why, registers_sesoi)
    pooled = _replicated(pooled, keep, keep[inside], pooled=True)
    summary = _summary_rows(groups, pooled_groups, keep, ["relation"])
    # per strength, the weaker checkpoints included: what each kind of source does on its own
    everything = runs[at_t]
    _, by_strength, by_strength_pooled = hierarchical_means(everything, scores, point, ["relation", "strength"], rng)
    out = {"verdict": combine([c["outcome"] for c in pooled.values()]), "rule": TRANSFER_RULE,
           "comparison_rule": COMPARISON_RULE, "thresholds": th.__dict__, "temperature": temperature,
           "pooled": pooled, "per_student": per_student, "per_relation": summary,
           "per_strength": _summary_rows(by_strength, by_strength_pooled, everything, ["relation", "strength"]),
           "strength_matched": {"estimable": not unmatched_why, "why": unmatched_why or "strength ranges overlap",
                                "sources": sorted(keep.loc[inside, "source"].unique())},
           "ordering_observed": [r for r, _ in sorted(pooled_means.items(), key=lambda kv: -kv[1][0])],
           "ordering_claimed": list(RELATIONS)}
    if "gap_bpb" in runs:
        out["beyond_strength"] = beyond_strength(keep, cells, th)
        if not registers_sesoi:
            out["beyond_strength"]["lineage_coefficient"] = _below_sesoi_guard(
                out["beyond_strength"]["lineage_coefficient"], False)
    return out


def beyond_strength(runs: pd.DataFrame, cells: dict, th: Thresholds) -> dict:
    """Delta ~ per-student intercepts + gap + own-lineage indicator, by least squares over (student, source) cells
    (seeds averaged; replicates from the hierarchical bootstrap). Not estimable when the design is rank
    deficient or own-lineage and other sources do not overlap in strength (the coefficient would extrapolate)."""
    r = runs[runs["relation"].isin(RELATIONS) & runs["gap_bpb"].notna()]
    r = r.assign(_t=r["temperature"].fillna(-1.0)).drop_duplicates(["student", "source", "_t"])
    own = r["relation"].isin(["self", "same_lineage"]).to_numpy()
    if len(r) < 6 or own.all() or not own.any():
        return {"lineage_coefficient": not_estimable("needs own-lineage and other sources"), "n_cells": len(r)}
    g = r["gap_bpb"].to_numpy(float)
    lo_own, hi_own, lo_other, hi_other = g[own].min(), g[own].max(), g[~own].min(), g[~own].max()
    if hi_own < lo_other or hi_other < lo_own:
        return {"lineage_coefficient": not_estimable(
            f"no overlap in strength: own lineage spans [{lo_own:+.3f}, {hi_own:+.3f}] bits/byte, other sources "
            f"[{lo_other:+.3f}, {hi_other:+.3f}]"), "n_cells": len(r)}
    students = sorted(r["student"].unique())
    x = np.column_stack([(r["student"] == s).to_numpy(float) for s in students] + [g, own.astype(float)])
    if np.linalg.matrix_rank(x) < x.shape[1]:
        return {"lineage_coefficient": not_estimable("rank-deficient design"), "n_cells": len(r)}
    keys = list(zip(r["student"], r["source"], r["_t"]))
    y = np.array([cells[k][0] for k in keys])
    reps = np.array([cells[k][1] for k in keys])  # (cells, n_boot)
    pinv = np.linalg.pinv(x)
    beta, boot = pinv @ y, pinv @ reps
    return {"lineage_coefficient": judge(beta[-1], boot[-1], "greater", th.sesoi, th.alpha, th.power),
            "gap_slope_points_per_bpb": {"estimate": float(beta[-2]), "ci_low": float(np.quantile(boot[-2], 0.025)),
                                         "ci_high": float(np.quantile(boot[-2], 0.975))},
            "n_cells": len(r)}


def instrument_check(runs: pd.DataFrame, deltas_by_task: list[np.ndarray], th: Thresholds, unit: str = "points"
                     ) -> dict:
    """Apply INSTRUMENT_RULE: does each positive control raise the TEST headline, pooled over students (and does
    it gain the SESOI)?"""
    runs = runs.reset_index(drop=True)
    scores, point, rng = bootstrap_runs(deltas_by_task, th)
    ctrl = runs[runs["relation"].isin(CONTROLS)]
    _, groups, pooled = hierarchical_means(ctrl, scores, point, ["relation"], rng) if len(ctrl) else ({}, {}, {})
    q = (1 - 0.95) / 2
    present = [c for c in CONTROLS if c in set(ctrl["relation"])]  # a profile may lack one (no replay data)
    a = th.alpha / max(len(present), 1)
    per_control = {}
    if not present:
        per_control = {c: not_estimable("the profile runs no positive control") for c in CONTROLS}
    for c in present:
        if (c,) not in pooled:
            per_control[c] = not_estimable(f"no {c} runs for every student")
            continue
        est, boot = pooled[(c,)]
        j = judge(est, boot, "greater", 0.0, a, th.power)
        if j["outcome"] != "holds":  # the instrument asks one thing only: is the gain's lower bound above 0?
            j = {**j, "outcome": "inconclusive" if j["outcome"] != "fails" else "fails",
                 "why": f"its one-sided lower bound ({j['lower']:+.3g}) is not above 0"}
        per_control[c] = {**j, "ci_low": float(np.quantile(boot, q)), "ci_high": float(np.quantile(boot, 1 - q)),
                          "gains_sesoi": bool(j["outcome"] == "holds" and j["lower"] >= th.sesoi),
                          "per_student": {k[0]: v[0] for k, v in groups.items() if k[1] == c}}
    passed = bool(present) and all(per_control[c]["outcome"] == "holds" for c in present)
    why = "" if passed else ("the instrument did not detect the gain of real data at this budget: "
                             + "; ".join(f"{c} {v['estimate']:+.3g} {unit}, one-sided lower bound {v['lower']:+.3g}"
                                         for c, v in per_control.items()))
    return {"rule": INSTRUMENT_RULE, "passed": passed, "why": why, "controls": per_control,
            "registers_sesoi": bool(passed and all(v.get("gains_sesoi") for v in per_control.values()))}


DEFINITE = ("supported", "not supported")


def variant_changes(full: dict, variant: dict) -> tuple[str, bool, list[str]]:
    """ROBUSTNESS_RULE for one variant: (its verdict, whether it changes the full verdict, the comparisons it
    reverses). A comparison the variant cannot estimate keeps its full-data outcome; a variant that only loses
    power (a definite verdict turning inconclusive) is no evidence against it."""
    kept = [c["outcome"] if c["outcome"] != NOT_ESTIMABLE else full["pooled"][k]["outcome"]
            for k, c in variant["pooled"].items()]
    reversed_ = [k for k, c in variant["pooled"].items() if {c["outcome"], full["pooled"][k]["outcome"]} == {"holds", "fails"}]
    verdict = combine(kept)
    flips = verdict in DEFINITE and full["verdict"] in DEFINITE and verdict != full["verdict"]
    return verdict, bool(flips or reversed_), reversed_


def robustness(runs: pd.DataFrame, deltas_by_task: list[np.ndarray], th: Thresholds, temperature: float = 1.0,
               registers_sesoi: bool = True) -> pd.DataFrame:
    """ROBUSTNESS_RULE: the pooled verdict with each source left out, each student left out, each seed alone."""
    runs = runs.reset_index(drop=True)
    gap = runs["gap_bpb"].to_numpy(float) if "gap_bpb" in runs else None
    variants = [("all runs", np.ones(len(runs), bool))]
    synth = runs[runs["relation"].isin(RELATIONS) & (runs["relation"] != "self") & ~runs["strength"].isin(WEAKER)]
    # a source left out as a source: a student's own runs (self) stay, even where that student is another's source
    variants += [(f"without source {s}", ~((runs["source"] == s) & (runs["relation"] != "self")).to_numpy())
                 for s in sorted(synth["source"].unique())]
    students = sorted(runs["student"].unique())
    if len(students) > 2:
        variants += [(f"without student {s}", (runs["student"] != s).to_numpy()) for s in students]
    variants += [(f"seed {k} alone", (runs["seed"] == k).to_numpy()) for k in sorted(runs["seed"].dropna().unique())]
    rows, full = [], None
    for name, sel in variants:
        v = transfer_verdict(runs[sel], [d[sel] for d in deltas_by_task], th,
                             None if gap is None else gap[sel], temperature, registers_sesoi)
        full = full or v
        verdict, changes, reversed_ = variant_changes(full, v)
        rows.append({"variant": name, "verdict": verdict, "runs": int(sel.sum()), "changes_it": changes,
                     "reversed": ", ".join(reversed_),
                     **{k: f"{c['outcome']} ({c['estimate']:+.2f} [{c['lower']:+.2f}, {c['upper']:+.2f}])"
                        for k, c in v["pooled"].items()}})
    return pd.DataFrame(rows)


def finding1_verdict(verdict: dict, instrument: dict, headline_ok: bool, headline_why: str,
                     robust: pd.DataFrame | None = None) -> dict:
    """TRANSFER_RULE's preconditions on a finished comparison verdict: instrument, headline tasks, robustness."""
    why = []
    if not instrument.get("passed", False):
        why.append(instrument.get("why") or "the instrument check did not pass")
    if not headline_ok:
        why.append(headline_why)
    fragile = []
    if robust is not None and len(robust):
        fragile = robust.loc[robust["changes_it"], "variant"].tolist()
    final = verdict["verdict"]
    if why:
        final = "inconclusive"
    elif fragile:
        final = "inconclusive (fragile)"
        why.append("changed by: " + ", ".join(fragile))
    return {**verdict, "verdict": final, "verdict_of_the_comparisons": verdict["verdict"], "why": "; ".join(why),
            "instrument": instrument, "fragile_variants": fragile}


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


PROXY_ROLES = ("primary", "secondary")


def equivalence_points(level: float, rho0: float, n_covariates: int) -> int:
    """PROXY_RULE's N_needed: the fewest corpora n for which, at rho = 0, the Fisher-z interval at `level`,
    tanh(+-z[1 - a/2] / sqrt(n - 3 - c)), lies inside (-rho0, +rho0). With fewer, no data can show equivalence."""
    z = _z(1 - (1 - level) / 2)
    dof = int(np.floor((z / np.arctanh(rho0)) ** 2)) + 1  # the smallest dof with z / sqrt(dof) < atanh(rho0)
    return dof + 3 + int(n_covariates)


def correlation_mde(level: float, power: float, n: int, n_covariates: int) -> float:
    """PROXY_RULE's MDE: the correlation detectable with `power` by a CI at `level` (Fisher z, n - 3 - c dof)."""
    dof = max(1, n - 3 - int(n_covariates))
    return float(np.tanh((_z(1 - (1 - level) / 2) + _z(power)) / np.sqrt(dof)))


def _clusters(d: pd.DataFrame, cols: list[str]) -> list[np.ndarray]:
    """The row positions of each cluster (rows equal on `cols`); without `cols`, every row is its own."""
    if not cols:
        return [np.array([i]) for i in range(len(d))]
    ids = d.groupby(cols, sort=True, dropna=False).ngroup().to_numpy()
    return [np.flatnonzero(ids == g) for g in range(ids.max() + 1)] if len(d) else []


def proxy_association(points: pd.DataFrame, score: str, outcome: str, covariates: list[str], th: Thresholds,
                      level: float | None = None, clusters: list[str] | None = None) -> dict:
    """One score under PROXY_RULE: the partial Spearman correlation with `outcome`, its percentile bootstrap CI
    at `level` (default 1 - alpha), the MDE, the points equivalence needs (N_needed) and the outcome.

    `clusters`: the columns naming the corpus a point's score and delta come from (source, temperature); the
    bootstrap resamples whole clusters with all their points. Without them every point is its own cluster."""
    level = 1 - th.alpha if level is None else float(level)
    clusters = list(clusters or [])
    d = points[list(dict.fromkeys([score, outcome, *covariates, *clusters]))].dropna()
    n = len(d)
    cov = _dummies(d, covariates)
    members = _clusters(d, clusters)
    q = (1 - level) / 2
    n_eff = len(members)  # independent units: corpora, not the points that share them
    n_needed = equivalence_points(level, th.proxy_rho0, cov.shape[1])
    mde = correlation_mde(level, th.power, n_eff, cov.shape[1])  # detectable with the stated power
    out = {"n": n, "n_clusters": n_eff, "level": level, "rho": float("nan"), "ci_low": float("nan"),
           "ci_high": float("nan"), "mde": mde, "n_needed": n_needed, "equivalence_reachable": n_eff >= n_needed}
    if n < 6:
        return {**out, "outcome": "inconclusive", "why": f"only {n} points"}
    x, y = d[score].to_numpy(float), d[outcome].to_numpy(float)
    rho = partial_spearman(x, y, cov)
    rng = np.random.default_rng(th.seed)
    singletons = len(members) == n
    boot = np.empty(th.bootstrap)
    for b in range(th.bootstrap):
        pick = rng.integers(0, len(members), len(members))
        i = pick if singletons else np.concatenate([members[g] for g in pick])
        boot[b] = partial_spearman(x[i], y[i], cov[i])
    boot = boot[np.isfinite(boot)]
    if len(boot) < 20 or not np.isfinite(rho):  # the covariates leave (almost) nothing to correlate
        return {**out, "rho": rho, "outcome": "inconclusive",
                "why": "the covariates leave nothing to correlate"}
    lo, hi = float(np.quantile(boot, q)), float(np.quantile(boot, 1 - q))
    r0 = th.proxy_rho0
    if lo > r0 or hi < -r0:
        outcome_, why = "predicts", f"its CI lies beyond +-{r0:g}"
    elif n_eff < n_needed:
        outcome_, why = "inconclusive", f"equivalence unreachable with {n_eff} corpora: it needs {n_needed}"
    elif -r0 < lo and hi < r0:
        outcome_, why = "fails to predict", f"its CI lies inside (-{r0:g}, +{r0:g})"
    else:
        outcome_, why = "inconclusive", f"its CI straddles +-{r0:g}"
    return {**out, "rho": rho, "ci_low": lo, "ci_high": hi, "outcome": outcome_, "why": why}


def proxy_verdict(points: pd.DataFrame, scores: dict[str, tuple[str, str]], outcome: str, covariates: list[str],
                  th: Thresholds, clusters: list[str] | None = None, instrument_ok: bool = True,
                  instrument_why: str = "") -> dict:
    """Apply PROXY_RULE. `scores`: name -> (kind, role), kind 'intrinsic' or 'relational', role 'primary' (decides
    the verdict) or 'secondary' (reported). `clusters`: the columns naming a point's corpus (see
    `proxy_association`). `instrument_ok`: finding 1's instrument check (`instrument_why`: its reason)."""
    roles = {s: tuple(v) for s, v in scores.items()}
    bad = sorted(s for s, v in roles.items() if len(v) != 2 or v[1] not in PROXY_ROLES)
    if bad:
        raise ValueError(f"scores {bad} need a (kind, role) with role one of {PROXY_ROLES}")
    primary = [s for s, (_, role) in roles.items() if role == "primary"]
    k = max(1, len(primary))
    levels = {"primary": 1 - th.alpha / k, "secondary": 1 - th.alpha}
    assoc = {s: {"type": kind, "role": role,
                 **proxy_association(points, s, outcome, covariates, th, levels[role], clusters)}
             for s, (kind, role) in roles.items()}
    outs = {s: assoc[s]["outcome"] for s in primary}

    def ci(s: str) -> str:
        a = assoc[s]
        return f"partial rho {a['rho']:.2f}, {100 * a['level']:g} % CI [{a['ci_low']:.2f}, {a['ci_high']:.2f}]"

    if not primary:
        verdict, why = "inconclusive", "no primary score in the table"
    elif any(o == "predicts" for o in outs.values()):
        verdict = "not supported"
        why = "; ".join(f"{s} predicts ({ci(s)}: {assoc[s]['why']})" for s, o in outs.items() if o == "predicts")
    elif all(o == "fails to predict" for o in outs.values()):
        verdict = "supported"
        why = "every primary score fails to predict: " + "; ".join(f"{s} ({ci(s)})" for s in primary)
    else:
        verdict = "inconclusive"
        why = "; ".join(f"{s}: {assoc[s]['why']}" for s, o in outs.items() if o != "fails to predict")
    out = {"verdict": verdict, "why": why, "rule": PROXY_RULE, "thresholds": th.__dict__, "associations": assoc,
           "primary": primary, "secondary": [s for s in roles if s not in primary], "bonferroni_k": len(primary),
           "levels": levels, "n_needed": max((assoc[s]["n_needed"] for s in primary), default=None),
           "covariates": covariates, "clusters": list(clusters or []), "n_points": int(len(points)),
           "instrument_ok": bool(instrument_ok), "instrument_why": instrument_why}
    if not instrument_ok:
        out.update(verdict="inconclusive", verdict_before_instrument=verdict, why_before_instrument=why,
                   why=PROXY_NO_INSTRUMENT)
    return out


# ------------------------------------------------------------------ the recipe


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


def choose_recipe(grid: pd.DataFrame, schedules: list[str], fallback: tuple[str, int] | None = None) -> dict:
    """Apply RECIPE_RULE to the grid's runs (columns student, relation, seed, schedule, budget, bpb_gain)."""
    ctrl = grid[grid["relation"].isin(CONTROLS)]
    if ctrl.empty or not (ctrl["relation"] == "real_text").any():
        raise ValueError("the recipe grid has no real-text control runs: the rule cannot choose")
    order = {s: i for i, s in enumerate(schedules)}
    recipes = sorted({(r.schedule, int(r.budget)) for r in ctrl.itertuples()}, key=lambda r: (order[r[0]], r[1]))
    fallback = tuple(fallback) if fallback is not None else (schedules[0], max(b for _, b in recipes))
    # one row per (student, control, seed), one column per recipe: the recipes share seeds and corpora (paired)
    wide = ctrl.pivot_table(index=["student", "relation", "seed"], columns=["schedule", "budget"], values="bpb_gain",
                            aggfunc="mean").reindex(columns=pd.MultiIndex.from_tuples(recipes)).to_numpy(float)
    is_real = ctrl.pivot_table(index=["student", "relation", "seed"], values="bpb_gain").index.get_level_values(1) == "real_text"
    rows = []
    for i, (sched, budget) in enumerate(recipes):
        gain, lo, hi = t_interval(wide[:, i])
        real, _, real_hi = t_interval(wide[is_real, i])
        rows.append({"schedule": sched, "budget": budget, "control_bpb_gain": gain, "ci_low": lo, "ci_high": hi,
                     "real_text_bpb_gain": real, "real_text_ci_high": real_hi, "excluded": bool(real_hi < 0)})
    gains = np.array([r["control_bpb_gain"] for r in rows])
    n_seeds = int(ctrl.groupby(["student", "relation", "schedule", "budget"])["seed"].nunique().min())
    allowed = [i for i, r in enumerate(rows) if not r["excluded"]] or list(range(len(rows)))
    best = max(allowed, key=lambda i: (gains[i], -i))

    def differences(pick: int, among: list[int]) -> list[dict]:
        out = []
        for i in among:
            if i != pick:
                d, lo, hi = t_interval(wide[:, pick] - wide[:, i])
                out.append({"chosen_minus": f"{recipes[i][0]} {recipes[i][1]}", "difference": d, "ci_low": lo,
                            "ci_high": hi})
        return out

    distinguishable = n_seeds >= 3 and all(d["ci_low"] > 0 for d in differences(best, allowed))
    fb = recipes.index(fallback) if fallback in recipes else None
    if distinguishable:
        pick, why = best, "the largest control gain, distinguishable from every other remaining recipe"
    elif fb is not None and fb in allowed:
        pick = fb
        why = ("no recipe is distinguishable" if n_seeds >= 3 else
               f"only {n_seeds} seed(s) per control: the rule needs 3 to choose") + "; the fallback fixed in params"
    else:
        pick, why = best, "the fallback is excluded (or not in the grid); the largest control gain"
    return {"rule": RECIPE_RULE, "schedule": recipes[pick][0], "budget": int(recipes[pick][1]), "why": why,
            "distinguishable": bool(distinguishable), "fallback": list(fallback), "n_seeds": n_seeds,
            "control_bpb_gain": float(gains[pick]), "recipes": rows,
            "differences": differences(pick, list(range(len(recipes))))}


def headline_gate(axis_tasks: list[str], deltas_by_task: dict[str, np.ndarray], runs: pd.DataFrame,
                  th: Thresholds) -> pd.DataFrame:
    """Apply HEADLINE_RULE's control part on the DEV items: per task, INSTRUMENT_RULE on that task alone.

    `runs`: the control runs (every student and seed); `deltas_by_task[t]`: (runs, items) per-item changes in
    points of those runs (same order)."""
    rows = []
    for t, d in deltas_by_task.items():
        check = instrument_check(runs, [d], th)
        row = {"task": t}
        for c, v in check["controls"].items():
            row.update({f"{c}_dev_gain": v["estimate"], f"{c}_lower": v["lower"],
                        f"{c}_ci_low": v.get("ci_low", float("nan")), f"{c}_ci_high": v.get("ci_high", float("nan"))})
        rows.append({**row, "students": int(runs["student"].nunique()), "runs": len(runs),
                     "on_capability_axis": t in axis_tasks, "controls_move_it": check["passed"],
                     "in_headline": t in axis_tasks and check["passed"]})
    return pd.DataFrame(rows)


def budget_calibration(axis: pd.DataFrame, tokens: dict[str, int], budgets: list[int], alpha: float,
                       power: float) -> pd.DataFrame:
    """How many points a token buys, from the capability axis's last within-model step (an earlier checkpoint
    of the student to the student itself), and what the positive controls may be expected to gain at each
    budget, against the MDE of one run (that step's paired SE over items). An upper-end estimate: those
    tokens came with the pretraining schedule's higher learning rates.

    `axis`: CAPABILITY_RULE's table (task, from, to, rise, paired_se); `tokens[ref]`: tokens seen by a model ref."""
    rows = []
    for task, g in axis.groupby("task", sort=True):
        # within one model: a checkpoint `name@stepN` of the model `name` that the step reaches
        same = g["from"].astype(str).str.split("@").str[0] == g["to"].astype(str).str.split("@").str[0]
        steps = g[same & g["from"].map(tokens).notna() & g["to"].map(tokens).notna()]
        steps = steps[steps["from"].map(tokens) < steps["to"].map(tokens)]
        if steps.empty:
            continue
        last = steps.iloc[-1]
        dt = tokens[last["to"]] - tokens[last["from"]]
        per_m = last["rise"] / dt * 1e6
        mde = (_z(1 - alpha / 2) + _z(power)) * last["paired_se"]
        for b in budgets:
            rows.append({"task": task, "from": last["from"], "to": last["to"], "step_tokens": int(dt),
                         "points_per_million_tokens": float(per_m), "budget": int(b),
                         "expected_gain": float(per_m * b / 1e6), "run_mde": float(mde),
                         "tokens_needed": float(mde / per_m * 1e6) if per_m > 0 else float("inf"),
                         "expected_above_mde": bool(per_m * b / 1e6 > mde)})
    return pd.DataFrame(rows)


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


def headroom(base: pd.DataFrame, above: float, below: float) -> pd.DataFrame:
    """Apply HEADROOM_RULE. `base`: one row per (student, task) with `accuracy` and `chance` in points; adds
    the distances to chance and ceiling, each row's check and the task's (every student's)."""
    out = base.copy()
    out["above_chance"] = out["accuracy"] - out["chance"]
    out["below_ceiling"] = 100.0 - out["accuracy"]
    out["room"] = (out["above_chance"] >= above) & (out["below_ceiling"] >= below)
    out["task_in_headline"] = out.groupby("task")["room"].transform("all")
    return out


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
    "Verdict on `self`, per measure: `supported` when the drop's one-sided lower bound (level alpha) is at least "
    "0.95 and capability is non-inferior; `not supported` when the drop's upper bound is below 0.95 or capability is inferior; "
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
            "drop_lower": float(np.quantile(dboot, th.alpha)) if ok else float("nan"),
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
    # the rule's last sentence, computed: controls whose drop is also at least the target (lower bound)
    regime = sorted(src for src, r in per_source.items() if r["relation"] in CONTROLS and r["drop_lower"] >= target)
    return {"verdict": verdict, "why": "; ".join(why), "rule": MEMORIZATION_RULE, "measure": column,
            "controls_also_drop": regime,
            "attribution": ("the drop belongs to this fine-tuning regime, not to self-training alone: "
                            + ", ".join(regime) + " also drop(s) by the target" if regime else
                            "no control drops by the target"),
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
