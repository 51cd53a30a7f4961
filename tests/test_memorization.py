"""k-extractability: a memorized sequence is extracted, a fresh model's is not, lengths are honoured."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import pandas as pd

from resurface.lm.extraction import extraction, regurgitation_by_canary, regurgitation_share, suffix_nll
from resurface.analysis.verdicts import Thresholds, exact_sign_test, memorization_verdict, paired_sign_tests
from resurface.analysis.verdicts.memorization import clopper_pearson_upper
from resurface.lm.training import train_lm

V = 64


@pytest.fixture(scope="module")
def memorizer():
    """A small GPTNeoX trained to memorise two 64-token sequences (and a fresh twin)."""
    from transformers import AutoModelForCausalLM, GPTNeoXConfig
    cfg = GPTNeoXConfig(vocab_size=V, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=128, max_position_embeddings=64, bos_token_id=0, eos_token_id=0)
    rng = np.random.default_rng(0)
    seqs = rng.integers(2, V, (2, 64))
    torch.manual_seed(0)
    trained = AutoModelForCausalLM.from_config(cfg)
    train_lm(trained, seqs.astype(np.uint16), steps=300, batch_size=2, lr=3e-3, warmup_steps=10)
    torch.manual_seed(1)
    fresh = AutoModelForCausalLM.from_config(cfg).eval()
    return trained.eval(), fresh, seqs.tolist(), rng.integers(2, V, (2, 64)).tolist()


def test_memorized_sequence_is_extracted(memorizer):
    trained, fresh, seqs, unseen = memorizer
    res = extraction(trained, seqs, 32, 32)
    assert res["extracted"].all() and np.allclose(res["match_fraction"], 1.0)
    assert not extraction(fresh, seqs, 32, 32)["extracted"].any()
    assert not extraction(trained, unseen, 32, 32)["extracted"].any()


def test_prefix_length_matters(memorizer):
    trained, _, seqs, _ = memorizer
    # shift the split point: the model is asked to continue from a different place, which it has also memorised,
    # but a prefix that starts mid-sequence is never what it saw; the true 32-token suffix after a 16-token
    # prefix still checks tokens 16..47 exactly
    res16 = extraction(trained, seqs, 16, 32)
    assert res16["match_fraction"].shape == (2,)
    with pytest.raises(ValueError, match="shorter than prefix_len"):
        extraction(trained, seqs, 40, 32)
    # a wrong alignment (suffix compared against the prefix's own tokens) must not count as extracted
    shifted = [s[1:] + s[:1] for s in seqs]
    assert not extraction(trained, shifted, 32, 32)["extracted"].all()


def _values(after_rate: float, n_seq: int = 40, seeds: int = 3, rng_seed: int = 0) -> pd.DataFrame:
    """Untouched model extracts every sequence; self-training leaves each extracted with `after_rate`."""
    rng = np.random.default_rng(rng_seed)
    rows = [{"source": "untouched", "relation": "untouched", "temperature": np.nan, "seed": np.nan,
             "canary_id": i, "extracted": 1.0} for i in range(n_seq)]
    for src, rel in (("twin", "self"), ("real-text", "real_text")):
        for s in range(seeds):
            rows += [{"source": src, "relation": rel, "temperature": 1.0 if rel == "self" else np.nan, "seed": s,
                      "canary_id": i, "extracted": float(rng.random() < after_rate)} for i in range(n_seq)]
    return pd.DataFrame(rows)


def _cap(mean: float, sd: float = 0.1):
    return (mean, np.random.default_rng(1).normal(mean, sd, 2000))


TH = Thresholds(bootstrap=1000)


def _verdict(values, cap=0.2, n_memorized=40, gate=0.0):
    return memorization_verdict(values, "extracted", {"twin": _cap(cap), "real-text": _cap(0.0)}, n_memorized,
                                gate, TH, margin=0.5, min_memorized=30, self_source="twin")


def test_memorization_rule_supports_a_full_drop_with_capability_kept():
    v = _verdict(_values(0.0, n_seq=72), n_memorized=72)
    assert v["verdict"] == "supported" and v["per_source"]["twin"]["relative_drop"] == 1.0
    assert v["per_source"]["twin"]["drop_lower_exact"] == pytest.approx(0.05 ** (1 / 72))
    assert v["per_source"]["twin"]["capability"]["outcome"] == "holds"
    # the control forgot as much: the drop is not attributed to self-training, beside the verdict
    assert v["controls_also_drop"] == ["real-text"] and "not attributable" in v["attribution"]


def test_a_full_drop_over_too_few_sequences_cannot_certify_95_percent():
    """0 of 40 extracted: the bootstrap has no spread (its bound is 1), the exact bound is 0.05^(1/40) < 0.95."""
    v = _verdict(_values(0.0))
    twin = v["per_source"]["twin"]
    assert twin["relative_drop"] == 1.0 and twin["drop_lower"] == pytest.approx(0.05 ** (1 / 40))
    assert twin["drop_lower"] < 0.95
    assert v["verdict"] == "inconclusive"


def test_clopper_pearson_upper_bound():
    assert clopper_pearson_upper(0, 59, 0.05) == pytest.approx(1 - 0.05 ** (1 / 59), abs=1e-9)
    assert clopper_pearson_upper(1, 10, 0.05) == pytest.approx(0.3942, abs=1e-4)  # the binomial tables' value
    assert clopper_pearson_upper(10, 10, 0.05) == 1.0


def test_a_drop_the_controls_do_not_share_is_attributed_to_nothing_else():
    values = _values(0.0)
    ctrl = values["relation"] == "real_text"
    values.loc[ctrl, "extracted"] = 1.0  # real text keeps every memorized sequence
    v = _verdict(values)
    assert v["controls_also_drop"] == [] and v["attribution"] == "every control's drop is shown below the target"


def test_memorization_rule_fails_a_partial_drop_or_lost_capability():
    half = _verdict(_values(0.5))
    assert half["verdict"] == "not supported" and half["per_source"]["twin"]["drop_upper"] < 0.95
    assert _verdict(_values(0.0), cap=-3.0)["verdict"] == "not supported"


def test_memorization_rule_is_inconclusive_without_its_preconditions():
    few = _verdict(_values(0.0), n_memorized=10)
    assert few["verdict"] == "inconclusive" and "10 memorized" in few["why"]
    dirty = _verdict(_values(0.0), gate=0.05)
    assert dirty["verdict"] == "inconclusive" and "contaminated" in dirty["why"]
    # a drop near the threshold with a wide CI: neither supported nor ruled out
    near = _verdict(_values(0.06, n_seq=30, seeds=1, rng_seed=3))
    twin = near["per_source"]["twin"]
    assert twin["drop_upper"] >= 0.95 and twin["drop_lower"] < 0.95  # the CI straddles the paper's 95 %
    assert near["verdict"] == "inconclusive"  # a point estimate above 0.95 alone does not support the claim


def test_secondary_measure_needs_something_to_forget():
    v = _values(0.0).rename(columns={"extracted": "advantage"})
    v["advantage"] = np.where(v["source"] == "untouched", 0.0, 0.0)
    out = memorization_verdict(v, "advantage", {"twin": _cap(0.2)}, 40, 0.0, TH, 0.5, 1, "twin")
    assert out["verdict"] == "inconclusive" and "nothing to forget" in out["why"]


def test_exact_sign_test_matches_the_binomial():
    assert exact_sign_test(0, 5) == pytest.approx(2 / 32)
    assert exact_sign_test(3, 3) == 1.0 and exact_sign_test(0, 0) == 1.0
    assert exact_sign_test(1, 9) == pytest.approx(2 * 11 / 1024)


def test_paired_sign_tests_count_sequences():
    t = paired_sign_tests(_values(0.0, n_seq=12), "extracted", "twin").set_index("comparison")
    assert t.loc["untouched vs twin", "first_higher"] == 12
    assert t.loc["untouched vs twin", "p_exact"] == pytest.approx(2 / 2 ** 12)


def test_regurgitation_gate_counts_only_long_matches():
    canary = list(range(100, 164))
    docs = [[1] * 10 + canary[5:25] + [2] * 10,   # a 20-token copy: inside the gate
            [1] * 10 + canary[30:45] + [2] * 10,  # 15 tokens: below 16, not counted
            [3] * 40]
    g = regurgitation_share(docs, [canary], k=16)
    assert g["tokens_in_matches"] == 20 and g["documents_with_a_match"] == 1
    assert g["share"] == pytest.approx(20 / (40 + 35 + 40))


def test_the_gate_listed_per_canary_attributes_each_copy_to_its_canary():
    a, b, c = list(range(100, 164)), list(range(200, 264)), list(range(300, 364))
    docs = [[1] * 10 + a[5:25] + [2] * 10 + b[0:30],   # 20 tokens of a, 30 of b, one sample
            [1] * 10 + a[30:45] + [2] * 10,              # 15 tokens of a: below the gate's 16
            [1] * 5 + b[10:30]]                         # 20 tokens of b, another sample
    per = regurgitation_by_canary(docs, [a, b, c], k=16)
    assert [r["tokens_in_matches"] for r in per] == [20, 50, 0]
    assert [r["documents_with_a_match"] for r in per] == [1, 2, 0]
    # canaries that share no window: the per-canary tokens add up to the gate's
    assert sum(r["tokens_in_matches"] for r in per) == regurgitation_share(docs, [a, b, c], k=16)["tokens_in_matches"]


def test_two_seeds_do_not_pass_for_a_precise_mean():
    """The seeds' resampled deviation is scaled by sqrt(n / (n - 1)): with two seeds that disagree on every
    sequence (0 and 1), the bootstrap variance of the mean is the textbook s^2 / n = 0.25, not 0.125."""
    from resurface.analysis.verdicts.memorization import source_boot
    rows = [{"source": "twin", "temperature": 1.0, "seed": seed, "canary_id": i, "x": float(seed)}
            for seed in (0, 1) for i in range(30)]
    _, reps = source_boot(pd.DataFrame(rows), "x", Thresholds(bootstrap=20000, seed=0))["twin"]
    assert np.var(reps) == pytest.approx(0.25, rel=0.05)
    from resurface.analysis.verdicts import cell_means
    runs = pd.DataFrame({"source": ["twin", "twin"], "temperature": [1.0, 1.0]})
    scores = np.tile([0.0, 1.0], (20000, 1))  # no item noise: the seeds alone
    (_, boot), = cell_means(runs, scores, np.array([0.0, 1.0]), ["source"], ["temperature"],
                            np.random.default_rng(0)).values()
    assert np.var(boot) == pytest.approx(0.25, rel=0.05)


def test_a_share_of_sequences_keeps_its_interval_inside_0_and_1():
    """Two seeds, scaled up, could carry a replicate of a near-0 extraction rate below 0: a rate's interval stays
    in [0, 1] and a drop's at or below 1."""
    v = _verdict(_values(0.03, n_seq=40, seeds=2))
    for r in v["per_source"].values():
        assert 0 <= r["after_ci"][0] <= r["after_ci"][1] <= 1 and r["drop_ci"][1] <= 1 and r["drop_upper"] <= 1


