"""SCORE_RULE: one per-item score (accuracy or the proper score) is read by every check and by findings 1 and 2."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from resurface.analysis import verdicts
from resurface.frame import profiles as C


def test_the_default_design_reads_the_proper_score_and_real_weights_keep_accuracy():
    assert C.load_config("default").analysis.score == "logloss"
    assert C.load_config("calibrated").analysis.score == "logloss"
    assert C.load_config("gemma").analysis.score == "accuracy"  # the schema's default: the paper's measure


def test_an_unknown_score_stops_before_any_compute():
    with pytest.raises(Exception, match="score"):
        C.load_config("smoke", {"analysis.score": "brier"})


def test_score_kinds_units_and_the_secondary():
    assert verdicts.score_kind("accuracy") == "items" and verdicts.score_unit("accuracy") == "points"
    assert verdicts.score_kind("logloss") == "logloss" and verdicts.score_unit("logloss") == "nats"
    assert verdicts.other_score("logloss") == "accuracy" and verdicts.other_score("accuracy") == "logloss"


def test_the_capability_axis_hears_a_gain_that_crosses_no_decision_boundary():
    """Two models that pick the same choice on every item, the second surer of the right one: accuracy sees no
    rise, the proper score does."""
    rng = np.random.default_rng(0)
    n = 400
    right = rng.random(n) < 0.8                       # the same items right for both models
    p_weak = np.where(right, 0.6, 0.4)                # probability of the right choice
    p_strong = np.where(right, 0.8, 0.45)             # surer where right, less wrong where wrong
    acc = {"a": {"t": right.astype(float).tolist()}, "b": {"t": right.astype(float).tolist()}}
    neg_ll = {"a": {"t": np.log(p_weak).tolist()}, "b": {"t": np.log(p_strong).tolist()}}
    by_acc = verdicts.capability_axis(["a", "b"], acc, ["t"])
    by_ll = verdicts.capability_axis(["a", "b"], neg_ll, ["t"], scale=1.0)
    assert not by_acc["step_ok"].iloc[0]
    assert by_ll["step_ok"].iloc[0] and by_ll["rise"].iloc[0] == pytest.approx(np.mean(np.log(p_strong / p_weak)))


def test_per_item_score_is_minus_the_log_loss_under_the_proper_score(tmp_path):
    from resurface.study import zoo_checks
    from resurface.frame.cache import Artifact
    (tmp_path / "choices.json").write_text(json.dumps({"t": [[-1.0, -2.0, 0], [-1.0, -2.0, 1]]}))
    (tmp_path / "items.json").write_text(json.dumps({"t": [1.0, 0.0]}))
    art = Artifact("evaluations", "e", "k", tmp_path)
    logloss = C.load_config("smoke")
    accuracy = C.load_config("smoke", {"analysis.score": "accuracy"})
    assert zoo_checks.per_item_score(accuracy, art) == {"t": [1.0, 0.0]}
    got = zoo_checks.per_item_score(logloss, art)["t"]
    assert got[0] == pytest.approx(-np.log1p(np.exp(-1.0)))  # right choice 1 nat ahead
    assert got[1] == pytest.approx(-np.log1p(np.exp(1.0)))   # right choice 1 nat behind
    assert got[0] > got[1]


def test_the_headline_delta_and_its_noise_follow_the_profile_score():
    from resurface.study import transfer
    runs = pd.DataFrame({"run_label": ["r0", "r1"], "headline_delta": [9.0, 9.0]})
    items = [np.array([[100.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, -100.0]])]
    logloss = [np.array([[0.02, 0.01, 0.0, 0.01], [-0.01, 0.0, -0.02, 0.0]])]
    deltas = {"items": items, "logloss": logloss}
    by_ll = transfer.add_outcomes(runs, deltas, "logloss")
    by_acc = transfer.add_outcomes(runs, deltas, "accuracy")
    assert by_ll["headline_delta"].tolist() == pytest.approx([0.01, -0.0075])
    assert by_acc["headline_delta"].tolist() == pytest.approx([25.0, -25.0])
    assert by_ll["accuracy_delta"].tolist() == pytest.approx([25.0, -25.0])
    assert by_acc["logloss_delta"].tolist() == pytest.approx([0.01, -0.0075])
    assert by_ll["item_se"].tolist() == pytest.approx(verdicts.per_run_paired_se(logloss).tolist())
    assert by_acc["item_se"].tolist() == pytest.approx(verdicts.per_run_paired_se(items).tolist())


def test_the_thresholds_carry_the_score_s_own_sesoi():
    from resurface.study import transfer
    cfg = C.load_config("smoke")
    assert transfer.thresholds(cfg).sesoi == cfg.analysis.logloss_sesoi_nats
    assert transfer.thresholds(cfg, "accuracy").sesoi == cfg.analysis.sesoi_points
