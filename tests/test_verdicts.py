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
    assert "without spread" in V.COMPARISON_RULE


STRENGTH = {"self": "self", "same_lineage": "equal", "stronger_different": "stronger_different",
            "cross_family": "cross", "real_text": "control", "replay": "control"}
GAP = {"self": (0.0,), "same_lineage": (0.0, -0.03, -0.05), "stronger_different": (-0.02, -0.04, -0.1),
       "cross_family": (0.1, 0.15, 0.2), "real_text": (np.nan,), "replay": (np.nan,)}


def _synthetic_matrix(effects: dict[str, float], n_items: int, seeds: int = 3, seed: int = 0,
                      per_source: dict[str, float] | None = None):
    """Runs whose per-item deltas are -100/0/+100 with a chosen mean per relation (in points); three sources per
    relation with overlapping strengths (gap_bpb), four students. `per_source` overrides one source's effect."""
    rng = np.random.default_rng(seed)
    rows, deltas = [], []
    for student in ("a", "b", "c", "d"):
        for rel, eff in effects.items():
            sources = [f"{rel}-{k + 1}" for k in range(len(GAP[rel]))]
            for k, source in enumerate(sources):
                e = (per_source or {}).get(source, eff)
                for s in range(seeds):
                    p_up = 0.05 + max(e, 0) / 100
                    p_down = 0.05 + max(-e, 0) / 100
                    u = rng.random(n_items)
                    d = np.where(u < p_up, 100.0, np.where(u < p_up + p_down, -100.0, 0.0))
                    control = rel in ("real_text", "replay")
                    rows.append({"student": student, "relation": rel, "source": source, "strength": STRENGTH[rel],
                                 "temperature": np.nan if control else 1.0, "seed": s, "in_verdict": not control,
                                 "gap_bpb": GAP[rel][k]})
                    deltas.append(d)
    return pd.DataFrame(rows), [np.asarray(deltas)]


PAPER = {"self": 5.0, "same_lineage": 3.0, "stronger_different": 1.0, "cross_family": -1.5}


def test_transfer_verdict_supported_when_the_paper_is_right():
    runs, d = _synthetic_matrix(PAPER, n_items=4000)
    v = V.transfer_verdict(runs, d, TH)
    assert v["verdict"] == "supported", v["pooled"]
    assert v["ordering_observed"] == list(V.RELATIONS)
    pooled = pd.DataFrame(v["per_relation"]).query("student == 'pooled'").set_index("relation")
    assert pooled.loc["same_lineage", "n_sources"] == 3 and pooled.loc["self", "n_sources"] == 1


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


def test_runs_whose_label_failed_leave_the_verdict_and_leave_it_not_estimable():
    runs, d = _synthetic_matrix(PAPER, n_items=2000)
    runs.loc[runs["relation"] == "stronger_different", "in_verdict"] = False
    v = V.transfer_verdict(runs, d, TH)
    assert v["pooled"]["same_lineage_beats_stronger_different"]["outcome"] == "not estimable"
    assert v["pooled"]["cross_family_lowest"]["outcome"] == "not estimable"
    assert v["verdict"] == "inconclusive"


def test_comparison_3_needs_overlapping_strengths():
    runs, d = _synthetic_matrix(PAPER, n_items=4000)
    far = runs["relation"] == "stronger_different"
    runs.loc[far, "gap_bpb"] = -0.5  # far stronger than any same-lineage source: the comparison would extrapolate
    v = V.transfer_verdict(runs, d, TH)
    c3 = v["pooled"]["same_lineage_beats_stronger_different"]
    assert c3["outcome"] == "not estimable" and "do not overlap" in c3["why"]
    assert v["verdict"] == "inconclusive" and not v["strength_matched"]["estimable"]