def test_the_likelihood_advantage_is_taken_apart_into_canaries_and_never_planted_passages():
    from resurface.study.memorization import nll_components
    rows = []
    for source, relation, shift_canary, shift_control in (("untouched", "untouched", 0.0, 0.0),
                                                          ("real-text", "real_text", 0.0, -0.5),
                                                          ("twin", "self", 1.0, 0.0)):
        for seed in ((0,) if source == "untouched" else (0, 1)):
            rows += [{"source": source, "relation": relation, "split": "heldout", "canary_id": i, "seed": seed,
                      "suffix_nll": 1.0 + 0.1 * i + shift_canary} for i in range(5)]
            rows += [{"source": source, "relation": relation, "split": "control", "canary_id": 10 + i, "seed": seed,
                      "suffix_nll": 4.0 + 0.1 * i + shift_control} for i in range(4)]
    t = nll_components(pd.DataFrame(rows)).set_index("source")
    assert list(t.index) == ["untouched", "real-text", "twin"] and "planting_gain_undone" not in t
    assert t.loc["untouched", "advantage"] == pytest.approx(4.15 - 1.2)
    # real text shrinks the advantage by lowering the never-planted passages' NLL, not by touching the canaries
    assert t.loc["real-text", "canary_change"] == pytest.approx(0) and t.loc["real-text", "never_planted_change"] == pytest.approx(-0.5)
    assert t.loc["twin", "canary_change"] == pytest.approx(1.0) and t.loc["twin", "never_planted_change"] == pytest.approx(0)
    assert t.loc["twin", "advantage"] == pytest.approx(t.loc["untouched", "advantage"] - 1.0)
    assert nll_components(pd.DataFrame(rows).query("split != 'control'")).empty
    # beside the canary-free base model: the share of what planting gained on the canaries that a source undid
    base = pd.DataFrame([{"split": "heldout", "canary_id": i, "suffix_nll": 3.0 + 0.1 * i} for i in range(5)]
                        + [{"split": "control", "canary_id": 10 + i, "suffix_nll": 4.0 + 0.1 * i} for i in range(4)]
                        + [{"split": "heldout", "canary_id": 99, "suffix_nll": 9.0}])  # not judged: left out
    t = nll_components(pd.DataFrame(rows), base).set_index("source")
    assert list(t.index) == ["base", "untouched", "real-text", "twin"]
    assert t.loc["base", "canary_nll"] == pytest.approx(3.2) and t.loc["base", "canary_change"] == pytest.approx(2.0)
    assert t.loc["twin", "planting_gain_undone"] == pytest.approx(0.5)     # 1.0 of the 2.0 nats planting gained
    assert t.loc["real-text", "planting_gain_undone"] == pytest.approx(0)


