"""GPTNeoX (Pythia's architecture) decoding one token at a time, without the per-step machinery.

BOS sampling spends its time in two places that Hugging Face's forward handles poorly on a CPU at
batch 256-512 (measured with torch.profiler on the 1.8M lineage model):
- attention over a growing KV cache. A slice `cache[:, :, :length]` of a preallocated buffer is not
  contiguous, and a batched matmul over non-contiguous matrices falls back to one small GEMM per
  (row, head): 3-4x slower than over a contiguous buffer. Copying the slice first (what a growing
  `DynamicCache` does every step) streams the whole cache through memory again. Here each layer keeps
  its keys and values in a few contiguous buffers of growing capacity (32, 64, 96, 128 positions); a
  step attends over the smallest buffer that holds its positions, with the positions not yet written
  masked out, and moving to the next buffer copies the history once.
- the per-step glue (mask construction, cache objects, dtype casts): about a fifth of a step at
  these sizes.

The modules, weights and functions are the model's own (layer norms, linear layers, the rotary embedding
module and `apply_rotary_pos_emb`, the activation), so only the order of operations is ours;
`tests/test_neox_decoder.py` checks the logits against the model's forward. Attention is written out rather
than HF's `eager_attention_forward` because the mask and the scaling fuse into one `baddbmm` here. Only the CPU path uses it (`supports`): the buffers hold about
2.5x the memory of a single KV cache, cheap at this scale and wasteful on a GPU.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

BUCKET = 32  # positions per capacity step of the KV buffers


def supports(model, input_ids: torch.Tensor) -> bool:
    """A GPTNeoX model on the CPU, decoding from a single start token (BOS sampling)."""
    cfg = getattr(model, "config", None)
    return (getattr(cfg, "model_type", None) == "gpt_neox" and input_ids.shape[1] == 1
            and input_ids.device.type == "cpu" and not model.training)


class NeoXDecoder:
    """Feeds one token per row per call; `step(tokens, position)` returns the next-token logits."""

    def __init__(self, model, batch: int, capacity: int):
        # imported here: transformers' modeling stack costs ~4 s to import, which a notebook that only reads
        # samples from the cache should not pay (it is loaded already whenever there is a model to decode)
        from transformers.models.gpt_neox.modeling_gpt_neox import apply_rotary_pos_emb
        self._rope = apply_rotary_pos_emb
        cfg = model.config
        self.model, self.net = model, model.gpt_neox
        self.heads = cfg.num_attention_heads
        self.head_dim = cfg.hidden_size // self.heads
        self.parallel = cfg.use_parallel_residual
        dtype, device = model.dtype, model.device
        # the model's own rotary module, evaluated once for every position
        cos, sin = self.net.rotary_emb(torch.zeros(1, dtype=dtype, device=device),
                                       position_ids=torch.arange(capacity, device=device)[None])
        self.cos, self.sin = cos[0], sin[0]
        self.capacities = [min(capacity, BUCKET * n) for n in range(1, -(-capacity // BUCKET) + 1)]

        def buffers():  # each is zeroed past the history when first used (see `_attend`)
            return [torch.empty(batch, self.heads, c, self.head_dim, dtype=dtype, device=device)
                    for c in self.capacities]
        self.keys = [buffers() for _ in self.net.layers]
        self.values = [buffers() for _ in self.net.layers]
        # per buffer and position: 0 where a key is written, -inf after
        self.masks = [torch.zeros(c, 1, c, dtype=dtype, device=device).masked_fill_(
            torch.ones(c, c, dtype=torch.bool, device=device).triu_(1)[:, None], float("-inf"))
            for c in self.capacities]

    def _attend(self, i: int, attention, h: torch.Tensor, position: int) -> torch.Tensor:
        b, d = h.shape[0], self.head_dim
        qkv = F.linear(h, attention.query_key_value.weight, attention.query_key_value.bias)
        qkv = qkv.view(b, self.heads, 3, d)  # per head: query, key, value
        # transformers' own rotary function, on (b, heads, head_dim) at one position
        q, k = self._rope(qkv[:, :, 0], qkv[:, :, 1], self.cos[position][None], self.sin[position][None])
        j = next(j for j, cap in enumerate(self.capacities) if position < cap)
        keys, values = self.keys[i][j], self.values[i][j]
        if position == (self.capacities[j - 1] if j else 0):  # a new buffer: the history, zeros after it
            if j:
                keys[:, :, :position] = self.keys[i][j - 1]
                values[:, :, :position] = self.values[i][j - 1]
            keys[:, :, position:].zero_()  # masked positions weigh 0, and 0 x NaN would still be NaN
            values[:, :, position:].zero_()
        keys[:, :, position] = k
        values[:, :, position] = qkv[:, :, 2]
        n = b * self.heads
        # scores = mask + scaling * q.K (one fused product; the mask hides positions not yet written)
        scores = torch.baddbmm(self.masks[j][position], q.reshape(n, 1, d),
                               keys.view(n, -1, d).transpose(1, 2), alpha=attention.scaling)
        weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(values.dtype)
        out = torch.bmm(weights, values.view(n, -1, d)).view(b, -1)
        return F.linear(out, attention.dense.weight, attention.dense.bias)

    def _mlp(self, mlp, h: torch.Tensor) -> torch.Tensor:
        h = mlp.act(F.linear(h, mlp.dense_h_to_4h.weight, mlp.dense_h_to_4h.bias))
        return F.linear(h, mlp.dense_4h_to_h.weight, mlp.dense_4h_to_h.bias)

    @staticmethod
    def _norm(ln, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, ln.normalized_shape, ln.weight, ln.bias, ln.eps)

    @torch.no_grad()
    def step(self, tokens: torch.Tensor, position: int) -> torch.Tensor:
        # functional calls on the modules' weights: nn.Module dispatch is a visible share of a step this small
        x = F.embedding(tokens, self.net.embed_in.weight)
        for i, layer in enumerate(self.net.layers):
            attn = self._attend(i, layer.attention, self._norm(layer.input_layernorm, x), position)
            if self.parallel:  # Pythia: x + attn(ln1(x)) + mlp(ln2(x)), summed in HF's order
                x = self._mlp(layer.mlp, self._norm(layer.post_attention_layernorm, x)) + attn + x
            else:
                x = attn + x
                x = self._mlp(layer.mlp, self._norm(layer.post_attention_layernorm, x)) + x
        head = self.model.get_output_embeddings()
        return F.linear(self._norm(self.net.final_layer_norm, x), head.weight, head.bias)
