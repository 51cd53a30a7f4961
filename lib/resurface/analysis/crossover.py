"""The crossed design's primary contrast: two real students, each fine-tuned on its own BOS samples and on the
other's (one profile per student; `resurface crossed` reads both profiles' committed products).

The relational claim predicts a crossover: each student gains more from its own text than from the other's,
whichever source is stronger. A "better source" explanation predicts the same source wins for both students,
which the interaction (the mean of the two students' own-minus-other contrasts) cancels out.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from resurface.analysis.verdicts import t_quantile

CROSSOVER_RULE = (
    "The crossed design's primary contrast (real weights: two students, each fine-tuned on its own BOS samples "
    "and on the other student's, at the primary temperature, scored on the same headline tasks and test items). "
    "Per student, the contrast is its test headline delta after its own text minus after the other's (each side "
    "averaged over seeds); the interaction is the mean of the two students' contrasts. Its variance adds, per "
    "student, the seed-to-seed variance of the run deltas (pooled over the four cells) and both cells' item "
    "variances (squared item standard errors, with no credit for pairing); its one-sided bounds use Student's t "
    "with the pooled seeds' degrees of freedom. The crossover HOLDS when the interaction's lower bound at alpha "
    "is above 0 and each student's own contrast is positive; where, in addition, neither student's own-text "
    "delta is above 0, it holds only as harm: the other's text hurts more (fine-tuning on a model's own samples "
    "at temperature 1 has no expected gradient). It FAILS when the upper bound is below 0 (the students gain "
    "more from each other's text), or when the upper bound is below the SESOI with an MDE no larger than the "
    "SESOI (no relational effect of interest: a better source for both students, or no effect at all); "
    "otherwise it is inconclusive, with its MDE. It is read only when both students' profiles passed their "
    "instrument check; otherwise it is inconclusive whatever the numbers.")

# one-sided Student's t quantiles where the Cornish-Fisher expansion of verdicts.t_quantile is poor
_T_SMALL = {(0.95, 1): 6.314, (0.95, 2): 2.920, (0.975, 1): 12.706, (0.975, 2): 4.303, (0.8, 1): 1.376,
            (0.8, 2): 1.061}


def _t(p: float, dof: int) -> float:
    return _T_SMALL[(round(p, 3), dof)] if dof < 3 and (round(p, 3), dof) in _T_SMALL else t_quantile(p, dof)


def crossover(runs: dict[str, pd.DataFrame], instrument_passed: dict[str, bool], alpha: float = 0.05,
              power: float = 0.8, sesoi: float = 0.5, temperature: float = 1.0) -> dict:
    """Apply CROSSOVER_RULE. `runs[student]`: that student's profile's transfer_runs table (columns student,
    source, temperature, seed, headline_delta, item_se); the two students are each other's other source."""
    students = sorted(runs)
    if len(students) != 2:
        raise ValueError(f"the crossed design has two students, not {students}")
    per_student, cells_var, dof = [], [], 0
    for s, other in (students, students[::-1]):
        r = runs[s]
        r = r[(r["student"] == s) & np.isclose(r["temperature"].astype(float), temperature)]
        own, theirs = r[r["source"] == s], r[r["source"] == other]
        if own.empty or theirs.empty:
            return {"rule": CROSSOVER_RULE, "outcome": "not estimable",
                    "why": f"{s} has no runs on {'its own' if own.empty else other + chr(39) + 's'} text at T = {temperature}"}
        for cell in (own, theirs):
            if len(cell) > 1:
                cells_var.append(float(cell["headline_delta"].var(ddof=1)) * (len(cell) - 1))
                dof += len(cell) - 1
        per_student.append({"student": s, "other": other, "own": float(own["headline_delta"].mean()),
                            "others": float(theirs["headline_delta"].mean()), "n_own": len(own),
                            "n_others": len(theirs),
                            "item_var": float((own["item_se"] ** 2).mean() + (theirs["item_se"] ** 2).mean())})
    pooled = sum(cells_var) / dof if dof else float("nan")
    for p in per_student:
        p["contrast"] = p["own"] - p["others"]
        p["se"] = float(np.sqrt(pooled * (1 / p["n_own"] + 1 / p["n_others"]) + p["item_var"])) if dof else float("nan")
    est = float(np.mean([p["contrast"] for p in per_student]))
    se = float(np.sqrt(sum(p["se"] ** 2 for p in per_student)) / 2)
    if not np.isfinite(se):
        return {"rule": CROSSOVER_RULE, "outcome": "not estimable", "per_student": per_student,
                "why": "one seed per cell: no seed-to-seed variance to judge the contrast by"}
    t = _t(1 - alpha, dof)
    lower, upper = est - t * se, est + t * se
    mde = float((t + _t(power, dof)) * se)
    if lower > 0 and all(p["contrast"] > 0 for p in per_student):
        outcome, why = "holds", "each student gains more from its own text, and the interaction's lower bound is above 0"
        if all(p["own"] <= 0 for p in per_student):
            outcome, why = "holds (as harm)", "neither student gains from its own text; the other's text hurts more"
    elif upper < 0:
        outcome, why = "fails", "the interaction's upper bound is below 0: the students gain more from each other's text"
    elif upper < sesoi and mde <= sesoi:
        outcome, why = "fails", f"the interaction's upper bound ({upper:+.3g}) rules out the SESOI ({sesoi:g}): no relational effect"
    else:
        outcome, why = "inconclusive", f"the interaction's bounds [{lower:+.3g}, {upper:+.3g}] include 0 (MDE {mde:.3g})"
    reported = outcome
    if not all(instrument_passed.get(s, False) for s in students):
        failed = [s for s in students if not instrument_passed.get(s, False)]
        outcome, why = "inconclusive", f"the instrument check did not pass for {', '.join(failed)}; as measured: {why}"
    return {"rule": CROSSOVER_RULE, "outcome": outcome, "why": why, "outcome_of_the_numbers": reported,
            "interaction": est, "se": se, "lower": lower, "upper": upper, "mde": mde, "dof": dof,
            "alpha": alpha, "sesoi": sesoi, "temperature": temperature, "per_student": per_student}
