"""Is it resurfacing? A pre-registered per-item analysis of where fine-tuning's gains and losses fall.

The paper's mechanism is that self-training brings up what the model already half knows. Per benchmark item, the
untouched student's log-likelihood margin (the right choice's log-likelihood minus the best wrong choice's, nats;
below 0 the student answers wrong) says how close the item is to the decision boundary. Items near the boundary
flip under any perturbation, so what counts is the NET shift per margin bin beyond what the controls (fine-tuning
on real held-out text, and on replay of the student's own pretraining data) produce in the same bin, with the
noise of items and seeds in the bounds.

numpy and pandas only, like the rest of `analysis`. The rule is `RESURFACING_RULE`, printed before the results.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from resurface.analysis.verdicts import Thresholds, _inflated
from resurface.names import CONTROLS, SOURCE_RELATIONS as RELATIONS

BIN_NAMES = ("wrong-far", "wrong-near", "right-near", "right-far")
GROUPS = RELATIONS + CONTROLS

RESURFACING_RULE = (
    "Resurfacing, per student and pooled over students (the pooled verdict is the headline). Bins: the untouched "
    "student's margin on an item (log-likelihood of the right choice minus that of the best wrong choice, nats; "
    "below 0 the item is wrong, exactly 0 counts as right) places each headline item in one of four bins whose "
    "edges are fixed per student and task on the DEV items before any fine-tuning: wrong-far, wrong-near, "
    "right-near, right-far. An item is near when its |margin| is below the cut of its side of 0, the median |margin| "
    "of the dev items on that side (a side without dev items has cut 0 and an empty near bin), and far otherwise. "
    "Outcome: on the TEST items, per run and bin, net shift = 100 x (items gained - items lost) / items in the bin, "
    "in points, the items of all headline tasks pooled; as bins are fixed on the untouched student, items in a wrong "
    "bin can only be gained and items in a right bin only lost. Per relation (self, same_lineage, "
    "stronger_different, cross_family) and per control (real_text, replay): the mean over the relation's runs, each "
    "source x temperature cell averaged over its seeds first, cells then averaged, students then averaged (over the "
    "students with test items in the bin). A source whose relation label fails its zoo check leaves the analysis; "
    "the controls stay. Uncertainty: a bootstrap that resamples the items of each task once for every student and "
    "run (a bin's mean reads the resampled items that fall in it, so comparisons are paired), the seeds of each "
    "corpus once for every student fine-tuned on it, and the students once for every relation (each level's "
    "resampled deviation scaled by sqrt(n / (n - 1)) for its n units); 95 % CIs are percentile intervals. Excess = a relation's net shift minus the controls' (the mean of real_text and replay, "
    "or the one present) in the same student and bin; pooled, the mean over students of the per-student excess. "
    "Self-training RESURFACES when self's excess in the wrong-near bin has its one-sided lower bound (level alpha) "
    "above 0 AND exceeds self's excess in the wrong-far bin (the one-sided lower bound of wrong-near minus wrong-far "
    "excess above 0; both must hold, so alpha needs no multiplicity correction); it DOES NOT RESURFACE when the "
    "one-sided upper bound of self's wrong-near excess is below 0; otherwise it is INCONCLUSIVE, as is a comparison "
    "whose bootstrap has no spread at all. Without self runs or control runs it is NOT ESTIMABLE. Every relation is "
    "reported the same way; the verdict is about self.")


# ------------------------------------------------------------------ bins


def margin_edges(dev_margins: np.ndarray) -> np.ndarray:
    """[-inf, -cut_wrong, 0, cut_right, +inf] from the DEV margins of one student and task.

    cut_wrong = median |m| of the dev items with m < 0, cut_right = median m of those with m >= 0 (an exact 0 is a
    right answer). A side without dev items gets cut 0: its near bin is empty. Non-finite margins are ignored."""
    m = np.asarray(dev_margins, float).ravel()
    m = m[np.isfinite(m)]
    wrong, right = -m[m < 0], m[m >= 0]
    cut_wrong = float(np.median(wrong)) if len(wrong) else 0.0
    cut_right = float(np.median(right)) if len(right) else 0.0
    return np.array([-np.inf, -cut_wrong, 0.0, cut_right, np.inf])


def assign_bins(margins: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin of each item, 0..3 in BIN_NAMES order; -1 for a non-finite margin (the item is in no bin).

    wrong-far: m <= -cut_wrong; wrong-near: -cut_wrong < m < 0; right-near: 0 <= m < cut_right; right-far:
    m >= cut_right. So an item is near when |m| < the cut of its side, and a margin of exactly 0 counts as right
    (lm-eval breaks a tie by choice order, so a rare tied item may be scored otherwise; it keeps this bin)."""
    m = np.asarray(margins, float).ravel()
    cut_wrong, cut_right = -float(edges[1]), float(edges[3])
    wrong = m < 0
    out = np.select([wrong & (-m >= cut_wrong), wrong, m < cut_right, m >= cut_right], [0, 1, 2, 3], default=-1)
    out[~np.isfinite(m)] = -1
    return out.astype(int)


