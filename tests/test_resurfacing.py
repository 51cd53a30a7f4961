"""RESURFACING_RULE on synthetic data whose right answer is known."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from resurface.analysis import resurfacing as RS
from resurface.analysis.verdicts import Thresholds

TH = Thresholds(bootstrap=200, seed=0)
WRONG_FAR, WRONG_NEAR, RIGHT_NEAR, RIGHT_FAR = range(4)


def _flip_prob(m: np.ndarray) -> np.ndarray:
    """Any fine-tuning flips items near the boundary more often than far ones, both ways."""
    return 0.3 * np.exp(-np.abs(m) / 0.5)


def _study(self_extra: dict[int, float] | None = None, self_scale: dict[int, float] | None = None,
           groups=("self", "cross_family", "real_text", "replay"), students=("a", "b"), n_items=(400, 300),
           seeds: int = 3, seed: int = 0, identical: bool = False):
    """Runs, per-item deltas and margins. Every run flips items at random with `_flip_prob` (wrong items are gained,
    right ones lost); self runs add `self_extra[bin]` to the gain probability of the wrong bins and multiply the
    flip probability of a bin by `self_scale[bin]`. `identical`: every run of a student draws the same items."""
    rng = np.random.default_rng(seed)
    self_extra, self_scale = self_extra or {}, self_scale or {}
    test, dev = {}, {}
    for s in students:
        dev[s] = [rng.normal(0.3, 1.5, n) for n in n_items]
        test[s] = [rng.normal(0.3, 1.5, n) for n in n_items]
    rows, deltas = [], [[] for _ in n_items]
    for s in students:
        bins = [RS.assign_bins(m, RS.margin_edges(dm)) for m, dm in zip(test[s], dev[s])]
        shared = [rng.random(n) for n in n_items]
        for g in groups:
            temps = (0.7, 1.0) if g == "self" else (1.0,) if g in RS.RELATIONS else (float("nan"),)
            for temp in temps:
                for sd in range(seeds):
                    rows.append({"student": s, "source": f"{g}-src", "relation": g, "temperature": temp, "seed": sd})
                    for t, m in enumerate(test[s]):
                        p = _flip_prob(m)
                        extra = np.zeros_like(p)
                        if g == "self":
                            for b, f in self_scale.items():
                                p = np.where(bins[t] == b, p * f, p)
                            for b, e in self_extra.items():
                                extra = np.where(bins[t] == b, e, extra)
                        u = shared[t] if identical else rng.random(len(m))
                        d = np.where(m < 0, np.where(u < p + extra, 100.0, 0.0), np.where(u < p, -100.0, 0.0))
                        deltas[t].append(d)
    return pd.DataFrame(rows), [np.asarray(d) for d in deltas], test, dev


def _run(study, th=TH):
    runs, deltas, test, dev = study
    return RS.resurfacing(runs, deltas, test, dev, th, tasks=["t0", "t1"])


def _row(res, group, bin_, scope="pooled"):
    t = pd.DataFrame(res["table"])
    return t[(t["scope"] == scope) & (t["group"] == group) & (t["bin"] == bin_)].iloc[0]


def test_gains_only_near_the_boundary_beyond_the_controls_resurface():
    res = _run(_study(self_extra={WRONG_NEAR: 0.15}))
    assert res["verdict"] == "resurfaces", res["why"]
    assert all(v["verdict"] == "resurfaces" for v in res["per_student"].values())
    c = res["comparisons"]["pooled"]
    assert c["wrong_near_excess"]["lower"] > 0 and c["wrong_near_minus_wrong_far_excess"]["lower"] > 0
    near = _row(res, "self", "wrong-near")
    assert 8 < near["excess"] < 22 and near["excess_ci_low"] > 0
    # the controls' own near-boundary flips are there, and are not counted as excess
    assert _row(res, "real_text", "wrong-near")["net_shift"] > 5
    assert _row(res, "real_text", "right-near")["net_shift"] < -5
    # cross-family behaves like the controls: reported the same way, no excess
    cf = _row(res, "cross_family", "wrong-near")
    assert cf["excess_ci_low"] < 0 < cf["excess_ci_high"]
    assert res["rule"] == RS.RESURFACING_RULE


def test_uniform_gains_in_every_wrong_bin_are_not_resurfacing():
    # the same as the controls everywhere: nothing beyond them
    same = _run(_study())
    assert same["verdict"] != "resurfaces"
    # self gains 10 points beyond the controls in both wrong bins: real gains, but not where resurfacing puts them
    uniform = _run(_study(self_extra={WRONG_FAR: 0.10, WRONG_NEAR: 0.10}))
    c = uniform["comparisons"]["pooled"]
    assert c["wrong_near_excess"]["lower"] > 0
    assert c["wrong_near_minus_wrong_far_excess"]["lower"] <= 0
    assert uniform["verdict"] == "inconclusive"
    assert _row(uniform, "self", "wrong-far")["excess_ci_low"] > 0


def test_fewer_near_boundary_gains_than_the_controls_do_not_resurface():
    res = _run(_study(self_scale={WRONG_NEAR: 0.0}))
    assert res["verdict"] == "does not resurface", res["why"]
    assert res["comparisons"]["pooled"]["wrong_near_excess"]["upper"] < 0
    assert _row(res, "self", "wrong-near")["net_shift"] == 0.0


def test_without_controls_or_self_it_is_not_estimable():
    no_ctrl = _run(_study(groups=("self", "cross_family")))
    assert no_ctrl["verdict"] == "not estimable" and "control" in no_ctrl["why"]
    assert all(v["verdict"] == "not estimable" for v in no_ctrl["per_student"].values())
    # the relations are still reported, without an excess
    assert np.isfinite(_row(no_ctrl, "self", "wrong-near")["net_shift"])
    assert np.isnan(_row(no_ctrl, "self", "wrong-near")["excess"])
    no_self = _run(_study(groups=("cross_family", "real_text", "replay")))
    assert no_self["verdict"] == "not estimable" and "self" in no_self["why"]
    # self runs whose label failed the zoo check leave; the controls stay whatever their flag says
    runs, deltas, test, dev = _study(self_extra={WRONG_NEAR: 0.15})
    runs["in_verdict"] = ~runs["relation"].isin(["self", "real_text", "replay"])
    flagged = RS.resurfacing(runs, deltas, test, dev, TH)
    assert flagged["verdict"] == "not estimable" and "self" in flagged["why"]


def test_edges_come_from_the_dev_margins_only():
    e = RS.margin_edges(np.array([-3.0, -1.0, -2.0, 0.0, 1.0, 5.0]))
    assert e.tolist() == [-np.inf, -2.0, 0.0, 1.0, np.inf]
    study = _study(self_extra={WRONG_NEAR: 0.15})
    res = _run(study)
    runs, deltas, test, dev = study
    shifted = {s: [m + 1.0 for m in ms] for s, ms in test.items()}
    moved = RS.resurfacing(runs, deltas, shifted, dev, TH, tasks=["t0", "t1"])
    assert moved["edges"] == res["edges"]
    assert [r["n_test"] for r in moved["bin_counts"]] != [r["n_test"] for r in res["bin_counts"]]
    assert [r["n_dev"] for r in moved["bin_counts"]] == [r["n_dev"] for r in res["bin_counts"]]
    for s in dev:
        for t, name in enumerate(["t0", "t1"]):
            assert res["edges"][s][name] == RS.margin_edges(dev[s][t]).tolist()
    dev_moved = {s: [m - 0.5 for m in ms] for s, ms in dev.items()}
    assert RS.resurfacing(runs, deltas, test, dev_moved, TH, tasks=["t0", "t1"])["edges"] != res["edges"]


def test_bins_partition_the_items():
    m = np.concatenate([np.random.default_rng(1).normal(0, 2, 5000), [-2.0, -1.999, -1e-9, 0.0, 0.999, 1.0]])
    e = np.array([-np.inf, -2.0, 0.0, 1.0, np.inf])
    b = RS.assign_bins(m, e)
    assert b.shape == m.shape and set(np.unique(b)) == {0, 1, 2, 3}
    assert sum((b == k).sum() for k in range(4)) == len(m)
    assert b[-6:].tolist() == [WRONG_FAR, WRONG_NEAR, WRONG_NEAR, RIGHT_NEAR, RIGHT_NEAR, RIGHT_FAR]
    assert ((m[b == WRONG_FAR] <= -2) & np.isin(b[m < 0], [WRONG_FAR, WRONG_NEAR]).all()).all()
    assert (m[b >= RIGHT_NEAR] >= 0).all() and (m[b == RIGHT_FAR] >= 1).all() and (m[b == RIGHT_NEAR] < 1).all()
    # a side without dev items has an empty near bin
    only_right = RS.margin_edges(np.array([0.5, 1.0, 2.0]))
    assert RS.assign_bins(np.array([-0.01, -5.0]), only_right).tolist() == [WRONG_FAR, WRONG_FAR]
    # in the analysis every test item lands in exactly one bin of its student and task
    study = _study()
    res = _run(study)
    counts = pd.DataFrame(res["bin_counts"]).groupby(["student", "task"])["n_test"].sum()
    assert counts.tolist() == [400, 300, 400, 300]


def test_net_shift_is_gained_minus_lost_over_the_bin_items_of_all_tasks():
    study = _study(self_extra={WRONG_NEAR: 0.15})
    runs, deltas, test, dev = study
    res = _run(study)
    sel = ((runs["student"] == "a") & (runs["relation"] == "real_text")).to_numpy()
    bins = [RS.assign_bins(test["a"][t], RS.margin_edges(dev["a"][t])) for t in range(2)]
    gained_minus_lost = sum(deltas[t][sel][:, bins[t] == RIGHT_NEAR].sum(1) / 100 for t in range(2))
    n = sum((bins[t] == RIGHT_NEAR).sum() for t in range(2))
    row = _row(res, "real_text", "right-near", scope="a")
    assert row["net_shift"] == pytest.approx(100 * gained_minus_lost.mean() / n)
    assert row["n_items"] == n and row["n_runs"] == 3
    # wrong bins only gain, right bins only lose
    t = pd.DataFrame(res["table"])
    assert (t[t["bin"].str.startswith("wrong")]["net_shift"] >= 0).all()
    assert (t[t["bin"].str.startswith("right")]["net_shift"] <= 0).all()


def test_items_are_resampled_once_for_all_runs():
    """Self and controls that flip exactly the same items have an excess of 0 in every replicate (paired); with no
    spread the rule calls it inconclusive rather than claiming a precision it has not got."""
    res = _run(_study(seeds=1, identical=True))
    near = res["comparisons"]["pooled"]["wrong_near_excess"]
    assert near["estimate"] == 0 and near["se"] == 0 and near["lower"] == near["upper"] == 0
    assert res["verdict"] == "inconclusive" and "no spread" in res["why"]
    row = _row(res, "self", "wrong-near")
    assert row["ci_high"] > row["ci_low"]  # the net shift itself does vary over item resamples


def test_the_bootstrap_is_seeded_by_the_thresholds():
    study = _study(self_extra={WRONG_NEAR: 0.15})
    a, b = pd.DataFrame(_run(study)["table"]), pd.DataFrame(_run(study)["table"])
    assert a.equals(b)
    c = pd.DataFrame(_run(study, Thresholds(bootstrap=200, seed=1))["table"])
    assert c["net_shift"].equals(a["net_shift"]) and not c["ci_low"].equals(a["ci_low"])


def test_the_figure_draws():
    import matplotlib.pyplot as plt

    from resurface.study import figures
    res = _run(_study(self_extra={WRONG_NEAR: 0.15}))
    fig = figures.resurfacing_bins(pd.DataFrame(res["table"]))
    assert len(fig.axes) == 2 and fig.axes[0].get_ylabel() and fig.axes[0].get_legend() is not None
    plt.close(fig)
