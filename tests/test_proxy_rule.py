"""Finding 2 by the book (PROXY_RULE): primary vs secondary proxies, Bonferroni, a bootstrap that resamples shared
corpora whole, equivalence that the number of points can reach or not, and finding 1's instrument check. Each case
is synthetic data whose right answer is known."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from resurface.analysis import findings
from resurface.analysis import verdicts as V

TH = V.Thresholds(bootstrap=200)
COV = ["student", "relation", "temperature"]
CLUSTERS = ["source", "temperature"]
SCORES = {"p1": ("intrinsic", "primary"), "p2": ("intrinsic", "primary"), "s1": ("relational", "secondary")}
RELATIONS = ["self", "same_lineage", "stronger_different", "cross_family"]


def corpora(n_corpora: int, students: int, seed: int = 0, primary: float = 0.0, secondary: float = 0.0,
            corpus_effect: float = 0.0, noise: float = 1.0, within: float = 0.3) -> pd.DataFrame:
    """One point per (student, corpus); a corpus (source x temperature) is shared by every student, as in the
    study: its scores are the corpus's values plus `within` noise per student, and the delta has a corpus-level
    random effect of sd `corpus_effect`. `primary` / `secondary`: the slope of the delta on p1 / s1."""
    rng = np.random.default_rng(seed)
    u, v = rng.normal(size=(n_corpora, 3)), rng.normal(size=n_corpora)
    rows = []
    for c in range(n_corpora):
        for s in range(students):
            e = rng.normal(size=4)
            p1, p2, s1 = u[c] + within * e[:3]
            rows.append({"student": f"st{s}", "source": f"src{c // 2}", "temperature": (0.7, 1.0)[c % 2],
                         "relation": RELATIONS[(c // 2) % 4], "p1": p1, "p2": p2, "s1": s1,
                         "delta": primary * p1 + secondary * s1 + corpus_effect * v[c] + noise * e[3]})
    return pd.DataFrame(rows)


def test_a_strongly_predictive_primary_proxy_makes_the_claim_not_supported():
    v = V.proxy_verdict(corpora(60, 2, primary=3.0), SCORES, "delta", COV, TH, CLUSTERS)
    assert v["associations"]["p1"]["outcome"] == "predicts"
    assert v["verdict"] == "not supported" and "p1 predicts" in v["why"]


def test_a_predictive_secondary_proxy_alone_does_not_decide():
    """Only the primary proxies decide: the secondary one predicts, the primaries do not, and the claim is not
    refuted (it would be if the secondary score counted, as the rule before the referee had it)."""
    v = V.proxy_verdict(corpora(12, 2, secondary=3.0, noise=0.3), SCORES, "delta", COV, TH, CLUSTERS)
    assert v["associations"]["s1"]["outcome"] == "predicts" and v["associations"]["s1"]["role"] == "secondary"
    assert all(v["associations"][p]["outcome"] != "predicts" for p in ("p1", "p2"))
    assert v["verdict"] == "inconclusive"
    assert v["primary"] == ["p1", "p2"] and v["secondary"] == ["s1"]
    counted = {**SCORES, "s1": ("relational", "primary")}
    as_primary = V.proxy_verdict(corpora(12, 2, secondary=3.0, noise=0.3), counted, "delta", COV, TH, CLUSTERS)
    assert as_primary["verdict"] == "not supported"


def test_primary_cis_are_bonferroni_corrected_and_secondary_ones_are_not():
    d = corpora(30, 2)
    v = V.proxy_verdict(d, SCORES, "delta", COV, TH, CLUSTERS)
    assert v["bonferroni_k"] == 2 and v["levels"] == {"primary": pytest.approx(0.975), "secondary": 0.95}
    assert v["associations"]["p1"]["level"] == pytest.approx(1 - TH.alpha / 2)
    assert v["associations"]["s1"]["level"] == pytest.approx(1 - TH.alpha)
    # the same score at the corrected level has the wider CI, and a larger MDE
    at = {lv: V.proxy_association(d, "p1", "delta", COV, TH, lv, CLUSTERS) for lv in (0.95, 0.975)}
    assert at[0.975]["ci_high"] - at[0.975]["ci_low"] > at[0.95]["ci_high"] - at[0.95]["ci_low"]
    assert at[0.975]["mde"] > at[0.95]["mde"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_cluster_bootstrap_is_wider_than_resampling_points_when_corpora_are_shared(seed):
    """Six corpora, four students each, a corpus-level random effect on score and delta: the 24 points carry about
    six corpora's worth of information, and only the bootstrap that resamples corpora whole says so."""
    d = corpora(6, 4, seed, corpus_effect=1.0, noise=0.1, within=0.1)
    cluster = V.proxy_association(d, "p1", "delta", ["student"], TH, 0.95, CLUSTERS)
    naive = V.proxy_association(d, "p1", "delta", ["student"], TH, 0.95)
    assert cluster["n_clusters"] == 6 and naive["n_clusters"] == 24 and cluster["rho"] == naive["rho"]
    assert cluster["ci_high"] - cluster["ci_low"] > 1.3 * (naive["ci_high"] - naive["ci_low"])


