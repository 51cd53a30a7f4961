"""An lm-eval model backend that scores at the speed of the forward pass (`model="resurface"`).

lm-eval keeps owning tasks, prompts, metrics and aggregation; this class only answers its loglikelihood
requests, with the same numbers as lm-eval's own `hf` backend (tested to 1e-5), but:
- **a context is read once**: requests that share a context (the choices of one item) run the context
  through the model once; every continuation is scored from its key/value cache. A one-token continuation
  needs no second pass at all;
- **only what is scored reaches the vocabulary**: a context's pass asks the model for logits at its scored
  positions only (`logits_to_keep`), so the output projection, most of a small model's work (73 % of the
  0.6M student's multiply-adds; 63 % of Gemma 3 270M's), skips the context; the log-softmax runs over the
  continuation positions, not over every position of every padded row (lm-eval's `hf` normalises the
  whole [batch, length, vocabulary] block);
- **each string is tokenized once**: a context shared by several choices is encoded once.

It is registered with lm-eval's `register_model`, so `simple_evaluate(model="resurface", ...)` finds it,
and it works with any causal LM that the Auto classes load from a directory (safetensors only).
"""
from __future__ import annotations

import copy
from collections import defaultdict

import torch
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import _add_special_kwargs, has_bos_prefix, resolve_max_length
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

from resurface.compute.device import LOGIT_BUDGET, rows_per_pass, vocabulary_size


def _common_prefix(seqs: list[list[int]]) -> int:
    """How many leading tokens every sequence shares, leaving each at least one token of its own."""
    n = min(len(s) for s in seqs) - 1
    for k in range(max(n, 0)):
        if any(s[k] != seqs[0][k] for s in seqs[1:]):
            return k
    return max(n, 0)


