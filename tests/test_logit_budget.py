"""No scoring pass holds more logits than `device.LOGIT_BUDGET`, and splitting a batch to stay under it changes no
score beyond float rounding. (With Gemma's 262k-word vocabulary, one 32 x 128 batch is 4.3 GB of logits; unbounded,
the real-weights profile peaked at 17 GB, over its 16 GiB limit.)"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from resurface.compute import device

V = 512


@pytest.fixture(scope="module")
def model():
    from transformers import AutoModelForCausalLM, GPTNeoXConfig
    cfg = GPTNeoXConfig(vocab_size=V, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(cfg).eval()


@pytest.fixture
def largest_logits(model):
    """Records the element count of every logits block the output layer produces."""
    seen: list[int] = []
    handle = model.get_output_embeddings().register_forward_hook(lambda m, i, out: seen.append(out.numel()))
    yield seen
    handle.remove()


def _budget(monkeypatch, rows: int, positions: int) -> int:
    """A budget that lets `rows` sequences of `positions` logits through at once."""
    budget = rows * positions * V
    monkeypatch.setattr(device, "LOGIT_BUDGET", budget)
    import resurface.lm.lm_backend as backend
    monkeypatch.setattr(backend, "LOGIT_BUDGET", budget)
    return budget


def test_rows_per_pass_keeps_small_vocabularies_whole(model):
    assert device.vocabulary_size(model) == V
    assert device.rows_per_pass(model, 128, 64) == 64  # every embedded profile: its batches do not change
    gemma_like = device.LOGIT_BUDGET // (128 * 262_144)
    assert gemma_like == 8 and device.rows_per_pass(model, 10 ** 9, 32) == 1


def test_training_and_memorization_scores_stay_under_the_budget(model, largest_logits, monkeypatch):
    from resurface.lm.extraction import suffix_agreement, suffix_nll
    from resurface.lm.training import mean_loss
    rng = np.random.default_rng(0)
    blocks = rng.integers(1, V, (10, 24)).astype(np.uint16)
    seqs = blocks.astype(int).tolist()
    before = (mean_loss(model, blocks, 8), suffix_nll(model, seqs, 8, 16, 8), suffix_agreement(model, seqs, 8, 16, 8))
    assert max(largest_logits) > 3 * 24 * V  # unbounded, a pass holds 8 rows
    budget = _budget(monkeypatch, 3, 24)
    largest_logits.clear()
    after = (mean_loss(model, blocks, 8), suffix_nll(model, seqs, 8, 16, 8), suffix_agreement(model, seqs, 8, 16, 8))
    assert max(largest_logits) <= budget
    assert after[0] == pytest.approx(before[0], rel=1e-5)
    np.testing.assert_allclose(after[1], before[1], rtol=1e-5)
    np.testing.assert_array_equal(after[2], before[2])


def test_the_lm_eval_backend_splits_its_passes_under_the_budget(model, largest_logits, monkeypatch):
    from resurface.lm.lm_backend import ForwardPassLM
    lm = object.__new__(ForwardPassLM)
    lm.model, lm._device, lm.batch_size, lm._max_length = model, torch.device("cpu"), 16, 64
    rng = np.random.default_rng(1)
    requests = []
    for k in range(12):  # contexts of two lengths, each with a shared and a differing continuation
        ctx = rng.integers(1, V, 10 + 5 * (k % 2)).tolist()
        common = rng.integers(1, V, 3).tolist()
        for _ in range(2):
            requests.append((None, ctx, common + rng.integers(1, V, 1 + k % 4).tolist()))
    before = lm._loglikelihood_tokens(requests)
    assert max(largest_logits) > 2 * 4 * V
    budget = _budget(monkeypatch, 2, 4)
    largest_logits.clear()
    after = lm._loglikelihood_tokens(requests)
    assert max(largest_logits) <= budget
    np.testing.assert_allclose([s for s, _ in after], [s for s, _ in before], rtol=1e-5)
    assert [g for _, g in after] == [g for _, g in before]
