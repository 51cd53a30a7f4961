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
