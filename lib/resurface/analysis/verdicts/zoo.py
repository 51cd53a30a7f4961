"""The zoo's checks (notebook 00): relation labels, the capability axis and headroom."""
from __future__ import annotations

import numpy as np
import pandas as pd



LABEL_RULE = (
    "Every relation label is checked per student on held-out lineage text (documents no benchmark uses), as "
    "source minus student bits per byte with a 95 % bootstrap CI over documents: a weaker same-lineage source "
    "must be worse (CI above 0), a stronger one better (CI below 0), an equal-strength sibling within "
    "+-tolerance (CI inside it), and stronger_different better (CI below 0). Cross-family needs no strength: its "
    "label is structural (another architecture and tokenizer). A source that fails its check leaves that "
    "student's verdict.")


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


CAPABILITY_RULE = (
    "A task enters the headline only if it rises along the lineage on the DEV items: every step of the "
    "capability axis (earlier checkpoint -> later checkpoint -> final -> larger member) improves its score "
    "(SCORE_RULE) by more than the step's paired standard error. A task that does not is reported and left out. If no task "
    "passes, every accuracy task is reported, and no verdict of findings 1 and 2 can be more than "
    "`inconclusive`: the benchmarks do not measure what a resurfaced capability would change.")


NO_CAPABILITY = "no benchmark task rose along the capability axis (CAPABILITY_RULE)"


def without_capability(verdict: dict, axis_ok: bool) -> dict:
    """CAPABILITY_RULE's last sentence, applied to a finished verdict."""
    if axis_ok:
        return verdict
    return {**verdict, "verdict": "inconclusive", "verdict_before_capability_rule": verdict["verdict"],
            "why": NO_CAPABILITY}


def capability_axis(axis: list[str], items: dict[str, dict[str, list[float]]], tasks: list[str],
                    scale: float = 100.0) -> pd.DataFrame:
    """Apply CAPABILITY_RULE. `axis`: model refs from weakest to strongest; `items[model][task]`: per-item scores,
    higher is better (0/1 accuracy, or minus the log-loss), times `scale` (100: accuracy in points).

    One row per (task, step) with the rise in the score's unit, its paired SE, and whether the task passes."""
    rows = []
    for t in tasks:
        for a, b in zip(axis, axis[1:]):
            x, y = scale * np.asarray(items[a][t], float), scale * np.asarray(items[b][t], float)
            d = y - x
            se = d.std(ddof=1) / np.sqrt(len(d))
            rows.append({"task": t, "from": a, "to": b, "score_from": x.mean(), "score_to": y.mean(),
                         "rise": d.mean(), "paired_se": se, "step_ok": bool(d.mean() > se)})
    df = pd.DataFrame(rows)
    if not df.empty:
        df["task_in_headline"] = df.groupby("task")["step_ok"].transform("all")
    return df


HEADROOM_RULE = (
    "A task enters the headline only if every student has room to move on it: on the DEV items, each student's "
    "untouched accuracy is at least analysis.headroom_above_chance_points above chance (the mean over items of "
    "one over the number of choices; 0 for a task scored by greedy decoding) and at least "
    "analysis.headroom_below_ceiling_points below 100. A task at chance or near ceiling for any student is "
    "reported and left out. If no task passes both this rule and CAPABILITY_RULE, every accuracy task is "
    "reported, and no verdict of findings 1 and 2 can be more than `inconclusive`.")


def headroom(base: pd.DataFrame, above: float, below: float) -> pd.DataFrame:
    """Apply HEADROOM_RULE. `base`: one row per (student, task) with `accuracy` and `chance` in points; adds
    the distances to chance and ceiling, each row's check and the task's (every student's)."""
    out = base.copy()
    out["above_chance"] = out["accuracy"] - out["chance"]
    out["below_ceiling"] = 100.0 - out["accuracy"]
    out["room"] = (out["above_chance"] >= above) & (out["below_ceiling"] >= below)
    out["task_in_headline"] = out.groupby("task")["room"].transform("all")
    return out