def test_equivalence_points_is_the_fisher_z_threshold():
    for level, rho0, c in ((0.975, 0.3, 5), (0.95, 0.3, 0), (0.95, 0.1, 3)):
        n = V.equivalence_points(level, rho0, c)
        z = V._z(1 - (1 - level) / 2)
        assert np.tanh(z / np.sqrt(n - 3 - c)) < rho0 <= np.tanh(z / np.sqrt(n - 1 - 3 - c))
    assert V.equivalence_points(0.975, 0.3, 5) > V.equivalence_points(0.95, 0.3, 5)  # correction costs points


def test_below_the_points_equivalence_needs_the_outcome_is_inconclusive_with_the_reason():
    """50 points without association, whose CI happens to lie inside the band: with fewer points than N_needed
    the rule still does not call it `fails to predict`."""
    d = corpora(25, 2, seed=7)
    a = V.proxy_association(d, "p1", "delta", ["student"], TH, 0.975, CLUSTERS)
    assert a["n"] == 50 and a["n_clusters"] == 25 < a["n_needed"] and not a["equivalence_reachable"]
    assert -TH.proxy_rho0 < a["ci_low"] and a["ci_high"] < TH.proxy_rho0  # the CI alone would say "fails"
    assert a["outcome"] == "inconclusive"
    assert a["why"] == f"equivalence unreachable with 25 corpora: it needs {a['n_needed']}"  # corpora, not points
    v = V.proxy_verdict(corpora(12, 2), SCORES, "delta", COV, TH, CLUSTERS)  # the study's size: 24 points
    assert v["verdict"] == "inconclusive" and v["n_needed"] > 24
    assert "equivalence unreachable with 12 corpora" in v["why"]


def test_many_points_without_association_support_the_claim():
    v = V.proxy_verdict(corpora(200, 2, seed=1), SCORES, "delta", COV, TH, CLUSTERS)
    assert all(v["associations"][p]["outcome"] == "fails to predict" for p in ("p1", "p2"))
    assert v["verdict"] == "supported" and v["why"].startswith("every primary score fails to predict")
    assert v["n_points"] == 400 >= v["n_needed"]


def test_an_instrument_that_saw_no_gain_makes_the_verdict_inconclusive():
    d = corpora(200, 2, seed=1)
    v = V.proxy_verdict(d, SCORES, "delta", COV, TH, CLUSTERS, instrument_ok=False,
                        instrument_why="real_text gained 0.1 points, below its bound")
    assert v["verdict"] == "inconclusive" and v["verdict_before_instrument"] == "supported"
    assert v["why"] == ("the instrument did not detect the gain of real data at this budget (finding 1's "
                        "instrument check)")
    assert v["instrument_why"] == "real_text gained 0.1 points, below its bound" and not v["instrument_ok"]
    assert V.proxy_verdict(d, SCORES, "delta", COV, TH, CLUSTERS)["verdict"] == "supported"


def test_a_score_without_a_role_is_refused():
    with pytest.raises(ValueError, match="role"):
        V.proxy_verdict(corpora(12, 2), {"p1": "intrinsic"}, "delta", COV, TH, CLUSTERS)


def test_the_sentence_separates_primary_from_secondary_and_gives_the_reason():
    v = V.proxy_verdict(corpora(12, 2, secondary=3.0, noise=0.3), SCORES, "delta", COV, TH, CLUSTERS)
    text = findings.proxy_sentence(v)
    primary, secondary = text.index("Primary"), text.index("Secondary")
    assert primary < text.index("`p1`") < secondary < text.index("`s1`")
    assert "equivalence unreachable with 12 corpora" in text and "97.5 % CI" in text and "95 % CI" in text
    assert text.startswith("**Verdict: inconclusive.** Why: ")


