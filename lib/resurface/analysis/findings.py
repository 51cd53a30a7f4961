"""Finding tables from the matrix's tidy results: one headline score per run (pandas only)."""
from __future__ import annotations

import pandas as pd

HEADLINE_METRICS = ("acc", "acc_norm")  # the headline averages every accuracy task (not perplexity)


RUN_KEYS = ["student", "source", "relation", "strength", "temperature", "seed", "schedule", "budget"]


def headline(table: pd.DataFrame, tasks: list[str] | None = None) -> pd.DataFrame:
    """One score per run: the mean accuracy improvement (points) over the headline tasks (default: every
    accuracy task)."""
    acc = table[table["metric"].isin(HEADLINE_METRICS)]
    if tasks is not None:
        acc = acc[acc["task"].isin(tasks)]
    keys = [k for k in RUN_KEYS if k in acc.columns] + ["run_label"]
    return acc.groupby(keys, dropna=False)["delta"].mean().rename("headline_delta").reset_index()


CONTROL_RELATIONS = ["real_text", "replay"]


def base_scores(base: dict[str, list[dict]]) -> pd.DataFrame:
    """The untouched students' scores: one row per student, one column per task:metric."""
    return pd.DataFrame([{"student": s, **{f"{r['task']}:{r['metric']}": round(r["value"], 4) for r in rows}}
                         for s, rows in base.items()])


def control_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean, spread and count of the controls' headline deltas, per student: does any text help at all?"""
    controls = runs[runs["relation"].isin(CONTROL_RELATIONS)]
    return controls.groupby(["student", "relation"])["headline_delta"].agg(["mean", "std", "size"])


def comparison_table(verdict: dict) -> pd.DataFrame:
    """Every comparison of a transfer verdict as 'estimate [lower, upper] MDE m: outcome', one row per
    comparison and one column per scope (pooled, then each student)."""
    scopes = [("pooled", verdict["pooled"])] + [(s, v["comparisons"]) for s, v in verdict["per_student"].items()]
    return pd.DataFrame({scope: {k: f"{v['estimate']:+.2f} [{v['lower']:+.2f}, {v['upper']:+.2f}] MDE {v['mde']:.2f}: "
                                    f"{v['outcome']}" for k, v in comps.items()} for scope, comps in scopes})


def transfer_sentence(verdict: dict) -> str:
    """Finding 1's verdict in one markdown sentence: the outcome, the observed ordering, each comparison."""
    return (f"**Verdict: {verdict['verdict']}.** Observed ordering (pooled): "
            f"{' > '.join(verdict['ordering_observed'])}. Per comparison: "
            + "; ".join(f"{k} {v['outcome']} (MDE {v['mde']:.2f})" for k, v in verdict["pooled"].items()))


def proxy_sentence(verdict: dict) -> str:
    """Finding 2's verdict in one markdown sentence: each score's partial correlation, CI and outcome."""
    return (f"**Verdict: {verdict['verdict']}.** " + "; ".join(
        f"{k}: partial ρ {v['rho']:.2f} [{v['ci_low']:.2f}, {v['ci_high']:.2f}], {v['outcome']}"
        for k, v in verdict["associations"].items()))
