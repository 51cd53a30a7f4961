"""The recipe and the headline gate (notebook 01, dev items and controls only)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from resurface.names import CONTROLS
from resurface.analysis.verdicts.judging import Thresholds, _z, t_interval
from resurface.analysis.verdicts.transfer import instrument_check


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


HEADLINE_RULE = (
    "A task enters the headline only if it rises along the capability axis (CAPABILITY_RULE) and the positive "
    "controls move its score (SCORE_RULE) on the DEV items by the instrument check's own rule: under the chosen recipe, the "
    "controls are fine-tuned for every student and seed of the matrix (the very runs the instrument check "
    "reads), and INSTRUMENT_RULE is applied to that task's DEV items (each control pooled over students, one-sided "
    "lower bound at alpha / k above 0, students, sources, seeds and items resampled). The gate thus estimates on "
    "dev items the quantity the instrument check tests on test items, never on fewer students. If no task "
    "passes both, the capability-axis tasks stay in the headline and findings 1 and 2 cannot be more than "
    "`inconclusive`: the benchmarks were not shown to register what real data changes.")


def headline_gate(axis_tasks: list[str], deltas_by_task: dict[str, np.ndarray], runs: pd.DataFrame,
                  th: Thresholds) -> pd.DataFrame:
    """Apply HEADLINE_RULE's control part on the DEV items: per task, INSTRUMENT_RULE on that task alone.

    `runs`: the control runs (every student and seed); `deltas_by_task[t]`: (runs, items) per-item changes in
    the score of those runs (same order)."""
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
    """How much score (SCORE_RULE's unit) a token buys, from the capability axis's last within-model step (an
    earlier checkpoint of the student to the student itself), and what the positive controls may be expected to gain at each
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
                         "gain_per_million_tokens": float(per_m), "budget": int(b),
                         "expected_gain": float(per_m * b / 1e6), "run_mde": float(mde),
                         "tokens_needed": float(mde / per_m * 1e6) if per_m > 0 else float("inf"),
                         "expected_above_mde": bool(per_m * b / 1e6 > mde)})
    return pd.DataFrame(rows)
