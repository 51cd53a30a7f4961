"""Finding 1 (notebook 02): the instrument check, the relational comparisons and their robustness."""
from __future__ import annotations

import numpy as np
import pandas as pd

from resurface.names import CONTROLS, SOURCE_RELATIONS as RELATIONS
from resurface.analysis.verdicts.judging import (COMPARISON_RULE, NOT_ESTIMABLE, Thresholds, combine, effect, judge,
                                                  not_estimable)
from resurface.analysis.verdicts.bootstrap import bootstrap_runs, hierarchical_means


TRANSFER_RULE = (
    "Finding 1, per student and pooled over students (the pooled verdict is the headline). Outcome: the "
    "headline delta of a fine-tuning run = mean over the headline tasks of (score after - score of the "
    "untouched student) on the TEST items, in the primary score's unit (SCORE_RULE), at the primary temperature (analysis.primary_temperature; "
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


FINDING1_COMPARISONS = ("self_training_helps", "self_at_least_same_lineage", "same_lineage_beats_stronger_different",
                        "cross_family_lowest")


WEAKER = ("weaker", "checkpoint")  # same-lineage sources weaker than the student: reported, never pooled


COMPARISON_RELATIONS = {"self_training_helps": ("self",), "self_at_least_same_lineage": ("self", "same_lineage"),
                        "same_lineage_beats_stronger_different": ("same_lineage", "stronger_different"),
                        "cross_family_lowest": RELATIONS}


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
            "gap_slope_per_bpb": {"estimate": float(beta[-2]), "ci_low": float(np.quantile(boot[-2], 0.025)),
                                         "ci_high": float(np.quantile(boot[-2], 0.975))},
            "n_cells": len(r)}


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
    "significant reversal still fails). The headline delta is in the primary score (SCORE_RULE); the secondary "
    "score is read only through its own instrument check, the same rule on that outcome.")


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


def sign_flips(full: dict, variant: dict) -> list[str]:
    """The comparisons whose estimate in the variant points the other way than on all the runs. Shown beside the
    verdict, not part of it: a variant with one seed or one source cannot be definite (COMPARISON_RULE's
    replication guard), and its direction is what it can still say."""
    return [k for k, c in variant["pooled"].items()
            if np.isfinite(c["estimate"]) and np.isfinite(full["pooled"][k]["estimate"])
            and c["estimate"] * full["pooled"][k]["estimate"] < 0]


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
                     "reversed": ", ".join(reversed_), "sign_flips": ", ".join(sign_flips(full, v)),
                     **{k: f"{c['outcome']} ({effect(c['estimate'])} [{effect(c['lower'])}, {effect(c['upper'])}])"
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
