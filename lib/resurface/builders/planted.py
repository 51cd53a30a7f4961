"""A planted twin of a real-weights student: finding 3 as a controlled experiment.

Natural memorization is too rare to measure on a 100M-parameter model offline (a scan of the most duplicated
public texts finds a handful of windows a model extracts). So the memorizing model is made here: the student
(`init_from`) is fine-tuned on the lineage's prose with the canaries planted inside its documents, exactly as the
embedded twin's pretraining stream plants them (`canaries.plant`: word starts, margins, a window), read in
stream order so the copies are fresh when planting ends. The canaries come from a source no student was trained
here on and are checked unknown before planting (notebook 00's extraction table shows the twin's base model
beside the twin). Self-training and the controls then start from this twin, and finding 3 asks what they erase.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch

from resurface.builders.canaries import canary_share, load_canaries, plant_with_spans, word_starts
from resurface.builders.corpora import load_corpus
from resurface.builders.hub import external_card
from resurface.builders.tokenizers import load_tokenizer
from resurface.compute.device import current
from resurface.compute.distributed import collective_build, is_main
from resurface.frame.cache import Artifact, Cache
from resurface.frame.schema import StudyConfig
from resurface.lm.models import load_model
from resurface.lm.training import document_start_id, pack_documents, train_lm


def planting_documents(tok, lineage_corpus: Artifact, tokens: int, seed: int) -> list[list[int]]:
    """Training documents of the lineage corpus, shuffled by `seed`, tokenized with the twin's tokenizer until
    they hold at least `tokens` tokens."""
    texts = list(load_corpus(lineage_corpus)["train"]["text"])
    random.Random(seed).shuffle(texts)
    docs, total = [], 0
    for text in texts:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        docs.append(ids)
        total += len(ids) + 1
        if total >= tokens:
            return docs
    raise ValueError(f"the lineage corpus holds {total} tokens for this tokenizer; planting needs {tokens}")


def prefix_free_targets(docs: list[list[int]], spans: list[tuple[int, int, int]], prefix_len: int, seq_len: int,
                        with_bos: bool) -> np.ndarray:
    """Which packed tokens are predicted (`pack_documents`' blocks, position for position): every token but a
    planted copy's first `prefix_len` and those of its suffix that a block boundary cuts off from its start.
    Trained so, a twin completes a passage from its whole prefix, as extraction asks, and never learns to write
    any part of it without that prefix in view: the prefix is read, not written."""
    starts, total = [], 0
    for d in docs:  # where each document's first token lands: after its BOS, if the family packs one
        starts.append(total + int(with_bos))
        total += len(d) + 1 + int(with_bos)
    mask = np.ones(total, dtype=bool)
    for di, off, n in spans:
        p = starts[di] + off
        mask[p:p + prefix_len] = False
        mask[max(p + prefix_len, (p // seq_len + 1) * seq_len):p + n] = False  # blocks do not see each other
    n_blocks = total // seq_len
    return mask[:n_blocks * seq_len].reshape(n_blocks, seq_len)


def plant_twin(cache: Cache, cfg: StudyConfig, name: str, base: Artifact, lineage_corpus: Artifact,
               canaries: Artifact) -> Artifact:
    """Fine-tune `base` (a zoo model not trained here) into the twin `name`: `steps` steps of `batch_size`
    blocks, the canaries spread over `canaries.window` of those tokens, re-warmed to the model's `lr`. Where the
    profile fine-tunes with the token embedding frozen (`finetune.freeze_embeddings`), planting freezes it too:
    what planting writes then lies in the weights every later fine-tuning of the twin can change."""
    m, k, seq_len = cfg.zoo.models[name], cfg.canaries, cfg.zoo.seq_len
    frozen = cfg.finetune.freeze_embeddings
    suffix_only = m.planting_loss == "suffix"
    horizon = m.steps * m.batch_size * seq_len
    key = {"init_from": m.init_from, "steps": m.steps, "batch_size": m.batch_size, "lr": m.lr,
           "warmup_steps": m.warmup_steps, "data_seed": m.data_seed, "init_seed": m.init_seed, "seq_len": seq_len,
           "window": list(k.window), "margin_tokens": k.margin_tokens, **current().key(),
           **({"freeze_embeddings": True} if frozen else {}),  # joins the key only when set: earlier twins stay
           **({"planting_loss": "suffix", "prefix_len": cfg.memorization.prefix_len} if suffix_only else {})}

    def build(tmp: Path) -> dict:
        tok = load_tokenizer(base.path / "main")
        model = load_model(base.path / "main", for_training=True)
        recs = load_canaries(canaries, planted_only=True)
        inserted = sum(len(r["token_ids"]) * r["count"] for r in recs)
        docs = planting_documents(tok, lineage_corpus, horizon - inserted, m.data_seed)
        docs, spans = plant_with_spans(docs, recs, horizon, m.data_seed, tuple(k.window), k.margin_tokens,
                                       word_starts(tok))
        blocks = pack_documents(docs, tok.eos_token_id, seq_len, document_start_id(tok))
        targets = prefix_free_targets(docs, spans, cfg.memorization.prefix_len, seq_len,
                                      document_start_id(tok) is not None) if suffix_only else None
        if len(blocks) < m.steps * m.batch_size:  # stream order, no cycling: every copy is read exactly once
            raise ValueError(f"planting `{name}` packs {len(blocks)} blocks, fewer than its {m.steps} x "
                             f"{m.batch_size}")
        if frozen:  # AdamW skips a weight without a gradient; a tied output layer stays with it
            model.get_input_embeddings().weight.requires_grad_(False)
        torch.manual_seed(m.init_seed)
        result = train_lm(model, blocks, steps=m.steps, batch_size=m.batch_size, lr=m.lr,
                          warmup_steps=m.warmup_steps, desc=f"plant {name}", log_every=5, targets=targets)
        if not is_main():
            return {}
        model.save_pretrained(str(tmp / "main"), safe_serialization=True)
        tok.save_pretrained(str(tmp / "main"))
        (tmp / "loss_history.json").write_text(json.dumps(result["history"]))
        model.eval()
        return {**external_card(name, m.kind, model, tok, lineage_corpus, seq_len),
                "init_from": m.init_from, "source": f"{base.meta.get('source', m.init_from)} + planting here",
                "start_token": tok.bos_token, "checkpoints": [], "planting_steps": m.steps,
                "planting_tokens": result["tokens"], "canary_copies": int(sum(r["count"] for r in recs)),
                "canary_share": round(canary_share(recs, horizon), 4), "seconds": round(result["seconds"], 1),
                "tokens_per_s": round(result["tokens_per_s"]), **({"frozen_embeddings": True} if frozen else {}),
                **({"planting_loss": "suffix"} if suffix_only else {})}

    return collective_build(cache, "zoo", name, key, build, inputs=[base, lineage_corpus, canaries], stage="zoo")
