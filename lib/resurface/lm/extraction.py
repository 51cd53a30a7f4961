"""k-extractability, as in Pythia's memorization work (Biderman et al., 2023).

A sequence is split into a `prefix_len`-token prefix and its true next
`suffix_len` tokens; the model decodes greedily from the prefix; the sequence is
*extracted* when every generated token equals the true one. The per-sequence
score is the fraction of matching tokens.

Also: the suffix's NLL, teacher-forced agreement (one pass finds every extractable window), and how much of a
corpus regurgitates known sequences.
"""
from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from resurface.compute.device import rows_per_pass
from resurface.lm.sampler import decode


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
        matches.append((new == batch[:, prefix_len:]).float())  # decode returns CPU tokens
    m = torch.cat(matches).numpy() if matches else np.zeros((0, suffix_len))
    return {"extracted": m.min(axis=1) == 1.0 if len(m) else np.zeros(0, bool),
            "match_fraction": m.mean(axis=1) if len(m) else np.zeros(0)}


def suffix_nll(model, sequences: list[list[int]], prefix_len: int = 32, suffix_len: int = 32,
               batch_size: int = 64) -> np.ndarray:
    """Per sequence: the mean negative log-likelihood (nats per token) of its true `suffix_len`-token suffix
    given its prefix, teacher-forced. A continuous memorization measure (exposure, Carlini et al. 2019) that
    moves long before greedy extraction does."""
    n = prefix_len + suffix_len
    out = []
    batch_size = rows_per_pass(model, n, batch_size)  # the pass computes every position's logits
    for i in range(0, len(sequences), batch_size):
        x = torch.tensor([s[:n] for s in sequences[i:i + batch_size]], dtype=torch.long, device=model.device)
        with torch.no_grad():
            logits = model(input_ids=x).logits[:, prefix_len - 1:n - 1].float()
        lp = torch.log_softmax(logits, -1).gather(-1, x[:, prefix_len:n, None])[..., 0]
        out.append((-lp.mean(1)).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def _start_ids(probes: list[dict]) -> list[int]:
    """The tokens every probe's prefix begins with: none for canaries (they sit inside documents); the model's
    start token for passages scanned as whole documents (Gemma reads nothing sensible without its `<bos>`)."""
    starts = {tuple(p.get("start_ids", [])) for p in probes}
    if len(starts) > 1:
        raise ValueError(f"probes of one set must share their start tokens, not {sorted(starts)}")
    return list(starts.pop()) if starts else []


def canary_extraction(model, canaries: list[dict], prefix_len: int, suffix_len: int, batch_size: int = 64):
    """One row per canary: id, count, split, extracted, match_fraction and suffix_nll. A probe's `start_ids`
    (if any) go before its prefix, as extra context: the prefix and suffix lengths are the probe's own."""
    import pandas as pd
    start = _start_ids(canaries)
    seqs = [start + c["token_ids"] for c in canaries]
    pre = len(start) + prefix_len
    res = extraction(model, seqs, pre, suffix_len, batch_size)
    return pd.DataFrame({"canary_id": [c["canary_id"] for c in canaries], "count": [c["count"] for c in canaries],
                         "split": [c["split"] for c in canaries], "extracted": res["extracted"],
                         "match_fraction": res["match_fraction"],
                         "suffix_nll": suffix_nll(model, seqs, pre, suffix_len, batch_size)})


def suffix_agreement(model, sequences: list[list[int]], prefix_len: int, suffix_len: int,
                     batch_size: int = 16) -> np.ndarray:
    """Per sequence: the share of its suffix tokens that are the model's argmax given the true tokens before
    them (teacher-forced). Greedy decoding from the true prefix reproduces the whole suffix exactly when this is
    1.0, so one forward pass per window finds every extractable window (`extraction` then confirms them by
    decoding); below 1.0 it says how close a window came. Logits are computed for the suffix only."""
    n = prefix_len + suffix_len
    out = []
    batch_size = rows_per_pass(model, suffix_len + 1, batch_size)
    for i in tqdm(range(0, len(sequences), batch_size), desc="scan", leave=False, mininterval=5):
        x = torch.tensor([s[:n] for s in sequences[i:i + batch_size]], dtype=torch.long, device=model.device)
        with torch.no_grad():
            logits = model(input_ids=x, logits_to_keep=suffix_len + 1).logits[:, :-1]
        out.append((logits.argmax(-1) == x[:, prefix_len:n]).float().mean(1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def regurgitation_share(docs: list[list[int]], canaries: list[list[int]], k: int = 16) -> dict:
    """The validity gate: the share of sample tokens that lie inside a run of `k` or more tokens copied from
    any canary (every k-token window of a sample is looked up among the canaries' k-token windows)."""
    grams = {tuple(c[i:i + k]) for c in canaries for i in range(len(c) - k + 1)}
    covered = total = 0
    hit_docs = 0
    for d in docs:
        total += len(d)
        mask = np.zeros(len(d), bool)
        for i in range(len(d) - k + 1):
            if tuple(d[i:i + k]) in grams:
                mask[i:i + k] = True
        covered += int(mask.sum())
        hit_docs += bool(mask.any())
    return {"share": covered / total if total else 0.0, "tokens": int(total), "tokens_in_matches": int(covered),
            "documents": len(docs), "documents_with_a_match": int(hit_docs), "k": k}


def regurgitation_by_canary(docs: list[list[int]], canaries: list[list[int]], k: int = 16) -> list[dict]:
    """The validity gate, canary by canary: per canary, the sample tokens inside a run of `k` or more tokens
    copied from it, and the samples holding one (a window two canaries share counts for both)."""
    owners: dict[tuple, set[int]] = {}
    for j, c in enumerate(canaries):
        for i in range(len(c) - k + 1):
            owners.setdefault(tuple(c[i:i + k]), set()).add(j)
    tokens, hit_docs = np.zeros(len(canaries), int), np.zeros(len(canaries), int)
    for d in docs:
        masks: dict[int, np.ndarray] = {}
        for i in range(len(d) - k + 1):
            for j in owners.get(tuple(d[i:i + k]), ()):
                masks.setdefault(j, np.zeros(len(d), bool))[i:i + k] = True
        for j, mask in masks.items():
            tokens[j] += int(mask.sum())
            hit_docs[j] += 1
    return [{"tokens_in_matches": int(t), "documents_with_a_match": int(h)} for t, h in zip(tokens, hit_docs)]