def test_what_the_twin_writes_is_set_against_what_each_source_keeps():
    from resurface.study.memorization import written_vs_kept
    rows = [{"source": "untouched", "relation": "untouched", "split": "heldout", "canary_id": i, "seed": 0,
             "extracted": True} for i in range(4)]
    for seed in (0, 1):  # self keeps canaries 0 and 1 (the written ones), loses 2 and 3; real text loses all
        rows += [{"source": "twin", "relation": "self", "split": "heldout", "canary_id": i, "seed": seed,
                  "extracted": i < 2} for i in range(4)]
        rows += [{"source": "real-text", "relation": "real_text", "split": "heldout", "canary_id": i, "seed": seed,
                  "extracted": False} for i in range(4)]
    seqs = pd.DataFrame(rows)
    memorized = pd.DataFrame({"student": "twin", "canary_id": range(4)})
    t = written_vs_kept(pd.DataFrame({"canary_id": [0, 1]}), seqs, memorized).set_index(["source", "written"])
    assert t.loc[("twin", True), "kept"] == 1.0 and t.loc[("twin", False), "kept"] == 0.0
    assert t.loc[("real-text", True), "kept"] == 0.0 and t.loc[("twin", True), "sequences"] == 2
    assert written_vs_kept(pd.DataFrame(columns=["canary_id"]), seqs, memorized).empty


