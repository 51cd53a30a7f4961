"""Finding tables from the matrix's tidy results: one headline score per run (pandas only)."""
from __future__ import annotations

import pandas as pd

from resurface.names import CONTROLS
from resurface.analysis import verdicts

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




def base_scores(base: dict[str, list[dict]]) -> pd.DataFrame:
    """The untouched students' scores: one row per student, one column per task:metric."""
    return pd.DataFrame([{"student": s, **{f"{r['task']}:{r['metric']}": round(r["value"], 4) for r in rows}}
                         for s, rows in base.items()])


def control_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean, spread and count of the controls' headline deltas, per student: does any text help at all?"""
    controls = runs[runs["relation"].isin(CONTROLS)]
    return controls.groupby(["student", "relation"])["headline_delta"].agg(["mean", "std", "size"])


def _comparison_cell(v: dict) -> str:
    if v["outcome"] == "not estimable":
        return f"not estimable: {v['why']}"
    e = verdicts.effect
    return f"{e(v['estimate'])} [{e(v['lower'])}, {e(v['upper'])}] MDE {e(v['mde'], '')}: {v['outcome']}"


def comparison_table(verdict: dict) -> pd.DataFrame:
    """Every comparison of a transfer verdict as 'estimate [lower, upper] MDE m: outcome' (one-sided bounds), one
    row per comparison and one column per scope (pooled, then each student)."""
    scopes = [("pooled", verdict["pooled"])] + [(s, v["comparisons"]) for s, v in verdict["per_student"].items()]
    return pd.DataFrame({scope: {k: _comparison_cell(v) for k, v in comps.items()} for scope, comps in scopes})


def instrument_sentence(instrument: dict, unit: str = "points") -> str:
    """The instrument check in one markdown sentence: passed or not, each control's gain and bound."""
    parts = "; ".join(f"{c} {v['estimate']:+.3g} {unit} [95 % CI {v.get('ci_low', float('nan')):+.3g}, "
                      f"{v.get('ci_high', float('nan')):+.3g}], one-sided bound {v['lower']:+.3g}"
                      if v["outcome"] != "not estimable" else f"{c}: not estimable ({v['why']})"
                      for c, v in instrument["controls"].items())
    return f"**Instrument check: {'passed' if instrument['passed'] else 'not passed'}.** {parts}."


def transfer_sentence(verdict: dict) -> str:
    """Finding 1's verdict in one markdown sentence: the outcome and why, the observed ordering, each comparison."""
    why = f" Why: {verdict['why']}." if verdict.get("why") else ""
    before = (f" The comparisons alone say: {verdict['verdict_of_the_comparisons']}."
              if verdict.get("verdict_of_the_comparisons", verdict["verdict"]) != verdict["verdict"] else "")
    return (f"**Verdict: {verdict['verdict']}.**{why}{before} Observed ordering (pooled): "
            f"{' > '.join(verdict['ordering_observed'])}. Per comparison: "
            + "; ".join(f"{k} {v['outcome']}" + (f" (MDE {verdicts.effect(v['mde'], '')})" if v["outcome"] != "not estimable" else "")
                        for k, v in verdict["pooled"].items()))


def proxy_sentence(verdict: dict) -> str:
    """Finding 2's verdict in markdown: the outcome and its reason, then each score's partial correlation, CI (at
    its level) and outcome, the primary scores (which decide) apart from the secondary ones (reported)."""
    def one(name: str, a: dict) -> str:
        lo, hi = (f"{a[k]:.2f}" if a.get(k) is not None and a[k] == a[k] else "n/a" for k in ("ci_low", "ci_high"))
        rho = f"{a['rho']:.2f}" if a.get("rho") is not None and a["rho"] == a["rho"] else "n/a"
        level = f"{100 * a['level']:g} % CI " if "level" in a else ""
        reason = f" ({a['why']})" if a.get("why") and a["outcome"] != "fails to predict" else ""
        return f"`{name}`: partial ρ {rho}, {level}[{lo}, {hi}], **{a['outcome']}**{reason}"

    assoc = verdict["associations"]
    primary = [k for k, a in assoc.items() if a.get("role", "primary") == "primary"]
    groups = [("Primary (they decide the verdict)", primary),
              ("Secondary (reported, not deciding)", [k for k in assoc if k not in primary])]
    head = f"**Verdict: {verdict['verdict']}.**" + (f" Why: {verdict['why']}." if verdict.get("why") else "")
    if verdict.get("verdict_before_instrument"):
        head += f" Before the instrument check: {verdict['verdict_before_instrument']}."
    if verdict.get("verdict_before_capability_rule"):
        head += f" Before the capability rule: {verdict['verdict_before_capability_rule']}."
    return "\n\n".join([head] + [f"{title}: " + "; ".join(one(k, assoc[k]) for k in names) + "."
                                  for title, names in groups if names])