def _score(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(target) and whether target is the argmax, for [rows, positions, vocab] logits: one max, one
    exp-sum and one gather over the vocabulary (no normalised copy of the logits, no separate argmax)."""
    top = logits.amax(-1, keepdim=True)
    chosen = logits.gather(2, target[..., None])
    lse = (logits - top).exp_().sum(-1, keepdim=True).log_() + top
    return (chosen - lse).squeeze(2), (chosen >= top).squeeze(2)


@register_model("resurface")
class ForwardPassLM(TemplateLM):
    backend = "causal"

    def __init__(self, pretrained: str, tokenizer: str | None = None, dtype: str = "float32", device: str = "cpu",
                 batch_size: int | str = 32, max_length: int | None = None, **_ignored) -> None:
        super().__init__()
        from transformers import AutoModelForCausalLM, AutoTokenizer
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer or pretrained)
        torch_dtype = getattr(torch, dtype) if isinstance(dtype, str) and dtype != "auto" else torch.float32
        self.model = AutoModelForCausalLM.from_pretrained(pretrained, use_safetensors=True, dtype=torch_dtype)
        self.model.to(device).eval()
        self._device = torch.device(device)
        self.batch_size = int(batch_size) if str(batch_size).isdigit() else 32
        self._max_length = int(max_length) if max_length else resolve_max_length(self.model.config, self.tokenizer)
        self._encoded: dict[tuple[str, bool | None], list[int]] = {}

    # ------------------------------------------------------------ what TemplateLM needs

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:  # as lm-eval's hf backend: BOS when the tokenizer has one, else EOS
        return self.tokenizer.bos_token_id if self.tokenizer.bos_token_id is not None else self.tokenizer.eos_token_id

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def device(self):
        return self._device

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        """lm-eval's hf encoding rules, memoised: the context of every choice is encoded once."""
        key = (string, add_special_tokens)
        if key not in self._encoded:
            special = _add_special_kwargs(add_special_tokens, None)
            if add_special_tokens is None and has_bos_prefix(string, self.tokenizer.decode(self.prefix_token_id)):
                special["add_special_tokens"] = False
            self._encoded[key] = self.tokenizer.encode(string, **special)
        return self._encoded[key]

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        """Encode every string of the requests in one batched call first (the fast tokenizer encodes a batch in
        parallel, and a context shared by several choices is encoded once), then lm-eval's own pairing."""
        pairs, bare = set(), set()
        for context, continuation in (r.args for r in requests):
            if not context:  # scored from the prefix token: the continuation is encoded without special tokens
                bare.add(continuation)
                continue
            n = len(context) - len(context.rstrip())
            c, cont = (context[:-n], context[-n:] + continuation) if n else (context, continuation)
            pairs.update((c, c + cont))
        self._encode_all(sorted(pairs), None)
        self._encode_all(sorted(bare), False)
        # lm-eval's own "Tokenizing inputs" bar only re-reads the encodings above: one evaluation is one job
        # of a pool that reports its own progress, so that bar is never shown
        return super().loglikelihood(requests, disable_tqdm=True)

    def _encode_all(self, strings: list[str], add_special_tokens: bool | None) -> None:
        """Fill tok_encode's memo for many strings at once, with tok_encode's own rules."""
        bos = self.tokenizer.decode(self.prefix_token_id)
        todo = [s for s in strings if (s, add_special_tokens) not in self._encoded
                and not (add_special_tokens is None and has_bos_prefix(s, bos))]  # those go one by one
        if todo:
            ids = self.tokenizer(todo, **_add_special_kwargs(add_special_tokens, None))["input_ids"]
            self._encoded.update(((s, add_special_tokens), i) for s, i in zip(todo, ids))

    def generate_until(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError("the resurface backend scores log-likelihoods; use `hf` or `vllm` to generate")

    # ------------------------------------------------------------ scoring

    @torch.no_grad()
    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        """(log p(continuation | context), is greedy) per request, contexts shared.

        Requests with the same context form a group. The group's common continuation prefix joins the context
        (a lone request, such as a rolling window, is then scored in the context's pass alone, with no second
        pass). Sharing the choices' prefix per item (a minimal pair's words before the swap) was measured
        and left out: it saves 21 % of positions but splits the batches, 23 % slower for the embedded models."""
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        by_context: dict[tuple[int, ...], list[tuple[int, list[int]]]] = defaultdict(list)
        for i, (_, ctx, cont) in enumerate(requests):
            whole = (ctx + cont)[-(self.max_length + 1):]  # lm-eval truncates from the left
            ctx_kept = whole[:len(whole) - len(cont)]
            if not ctx_kept:  # the continuation alone fills the window: the first token has no context
                ctx_kept, cont = whole[:1], whole[1:]
            by_context[tuple(ctx_kept)].append((i, cont))
        groups: dict[tuple[tuple[int, ...], int], list[tuple[int, list[int]]]] = defaultdict(list)
        for ctx, members in by_context.items():
            shared = _common_prefix([cont for _, cont in members])
            groups[(ctx + tuple(members[0][1][:shared]), shared)] += [(i, cont[shared:]) for i, cont in members]
        by_length: dict[int, list[tuple[tuple[int, ...], int]]] = defaultdict(list)
        for key in groups:
            by_length[len(key[0])].append(key)
        vocab = vocabulary_size(self.model)
        for length in sorted(by_length):
            chunk: list[tuple[tuple[int, ...], int]] = []
            for key in by_length[length]:  # up to `batch_size` contexts, and no more logits than LOGIT_BUDGET
                keep = max([shared for _, shared in chunk] + [key[1]]) + 1
                if chunk and (len(chunk) == self.batch_size or (len(chunk) + 1) * keep * vocab > LOGIT_BUDGET):
                    self._score_contexts(chunk, groups, results)
                    chunk = []
                chunk.append(key)
            if chunk:
                self._score_contexts(chunk, groups, results)
        return results  # type: ignore[return-value]

    def _score_contexts(self, keys: list[tuple[tuple[int, ...], int]], groups: dict, results: list) -> None:
        """One forward over equal-length contexts (each with its group's shared continuation tokens), logits
        only at the positions that are scored; then the rest of every continuation from the contexts' cache."""
        ids = torch.tensor([ctx for ctx, _ in keys], dtype=torch.long, device=self.device)
        keep = max(shared for _, shared in keys) + 1  # the shared tokens' positions and the next prediction
        out = self.model(input_ids=ids, use_cache=True, logits_to_keep=keep)
        logits = out.logits.float()
        first = logits[:, -1]  # predicts each remaining continuation's first token
        base = []  # per context: log p and greediness of its shared tokens
        for c, (_, shared) in enumerate(keys):
            if shared:
                lp, g = _score(logits[c:c + 1, -shared - 1:-1], ids[c:c + 1, -shared:])
                base.append((float(lp.sum()), bool(g.all())))
            else:
                base.append((0.0, True))
        rows = sorted(((c, i, cont) for c, key in enumerate(keys) for i, cont in groups[key]),
                      key=lambda r: len(r[2]))  # similar lengths together: little padding
        step = rows_per_pass(self.model, max(len(cont) for _, _, cont in rows), self.batch_size)
        for s in range(0, len(rows), step):
            chunk = rows[s:s + step]
            longest = max(len(cont) for _, _, cont in chunk)
            ctx_idx = torch.tensor([c for c, _, _ in chunk], device=self.device)
            target = torch.tensor([cont + [0] * (longest - len(cont)) for _, _, cont in chunk], device=self.device)
            mask = torch.tensor([[1] * len(cont) + [0] * (longest - len(cont)) for _, _, cont in chunk],
                                dtype=torch.bool, device=self.device)
            logp, greedy = _score(first[ctx_idx][:, None], target[:, :1])  # [rows, 1]
            if longest > 1:  # the remaining tokens, read on top of the context's cache
                cache = copy.deepcopy(out.past_key_values)
                cache.reorder_cache(ctx_idx)
                # right padding: a padded position is never attended by a real one (causal attention)
                later = self.model(input_ids=target[:, :-1], past_key_values=cache, use_cache=True).logits
                lp, g = _score(later.float(), target[:, 1:])
                logp, greedy = torch.cat([logp, lp], dim=1), torch.cat([greedy, g], dim=1)
            totals = (logp * mask).sum(1).tolist()
            all_greedy = (greedy | ~mask).all(1).tolist()
            for (c, i, _), ll, g in zip(chunk, totals, all_greedy):
                results[i] = (base[c][0] + ll, base[c][1] and bool(g))

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Perplexity tasks: lm-eval's disjoint rolling windows, each scored as a (context, continuation) pair."""
        windows, owner = [], []
        for r, req in enumerate(requests):
            (string,) = req.args
            for ctx, cont in map(make_disjoint_window, get_rolling_token_windows(
                    token_list=self.tok_encode(string), prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length, context_len=1)):
                windows.append((None, ctx, cont))
                owner.append(r)
        scores = self._loglikelihood_tokens(windows)
        totals = [0.0] * len(requests)
        for r, (ll, _) in zip(owner, scores):
            totals[r] += ll
        return totals
