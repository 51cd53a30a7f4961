"""The BOS sampler: right distribution, deterministic, cut at end-of-text, same logits as a full forward."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from resurface.lm.sampler import decode, draw, filter_logits, preallocated_cache, resolve_start_token, sample_documents

V = 24


@pytest.fixture(scope="module")
def tiny():
    from transformers import AutoModelForCausalLM, GPTNeoXConfig
    torch.manual_seed(0)
    cfg = GPTNeoXConfig(vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, bos_token_id=0, eos_token_id=0)
    m = AutoModelForCausalLM.from_config(cfg).eval()
    with torch.no_grad():
        m.get_output_embeddings().weight.mul_(6.0)  # a peaked distribution, so temperature matters
    return m


def _first_step(model, temperature, n=40000, seed=0, **kw):
    bos = torch.zeros(n, 1, dtype=torch.long)
    return decode(model, bos, 1, temperature=temperature, generator=torch.Generator().manual_seed(seed), **kw)[:, 0]


def _chi2(samples, probs):
    counts = np.bincount(samples.numpy(), minlength=V)
    keep = probs > 0
    expected = probs[keep] / probs[keep].sum() * counts[keep].sum()
    return chisquare(counts[keep], expected).pvalue


@pytest.mark.parametrize("temperature", [0.7, 1.0, 1.3])
def test_frequencies_match_softmax_at_temperature(tiny, temperature):
    with torch.no_grad():
        logits = tiny(torch.zeros(1, 1, dtype=torch.long)).logits[0, -1].double()
    probs = torch.softmax(logits / temperature, -1).numpy()
    s = _first_step(tiny, temperature)
    assert _chi2(s, probs) > 1e-3
    freq = np.bincount(s.numpy(), minlength=V) / len(s)
    assert np.abs(freq - probs).max() < 0.01


def test_a_wrong_temperature_is_detected(tiny):
    with torch.no_grad():
        logits = tiny(torch.zeros(1, 1, dtype=torch.long)).logits[0, -1].double()
    s = _first_step(tiny, 1.0)
    assert _chi2(s, torch.softmax(logits / 0.7, -1).numpy()) < 1e-6
    assert _chi2(s, torch.softmax(logits / 1.3, -1).numpy()) < 1e-6


def test_top_k_and_top_p_support(tiny):
    with torch.no_grad():
        logits = tiny(torch.zeros(1, 1, dtype=torch.long)).logits[0, -1]
    top3 = set(torch.topk(logits, 3).indices.tolist())
    assert set(_first_step(tiny, 1.0, n=4000, top_k=3).tolist()) <= top3
    probs = torch.softmax(logits, -1)
    order = torch.argsort(probs, descending=True)
    nucleus = order[: int((probs[order].cumsum(0) < 0.5).sum()) + 1].tolist()
    assert set(_first_step(tiny, 1.0, n=4000, top_p=0.5).tolist()) <= set(nucleus)
    kept = torch.isfinite(filter_logits(logits[None], 1.0, top_p=0.5)[0]).nonzero().flatten().tolist()
    assert sorted(kept) == sorted(nucleus)


def test_inverse_cdf_draw_matches_probabilities():
    logits = torch.tensor([[2.0, 0.0, -1.0, 1.0]]).repeat(50000, 1)
    p = torch.softmax(logits[0].double(), -1).numpy()
    s = draw(logits, torch.Generator().manual_seed(1))  # overwrites `logits`
    assert chisquare(np.bincount(s.numpy(), minlength=4), p * len(s)).pvalue > 1e-3


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_two_level_draw_over_a_large_vocabulary(temperature):
    """4096 tokens in tiles of 64: mass at tile edges, two tokens in one tile, the very last token, and
    filtered (-inf) tokens between them; the frequencies must follow softmax(logits / T)."""
    vocab, n = 4096, 200000
    logits = torch.full((vocab,), float("-inf"))
    hot = {63: 1.0, 64: 0.5, 700: 2.0, 701: -0.5, 2047: 0.0, 4095: 1.5}
    for i, v in hot.items():
        logits[i] = v
    p = torch.softmax(logits.double() / temperature, -1).numpy()
    s = draw(logits.repeat(n, 1), torch.Generator().manual_seed(2), temperature)
    assert set(s.unique().tolist()) <= set(hot)
    counts = np.bincount(s.numpy(), minlength=vocab)
    keys = sorted(hot)
    assert chisquare(counts[keys], p[keys] * n).pvalue > 1e-3
    # the same draws but a temperature the tokens were not drawn at is rejected
    other = torch.softmax(logits.double() / (1.6 - temperature), -1).numpy()
    assert chisquare(counts[keys], other[keys] * n).pvalue < 1e-6


def test_cached_decoding_matches_full_forward(tiny):
    g = torch.Generator().manual_seed(3)
    new = decode(tiny, torch.zeros(4, 1, dtype=torch.long), 12, temperature=1.0, generator=g)
    seq = torch.cat([torch.zeros(4, 1, dtype=torch.long), new], 1)
    with torch.no_grad():
        full = tiny(seq).logits[:, :-1]
        out = tiny(seq[:, :1], past_key_values=preallocated_cache(tiny, seq.shape[1]), use_cache=True)
        steps = [out.logits[:, -1]]
        past = out.past_key_values
        for t in range(1, seq.shape[1] - 1):
            out = tiny(seq[:, t:t + 1], past_key_values=past, use_cache=True)
            past = out.past_key_values
            steps.append(out.logits[:, -1])
    assert torch.allclose(torch.stack(steps, 1), full, atol=1e-4)


class _Tok:
    bos_token_id, bos_token, eos_token_id, eos_token = 0, "<|endoftext|>", 0, "<|endoftext|>"


def test_deterministic_for_a_seed_and_cut_at_eos(tiny):
    kw = dict(n_tokens=600, temperature=1.0, max_new_tokens=30, batch_size=16)
    a, pa = sample_documents(tiny, _Tok(), seed=5, **kw)
    b, _ = sample_documents(tiny, _Tok(), seed=5, **kw)
    c, _ = sample_documents(tiny, _Tok(), seed=6, **kw)
    assert a == b and a != c
    assert all(0 not in d for d in a)  # nothing after (or including) end-of-text
    assert pa["tokens"] >= 600 and pa["start_token_id"] == 0 and pa["documents"] == len(a)


def test_hf_backend_runs_with_same_contract(tiny):
    docs, prov = sample_documents(tiny, _Tok(), n_tokens=100, temperature=1.0, max_new_tokens=20, batch_size=8,
                                  seed=0, backend="hf")
    assert prov["backend"] == "hf" and sum(map(len, docs)) >= 100 and all(0 not in d for d in docs)


def test_start_token_per_family():
    class Qwen:  # Qwen2: no BOS; documents separated by <|endoftext|>
        bos_token_id, bos_token, eos_token_id, eos_token = None, None, 151643, "<|endoftext|>"
        def convert_ids_to_tokens(self, i): return "<|endoftext|>"
    class QwenCfg: bos_token_id = 151643
    st = resolve_start_token(Qwen(), QwenCfg())
    assert st.token_id == 151643 and "config" in st.rule
    class Llama:
        bos_token_id, bos_token, eos_token_id, eos_token = 1, "<s>", 2, "</s>"
    assert resolve_start_token(Llama()).token_id == 1


def _tiny_family(arch: str):
    from transformers import AutoModelForCausalLM, GPT2Config, GPTNeoXConfig, LlamaConfig
    torch.manual_seed(1)
    cfg = {"gpt_neox": lambda: GPTNeoXConfig(vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                             intermediate_size=64, max_position_embeddings=64),
           "llama": lambda: LlamaConfig(vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                        num_key_value_heads=1, intermediate_size=64, max_position_embeddings=64),
           "gpt2": lambda: GPT2Config(vocab_size=V, n_embd=32, n_layer=2, n_head=2, n_positions=64)}[arch]()
    return AutoModelForCausalLM.from_config(cfg).eval()


@pytest.mark.parametrize("arch", ["gpt_neox", "llama", "gpt2"])
def test_preallocated_cache_decodes_like_full_forwards(arch):
    """Greedy decoding through the preallocated KV cache equals argmax over a full forward each step."""
    model = _tiny_family(arch)
    prefix = torch.tensor([[0, 5], [3, 7], [1, 1]])
    new = decode(model, prefix, 20, greedy=True)
    seq = prefix
    with torch.no_grad():
        for _ in range(20):
            seq = torch.cat([seq, model(seq).logits[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(new, seq[:, 2:])
    with pytest.raises(ValueError, match="full"):
        cache = preallocated_cache(model, 3)
        model(prefix, past_key_values=cache, use_cache=True)
        model(prefix, past_key_values=cache, use_cache=True)
