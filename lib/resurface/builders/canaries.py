"""Canaries: natural-text passages planted *inside* the documents of the twin's pretraining stream.

Passages come from a corpus that appears nowhere else in training (Moby Dick by default). Each is tokenized as
mid-sentence text (a leading space), cut to exactly `length_tokens` tokens and planted `count` times, each copy
at a word start at least `margin_tokens` away from its document's edges: never next to end-of-text (= BOS),
so a model does not learn to *begin* a document with one. The copies are spread evenly over a late `window` of
the twin's pretraining, so that they are still fresh when pretraining ends (an early design that planted them
early found that 1.6M tokens of training past the last copy forgot them all). A fixed split marks each canary
`dev` (may guide choices) or `heldout` (what the memorization verdict uses).
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np

from resurface.frame.cache import Artifact, Cache
from resurface.builders.corpora import load_documents, read_source
from resurface.builders.tokenizers import load_tokenizer


def select_canaries(cache: Cache, source_name: str, tokenizer_art: Artifact, counts: list[int], per_count: int,
                    length_tokens: int, dev_fraction: float, seed: int, controls: int = 0) -> Artifact:
    """Pick `per_count` passages per duplication count, plus `controls` passages of the same source that are
    never planted (split `control`, count 0): the baseline against which memorization is measured."""
    src = read_source(cache, source_name)
    cfg = {"source": source_name, "counts": counts, "per_count": per_count, "length_tokens": length_tokens,
           "dev_fraction": dev_fraction, "seed": seed, "form": "inline", "controls": controls}

    def build(tmp: Path) -> dict:
        # a tokenizer trained here, or a zoo model's (a planted twin's base keeps it beside its weights)
        tok = load_tokenizer(tokenizer_art.path / "main" if tokenizer_art.kind == "zoo" else tokenizer_art.path)
        paragraphs = [" ".join(p.split()) for d in load_documents(src) for p in d["text"].split("\n\n")]
        rng = random.Random(seed)
        rng.shuffle(paragraphs)
        chosen = []
        needed = len(counts) * per_count + controls
        for p in paragraphs:
            ids = tok(" " + p, add_special_tokens=False)["input_ids"]  # as it reads mid-sentence
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
        for j in range(controls):
            ids = chosen[len(counts) * per_count + j]
            records.append({"canary_id": len(records), "count": 0, "split": "control", "token_ids": ids,
                            "text": tok.decode(ids)})
        (tmp / "canaries.json").write_text(json.dumps(records))
        return {"n": len(records), "counts": counts, "controls": controls}

    return cache.get_or_build("canaries", source_name, cfg, build, inputs=[src, tokenizer_art], stage="zoo")


def load_canaries(artifact: Artifact, planted_only: bool = False) -> list[dict]:
    recs = json.loads((artifact / "canaries.json").read_text())
    return [r for r in recs if r["count"] > 0] if planted_only else recs


def repeated_passages(records: list[dict]) -> list[int]:
    """The ids of passages whose tokens repeat an earlier passage's (a book can hold the same paragraph twice, and
    the selection does not look): the analysis counts each distinct passage once, under its first id."""
    seen, repeats = set(), []
    for r in records:
        key = tuple(r["token_ids"])
        if key in seen:
            repeats.append(r["canary_id"])
        seen.add(key)
    return repeats


def word_starts(tokenizer) -> np.ndarray:
    """Per token id: does the token begin a word (byte-level BPE marks a leading space with `Ġ`, SentencePiece
    with `▁`)?"""
    return np.array([(t or "").startswith(("Ġ", "▁")) for t in tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))])


def plant(doc_tokens: list[list[int]], canaries: list[dict], horizon_tokens: int, seed: int,
          window: tuple[float, float] = (0.0, 1.0), margin_tokens: int = 16,
          word_start: np.ndarray | None = None) -> list[list[int]]:
    """Insert every canary copy inside a document, at positions drawn evenly over `window` (fractions of the
    first `horizon_tokens` tokens of the stream, which every canary model trains on in full).

    A copy goes at a word start (when `word_start` is given) at least `margin_tokens` from both ends of its
    document and at least `margin_tokens` from any other copy, so no copy touches end-of-text or another copy."""
    return plant_with_spans(doc_tokens, canaries, horizon_tokens, seed, window, margin_tokens, word_start)[0]


def plant_with_spans(doc_tokens: list[list[int]], canaries: list[dict], horizon_tokens: int, seed: int,
                     window: tuple[float, float] = (0.0, 1.0), margin_tokens: int = 16,
                     word_start: np.ndarray | None = None) -> tuple[list[list[int]], list[tuple[int, int, int]]]:
    """`plant`, also returning where each copy landed: (document, offset, length) in the planted documents."""
    inserted = sum(len(c["token_ids"]) * c["count"] for c in canaries)
    room = horizon_tokens - inserted  # the inserted copies push later text back by this much
    if room <= 0:
        raise ValueError(f"canary copies need {inserted} tokens, more than the {horizon_tokens}-token horizon")
    lo, hi = window
    if not 0 <= lo < hi <= 1:
        raise ValueError(f"canary window {window} must satisfy 0 <= start < end <= 1")
    starts = np.cumsum([0] + [len(d) + 1 for d in doc_tokens])
    # (the 0.99: copies inserted before a position move it later; keep clear of the horizon's edge)
    a, b = lo * 0.99 * room, hi * 0.99 * room
    copies = [c for c in canaries for _ in range(c["count"])]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(copies))
    taken: dict[int, list[int]] = {}
    placed: list[tuple[int, int, int]] = []  # (doc, offset, copy index)
    for k, target in zip(order, np.linspace(a, b, len(copies), endpoint=False) + rng.uniform(0, (b - a) / len(copies),
                                                                                              len(copies))):
        pos = int(target)
        for _ in range(10_000):  # walk forward to the next admissible position
            di = int(np.searchsorted(starts, pos, side="right") - 1)
            if di >= len(doc_tokens):
                raise ValueError("no admissible position left for a canary copy inside the window")
            off = pos - int(starts[di])
            d = doc_tokens[di]
            ok = margin_tokens <= off <= len(d) - margin_tokens
            ok = ok and (word_start is None or bool(word_start[d[off]]))
            ok = ok and all(abs(off - o) >= margin_tokens for o in taken.get(di, []))
            if ok:
                taken.setdefault(di, []).append(off)
                placed.append((di, off, int(k)))
                break
            pos += 1
        else:
            raise ValueError(f"no admissible position for a canary copy near token {int(target)}")
    by_doc: dict[int, list[tuple[int, int]]] = {}
    for di, off, k in placed:
        by_doc.setdefault(di, []).append((off, k))
    out, spans = [], []
    for i, d in enumerate(doc_tokens):
        if i in by_doc:
            d = list(d)
            for off, k in sorted(by_doc[i], reverse=True):  # from the end, so earlier offsets stay valid
                d[off:off] = copies[k]["token_ids"]
            shift = 0  # in the planted document a copy sits after every copy inserted before it
            for off, k in sorted(by_doc[i]):
                spans.append((i, off + shift, len(copies[k]["token_ids"])))
                shift += len(copies[k]["token_ids"])
        out.append(d)
    return out, spans


def canary_share(canaries: list[dict], tokens: int) -> float:
    """The planted copies' share of a pretraining run of `tokens` tokens."""
    return sum(len(c["token_ids"]) * c["count"] for c in canaries) / tokens