# ------------------------------------------------------------------ the study's side


def test_the_primary_split_lives_in_scores_and_the_rule_names_it():
    from resurface.study import proxies
    assert proxies.PRIMARY == ["loglik_per_token", "centroid_similarity"]
    assert {role for _, role in proxies.SCORES.values()} == {"primary", "secondary"}
    rule = V.PROXY_RULE
    primary_part = rule[rule.index("PRIMARY scores"):rule.index("SECONDARY scores")]
    secondary_part = rule[rule.index("SECONDARY scores"):rule.index("CI: ")]
    for name, (kind, role) in proxies.SCORES.items():
        assert f"`{name}`" in (primary_part if role == "primary" else secondary_part), name


def test_finding2_on_the_study_table_applies_roles_clusters_and_instrument():
    from resurface.study import proxies
    cfg = SimpleNamespace(seed=0, analysis=SimpleNamespace(alpha=0.05, power=0.8, sesoi_points=0.5,
                                                           proxy_rho0=0.3, bootstrap=200))
    rng = np.random.default_rng(0)
    d = corpora(12, 2)
    for name in proxies.SCORES:
        d[name] = rng.normal(size=len(d))
    d["headline_delta"] = 3.0 * d["loglik_per_char"] + rng.normal(size=len(d))  # a secondary score predicts
    v = proxies.finding2(cfg, d)
    assert v["clusters"] == ["source", "temperature"] and v["associations"]["loglik_per_char"]["n_clusters"] == 12
    assert v["associations"]["loglik_per_char"]["outcome"] == "predicts" and v["verdict"] == "inconclusive"
    assert proxies.finding2(cfg, d, instrument_ok=False)["verdict_before_instrument"] == "inconclusive"
    runs = d.assign(seed=0)
    plan = proxies.design(cfg, pd.concat([runs, runs.head(2).assign(relation="real_text")]))  # controls drop out
    assert plan["n_points"] == 24 and plan["n_corpora"] == 12
    assert plan["primary"]["n_needed"] == v["n_needed"] and not plan["primary"]["equivalence_reachable"]
    assert plan["primary"]["mde"] == pytest.approx(v["associations"]["loglik_per_token"]["mde"])


def test_upstream_checks_read_the_axis_and_the_instrument():
    from resurface.study import proxies
    assert proxies.upstream_checks({"capability_axis_passed": True}, {"instrument": {"passed": True}}) == {
        "axis_ok": True, "instrument_ok": True, "instrument_why": ""}
    with pytest.raises(ValueError, match="no instrument check"):  # fails closed: never read as passed
        proxies.upstream_checks({"capability_axis_passed": True}, {})
    got = proxies.upstream_checks({}, {"capability_axis_ok": False, "instrument": {"passed": False, "why": "flat"}})
    assert got == {"axis_ok": False, "instrument_ok": False, "instrument_why": "flat"}
    with pytest.raises(ValueError, match="00_zoo"):
        proxies.upstream_checks({}, {})


def test_a_notebook_reads_declared_products_and_names_the_notebook_to_run_first(tmp_path):
    from resurface.study.pipeline import PipelineError
    from resurface.study.session import Study
    study = Study(SimpleNamespace(profile="demo"), None, tmp_path, "03_proxies", 1)
    with pytest.raises(FileNotFoundError, match=r"tables/transfer_runs.*run 02_transfer first"):
        study.read_table("transfer_runs")
    with pytest.raises(PipelineError, match="does not declare"):
        study.read_table("zoo_models")  # 00 writes it, but 03 does not declare reading it
    (tmp_path / "tables").mkdir()
    pd.DataFrame({"student": ["a"], "headline_delta": [1.5]}).to_csv(tmp_path / "tables" / "transfer_runs.csv",
                                                                      index=False)
    (tmp_path / "findings").mkdir()
    (tmp_path / "findings" / "02_transfer.json").write_text(json.dumps({"verdict": "supported"}))
    assert study.read_table("transfer_runs")["headline_delta"].tolist() == [1.5]
    assert study.read_json("findings", "02_transfer") == {"verdict": "supported"}
