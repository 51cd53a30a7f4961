"""The lean GPTNeoX decoder returns the model's own logits, position by position."""
from __future__ import annotations

import pytest
import torch

from resurface.lm import neox_decoder
from resurface.lm.sampler import decode


def _neox(parallel: bool, rotary_pct: float = 0.25):
    from transformers import AutoModelForCausalLM, GPTNeoXConfig
    torch.manual_seed(0)
    cfg = GPTNeoXConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=80, rotary_pct=rotary_pct,
                        use_parallel_residual=parallel)
    return AutoModelForCausalLM.from_config(cfg).eval()


@pytest.mark.parametrize("parallel,rotary_pct", [(True, 0.25), (False, 1.0)])
def test_logits_equal_the_models_forward_across_buffer_sizes(parallel, rotary_pct):
    model = _neox(parallel, rotary_pct)
    seq = torch.randint(0, 50, (3, 70))  # 70 positions: three KV buffers (32, 64, 70)
    with torch.no_grad():
        full = model(input_ids=seq).logits
    decoder = neox_decoder.NeoXDecoder(model, 3, 70)
    assert decoder.capacities == [32, 64, 70]
    steps = torch.stack([decoder.step(seq[:, t], t) for t in range(70)], 1)
    assert torch.allclose(steps, full, atol=1e-5), (steps - full).abs().max()


def test_used_only_for_bos_decoding_of_gpt_neox_on_cpu():
    from transformers import AutoModelForCausalLM, LlamaConfig
    model = _neox(True)
    bos = torch.zeros(2, 1, dtype=torch.long)
    assert neox_decoder.supports(model, bos)
    assert not neox_decoder.supports(model, torch.zeros(2, 3, dtype=torch.long))  # a prefix: the model's forward
    llama = AutoModelForCausalLM.from_config(LlamaConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1,
                                                         num_attention_heads=4, intermediate_size=64))
    assert not neox_decoder.supports(llama, bos)


def test_greedy_decoding_matches_the_models_forward():
    model = _neox(True)
    new = decode(model, torch.zeros(2, 1, dtype=torch.long), 40, greedy=True)
    seq = torch.zeros(2, 1, dtype=torch.long)
    with torch.no_grad():
        for _ in range(40):
            seq = torch.cat([seq, model(seq).logits[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(new, seq[:, 1:])
