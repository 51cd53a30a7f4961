"""Finding 2: scores computed *before* fine-tuning, and whether they predict the benchmark delta.

Intrinsic proxies (the paper's):
- semantic similarity of a synthetic corpus to the benchmark texts in the all-MiniLM-L6-v2 embedding space
  (cosine of the centroids, and the mean nearest-neighbour similarity of corpus texts to benchmark texts);
- the average per-token (and per-character) log-likelihood of the corpus under the untouched student.

A relational score (ours):
- gradient alignment: the cosine between the student's mean loss gradient on a sample of the corpus and its
  mean loss gradient on a dev slice of held-out lineage text. The dev slice comes from the half of the
  held-out documents that no benchmark item is drawn from, so no test item is ever used.

The scores are built and cached by `build/proxy_scores.py`; here: one point per corpus, and the verdict.
"""
from __future__ import annotations

from resurface.analysis import verdicts
from resurface.build.proxy_scores import (benchmark_embeddings, corpus_embeddings, load_embeddings, proxy_scores,
                                          similarity_scores)
from resurface.build.synthetic import synthetic_corpus
from resurface.build.zoo import model_size
from resurface.compute.pool import Job, build_all
from resurface.frame.cache import Cache

SCORES = {
    "centroid_similarity": "intrinsic",
    "nn_similarity": "intrinsic",
    "loglik_per_token": "intrinsic",
    "loglik_per_char": "intrinsic",
    "gradient_alignment": "relational",
}



def proxy_table(cfg, cache: Cache, zoo, runs, arts: dict):
    """One point per (student, source, temperature): every score (computed on the seed-0 corpus, before any
    fine-tuning), the relation, and the headline delta averaged over seeds. Near-duplicate seeds are not
    separate points.

    The embeddings and per-pair scores are built first, `cfg.workers` at a time (single-threaded, as
    every pooled build); the rows are then read back from the cache."""
    import pandas as pd


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
    a = cfg.analysis
    th = verdicts.Thresholds(alpha=a.alpha, power=a.power, sesoi=a.sesoi_points, proxy_rho0=a.proxy_rho0,
                             bootstrap=a.bootstrap, seed=cfg.seed)
    v = verdicts.proxy_verdict(df, {s: k for s, k in SCORES.items() if s in df}, "headline_delta", COVARIATES, th)
    return verdicts.without_capability(v, axis_ok)