def test_weaker_checkpoints_are_reported_but_never_pooled():
    runs, d = _synthetic_matrix(PAPER, n_items=3000)
    weak = runs["source"] == "same_lineage-2"
    runs.loc[weak, "strength"] = "checkpoint"
    base = V.transfer_verdict(runs, d, TH)
    d2 = [x.copy() for x in d]
    d2[0][weak.to_numpy()] = -100.0  # the checkpoint destroys everything: the comparisons must not move
    v = V.transfer_verdict(runs, d2, TH)
    assert v["pooled"]["self_at_least_same_lineage"]["estimate"] == base["pooled"]["self_at_least_same_lineage"]["estimate"]
    strengths = pd.DataFrame(v["per_strength"]).query("student == 'pooled' and relation == 'same_lineage'")
    assert set(strengths["strength"]) == {"equal", "checkpoint"}
    assert strengths.set_index("strength").loc["checkpoint", "mean"] == -100.0


def test_only_the_primary_temperature_enters():
    runs, d = _synthetic_matrix(PAPER, n_items=2000)
    runs.loc[runs["relation"] == "self", "temperature"] = 0.7
    assert V.transfer_verdict(runs, d, TH)["pooled"]["self_training_helps"]["outcome"] == "not estimable"
    assert V.transfer_verdict(runs, d, TH, temperature=0.7)["pooled"]["self_training_helps"]["outcome"] == "holds"


def test_beyond_strength_finds_a_lineage_effect_that_strength_does_not_explain():
    runs, d = _synthetic_matrix({"self": 3.0, "same_lineage": 3.0, "stronger_different": 0.0,
                                 "cross_family": 0.0}, n_items=3000)
    v = V.transfer_verdict(runs, d, TH)
    assert v["beyond_strength"]["lineage_coefficient"]["outcome"] == "holds"


def test_beyond_strength_is_not_estimable_without_overlap():
    runs, d = _synthetic_matrix({"self": 3.0, "same_lineage": 3.0, "stronger_different": 0.0,
                                 "cross_family": 0.0}, n_items=500)
    other = runs["relation"].isin(["stronger_different", "cross_family"])
    runs.loc[other, "gap_bpb"] = -1.0
    v = V.transfer_verdict(runs, d, TH)
    assert v["beyond_strength"]["lineage_coefficient"]["outcome"] == "not estimable"
    assert "no overlap" in v["beyond_strength"]["lineage_coefficient"]["why"]


def test_instrument_check_gates_the_verdict():
    good, d = _synthetic_matrix({**PAPER, "real_text": 3.0, "replay": 3.0}, n_items=8000)
    inst = V.instrument_check(good, d, TH)
    assert inst["passed"] and all(c["outcome"] == "holds" for c in inst["controls"].values())
    v = V.transfer_verdict(good, d, TH)
    assert V.finding1_verdict(v, inst, True, "")["verdict"] == "supported"
    flat, d = _synthetic_matrix({**PAPER, "real_text": 3.0, "replay": 0.0}, n_items=8000)
    inst = V.instrument_check(flat, d, TH)
    assert not inst["passed"] and inst["controls"]["replay"]["outcome"] != "holds"
    final = V.finding1_verdict(V.transfer_verdict(flat, d, TH), inst, True, "")
    assert final["verdict"] == "inconclusive" and final["verdict_of_the_comparisons"] == "supported"
    assert "instrument did not detect" in final["why"]
    no_controls, d = _synthetic_matrix(PAPER, n_items=300)
    assert not V.instrument_check(no_controls, d, TH)["passed"]
    # a profile without replay data is judged on the controls it runs, at alpha / 1
    real_only, d = _synthetic_matrix({**PAPER, "real_text": 3.0}, n_items=8000)
    inst = V.instrument_check(real_only, d, TH)
    assert inst["passed"] and list(inst["controls"]) == ["real_text"]
    flat_only, d = _synthetic_matrix({**PAPER, "real_text": 0.0}, n_items=8000)
    assert not V.instrument_check(flat_only, d, TH)["passed"]


def _pooled(outcomes: dict[str, str], verdict: str) -> dict:
    return {"verdict": verdict, "pooled": {k: {"outcome": o} for k, o in outcomes.items()}}


