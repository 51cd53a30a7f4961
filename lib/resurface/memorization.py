"""k-extractability, as in Pythia's memorization work (Biderman et al., 2023).

A sequence is split into a `prefix_len`-token prefix and its true next
`suffix_len` tokens; the model decodes greedily from the prefix; the sequence is
*extracted* when every generated token equals the true one. The per-sequence
score is the fraction of matching tokens.
"""
from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from .sampling import decode


def extraction(model, sequences: list[list[int]], prefix_len: int = 32, suffix_len: int = 32,
               batch_size: int = 64) -> dict[str, np.ndarray]:
    """Greedy extraction per sequence: `extracted` (bool) and `match_fraction` (0..1)."""
    short = [i for i, s in enumerate(sequences) if len(s) < prefix_len + suffix_len]
    if short:
        raise ValueError(f"{len(short)} sequences are shorter than prefix_len + suffix_len = "
                         f"{prefix_len + suffix_len} tokens")
    seqs = torch.tensor([s[: prefix_len + suffix_len] for s in sequences], dtype=torch.long)
    matches = []
    for i in tqdm(range(0, len(seqs), batch_size), desc="extract", leave=False, mininterval=2):
        batch = seqs[i:i + batch_size]
        new = decode(model, batch[:, :prefix_len], suffix_len, greedy=True)
        matches.append((new == batch[:, prefix_len:]).float())
    m = torch.cat(matches).numpy() if matches else np.zeros((0, suffix_len))
    return {"extracted": m.min(axis=1) == 1.0 if len(m) else np.zeros(0, bool),
            "match_fraction": m.mean(axis=1) if len(m) else np.zeros(0)}


def canary_extraction(model, canaries: list[dict], prefix_len: int, suffix_len: int, batch_size: int = 64):
    """One row per canary: id, count, split, extracted, match_fraction."""
    import pandas as pd
    res = extraction(model, [c["token_ids"] for c in canaries], prefix_len, suffix_len, batch_size)
    return pd.DataFrame({"canary_id": [c["canary_id"] for c in canaries], "count": [c["count"] for c in canaries],
                         "split": [c["split"] for c in canaries], "extracted": res["extracted"],
                         "match_fraction": res["match_fraction"]})
