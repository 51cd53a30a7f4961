"""Unconditional sampling from the start token alone: no prompt, no filter but end-of-text.

Two backends behind one function:
- `fast` (default): a plain decoding loop over a preallocated KV cache (GPTNeoX on a CPU: the lean
  `NeoXDecoder`) that draws each token by inverse CDF on one uniform per row. On CPU
  `torch.multinomial` dominates `model.generate`'s step time; one uniform per row
  is cheaper and gives the same distribution (tested against the softmax).
- `hf`: `model.generate(do_sample=True)`, the reference.
- `vllm`: vLLM's engine on a GPU, for Hub-scale runs; same corpus format and provenance.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from transformers.cache_utils import Cache, DynamicLayer

from resurface.lm import neox_decoder

log = logging.getLogger("resurface")


@dataclass(frozen=True)
class StartToken:
    token_id: int
    token: str
    rule: str


def resolve_start_token(tokenizer, model_config=None) -> StartToken:
    """The token a document starts from, per family.

    Pythia / GPTNeoX: `<|endoftext|>` (its BOS, id 0). Llama: `<s>` / `<|begin_of_text|>`
    (its BOS). Qwen2-style tokenizers have no BOS (`bos_token` is None): documents are
    separated by `<|endoftext|>`, which the model config names as `bos_token_id`, else EOS.
    """
    if tokenizer.bos_token_id is not None:
        return StartToken(tokenizer.bos_token_id, tokenizer.bos_token, "tokenizer.bos_token")
    cfg_bos = getattr(model_config, "bos_token_id", None) if model_config is not None else None
    if cfg_bos is not None:
        return StartToken(cfg_bos, tokenizer.convert_ids_to_tokens(cfg_bos), "config.bos_token_id (no tokenizer BOS)")
    if tokenizer.eos_token_id is not None:
        return StartToken(tokenizer.eos_token_id, tokenizer.eos_token, "tokenizer.eos_token (document separator)")
    raise ValueError("the tokenizer has neither a BOS nor an EOS token to start from")


def filter_logits(logits: torch.Tensor, temperature: float, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Temperature, then top-k, then nucleus; removed entries become -inf."""
    logits = logits.float() / temperature
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, sorted_idx = torch.sort(logits, descending=True, dim=-1)
        probs = torch.softmax(sorted_logits, dim=-1)
        # drop a token when the mass before it already reaches top_p (the first token always stays)
        drop = (probs.cumsum(-1) - probs) >= top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, sorted_idx, sorted_logits)
    return logits


