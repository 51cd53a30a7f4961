"""Models as Hugging Face directories: the configs of the zoo's architectures, and loading with the Auto classes
(safetensors only, never remote code) onto the current device."""
from __future__ import annotations

from pathlib import Path

import torch

from resurface.compute.device import current
from resurface.frame.schema import ModelConfig


def hf_config(m: ModelConfig, vocab_size: int, seq_len: int):
    from transformers import GPT2Config, GPTNeoXConfig, LlamaConfig
    common = dict(bos_token_id=0, eos_token_id=0, pad_token_id=1)
    if m.architecture == "gpt_neox":  # Pythia's architecture: parallel residual, partial rotary, untied
        return GPTNeoXConfig(vocab_size=vocab_size, hidden_size=m.width, num_hidden_layers=m.layers,
                             num_attention_heads=m.heads, intermediate_size=4 * m.width,
                             max_position_embeddings=seq_len, rotary_pct=0.25, use_parallel_residual=True,
                             tie_word_embeddings=False, **common)
    if m.architecture == "llama":
        return LlamaConfig(vocab_size=vocab_size, hidden_size=m.width, num_hidden_layers=m.layers,
                           num_attention_heads=m.heads, num_key_value_heads=m.heads,
                           intermediate_size=int(8 * m.width / 3) // 8 * 8, max_position_embeddings=seq_len,
                           tie_word_embeddings=True, **common)
    if m.architecture == "gpt2":
        return GPT2Config(vocab_size=vocab_size, n_embd=m.width, n_layer=m.layers, n_head=m.heads,
                          n_positions=seq_len, loss_type="ForCausalLM", resid_pdrop=0.0, embd_pdrop=0.0,
                          attn_pdrop=0.0, **common)  # no dropout, like the other two
    raise ValueError(f"unknown architecture {m.architecture}")


def load_model(path: Path | str, revision: str | None = None, for_training: bool = False):
    """Load a causal LM from a saved directory (safetensors only, no remote code) onto the current device.

    Inference uses the profile's dtype; training keeps float32 weights (autocast does the rest on a GPU)."""
    from transformers import AutoModelForCausalLM

    place = current()
    kwargs = {"use_safetensors": True, "dtype": torch.float32 if for_training else place.torch_dtype}
    if revision:
        kwargs["revision"] = revision
    model = AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
    if place.device != "cpu":
        model.to(place.device)
    model.eval()
    return model