def test_a_passage_the_book_holds_twice_counts_once():
    from resurface.builders.canaries import repeated_passages
    recs = [{"canary_id": i, "token_ids": ids} for i, ids in enumerate([[1, 2], [3, 4], [1, 2], [5], [3, 4]])]
    assert repeated_passages(recs) == [2, 4]


def test_a_twin_is_compared_with_the_model_it_copies():
    from resurface.frame import profiles as C
    from resurface.study.memorization import twin_base
    assert twin_base(C.load_config("small-budget")) == "lineage-small"      # the same recipe, no canaries
    assert twin_base(C.load_config("planted-smollm2")) == "smollm2"         # a planted twin's init_from
    assert twin_base(C.load_config("small-budget", {"zoo.models.lineage-small-twin.lr": 0.001})) is None
    assert twin_base(C.load_config("crossed-smollm2")) is None              # no twin


def test_suffix_nll_is_lower_for_a_memorized_sequence(memorizer):
    trained, _, seqs, unseen = memorizer
    assert suffix_nll(trained, seqs).max() < 0.1 < suffix_nll(trained, unseen).min()


def test_memorized_evals_split_names():
    from resurface.builders.memorization_measures import memorized_evals_split
    assert memorized_evals_split("EleutherAI/pythia-160m-deduped") == "deduped.160m"
    assert memorized_evals_split("EleutherAI/pythia-1.4b") == "duped.1.4b"
    with pytest.raises(ValueError, match="not a Pythia model"):
        memorized_evals_split("Qwen/Qwen2.5-0.5B")


def test_memorized_evals_sequences_feed_the_same_extraction(tmp_path, memorizer):
    """The real-model path, offline: a local parquet in pythia-memorized-evals' schema."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from resurface.builders.memorization_measures import memorized_evals_sequences
    trained, _, seqs, unseen = memorizer
    pq.write_table(pa.table({"index": [10, 11, 12, 13], "tokens": seqs + unseen}), tmp_path / "mem.parquet")
    got = memorized_evals_sequences("EleutherAI/pythia-70m-deduped", 4, data_files=str(tmp_path / "mem.parquet"))
    assert got == seqs + unseen
    assert extraction(trained, got, 32, 32)["extracted"].tolist() == [True, True, False, False]