def draw(logits: torch.Tensor, generator: torch.Generator, temperature: float = 1.0, tile: int = 64) -> torch.Tensor:
    """One categorical draw per row from softmax(logits / temperature), by inverse CDF on one uniform.

    Unnormalised and in two levels: exp(logits - max) in place, then the uniform (scaled by the row's
    total mass) picks a tile of `tile` tokens by the tiles' cumulative masses, and the rest of it picks a
    token inside that tile. Same distribution as a cumulative sum over the whole vocabulary (tested),
    without its sequential pass over every logit or a normalised copy. `logits` is overwritten.
    Filtered entries (-inf, see `filter_logits`) have no mass and are never drawn."""
    x = logits.float() if logits.dtype != torch.float32 else logits.contiguous()
    if temperature != 1.0:
        x = x.mul_(1.0 / temperature)
    x = x.sub_(x.amax(-1, keepdim=True)).exp_()
    rows, vocab = x.shape
    if vocab % tile or vocab < 4 * tile:
        tile = vocab  # one level
    tiles = x.view(rows, vocab // tile, tile)
    cum_tiles = tiles.sum(-1).cumsum_(-1)
    u = torch.rand(rows, 1, generator=generator, dtype=x.dtype, device=x.device) * cum_tiles[:, -1:]
    chosen = torch.searchsorted(cum_tiles, u, right=True).clamp_(max=cum_tiles.shape[-1] - 1)
    before = torch.where(chosen > 0, cum_tiles.gather(1, (chosen - 1).clamp(min=0)), 0.0)
    inside = tiles[torch.arange(rows, device=x.device), chosen.squeeze(1)].cumsum_(-1)
    rest = (u - before).clamp_(min=0.0)
    # float rounding can put `rest` at or past the tile's total: take the tile's last token with mass
    k = torch.searchsorted(inside, torch.minimum(rest, inside[:, -1:]), right=True)
    last = torch.searchsorted(inside, inside[:, -1:].contiguous(), right=False)
    k = torch.where(k >= tile, last, k)
    return (chosen * tile + k).squeeze(1)


class _GrowingLayer(DynamicLayer):
    """A KV-cache layer with its full length allocated up front; it hands out views, never copies.

    The default `DynamicLayer` concatenates every step, re-copying the whole cache: half of the
    decoding time of the 4-layer lineage model at batch 256 (measured with torch.profiler)."""

    def __init__(self, capacity: int):
        super().__init__()
        self.capacity, self.length = capacity, 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        b, h, _, d = key_states.shape
        self._k = torch.empty(b, h, self.capacity, d, dtype=key_states.dtype, device=key_states.device)
        self._v = torch.empty(b, h, self.capacity, value_states.shape[-1], dtype=value_states.dtype,
                              device=value_states.device)
        self.keys, self.values = self._k[:, :, :0], self._v[:, :, :0]
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        start, n = self.length, key_states.shape[-2]
        if start + n > self.capacity:
            raise ValueError(f"KV cache of {self.capacity} positions is full")
        self._k[:, :, start:start + n] = key_states
        self._v[:, :, start:start + n] = value_states
        self.length = start + n
        self.keys, self.values = self._k[:, :, :self.length], self._v[:, :, :self.length]
        return self.keys, self.values


def preallocated_cache(model, capacity: int) -> Cache:
    return Cache(layers=[_GrowingLayer(capacity) for _ in range(model.config.num_hidden_layers)])


@torch.no_grad()
def decode(model, input_ids: torch.Tensor, max_new_tokens: int, *, greedy: bool = False, temperature: float = 1.0,
           top_k: int = 0, top_p: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """KV-cached decoding of `max_new_tokens` for a batch of equal-length prefixes; returns the new tokens (CPU).

    BOS sampling from a GPTNeoX model on the CPU steps through `NeoXDecoder`; everything else through
    the model's forward over a preallocated cache."""
    input_ids = input_ids.to(model.device)
    if neox_decoder.supports(model, input_ids):
        decoder = neox_decoder.NeoXDecoder(model, input_ids.shape[0], 1 + max_new_tokens)
        step = decoder.step
        logits = step(input_ids[:, 0], 0)
    else:
        out = model(input_ids=input_ids, use_cache=True,
                    past_key_values=preallocated_cache(model, input_ids.shape[1] + max_new_tokens))
        past, logits = out.past_key_values, out.logits[:, -1, :]

        def step(tokens, position):
            nonlocal past
            out = model(input_ids=tokens[:, None], past_key_values=past, use_cache=True)
            past = out.past_key_values
            return out.logits[:, -1, :]
    new = torch.empty(input_ids.shape[0], max_new_tokens, dtype=torch.long, device=input_ids.device)
    for t in range(max_new_tokens):
        if greedy:
            nxt = logits.argmax(-1)
        elif top_k or top_p < 1.0:
            nxt = draw(filter_logits(logits, temperature, top_k, top_p), generator)
        else:
            nxt = draw(logits, generator, temperature)
        new[:, t] = nxt
        if t + 1 < max_new_tokens:
            logits = step(nxt, input_ids.shape[1] + t)
    return new.cpu()


def max_positions(model) -> int | None:
    c = getattr(model, "config", None)
    return getattr(c, "max_position_embeddings", None) or getattr(c, "n_positions", None)


def vllm_engine(model_dir, dtype: str = "auto", seed: int = 0, **kwargs):
    """A vLLM engine on a saved model directory (GPU machines; `pip install -r requirements-gpu.txt`)."""
    try:
        from vllm import LLM
    except ImportError:
        raise SystemExit("resurface: `sampling.backend: vllm` needs vLLM (pip install -r requirements-gpu.txt, "
                         "on a GPU machine).") from None
    return LLM(model=str(model_dir), tokenizer=str(model_dir), dtype=dtype, seed=seed, **kwargs)


def _vllm_batch(llm, start_id: int, n: int, *, temperature: float, top_k: int, top_p: float,
                max_new_tokens: int, seed: int) -> list[list[int]]:
    """`n` samples from one start-token prompt. vLLM stops a row at end-of-text by itself."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt
    params = SamplingParams(n=n, temperature=temperature, top_p=top_p, top_k=top_k if top_k else -1,
                            max_tokens=max_new_tokens, seed=seed, detokenize=False)
    out = llm.generate([TokensPrompt(prompt_token_ids=[start_id])], params, use_tqdm=False)
    return [list(c.token_ids) for c in out[0].outputs]


def sample_documents(model, tokenizer, *, n_tokens: int, temperature: float, top_k: int = 0, top_p: float = 1.0,
                     max_new_tokens: int = 128, batch_size: int = 256, seed: int = 0, backend: str = "fast",
                     desc: str = "sample") -> tuple[list[list[int]], dict]:
    """Sample documents from the start token until they hold at least `n_tokens` tokens.

    Each row is cut at its first end-of-text (what follows would be a new document).
    Returns the token lists and the provenance of the run.
    """
    start = resolve_start_token(tokenizer, getattr(model, "config", None))
    limit = max_positions(model)
    if limit is not None and max_new_tokens + 1 > limit:
        raise ValueError(f"max_new_tokens={max_new_tokens} does not fit the model's {limit} positions")
    eos = tokenizer.eos_token_id
    gen = torch.Generator(device=getattr(model, "device", "cpu") if backend != "vllm" else "cpu").manual_seed(seed)
    docs: list[list[int]] = []
    total, generated, t0 = 0, 0, time.perf_counter()
    bar = tqdm(total=n_tokens, desc=desc, leave=False, mininterval=2, unit="tok")
    while total < n_tokens:
        bos = torch.full((batch_size, 1), start.token_id, dtype=torch.long)
        if backend == "fast":
            new = decode(model, bos, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                         generator=gen)
        elif backend == "hf":
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen, device=gen.device)))
            bos = bos.to(model.device)
            new = model.generate(input_ids=bos, attention_mask=torch.ones_like(bos), do_sample=True,
                                 temperature=temperature, top_k=top_k, top_p=top_p, max_new_tokens=max_new_tokens,
                                 min_new_tokens=max_new_tokens, pad_token_id=eos, eos_token_id=None)[:, 1:].cpu()
        elif backend == "vllm":  # `model` is a vLLM engine (see `vllm_engine`)
            rows = _vllm_batch(model, start.token_id, batch_size, temperature=temperature, top_k=top_k,
                               top_p=top_p, max_new_tokens=max_new_tokens,
                               seed=int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
            new = torch.tensor([r + [eos] * (max_new_tokens - len(r)) for r in rows], dtype=torch.long)
        else:
            raise ValueError(f"sampling backend `{backend}` is not available here (use `fast`, `hf` or `vllm`)")
        generated += new.numel() if backend != "vllm" else sum(map(len, rows))
        for row in new.tolist():
            cut = row.index(eos) if eos in row else len(row)
            docs.append(row[:cut])
            total += cut
        bar.update(min(n_tokens, total) - bar.n)
    bar.close()
    seconds = time.perf_counter() - t0
    provenance = {"start_token": start.token, "start_token_id": start.token_id, "start_rule": start.rule,
                  "temperature": temperature, "top_k": top_k, "top_p": top_p, "max_new_tokens": max_new_tokens,
                  "batch_size": batch_size, "seed": seed, "backend": backend, "documents": len(docs),
                  "tokens": total, "tokens_generated": generated, "wall_seconds": round(seconds, 3),
                  "tokens_per_s": round(generated / seconds, 1)}
    return docs, provenance


