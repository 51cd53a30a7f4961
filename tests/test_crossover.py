"""The crossed design's contrast (analysis/crossover.py) and `resurface crossed`."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from resurface.analysis.crossover import crossover


def _runs(student: str, other: str, own: float, theirs: float, seeds: int = 3, noise: float = 0.2,
          item_se: float = 0.3, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = [{"student": student, "source": src, "temperature": 1.0, "seed": k,
             "headline_delta": mean + noise * rng.standard_normal(), "item_se": item_se}
            for src, mean in ((student, own), (other, theirs)) for k in range(seeds)]
    return pd.DataFrame(rows)


PASSED = {"a": True, "b": True}


def test_each_student_gaining_more_from_its_own_text_is_a_crossover():
    r = crossover({"a": _runs("a", "b", 3.0, 0.5), "b": _runs("b", "a", 2.5, 0.0, seed=1)}, PASSED)
    assert r["outcome"] == "holds" and r["lower"] > 0 and r["mde"] > 0


def test_a_better_source_for_both_students_is_no_crossover():
    """Source `b` helps both students by the same amount: the interaction cancels it; with enough precision
    the data rule out a relational effect of the SESOI, with too little they cannot."""
    noisy = crossover({"a": _runs("a", "b", 0.5, 3.0), "b": _runs("b", "a", 3.0, 0.5, seed=1)}, PASSED)
    assert noisy["outcome"] == "inconclusive" and abs(noisy["interaction"]) < 0.5
    precise = crossover({"a": _runs("a", "b", 0.5, 3.0, seeds=6, noise=0.05, item_se=0.05),
                         "b": _runs("b", "a", 3.0, 0.5, seeds=6, noise=0.05, item_se=0.05, seed=1)}, PASSED)
    assert precise["outcome"] == "fails" and "SESOI" in precise["why"]


def test_a_crossover_of_harms_is_named_as_such():
    r = crossover({"a": _runs("a", "b", -0.5, -3.0), "b": _runs("b", "a", -0.3, -2.8, seed=1)}, PASSED)
    assert r["outcome"] == "holds (as harm)"
    reversed_ = crossover({"a": _runs("a", "b", 0.0, 3.0), "b": _runs("b", "a", 0.0, 3.0, seed=1)}, PASSED)
    assert reversed_["outcome"] == "fails"


def test_without_a_passing_instrument_the_numbers_are_reported_but_not_read():
    r = crossover({"a": _runs("a", "b", 3.0, 0.5), "b": _runs("b", "a", 2.5, 0.0, seed=1)}, {"a": True, "b": False})
    assert r["outcome"] == "inconclusive" and r["outcome_of_the_numbers"] == "holds" and "for b" in r["why"]


def test_one_seed_or_a_missing_side_is_not_estimable():
    one = crossover({"a": _runs("a", "b", 3.0, 0.5, seeds=1), "b": _runs("b", "a", 2.5, 0.0, seeds=1)}, PASSED)
    assert one["outcome"] == "not estimable"
    runs = _runs("a", "b", 3.0, 0.5)
    missing = crossover({"a": runs[runs.source == "a"], "b": _runs("b", "a", 2.5, 0.0)}, PASSED)
    assert missing["outcome"] == "not estimable" and "b's" in missing["why"]
    with pytest.raises(ValueError):
        crossover({"a": runs}, PASSED)


def test_the_command_reads_two_profiles_products_and_writes_the_rule_before_the_numbers(tmp_path, monkeypatch):
    from resurface.study import cli
    monkeypatch.setenv("RESURFACE_OUTPUTS", str(tmp_path))
    students = {"crossed-smollm2": ("smollm2", "gemma")}
    for profile, (student, other) in students.items():
        out = tmp_path / profile
        (out / "tables").mkdir(parents=True)
        (out / "findings").mkdir()
        _runs(student, other, 2.0, 0.0).to_csv(out / "tables" / "transfer_runs.csv", index=False)
        (out / "findings" / "02_transfer.json").write_text(json.dumps({"instrument": {"passed": True}}))
    assert cli.main(["crossed", "crossed-smollm2", "gemma"]) == 1  # the second profile has not run
    monkeypatch.setattr("resurface.frame.profiles.load_config", lambda p: type("C", (), {
        "transfer": type("T", (), {"students": [{"crossed-smollm2": "smollm2", "x": "gemma"}[p]]}),
        "analysis": type("A", (), {"alpha": 0.05, "power": 0.8, "sesoi_points": 0.5})}))
    out = tmp_path / "x"
    (out / "tables").mkdir(parents=True)
    (out / "findings").mkdir()
    _runs("gemma", "smollm2", 2.0, 0.0, seed=1).to_csv(out / "tables" / "transfer_runs.csv", index=False)
    (out / "findings" / "02_transfer.json").write_text(json.dumps({"instrument": {"passed": True},
                                                                  "headline_tasks": ["piqa"]}))
    assert cli.main(["crossed", "crossed-smollm2", "x"]) == 1  # other headline tasks than crossed-smollm2's
    (out / "findings" / "02_transfer.json").write_text(json.dumps({"instrument": {"passed": True}}))
    assert cli.main(["crossed", "crossed-smollm2", "x"]) == 0
    report = (tmp_path / "crossed-crossed-smollm2-x" / "REPORT.md").read_text()
    assert report.index("The crossed design's primary contrast") < report.index("Outcome: holds")
    found = json.loads((tmp_path / "crossed-crossed-smollm2-x" / "findings" / "crossed.json").read_text())
    assert found["outcome"] == "holds" and {p["student"] for p in found["per_student"]} == {"smollm2", "gemma"}
