"""The pre-registered rules on synthetic data whose right answer is known."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from resurface.analysis import verdicts as V

TH = V.Thresholds(bootstrap=400, sesoi=0.5)


def test_judge_greater_holds_fails_and_is_inconclusive():
    rng = np.random.default_rng(0)
    assert V.judge(2.0, rng.normal(2.0, 0.3, 2000), "greater", 0.5, 0.05, 0.8)["outcome"] == "holds"
    # precise and near zero: an effect of the SESOI is ruled out
    assert V.judge(0.0, rng.normal(0.0, 0.1, 2000), "greater", 0.5, 0.05, 0.8)["outcome"] == "fails"
    # imprecise: cannot tell, and the MDE says why
    r = V.judge(0.0, rng.normal(0.0, 2.0, 2000), "greater", 0.5, 0.05, 0.8)
    assert r["outcome"] == "inconclusive" and r["mde"] > 0.5
    # below the SESOI but without the power to see it: the rule says it cannot fail
    weak = V.judge(0.0, rng.normal(0.0, 0.25, 2000), "greater", 0.5, 0.05, 0.8)
    assert weak["upper"] < 0.5 < weak["mde"] and weak["outcome"] == "inconclusive"
    assert V.judge(-0.2, rng.normal(-0.2, 0.1, 2000), "noninferior", 0.5, 0.05, 0.8)["outcome"] == "holds"
    assert V.judge(-2.0, rng.normal(-2.0, 0.1, 2000), "noninferior", 0.5, 0.05, 0.8)["outcome"] == "fails"


def test_a_comparison_without_spread_claims_no_power():
    """Students that changed no item in any run: every bootstrap resample is 0, the SE is 0 and the MDE would be
    0, which would let 'the data rule out an effect' fail a claim (and 'kept' hold) on no information at all."""
    flat = np.zeros(2000)
    for kind in ("greater", "noninferior"):
        r = V.judge(0.0, flat, kind, 0.5, 0.05, 0.8)
        assert r["outcome"] == "inconclusive" and r["why"] == "no spread: no item changed in any run"
        assert r["se"] == 0.0 and np.isnan(r["mde"])
    assert "no spread at all" in V.COMPARISON_RULE


def _synthetic_matrix(effects: dict[str, float], n_items: int, seeds: int = 3, seed: int = 0):
    """Runs whose per-item deltas are -1/0/+1 with a chosen mean per relation (in points)."""
    rng = np.random.default_rng(seed)
    rows, deltas = [], []
    for student in ("a", "b"):
        for rel, eff in effects.items():
            for source in (f"{rel}-1", f"{rel}-2"):
                for s in range(seeds):
                    p_up = 0.05 + max(eff, 0) / 100
                    p_down = 0.05 + max(-eff, 0) / 100
                    u = rng.random(n_items)
                    d = np.where(u < p_up, 100.0, np.where(u < p_up + p_down, -100.0, 0.0))
                    rows.append({"student": student, "relation": rel, "source": source, "temperature": 1.0,
                                 "seed": s, "in_verdict": True})
                    deltas.append(d)
    return pd.DataFrame(rows), [np.asarray(deltas)]


def test_transfer_verdict_supported_when_the_paper_is_right():
    runs, d = _synthetic_matrix({"self": 4.0, "same_lineage": 3.5, "stronger_different": 1.5,
                                 "cross_family": -1.0}, n_items=4000)
    v = V.transfer_verdict(runs, d, TH)
    assert v["verdict"] == "supported", v["pooled"]
    assert v["ordering_observed"] == list(V.RELATIONS)


def test_transfer_verdict_not_supported_when_self_hurts():
    runs, d = _synthetic_matrix({"self": -3.0, "same_lineage": 1.0, "stronger_different": 2.0,
                                 "cross_family": 2.5}, n_items=4000)
    v = V.transfer_verdict(runs, d, TH)
    assert v["verdict"] == "not supported"
    assert v["pooled"]["self_training_helps"]["outcome"] == "fails"


def test_transfer_verdict_inconclusive_when_underpowered():
    runs, d = _synthetic_matrix({"self": 0.3, "same_lineage": 0.2, "stronger_different": 0.1,
                                 "cross_family": 0.0}, n_items=60, seeds=2)
    v = V.transfer_verdict(runs, d, TH)
    assert v["verdict"] == "inconclusive"
    assert all(c["mde"] > TH.sesoi for c in v["pooled"].values())


def test_runs_whose_label_failed_leave_the_verdict():
    runs, d = _synthetic_matrix({"self": 4.0, "same_lineage": 3.5, "stronger_different": 1.5,
                                 "cross_family": -1.0}, n_items=2000)
    runs.loc[runs["relation"] == "stronger_different", "in_verdict"] = False
    v = V.transfer_verdict(runs, d, TH)
    assert v["pooled"]["same_lineage_beats_stronger_different"]["why"] == "missing data"
    assert v["verdict"] == "inconclusive"


def test_beyond_strength_finds_a_lineage_effect_that_strength_does_not_explain():
    runs, d = _synthetic_matrix({"self": 3.0, "same_lineage": 3.0, "stronger_different": 0.0,
                                 "cross_family": 0.0}, n_items=3000)
    gap = np.where(runs["relation"].isin(["self", "same_lineage"]), 0.0, -0.05)
    gap = gap + np.random.default_rng(1).normal(0, 0.02, len(gap))
    v = V.transfer_verdict(runs, d, TH, strength_gap=gap)
    assert v["beyond_strength"]["lineage_coefficient"]["outcome"] == "holds"


def test_per_run_paired_se_matches_the_formula():
    d = np.array([[100.0, 0, 0, -100]])
    assert V.per_run_paired_se([d])[0] == pytest.approx(np.std(d, ddof=1) / 2)


def _points(n: int, slope: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    return pd.DataFrame({"proxy": x, "delta": slope * x + rng.normal(size=n),
                         "relation": rng.choice(["self", "cross_family"], n), "temperature": 1.0, "student": "a"})


def test_proxy_verdict_three_ways():
    cov = ["student", "relation", "temperature"]
    assert V.proxy_verdict(_points(300, 3.0), {"proxy": "intrinsic"}, "delta", cov, TH)["verdict"] == "not supported"
    assert V.proxy_verdict(_points(400, 0.0), {"proxy": "intrinsic"}, "delta", cov, TH)["verdict"] == "supported"
    small = V.proxy_verdict(_points(12, 0.0), {"proxy": "intrinsic"}, "delta", cov, TH)
    assert small["verdict"] == "inconclusive" and small["associations"]["proxy"]["mde"] > TH.proxy_rho0


def test_partial_spearman_removes_a_confounder():
    rng = np.random.default_rng(0)
    group = rng.integers(0, 2, 500)
    x = group + 0.1 * rng.normal(size=500)
    y = group + 0.1 * rng.normal(size=500)  # correlated only through the group
    assert abs(V.partial_spearman(x, y, group[:, None].astype(float))) < 0.15
    assert V.partial_spearman(x, y, np.empty((500, 0))) > 0.6  # without partialling, the group shows


def test_recipe_rule_looks_only_at_the_control():
    grid = pd.DataFrame([
        {"relation": "real_text", "schedule": "continue", "budget": 100, "headline_delta": 0.5},
        {"relation": "real_text", "schedule": "rewarm", "budget": 100, "headline_delta": -1.0},
        {"relation": "self", "schedule": "rewarm", "budget": 100, "headline_delta": 9.0},
        {"relation": "real_text", "schedule": "constant", "budget": 50, "headline_delta": 0.5},
    ])
    pick = V.choose_recipe(grid, ["continue", "constant", "rewarm"])
    assert (pick["schedule"], pick["budget"]) == ("constant", 50)  # tie -> smaller budget
    with pytest.raises(ValueError):
        V.choose_recipe(grid[grid.relation == "self"], ["rewarm"])


def test_capability_axis_keeps_rising_tasks_only():
    rng = np.random.default_rng(0)
    axis = ["s@1", "s@2", "s", "l"]
    items = {}
    for i, m in enumerate(axis):
        items[m] = {"rising": (rng.random(3000) < 0.6 + 0.05 * i).astype(float).tolist(),
                    "flat": (rng.random(3000) < 0.5).astype(float).tolist()}
    df = V.capability_axis(axis, items, ["rising", "flat"])
    keep = df.groupby("task")["task_in_headline"].first()
    assert keep["rising"] and not keep["flat"]


def test_label_checks():
    assert V.label_ok("weaker", {"ci_low": 0.01, "ci_high": 0.03}, 0.01)
    assert not V.label_ok("weaker", {"ci_low": -0.01, "ci_high": 0.03}, 0.01)
    assert V.label_ok("stronger_different", {"ci_low": -0.05, "ci_high": -0.01}, 0.01)
    assert V.label_ok("equal", {"ci_low": -0.005, "ci_high": 0.006}, 0.01)
    assert not V.label_ok("equal", {"ci_low": 0.02, "ci_high": 0.03}, 0.01)
    g = V.bpb_gap(np.array([10.0, 20, 30]), np.array([9.0, 19, 29]), np.array([10.0, 20, 30]), n_boot=200)
    assert g["gap"] == pytest.approx(3 / 60) and g["ci_low"] > 0