def test_a_variant_changes_a_verdict_only_by_reaching_the_other_side():
    full = _pooled({"a": "holds", "b": "holds"}, "supported")
    assert V.variant_changes(full, _pooled({"a": "holds", "b": "fails"}, "not supported")) == (
        "not supported", True, ["b"])
    # losing power is no evidence against the verdict
    assert V.variant_changes(full, _pooled({"a": "holds", "b": "inconclusive"}, "inconclusive"))[1] is False
    # a comparison the variant cannot estimate keeps its full-data outcome
    assert V.variant_changes(full, _pooled({"a": "holds", "b": "not estimable"}, "inconclusive"))[:2] == (
        "supported", False)
    # a reversal counts even when the full verdict was inconclusive
    unsure = _pooled({"a": "fails", "b": "inconclusive"}, "not supported")
    assert V.variant_changes(unsure, _pooled({"a": "holds", "b": "inconclusive"}, "inconclusive"))[1] is True


def test_a_variant_names_the_comparisons_it_points_the_other_way():
    def est(**e):
        return {"pooled": {k: {"estimate": v} for k, v in e.items()}}
    full = est(a=0.3, b=-0.2, c=0.1, d=float("nan"))
    assert V.sign_flips(full, est(a=0.1, b=0.05, c=-0.4, d=1.0)) == ["b", "c"]
    assert V.sign_flips(full, est(a=0.9, b=-0.01, c=float("nan"), d=-1.0)) == []


def test_robustness_lists_every_variant_and_a_steady_verdict_survives():
    steady, d = _synthetic_matrix(PAPER, n_items=4000)
    sv = V.transfer_verdict(steady, d, TH)
    robust = V.robustness(steady, d, TH)
    assert {"without source cross_family-1", "without student a", "seed 0 alone"} <= set(robust["variant"])
    assert robust.loc[robust["variant"] == "all runs", "verdict"].item() == sv["verdict"] == "supported"
    assert (robust["sign_flips"] == "").all()  # a steady effect points the same way in every variant
    final = V.finding1_verdict(sv, {"passed": True}, True, "", robust)
    assert final["verdict"] == "supported" and not final["fragile_variants"]
    flagged = robust.assign(changes_it=robust["variant"] == "seed 0 alone")
    assert V.finding1_verdict(sv, {"passed": True}, True, "", flagged)["verdict"] == "inconclusive (fragile)"


def test_knife_edge_outcomes_are_inconclusive():
    rng = np.random.default_rng(3)
    boot = rng.normal(0.0, 1.0, 4000)
    lo = np.quantile(boot, 0.05)
    edge = V.judge(0.5, boot - lo + 1e-4, "greater", 0.5, 0.05, 0.8)  # lower bound a hair above 0
    assert edge["outcome"] == "inconclusive" and edge["why"].startswith("knife-edge")
    clear = V.judge(5.0, boot + 5.0, "greater", 0.5, 0.05, 0.8)
    assert clear["outcome"] == "holds" and clear["mc_se"] < 0.1


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
    one = {"proxy": ("intrinsic", "primary")}
    assert V.proxy_verdict(_points(300, 3.0), one, "delta", cov, TH)["verdict"] == "not supported"
    assert V.proxy_verdict(_points(400, 0.0), one, "delta", cov, TH)["verdict"] == "supported"
    small = V.proxy_verdict(_points(12, 0.0), one, "delta", cov, TH)
    assert small["verdict"] == "inconclusive" and small["associations"]["proxy"]["mde"] > TH.proxy_rho0


def test_partial_spearman_removes_a_confounder():
    rng = np.random.default_rng(0)
    group = rng.integers(0, 2, 500)
    x = group + 0.1 * rng.normal(size=500)
    y = group + 0.1 * rng.normal(size=500)  # correlated only through the group
    assert abs(V.partial_spearman(x, y, group[:, None].astype(float))) < 0.15
    assert V.partial_spearman(x, y, np.empty((500, 0))) > 0.6  # without partialling, the group shows


def _grid(gains: dict[tuple[str, int], tuple[float, float]], seeds: int = 3, noise: float = 0.001, self_gain=9.0,
          independent: float = 0.0):
    """Grid runs: per recipe, (real-text, replay) bits/byte gains, for one student and `seeds` seeds; a seed's
    effect is shared by every recipe (the recipes share seeds and corpora), plus `independent` noise per run."""
    rng = np.random.default_rng(0)
    seed_effect = rng.normal(0, noise, (2, seeds))
    rows = []
    for (sched, budget), (real, replay) in gains.items():
        for s in range(seeds):
            for k, (rel, g) in enumerate((("real_text", real), ("replay", replay), ("self", self_gain))):
                shared = seed_effect[k, s] if k < 2 else 0.0
                rows.append({"student": "a", "relation": rel, "schedule": sched, "budget": budget, "seed": s,
                             "bpb_gain": g + shared + rng.normal(0, independent) if independent else g + shared,
                             "headline_delta": g})
    return pd.DataFrame(rows)


