"""Students: full fine-tuning of a lineage model on one corpus at a time.

The corpus is re-tokenized with the student's own tokenizer and packed into
blocks; every source gets the same budget of student tokens (cycling a corpus
that is shorter), so sources compare fairly.

The schedule matters more than any source at this scale: a student annealed to a
tenth of its peak learning rate and then re-warmed with a fresh optimizer first
loses what the annealing bought (Ibrahim et al. 2024). `continue` picks up the
student's own AdamW moments at its final learning rate, as if pretraining went on
with other data; `constant` does the same with a fresh optimizer; `rewarm` warms
a fresh optimizer up to `ft.lr`. Notebook 01 measures all three on the controls.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from resurface.builders.tokenizers import load_tokenizer
from resurface.compute.device import current
from resurface.compute.distributed import collective_build, is_main
from resurface.frame.cache import Artifact, Cache
from resurface.frame.schema import FinetuneConfig
from resurface.lm.models import load_model
from resurface.lm.training import document_start_id, pack_documents, tokenize_texts, train_lm


def schedule_args(student: Artifact, student_subdir: str, ft: FinetuneConfig) -> dict:
    """train_lm's learning-rate arguments for the schedule (see the module docstring)."""
    if ft.schedule == "rewarm":
        return {"lr": ft.lr, "warmup_steps": ft.warmup_steps}
    final_lr = student.meta.get("final_lr")
    if final_lr is None or student_subdir != "main":
        raise ValueError(f"schedule `{ft.schedule}` needs the student's final pretraining learning rate and "
                         f"optimizer state, which only a zoo model trained here has (not {student.name}/"
                         f"{student_subdir}); use `rewarm`")
    args = {"lr": final_lr, "warmup_steps": 0, "lr_fn": lambda step: final_lr}
    if ft.schedule == "continue":
        args["optimizer_state"] = student.path / "optimizer.safetensors"
    return args


def finetune(cache: Cache, label: str, student: Artifact, student_subdir: str, texts_art: Artifact,
             texts_loader, budget_tokens: int, ft: FinetuneConfig, seq_len: int, seed: int) -> Artifact:
    """Fine-tune `student/student_subdir` on the texts of `texts_art` for `budget_tokens` student tokens."""
    # exclude_none: micro-batching joins the key only when used, so earlier students stay valid
    # (freeze_embeddings joins it only when set, so earlier students stay valid too)
    tuned = {k: v for k, v in ft.model_dump(exclude_none=True).items() if k != "freeze_embeddings" or v}
    cfg = {"student_subdir": student_subdir, "budget": budget_tokens, "ft": tuned,
           "seq_len": seq_len, "seed": seed, **current().key()}
    lr_args = schedule_args(student, student_subdir, ft)

    def build(tmp: Path) -> dict:
        src = student.path / student_subdir
        tok = load_tokenizer(src)
        model = load_model(src, for_training=True)
        if ft.freeze_embeddings:  # AdamW skips a weight without a gradient; a tied output layer stays with it
            model.get_input_embeddings().weight.requires_grad_(False)
        torch.manual_seed(seed)
        # documents as the student reads them from BOS (the zoo's blocks are unchanged: its BOS is its EOS)
        blocks = pack_documents(tokenize_texts(tok, texts_loader(texts_art)), tok.eos_token_id, seq_len,
                                document_start_id(tok))
        steps = max(1, budget_tokens // (ft.batch_size * seq_len))
        order = np.concatenate([np.random.default_rng([seed, e]).permutation(len(blocks))
                                for e in range(int(np.ceil(steps * ft.batch_size / max(1, len(blocks)))) + 1)])
        result = train_lm(model, blocks, steps=steps, batch_size=ft.batch_size, order=order,
                          desc=f"finetune {label}", log_every=5, micro_batch_size=ft.micro_batch_size, **lr_args)
        if not is_main():  # under `accelerate launch` only rank 0 writes the student
            return {}
        model.save_pretrained(str(tmp / "main"), safe_serialization=True)
        tok.save_pretrained(str(tmp / "main"))
        meta = {"steps": steps, "tokens": result["tokens"], "corpus_blocks": int(len(blocks)),
                "epochs_over_corpus": round(steps * ft.batch_size / max(1, len(blocks)), 3),
                "seconds": round(result["seconds"], 2), "tokens_per_s": round(result["tokens_per_s"]),
                "final_loss": result["history"][-1][1], "schedule": ft.schedule, "lr": lr_args["lr"],
                **({"frozen_embeddings": True} if ft.freeze_embeddings else {})}
        (tmp / "train_log.json").write_text(json.dumps({**meta, "history": result["history"]}))
        return meta

    return collective_build(cache, "students", label, cfg, build, inputs=[student, texts_art], stage="finetune")