# ------------------------------------------------------------------ the bootstrap


def _binned_scores(deltas: list[np.ndarray], bins: list[np.ndarray], counts: list[np.ndarray]):
    """For the runs of one student: per run and bin the net shift (points), as a point (runs, 4) and as bootstrap
    replicates (n_boot, runs, 4). `counts[t]` (n_boot, items of task t): how often each item of task t is drawn in
    each replicate, one resample shared by every student and run; a bin's replicate reads the drawn items that
    fall in it (a ratio: drawn item deltas over drawn items). The items of all tasks are pooled in a bin; a bin
    without items is NaN."""
    runs = deltas[0].shape[0]
    n_boot = counts[0].shape[0]
    sums = np.zeros((n_boot, runs, len(BIN_NAMES)))
    drawn = np.zeros((n_boot, len(BIN_NAMES)))
    point_sums = np.zeros((runs, len(BIN_NAMES)))
    n = np.zeros(len(BIN_NAMES))
    for d, b, c in zip(deltas, bins, counts):
        for k in range(len(BIN_NAMES)):
            idx = np.flatnonzero(b == k)
            if not len(idx):
                continue
            sub = d[:, idx].astype(np.float64)
            sums[:, :, k] += c[:, idx] @ sub.T
            drawn[:, k] += c[:, idx].sum(1)
            point_sums[:, k] += sub.sum(1)
            n[k] += len(idx)
    with np.errstate(invalid="ignore", divide="ignore"):
        return point_sums / n, sums / drawn[:, None, :], n


def _group_means(runs: pd.DataFrame, point: np.ndarray, boot: np.ndarray, rng: np.random.Generator,
                 picks: dict) -> dict:
    """Per (student, group): the mean over source x temperature cells of the mean over seeds, per bin, as a point
    (4,) and replicates (n_boot, 4), the seeds of each cell resampled (one draw for all four bins, so bins stay
    paired). Like `verdicts.cell_means`, with a bin axis."""
    out = {}
    n_boot = boot.shape[0]
    rows = np.arange(n_boot)[:, None]
    for key, g in runs.groupby(["student", "group"], sort=True):
        est, reps = [], []
        for (source, t), cell in g.groupby(["source", "temperature"], sort=True, dropna=False):
            idx = cell.sort_values("seed").index.to_numpy()
            shared = (source, -1.0 if t != t else t, len(idx))  # one seed draw per corpus, for every student
            if shared not in picks:
                picks[shared] = rng.integers(0, len(idx), (n_boot, len(idx)))
            all_seeds = boot[:, idx].mean(1)
            reps.append(_inflated(all_seeds, boot[rows, idx[picks[shared]]].mean(1), len(idx)))
            est.append(point[idx].mean(0))
        out[key] = (np.mean(est, axis=0), np.mean(reps, axis=0), len(g))
    return out


def _one_sided(estimate: float, boot: np.ndarray, alpha: float) -> dict:
    boot = np.asarray(boot, float)
    boot = boot[np.isfinite(boot)]
    if not np.isfinite(estimate) or len(boot) < 20:
        return {"estimate": float(estimate), "lower": float("nan"), "upper": float("nan"), "se": float("nan"),
                "alpha": alpha}
    return {"estimate": float(estimate), "lower": float(np.quantile(boot, alpha)),
            "upper": float(np.quantile(boot, 1 - alpha)), "se": float(boot.std(ddof=1)), "alpha": alpha}


def _verdict(has_self: bool, has_controls: bool, paired: bool, near: dict, diff: dict) -> tuple[str, str]:
    """RESURFACING_RULE's decision for one scope; `paired`: some student has both self and control runs."""
    if not has_self or not has_controls:
        missing = " and ".join(w for w, ok in (("self runs", has_self), ("control runs", has_controls)) if not ok)
        return "not estimable", f"no {missing}"
    if not paired:
        return "not estimable", "no student has both self runs and control runs"
    if not np.isfinite(near["lower"]):
        return "inconclusive", "no test items in the wrong-near bin"
    if near["se"] == 0.0:
        return "inconclusive", "no spread: no wrong-near item changed in any run"
    diff_ok = np.isfinite(diff["lower"]) and diff["se"] > 0 and diff["lower"] > 0
    if near["lower"] > 0 and diff_ok:
        return "resurfaces", ("self's wrong-near excess over the controls is above 0 and above its wrong-far excess "
                              "(both one-sided lower bounds above 0)")
    if near["upper"] < 0:
        return "does not resurface", "self's wrong-near excess has its upper bound below 0"
    if near["lower"] > 0:
        return "inconclusive", ("self gains beyond the controls in the wrong-near bin, but not detectably more than "
                                "in the wrong-far bin" if np.isfinite(diff["lower"]) else
                                "self gains beyond the controls in the wrong-near bin; no wrong-far items to compare")
    return "inconclusive", "the bounds of self's wrong-near excess straddle 0"