SCHEDULES = ["continue", "constant", "rewarm"]


def test_recipe_rule_picks_a_distinguishable_best_and_never_reads_self():
    grid = _grid({("continue", 100): (0.010, 0.012), ("rewarm", 100): (0.002, 0.001), ("constant", 100): (0.004, 0.004)})
    grid.loc[(grid.relation == "self") & (grid.schedule == "rewarm"), "bpb_gain"] = 99.0
    pick = V.choose_recipe(grid, SCHEDULES, ("rewarm", 100))
    assert (pick["schedule"], pick["budget"]) == ("continue", 100) and pick["distinguishable"]
    assert {d["chosen_minus"] for d in pick["differences"]} == {"constant 100", "rewarm 100"}


def test_recipe_rule_excludes_a_schedule_that_makes_real_text_worse():
    grid = _grid({("continue", 100): (0.004, 0.004), ("rewarm", 100): (-0.02, 0.05)})
    pick = V.choose_recipe(grid, SCHEDULES, ("continue", 100))
    table = pd.DataFrame(pick["recipes"]).set_index("schedule")
    assert table.loc["rewarm", "excluded"] and not table.loc["continue", "excluded"]
    assert pick["schedule"] == "continue"  # rewarm had the larger pooled gain, but hurts real text


def test_recipe_rule_falls_back_when_nothing_is_distinguishable():
    grid = _grid({("continue", 100): (0.004, 0.004), ("constant", 100): (0.0041, 0.0041)}, noise=0.002,
                 independent=0.0005)
    pick = V.choose_recipe(grid, SCHEDULES, ("continue", 100))
    assert pick["schedule"] == "continue" and not pick["distinguishable"] and "fallback" in pick["why"]
    few = _grid({("continue", 100): (0.0, 0.0), ("constant", 100): (0.05, 0.05)}, seeds=2)
    pick = V.choose_recipe(few, SCHEDULES, ("continue", 100))
    assert pick["schedule"] == "continue" and "needs 3" in pick["why"]
    with pytest.raises(ValueError):
        V.choose_recipe(grid[grid.relation == "self"], SCHEDULES)


def test_headline_gate_keeps_the_tasks_the_controls_move():
    runs, d = _synthetic_matrix({"real_text": 3.0, "replay": 3.0}, n_items=3000)
    _, flat = _synthetic_matrix({"real_text": 0.0, "replay": 0.0}, n_items=3000, seed=1)
    gate = V.headline_gate(["moved", "flat"], {"moved": d[0], "flat": flat[0]}, runs, TH).set_index("task")
    assert gate.loc["moved", "in_headline"] and not gate.loc["flat", "in_headline"]
    assert gate.loc["moved", "students"] == 4 and gate.loc["moved", "real_text_dev_gain"] > 2
    off_axis = V.headline_gate([], {"moved": d[0]}, runs, TH)
    assert not off_axis["in_headline"].any() and off_axis["controls_move_it"].all()


def test_headline_gate_needs_the_gain_pooled_over_students_not_one_student():
    """Controls that move one student and set the others back: that student alone passes the gate, the
    students pooled (what the instrument check tests on test items) do not."""
    runs, up = _synthetic_matrix({"real_text": 4.0, "replay": 4.0}, n_items=3000)
    _, down = _synthetic_matrix({"real_text": -1.5, "replay": -1.5}, n_items=3000, seed=1)
    one = (runs["student"] == "a").to_numpy()
    mixed = np.where(one[:, None], up[0], down[0])
    gate = V.headline_gate(["t"], {"t": mixed}, runs, TH).iloc[0]
    assert not gate["in_headline"] and gate["real_text_dev_gain"] < 1
    alone = V.headline_gate(["t"], {"t": mixed[one]}, runs[one].reset_index(drop=True), TH).iloc[0]
    assert alone["in_headline"] and alone["students"] == 1


