"""Canaries: natural-text passages planted in the lineage's pretraining stream.

Passages come from a corpus that appears nowhere else in training (Moby Dick by
default). Each is cut to exactly `length_tokens` tokens of the lineage tokenizer
and planted `count` times, so extraction can be measured per duplication count.
A fixed split marks each canary `dev` (may guide choices) or `heldout` (what the
memorization verdict uses).
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np

from .cache import Artifact, Cache
from .corpora import load_documents, read_source
from .tokenizer import load_tokenizer


def select_canaries(cache: Cache, source_name: str, tokenizer_art: Artifact, counts: list[int], per_count: int,
                    length_tokens: int, dev_fraction: float, seed: int) -> Artifact:
    src = read_source(cache, source_name)
    cfg = {"source": source_name, "counts": counts, "per_count": per_count, "length_tokens": length_tokens,
           "dev_fraction": dev_fraction, "seed": seed}

    def build(tmp: Path) -> dict:
        tok = load_tokenizer(tokenizer_art.path)
        paragraphs = [p for d in load_documents(src) for p in d["text"].split("\n\n")]
        rng = random.Random(seed)
        rng.shuffle(paragraphs)
        chosen = []
        needed = len(counts) * per_count
        for p in paragraphs:
            ids = tok(p, add_special_tokens=False)["input_ids"]
            if len(ids) >= length_tokens and not p.upper() == p:
                chosen.append(ids[:length_tokens])
            if len(chosen) == needed:
                break
        if len(chosen) < needed:
            raise RuntimeError(f"Only {len(chosen)} passages of {length_tokens} tokens in `{source_name}`; "
                               f"{needed} canaries were asked for.")
        records = []
        n_dev = round(per_count * dev_fraction)
        for ci, count in enumerate(counts):
            for j in range(per_count):
                ids = chosen[ci * per_count + j]
                records.append({"canary_id": ci * per_count + j, "count": count,
                                "split": "dev" if j < n_dev else "heldout",
                                "token_ids": ids, "text": tok.decode(ids)})
        (tmp / "canaries.json").write_text(json.dumps(records))
        return {"n": len(records), "counts": counts}

    return cache.get_or_build("canaries", source_name, cfg, build, inputs=[src, tokenizer_art], stage="zoo")


def load_canaries(artifact: Artifact) -> list[dict]:
    return json.loads((artifact / "canaries.json").read_text())


def plant(doc_tokens: list[list[int]], canaries: list[dict], horizon_tokens: int, seed: int) -> list[list[int]]:
    """Insert every canary copy as its own document at random document boundaries
    within the first `horizon_tokens` tokens of the stream, so that every model
    trained on at least that many tokens sees all of them."""
    inserted = sum((len(c["token_ids"]) + 1) * c["count"] for c in canaries)
    room = horizon_tokens - inserted  # the inserted copies push later documents back by this much
    if room <= 0:
        raise ValueError(f"canary copies need {inserted} tokens, more than the {horizon_tokens}-token horizon")
    starts = np.cumsum([0] + [len(d) + 1 for d in doc_tokens])
    eligible = int(np.searchsorted(starts, 0.95 * room))  # boundaries that stay inside the horizon
    eligible = max(1, min(eligible, len(doc_tokens)))
    rng = random.Random(seed)
    inserts: dict[int, list[list[int]]] = {}
    for c in canaries:
        for _ in range(c["count"]):
            inserts.setdefault(rng.randrange(eligible), []).append(list(c["token_ids"]))
    out: list[list[int]] = []
    for i, d in enumerate(doc_tokens):
        out.extend(inserts.get(i, []))
        out.append(d)
    return out