# ------------------------------------------------------------------ the analysis


def resurfacing(runs: pd.DataFrame, item_deltas: list[np.ndarray], base_test_margins: dict[str, list[np.ndarray]],
                dev_margins: dict[str, list[np.ndarray]], th: Thresholds, tasks: list[str] | None = None) -> dict:
    """Apply RESURFACING_RULE.

    `runs`: one row per fine-tuning run (in the order of the rows of each `item_deltas` array) with student, source,
    relation, temperature (NaN for the controls) and seed; an optional boolean `in_verdict` drops the relation runs
    whose label failed its zoo check (controls are kept whatever it says). Runs of other relations are ignored.
    `item_deltas[t]`: (runs, test items of task t), the per-item accuracy change in points (after minus the untouched
    student). `base_test_margins[student][t]` / `dev_margins[student][t]`: the untouched student's margins on the
    test / dev items of task t. `tasks`: names of the tasks (default task0, task1, ...)."""
    runs = runs.reset_index(drop=True)
    n_runs, n_tasks = len(runs), len(item_deltas)
    tasks = list(tasks) if tasks is not None else [f"task{t}" for t in range(n_tasks)]
    if len(tasks) != n_tasks:
        raise ValueError(f"{len(tasks)} task names for {n_tasks} tasks")
    for t, d in enumerate(item_deltas):
        if d.ndim != 2 or d.shape[0] != n_runs:
            raise ValueError(f"item_deltas[{t}] has shape {d.shape}, expected ({n_runs}, items)")
    keep = runs["relation"].isin(GROUPS)
    if "in_verdict" in runs.columns:
        keep &= runs["in_verdict"].fillna(False).astype(bool) | runs["relation"].isin(CONTROLS)
    used = runs[keep].assign(group=lambda r: r["relation"])
    students = sorted(used["student"].unique())
    rng = np.random.default_rng(th.seed)
    n_boot, alpha = th.bootstrap, th.alpha
    # one resample of each task's items for every student and run, one seed draw per corpus, one student draw
    counts = [rng.multinomial(d.shape[1], np.full(d.shape[1], 1.0 / d.shape[1]), size=n_boot).astype(np.float64)
              for d in item_deltas]
    picks: dict = {}
    student_draw = (rng.multinomial(len(students), np.full(len(students), 1.0 / len(students)), size=n_boot)
                    .astype(np.float64) if students else np.zeros((n_boot, 0)))

    edges, bin_counts, groups = {}, [], {}
    for s in students:
        if s not in base_test_margins or s not in dev_margins:
            raise ValueError(f"no margins for student {s}")
        edges[s], bins = {}, []
        for t, name in enumerate(tasks):
            e = margin_edges(dev_margins[s][t])
            test = np.asarray(base_test_margins[s][t], float)
            if len(test) != item_deltas[t].shape[1]:
                raise ValueError(f"student {s}, task {name}: {len(test)} test margins for "
                                 f"{item_deltas[t].shape[1]} items")
            b = assign_bins(test, e)
            edges[s][name] = [float(x) for x in e]
            bins.append(b)
            dev_b = assign_bins(dev_margins[s][t], e)
            bin_counts += [{"student": s, "task": name, "bin": k, "n_dev": int((dev_b == i).sum()),
                            "n_test": int((b == i).sum())} for i, k in enumerate(BIN_NAMES)]
        r = used[used["student"] == s]
        idx = r.index.to_numpy()
        point, boot, n_items = _binned_scores([d[idx] for d in item_deltas], bins, counts)
        local = r.reset_index(drop=True)
        for (st, grp), (est, reps, k) in _group_means(local, point, boot, rng, picks).items():
            groups[(st, grp)] = {"est": est, "boot": reps, "n_runs": k, "n_items": n_items}

    # per student: the controls' mean and each relation's excess over it
    q = (1 - 0.95) / 2
    per_scope = {}  # scope -> group -> dict(est, boot, n_runs, n_items, excess_est, excess_boot)
    for s in students:
        mine = {g: v for (st, g), v in groups.items() if st == s}
        ctrl = [mine[c] for c in CONTROLS if c in mine]
        for g, v in mine.items():
            if g in RELATIONS and ctrl:
                v["excess_est"] = v["est"] - np.mean([c["est"] for c in ctrl], axis=0)
                v["excess_boot"] = v["boot"] - np.mean([c["boot"] for c in ctrl], axis=0)
        per_scope[s] = mine
    def over_students(names: list[str], reps: list[np.ndarray]) -> np.ndarray:
        """(n_boot, 4): the students' replicates averaged with the shared student draw, inflated for their number."""
        x = np.array(reps)                                               # (students, n_boot, 4)
        w = student_draw[:, [students.index(n) for n in names]].T[:, :, None] * np.isfinite(x)
        plain = np.nanmean(x, axis=0)
        total = w.sum(0)
        weighted = np.where(total > 0, np.nansum(w * np.nan_to_num(x), axis=0) / np.where(total > 0, total, 1), plain)
        return _inflated(plain, weighted, len(names))

    pooled = {}
    for g in GROUPS:
        names = [s for s in students if g in per_scope[s]]
        got = [per_scope[s][g] for s in names]
        if not got:
            continue
        with warnings.catch_warnings():  # a bin empty for every student: 'Mean of empty slice', the NaN is meant
            warnings.simplefilter("ignore", RuntimeWarning)
            v = {"est": np.nanmean([x["est"] for x in got], axis=0),
                 "boot": over_students(names, [x["boot"] for x in got]),
                 "n_runs": sum(x["n_runs"] for x in got), "n_items": np.sum([x["n_items"] for x in got], axis=0)}
            ex = [(n, x) for n, x in zip(names, got) if "excess_est" in x]
            if ex:
                v["excess_est"] = np.nanmean([x["excess_est"] for _, x in ex], axis=0)
                v["excess_boot"] = over_students([n for n, _ in ex], [x["excess_boot"] for _, x in ex])
        pooled[g] = v
    per_scope["pooled"] = pooled

    table = []
    nan = float("nan")
    for scope in [*students, "pooled"]:
        for g in GROUPS:
            v = per_scope[scope].get(g)
            if v is None:
                continue
            for k, name in enumerate(BIN_NAMES):
                rec = {"scope": scope, "group": g, "bin": name, "net_shift": float(v["est"][k]),
                       "ci_low": nan, "ci_high": nan, "excess": nan, "excess_ci_low": nan, "excess_ci_high": nan,
                       "n_items": int(v["n_items"][k]), "n_runs": int(v["n_runs"])}
                b = v["boot"][:, k]
                if np.isfinite(b).all():
                    rec["ci_low"], rec["ci_high"] = float(np.quantile(b, q)), float(np.quantile(b, 1 - q))
                if "excess_est" in v:
                    rec["excess"] = float(v["excess_est"][k])
                    eb = v["excess_boot"][:, k]
                    if np.isfinite(eb).all():
                        rec["excess_ci_low"], rec["excess_ci_high"] = (float(np.quantile(eb, q)),
                                                                       float(np.quantile(eb, 1 - q)))
                table.append(rec)

    comparisons, verdicts = {}, {}
    near, far = BIN_NAMES.index("wrong-near"), BIN_NAMES.index("wrong-far")
    for scope in [*students, "pooled"]:
        v = per_scope[scope].get("self")
        has_ctrl = any(c in per_scope[scope] for c in CONTROLS)
        if v is not None and "excess_est" in v:
            e, b = v["excess_est"], v["excess_boot"]
            comps = {"wrong_near_excess": _one_sided(e[near], b[:, near], alpha),
                     "wrong_near_minus_wrong_far_excess": _one_sided(e[near] - e[far], b[:, near] - b[:, far], alpha)}
        else:
            comps = {c: _one_sided(nan, np.array([]), alpha)
                     for c in ("wrong_near_excess", "wrong_near_minus_wrong_far_excess")}
        comparisons[scope] = comps
        verdicts[scope] = _verdict(v is not None, has_ctrl, v is not None and "excess_est" in v,
                                   comps["wrong_near_excess"],
                                   comps["wrong_near_minus_wrong_far_excess"])
    if not students:
        verdicts["pooled"] = ("not estimable", "no runs of any relation or control")
    verdict, why = verdicts["pooled"]
    return {"verdict": verdict, "why": why, "rule": RESURFACING_RULE, "thresholds": dict(th.__dict__),
            "bins": list(BIN_NAMES), "tasks": tasks, "edges": edges, "bin_counts": bin_counts, "table": table,
            "comparisons": comparisons,
            "per_student": {s: {"verdict": verdicts[s][0], "why": verdicts[s][1]} for s in students}}