def test_t_quantile_matches_the_table():
    for dof, want in ((3, 3.182), (5, 2.571), (10, 2.228), (30, 2.042)):
        assert V.t_quantile(0.975, dof) == pytest.approx(want, rel=1e-2 if dof < 5 else 2e-3)


def test_budget_calibration_arithmetic():
    axis = pd.DataFrame([{"task": "t", "from": "m@step1", "to": "m@step2", "rise": 2.0, "paired_se": 0.5},
                         {"task": "t", "from": "m@step2", "to": "m", "rise": 1.0, "paired_se": 0.4},
                         {"task": "t", "from": "m", "to": "big", "rise": 1.0, "paired_se": 0.4}])
    tokens = {"m@step1": 1_000_000, "m@step2": 2_000_000, "m": 4_000_000, "big": 8_000_000}  # big: another model
    cal = V.budget_calibration(axis, tokens, [100_000, 10_000_000], 0.05, 0.8).set_index("budget")
    assert cal.loc[100_000, "gain_per_million_tokens"] == pytest.approx(0.5)  # the last within-model step
    mde = (V._z(0.975) + V._z(0.8)) * 0.4
    assert cal.loc[100_000, "run_mde"] == pytest.approx(mde)
    assert cal.loc[100_000, "tokens_needed"] == pytest.approx(mde / 0.5 * 1e6)
    assert not cal.loc[100_000, "expected_above_mde"] and cal.loc[10_000_000, "expected_above_mde"]


def test_leaving_a_source_out_keeps_the_students_own_runs():
    """A student is another student's equal-strength source: leaving it out as a source keeps its self runs."""
    runs, d = _synthetic_matrix(PAPER, n_items=500, seeds=1)
    runs.loc[(runs.student == "b") & (runs.relation == "same_lineage"), "source"] = "self-1"
    robust = V.robustness(runs, d, TH).set_index("variant")
    as_source = ((runs.student == "b") & (runs.relation == "same_lineage")).sum()
    assert robust.loc["without source self-1", "runs"] == len(runs) - as_source  # both students' self runs stay


def _shared_corpus_runs(corpus_sd: float, source_effects=(0.0, 0.0, 0.0), n_items=400, seeds=2, seed=0):
    """4 students fine-tuned on the same corpora (3 sources x `seeds`): each corpus carries one effect shared by
    every student (drawn with SD `corpus_sd`), plus its source's effect; items add a little noise."""
    rng = np.random.default_rng(seed)
    corpus = {(k, s): rng.normal(0, corpus_sd) for k in range(3) for s in range(seeds)}
    rows, deltas = [], []
    for student in "abcd":
        for k, eff in enumerate(source_effects):
            for s in range(seeds):
                rows.append({"student": student, "relation": "same_lineage", "source": f"src-{k}", "strength": "equal",
                             "temperature": 1.0, "seed": s, "in_verdict": True, "gap_bpb": 0.0})
                deltas.append(eff + corpus[(k, s)] + rng.normal(0, 1, n_items))
    return pd.DataFrame(rows), [np.asarray(deltas)]


def test_a_corpus_shared_by_students_is_resampled_once():
    """The pooled mean's bootstrap SE must carry the corpus effect that every student shares: drawn per student,
    it would average out as if the students' corpora were independent (3x too narrow at this shape)."""
    true_sd = 1.0 / np.sqrt(6)  # six corpora, each shared by the four students
    ses = []
    for rep in range(6):
        runs, d = _shared_corpus_runs(1.0, seed=rep)
        scores, point, rng = V.bootstrap_runs(d, V.Thresholds(bootstrap=1000, seed=rep))
        _, _, pooled = V.hierarchical_means(runs, scores, point, ["relation"], rng)
        ses.append(pooled[("same_lineage",)][1].std())
    assert np.mean(ses) > 0.7 * true_sd, (np.mean(ses), true_sd)


