"""Finding 2: scores computed *before* fine-tuning, and whether they predict the benchmark delta.

Intrinsic proxies (the paper's two are PRIMARY: they decide the verdict; the others are secondary, reported):
- semantic similarity of a synthetic corpus to the benchmark texts in the all-MiniLM-L6-v2 embedding space:
  the cosine of the centroids (primary) and the mean nearest-neighbour similarity of corpus texts to benchmark
  texts (secondary);
- the average per-token log-likelihood of the corpus under the untouched student (primary), and per character
  (secondary).

A relational score (ours, secondary):
- gradient alignment: the cosine between the student's mean loss gradient on a sample of the corpus and its
  mean loss gradient on a dev slice of held-out lineage text. The dev slice comes from the half of the
  held-out documents that no benchmark item is drawn from, so no test item is ever used.

The scores are built and cached by `builders/proxy_scores.py`; here: one point per (student, corpus), what the rule
can conclude with that many points (`design`), and the verdict. The split into primary and secondary lives in
`SCORES` only.
"""
from __future__ import annotations

from resurface.analysis import verdicts
from resurface.builders.proxy_scores import (benchmark_embeddings, corpus_embeddings, load_embeddings, proxy_scores,
                                          similarity_scores)
from resurface.builders.synthetic import synthetic_corpus
from resurface.builders.zoo import model_size
from resurface.compute.pool import Job, build_all
from resurface.frame.cache import Cache
from resurface.names import CONTROLS

# name -> (kind, role). The primary scores, the paper's two intrinsic proxies, decide finding 2 (PROXY_RULE, which
# names them); the secondary ones are reported beside them and judged the same way.
SCORES = {
    "loglik_per_token": ("intrinsic", "primary"),
    "centroid_similarity": ("intrinsic", "primary"),
    "nn_similarity": ("intrinsic", "secondary"),
    "loglik_per_char": ("intrinsic", "secondary"),
    "gradient_alignment": ("relational", "secondary"),
}
PRIMARY = [s for s, (_, role) in SCORES.items() if role == "primary"]


def proxy_table(cfg, cache: Cache, zoo, runs, tasks):
    """One point per (student, source, temperature): every score (computed on the seed-0 corpus, before any
    fine-tuning), the relation, and the headline delta averaged over seeds. Near-duplicate seeds are not
    separate points.

    The embeddings and per-pair scores are built first, `cfg.workers` at a time (single-threaded, as
    every pooled build); the rows are then read back from the cache. `runs`: notebook 02's runs table
    (tables/transfer_runs); `tasks`: the benchmark tasks artifact (`matrix.eval_tasks`)."""
    import pandas as pd


    synth = runs[~runs["relation"].isin(CONTROLS)]
    keys = ["student", "source", "relation", "temperature"]
    points = (synth.groupby(keys).agg(headline_delta=("headline_delta", "mean"), seed=("seed", "min"),
                                      n_seeds=("seed", "size")).reset_index())
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
CLUSTERS = ["source", "temperature"]  # one corpus, shared by every student: the bootstrap resamples it whole


def design(cfg, runs) -> dict:
    """What the rule can conclude before any score is seen: the points and corpora the runs give, the covariate
    columns partialled out (c), and per role the CI level, N_needed (the corpora equivalence needs) and the MDE."""
    a = cfg.analysis
    synth = runs[~runs["relation"].isin(CONTROLS)]
    points = synth.drop_duplicates(["student", "source", "relation", "temperature"])
    n, c = len(points), int(sum(points[col].nunique() - 1 for col in COVARIATES))
    k = max(1, len(PRIMARY))
    out = {"n_points": n, "n_corpora": int(len(points.drop_duplicates(CLUSTERS))), "covariate_columns": c,
           "bonferroni_k": len(PRIMARY), "rho0": a.proxy_rho0, "power": a.power}
    n_eff = out["n_corpora"]  # the rule counts corpora: points that share one are not independent
    for role, level in (("primary", 1 - a.alpha / k), ("secondary", 1 - a.alpha)):
        need = verdicts.equivalence_points(level, a.proxy_rho0, c)
        out[role] = {"level": level, "n_needed": need, "equivalence_reachable": n_eff >= need,
                     "mde": verdicts.correlation_mde(level, a.power, n_eff, c)}
    return out


def upstream_checks(zoo_checks: dict, transfer: dict) -> dict:
    """What finding 2 takes from the notebooks before it: whether the capability axis passed (notebook 00's
    findings, else notebook 02's) and whether finding 1's instrument saw the gain of real data (notebook 02's
    `instrument`; a findings file without it is refused: finding 2 is never read through an instrument nobody
    checked)."""
    axis = zoo_checks.get("capability_axis_passed", transfer.get("capability_axis_ok"))
    if axis is None:
        raise ValueError("neither findings/00_zoo_checks.json nor findings/02_transfer.json says whether the "
                         "capability axis passed; run 00_zoo again")
    instrument = transfer.get("instrument")
    if not isinstance(instrument, dict) or "passed" not in instrument:
        raise ValueError("findings/02_transfer.json has no instrument check (INSTRUMENT_RULE); run 02_transfer again")
    ok = bool(instrument["passed"])
    why = [str(instrument.get("why") or "")] if not ok else []
    if axis and transfer.get("capability_axis_ok") is False:  # HEADLINE_RULE: the controls moved no task on dev
        ok = False
        why.append(str(transfer.get("headline_why") or "the positive controls moved no headline task on the dev "
                                                        "items (HEADLINE_RULE)"))
    return {"axis_ok": bool(axis), "instrument_ok": ok, "instrument_why": "; ".join(w for w in why if w)}


def finding2(cfg, df, axis_ok: bool = True, instrument_ok: bool = True, instrument_why: str = "") -> dict:
    """Apply verdicts.PROXY_RULE to the proxy table (and CAPABILITY_RULE's last sentence)."""
    a = cfg.analysis
    th = verdicts.Thresholds(alpha=a.alpha, power=a.power, sesoi=a.sesoi_points, proxy_rho0=a.proxy_rho0,
                             bootstrap=a.bootstrap, seed=cfg.seed)
    v = verdicts.proxy_verdict(df, {s: k for s, k in SCORES.items() if s in df}, "headline_delta", COVARIATES, th,
                               clusters=CLUSTERS, instrument_ok=instrument_ok, instrument_why=instrument_why)
    return verdicts.without_capability(v, axis_ok)
