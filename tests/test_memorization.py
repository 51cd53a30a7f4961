"""k-extractability: a memorized sequence is extracted, a fresh model's is not, lengths are honoured."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from resurface.memorization import extraction, memorization_verdict
from resurface.training import train_lm

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


def test_memorization_verdict_rule():
    import pandas as pd
    runs = pd.DataFrame({"relation": ["self"] * 4, "rate_before": [0.8] * 4, "rate_after": [0.0, 0.0, 0.01, 0.0],
                         "headline_delta": [0.5, 0.2, -0.1, 0.4]})
    assert memorization_verdict(runs, 0.8)["verdict"] == "supported"
    runs2 = runs.assign(rate_after=[0.6, 0.5, 0.55, 0.6])
    assert memorization_verdict(runs2, 0.8)["verdict"] == "not supported"
    assert memorization_verdict(runs, 0.05)["verdict"] == "inconclusive"  # nothing to forget
    runs3 = runs.assign(headline_delta=[-3.0, -2.5, -2.8, -3.1])
    assert memorization_verdict(runs3, 0.8)["verdict"] == "not supported"


def test_memorized_evals_split_names():
    from resurface.memorization import memorized_evals_split
    assert memorized_evals_split("EleutherAI/pythia-160m-deduped") == "deduped.160m"
    assert memorized_evals_split("EleutherAI/pythia-1.4b") == "duped.1.4b"
    with pytest.raises(ValueError, match="not a Pythia model"):
        memorized_evals_split("Qwen/Qwen2.5-0.5B")


def test_memorized_evals_sequences_feed_the_same_extraction(tmp_path, memorizer):
    """The real-model path, offline: a local parquet in pythia-memorized-evals' schema."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from resurface.memorization import memorized_evals_sequences
    trained, _, seqs, unseen = memorizer
    pq.write_table(pa.table({"index": [10, 11, 12, 13], "tokens": seqs + unseen}), tmp_path / "mem.parquet")
    got = memorized_evals_sequences("EleutherAI/pythia-70m-deduped", 4, data_files=str(tmp_path / "mem.parquet"))
    assert got == seqs + unseen
    assert extraction(trained, got, 32, 32)["extracted"].tolist() == [True, True, False, False]