def test_sources_are_resampled_so_one_model_cannot_pass_for_a_relation():
    runs, d = _shared_corpus_runs(0.0, source_effects=(-3.0, 0.0, 3.0))
    scores, point, rng = V.bootstrap_runs(d, V.Thresholds(bootstrap=1000))
    _, _, pooled = V.hierarchical_means(runs, scores, point, ["relation"], rng)
    se = pooled[("same_lineage",)][1].std()
    assert se > 0.8 * 3.0 / np.sqrt(3)  # the SD of the three sources' effects over sqrt(3)
    steady, d = _shared_corpus_runs(0.0)
    scores, point, rng = V.bootstrap_runs(d, V.Thresholds(bootstrap=1000))
    assert V.hierarchical_means(steady, scores, point, ["relation"], rng)[2][("same_lineage",)][1].std() < 0.2


def test_controls_below_the_sesoi_cannot_license_a_failure_for_lack_of_effect():
    runs, d = _synthetic_matrix({"self": 0.0, "same_lineage": 0.0, "stronger_different": 0.0, "cross_family": 0.0,
                                 "real_text": 0.3, "replay": 0.3}, n_items=20000, seeds=8)
    th = V.Thresholds(bootstrap=400, sesoi=0.5)
    free = V.transfer_verdict(runs, d, th)
    assert free["pooled"]["self_training_helps"]["outcome"] == "fails"
    guarded = V.transfer_verdict(runs, d, th, registers_sesoi=False)
    c1 = guarded["pooled"]["self_training_helps"]
    assert c1["outcome"] == "inconclusive" and c1["outcome_before_instrument"] == "fails"
    assert guarded["pooled"]["self_at_least_same_lineage"]["outcome"] != "holds"
    assert free["beyond_strength"]["lineage_coefficient"]["outcome"] == "fails"  # the same guard on the regression
    assert guarded["beyond_strength"]["lineage_coefficient"]["outcome"] == "inconclusive"


def test_a_comparison_resting_on_one_unit_is_not_replicated():
    """One sampling seed per corpus, or one source of a relation, leaves a level of the bootstrap without
    variance (sqrt(n / (n - 1)) has nothing to scale): the comparison is inconclusive and names the level,
    however narrow its bounds."""
    assert "INCONCLUSIVE (not replicated)" in V.COMPARISON_RULE
    runs, d = _synthetic_matrix(PAPER, n_items=8000, seeds=1)
    pooled = V.transfer_verdict(runs, d, TH)["pooled"]
    assert all(c["outcome"] == "inconclusive" and "one sampling seed per corpus" in c["why"]
               for c in pooled.values()), pooled
    assert pooled["self_training_helps"]["outcome_before_replication"] == "holds"
    runs, d = _synthetic_matrix(PAPER, n_items=8000)
    one = (runs["source"].str.endswith("-1")).to_numpy()
    sub = runs[one].reset_index(drop=True)
    pooled = V.transfer_verdict(sub, [d[0][one]], TH)["pooled"]
    assert pooled["self_training_helps"]["outcome"] == "holds"  # self is replicated over the four students
    assert pooled["self_at_least_same_lineage"]["why"] == "not replicated: one source of same_lineage"
    assert "one source of stronger_different" in pooled["cross_family_lowest"]["why"]
    # the guard reads the runs: two sources per relation and two seeds are enough to be judged
    assert V.unreplicated(runs, V.RELATIONS, pooled=True) == []


def test_headroom_leaves_out_a_task_at_chance_or_ceiling_for_any_student():
    base = pd.DataFrame([
        {"student": "a", "task": "room", "accuracy": 70.0, "chance": 50.0},
        {"student": "b", "task": "room", "accuracy": 60.0, "chance": 50.0},
        {"student": "a", "task": "ceiling", "accuracy": 80.0, "chance": 50.0},
        {"student": "b", "task": "ceiling", "accuracy": 95.0, "chance": 50.0},
        {"student": "a", "task": "chance", "accuracy": 27.0, "chance": 25.0},
        {"student": "b", "task": "chance", "accuracy": 60.0, "chance": 25.0},
    ])
    room = V.headroom(base, above=5.0, below=10.0).groupby("task")["task_in_headline"].first()
    assert room["room"] and not room["ceiling"] and not room["chance"]
    assert V.headroom(base, above=1.0, below=4.0).groupby("task")["task_in_headline"].first().all()
