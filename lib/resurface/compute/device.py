"""Where models run: one process-wide placement, chosen from the profile (`device`, `dtype`).

`auto` means a GPU in bfloat16 when there is one, else the CPU in float32 (bf16 on CPU is
barely faster here and changes the numbers). Fine-tuning always keeps float32 weights and,
on a GPU, computes in bfloat16 under autocast.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Placement:
    device: str = "cpu"
    dtype: str = "float32"

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    @property
    def is_default(self) -> bool:
        return self.device == "cpu" and self.dtype == "float32"

    def key(self) -> dict:
        """What to add to a cache key: nothing for CPU/fp32 (so existing caches stay valid)."""
        return {} if self.is_default else {"device": self.device, "dtype": self.dtype}

    def __str__(self) -> str:
        return f"{self.device}/{self.dtype}"


_current = Placement()


def resolve(device: str = "auto", dtype: str = "auto") -> Placement:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("resurface: the profile asks for `device: cuda` but torch sees no GPU.")
    if dtype == "auto":
        dtype = "bfloat16" if device == "cuda" else "float32"
    return Placement(device, dtype)


def use(device: str = "auto", dtype: str = "auto") -> Placement:
    global _current
    _current = resolve(device, dtype)
    return _current


def current() -> Placement:
    return _current


def autocast():
    """bf16 autocast on a GPU (for fine-tuning float32 weights); a no-op on CPU."""
    p = current()
    return torch.autocast("cuda", dtype=p.torch_dtype, enabled=p.device == "cuda" and p.dtype != "float32")


# Logits held at once by a scoring pass, in elements (1 GiB of float32). A batch of 32 x 128 positions over Gemma's
# 262k-word vocabulary is 4.3 GB of logits, and the loss or the normalisation copies them once or twice more: that
# made one real-weights process peak at 17 GB. A pass never holds more than this; a small vocabulary
# (every embedded profile: <= 8192 words x 64 x 128 = 67M) keeps its batch, so its numbers do not move.
LOGIT_BUDGET = 2 ** 28


def vocabulary_size(model) -> int:
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return int(head.weight.shape[0]) if head is not None else int(model.config.vocab_size)


def rows_per_pass(model, positions: int, batch_size: int) -> int:
    """How many sequences of `positions` scored positions one pass may take: `batch_size`, or fewer when their
    logits would exceed `LOGIT_BUDGET`."""
    return max(1, min(int(batch_size), LOGIT_BUDGET // max(1, positions * vocabulary_size(model))))
