"""Natural memorization (real-weights profiles): which passages of famous public-domain text does the untouched
student extract 32/32, having seen them in its own pretraining?

A real base model has no canary twin: we did not choose its data. What it may have memorized is text that is
copied all over the web, such as the King James Bible. The scan reads the documents named in params (fixed
before any scan), cuts each into 64-token windows every `stride` tokens, and asks, in one teacher-forced forward
pass per window, how many of the last 32 tokens are the model's argmax given the true tokens before them
(`lm.extraction.suffix_agreement`). A window at 1.0 is exactly one that greedy decoding reproduces; those are
confirmed by decoding (`lm.extraction.extraction`). The probes of finding 3 are the memorized windows plus the
nearest misses, non-overlapping within a document, stored in the canaries' format: the same extraction code then
measures them before and after every fine-tuning run.
"""
from __future__ import annotations

import json
import random
import time
from pathlib import Path

import numpy as np
import pandas as pd

from resurface.builders.corpora import load_documents, read_source
from resurface.builders.tokenizers import load_tokenizer
from resurface.frame.cache import Artifact, Cache
from resurface.frame.schema import StudyConfig
from resurface.lm.extraction import extraction, suffix_agreement
from resurface.lm.models import load_model
from resurface.lm.sampler import resolve_start_token
from resurface.lm.training import tokenize_texts


def document_split(names: list[str], dev_fraction: float, seed: int) -> dict[str, str]:
    """Dev or held-out per document (seeded shuffle): windows of one document never fall on both sides."""
    order = list(names)
    random.Random(seed).shuffle(order)
    n_dev = max(1, min(len(order) - 1, round(len(order) * dev_fraction)))
    return {name: ("dev" if i < n_dev else "heldout") for i, name in enumerate(order)}


def windows(token_ids: list[int], length: int, stride: int) -> list[int]:
    """Start offsets of the `length`-token windows of one document, every `stride` tokens."""
    return list(range(0, len(token_ids) - length + 1, stride))


def pick_probes(scan: pd.DataFrame, keep_agreement: float, max_probes: int, length: int) -> pd.DataFrame:
    """Every memorized window and then the nearest misses (agreement >= keep_agreement), best first, with no two
    overlapping in one document; at most `max_probes` unless more were memorized (those are all kept)."""
    ranked = scan[scan["agreement"] >= keep_agreement].sort_values(
        ["memorized", "agreement", "document", "start"], ascending=[False, False, True, True])
    taken: dict[str, list[int]] = {}
    keep = []
    for r in ranked.itertuples():
        if len(keep) >= max_probes and not r.memorized:
            break
        if any(abs(r.start - s) < length for s in taken.get(r.document, [])):
            continue
        taken.setdefault(r.document, []).append(r.start)
        keep.append(r.Index)
    return scan.loc[keep]


def natural_probes(cfg: StudyConfig, cache: Cache, zoo, student: str) -> Artifact:
    """The scan of `cfg.memorization.natural` for one student, cached; its probes in the canaries' format."""
    m, nat = cfg.memorization, cfg.memorization.natural
    source = read_source(cache, nat.source)
    length = m.prefix_len + m.suffix_len
    key = {"natural": nat.model_dump(), "prefix_len": m.prefix_len, "suffix_len": m.suffix_len, "seed": cfg.seed,
           "student": student}

    def build(tmp: Path) -> dict:
        docs = {d["id"].split("/", 1)[1]: d["text"] for d in load_documents(source)}
        missing = [n for n in nat.documents if n not in docs]
        if missing:
            raise ValueError(f"memorization.natural.documents {missing} are not documents of `{nat.source}` "
                             f"(names look like {list(docs)[:3]})")
        path = zoo.models[student].path / "main"
        model, tok = load_model(path), load_tokenizer(path)
        start = [resolve_start_token(tok, model.config).token_id]
        split = document_split(list(nat.documents), nat.dev_fraction, cfg.seed)
        rows, seqs = [], []
        for name, ids in zip(nat.documents, tokenize_texts(tok, [docs[n] for n in nat.documents])):
            for s in windows(ids, length, nat.stride):
                rows.append({"document": name, "split": split[name], "start": s})
                seqs.append(ids[s:s + length])
        t0 = time.perf_counter()
        scan = pd.DataFrame(rows)
        scan["agreement"] = suffix_agreement(model, [start + w for w in seqs], 1 + m.prefix_len, m.suffix_len,
                                             m.batch_size)
        seconds = time.perf_counter() - t0
        full = np.flatnonzero(scan["agreement"].to_numpy() >= 1.0)
        scan["memorized"] = False
        if len(full):  # confirmed by greedy decoding, the definition of 32/32 extraction
            done = extraction(model, [start + seqs[i] for i in full], 1 + m.prefix_len, m.suffix_len, m.batch_size)
            scan.loc[full, "memorized"] = done["extracted"]
        probes = pick_probes(scan, nat.keep_agreement, nat.max_probes, length)
        recs = [{"canary_id": int(i), "count": 0, "split": r.split, "token_ids": seqs[i], "start_ids": start,
                 "document": r.document, "start": int(r.start), "agreement": float(r.agreement),
                 "text": tok.decode(seqs[i])} for i, r in zip(probes.index, probes.itertuples())]
        (tmp / "canaries.json").write_text(json.dumps(recs))
        scan.to_json(tmp / "scan.json", orient="records")
        distinct = pick_probes(scan[scan["memorized"]], 1.0, 0, length)  # non-overlapping memorized windows
        return {"source": nat.source, "documents": len(nat.documents), "windows": len(scan),
                "tokens_scanned": len(scan) * (1 + length), "scan_seconds": round(seconds, 1),
                "scan_tokens_per_s": round(len(scan) * (1 + length) / max(seconds, 1e-9)),
                "memorized_windows": int(scan["memorized"].sum()),
                "memorized_dev": int((distinct["split"] == "dev").sum()),
                "memorized_heldout": int((distinct["split"] == "heldout").sum()),
                "probes": len(recs), "start_token": tok.convert_ids_to_tokens(start[0])}

    return cache.get_or_build("canaries", f"natural-{nat.source}-{student}", key, build,
                              inputs=[zoo.models[student], source], stage="memorization")


def load_scan(art: Artifact) -> pd.DataFrame:
    return pd.read_json(art.path / "scan.json", orient="records")


def scan_summary(art: Artifact) -> pd.DataFrame:
    """Per document: its split, windows scanned, best and mean agreement, and memorized windows."""
    scan = load_scan(art)
    return (scan.groupby(["document", "split"], sort=False)
            .agg(windows=("start", "size"), best_agreement=("agreement", "max"),
                 mean_agreement=("agreement", "mean"), memorized_windows=("memorized", "sum"))
            .reset_index())
