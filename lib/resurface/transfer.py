"""The transfer matrix of finding 1: students x sources x temperatures x seeds.

For each source model (or checkpoint) and temperature and seed: sample a
synthetic corpus from BOS; for each student: fine-tune on it with the same token
budget; evaluate with lm-eval; subtract the untouched student's score.
Controls: the untouched student, and the student fine-tuned on real held-out
lineage text (the half of the held-out documents that no benchmark uses).
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from .benchmarks import build_tasks, split_heldout
from .cache import Artifact, Cache
from .config import StudyConfig, parse_model_ref
from .device import current
from .evaluation import evaluate, load_items, load_results, oriented_delta, paired_stderr, primary
from .finetune import finetune
from .sampling import load_synthetic, sample_documents, save_corpus
from .tokenizer import load_tokenizer
from .workers import Job, build_all
from .zoo import Zoo, load_model, model_size

OVERSAMPLE = 1.25  # source tokens per student token budget: tokenizers compress differently
HEADLINE_METRICS = ("acc", "acc_norm")  # the headline averages every accuracy task (not perplexity)


def relation(cfg: StudyConfig, student: str, source_ref: str) -> str:
    name, step = parse_model_ref(source_ref)
    if name == student and step is None:
        return "self"
    kind = cfg.zoo.models[name].kind
    return "same_lineage" if kind == "lineage" else kind


def synthetic_corpus(cache: Cache, zoo: Zoo, source_ref: str, temperature: float, seed: int) -> Artifact:
    s = zoo.cfg.sampling
    name, step = parse_model_ref(source_ref)
    subdir = "main" if step is None else f"step{step}"
    n_tokens = math.ceil(s.tokens_per_corpus * OVERSAMPLE)
    cfg = {"source": source_ref, "temperature": temperature, "seed": seed, "top_k": s.top_k, "top_p": s.top_p,
           "max_new_tokens": s.max_new_tokens, "n_tokens": n_tokens, "batch_size": s.batch_size,
           "backend": s.backend, **current().key()}

    def build(tmp: Path) -> dict:
        path = zoo.models[name].path / subdir
        tok = load_tokenizer(path)
        if s.backend == "vllm":
            from .sampling import vllm_engine
            model = vllm_engine(path, dtype=current().dtype, seed=seed)
        else:
            model = load_model(path)
        docs, prov = sample_documents(model, tok, n_tokens=n_tokens, temperature=temperature, top_k=s.top_k,
                                      top_p=s.top_p, max_new_tokens=s.max_new_tokens, batch_size=s.batch_size,
                                      seed=seed, backend=s.backend, desc=f"sample {source_ref} T={temperature}")
        prov = {"source_model": name, "revision": subdir, **prov}
        save_corpus(tmp, tok, docs, prov)
        return prov

    label = f"{source_ref.replace('@', '-')}-T{temperature}-s{seed}"
    return cache.get_or_build("synthetic", label, cfg, build, inputs=[zoo.models[name]], stage="sample")


def real_text_corpus(cache: Cache, zoo: Zoo) -> Artifact:
    """The control: real held-out lineage text that no benchmark item comes from."""
    corpus = zoo.corpora["lineage"]

    def build(tmp: Path) -> dict:
        from datasets import Dataset
        _, control = split_heldout(corpus, zoo.cfg.seed)
        Dataset.from_dict({"text": control}).save_to_disk(str(tmp / "data"))
        return {"documents": len(control), "chars": sum(map(len, control))}

    return cache.get_or_build("synthetic", "real-text", {"seed": zoo.cfg.seed}, build, inputs=[corpus], stage="sample")


def _texts(art: Artifact) -> list[str]:
    return list(load_synthetic(art.path)["text"])


def plan(cfg: StudyConfig) -> list[dict]:
    """Every fine-tuning run of the matrix, in order (the notebook shows this before running it)."""
    runs = []
    rels = set(cfg.transfer.relations)
    for student in cfg.transfer.students:
        for src in cfg.transfer.sources:
            rel = relation(cfg, student, src)
            if rel not in rels:
                continue
            for t in cfg.sampling.temperatures:
                for seed in cfg.transfer.seeds:
                    runs.append({"student": student, "source": src, "relation": rel, "temperature": t, "seed": seed})
        if "real_text" in rels:
            for seed in cfg.transfer.seeds:
                runs.append({"student": student, "source": "real-text", "relation": "real_text",
                             "temperature": float("nan"), "seed": seed})
    return runs


def run_matrix(cfg: StudyConfig, cache: Cache, zoo: Zoo) -> tuple[pd.DataFrame, dict]:
    """Run (or reuse) every cell of the matrix; return the tidy table and the artifacts used.

    `prebuild` builds what is missing, `cfg.workers` at a time; the loop then reads it all back."""
    b = cfg.benchmarks
    tasks = build_tasks(cache, zoo.corpora["lineage"], list(b.tasks), b.items_per_task, b.ppl_documents, cfg.seed,
                        b.items_by_task)
    prebuild(cfg, cache, zoo, tasks)
    base_arts = {s: _base_evaluation(cache, zoo, tasks, s) for s in cfg.transfer.students}
    base = {s: load_results(a) for s, a in base_arts.items()}
    base_items = {s: load_items(a) for s, a in base_arts.items()}
    real = real_text_corpus(cache, zoo)
    rows, students = [], {}
    runs = plan(cfg)
    for run in tqdm(runs, desc="transfer matrix", mininterval=5):
        st = run["student"]
        label, corpus, student, ev = _student(cache, zoo, tasks, run)
        students[label] = student
        after, after_items = load_results(ev), load_items(ev)
        pb, pa = primary(base[st]), primary(after)
        for task in pa:
            se = (paired_stderr(base_items[st][task], after_items[task]) if task in after_items else float("nan"))
            rows.append({**run, "run_label": label, "task": task, "metric": _metric(task), "base": pb[task],
                         "after": pa[task], "delta": oriented_delta(task, pb[task], pa[task]), "delta_paired_se": se,
                         "corpus_tokens_per_s": corpus.meta.get("tokens_per_s")})
    return pd.DataFrame(rows), {"tasks": tasks, "base": base, "students": students, "real_text": real}


def _corpus(cache: Cache, zoo: Zoo, run: dict) -> Artifact:
    if run["source"] == "real-text":
        return real_text_corpus(cache, zoo)
    return synthetic_corpus(cache, zoo, run["source"], run["temperature"], run["seed"])


def _student(cache: Cache, zoo: Zoo, tasks: Artifact, run: dict) -> tuple[str, Artifact, Artifact, Artifact]:
    """One cell: its corpus, the student fine-tuned on it, and the student's evaluation."""
    cfg, b = zoo.cfg, zoo.cfg.benchmarks
    corpus = _corpus(cache, zoo, run)
    label = f"{run['student']}--{corpus.name}"
    student = finetune(cache, label, zoo.models[run["student"]], "main", corpus, _texts,
                       cfg.sampling.tokens_per_corpus, cfg.finetune, cfg.zoo.seq_len, run["seed"])
    return label, corpus, student, evaluate(cache, student, "main", tasks, b.batch_size, label, b.backend,
                                            b.model_args)


def _base_evaluation(cache: Cache, zoo: Zoo, tasks: Artifact, student: str) -> Artifact:
    b = zoo.cfg.benchmarks
    return evaluate(cache, zoo.models[student], "main", tasks, b.batch_size, f"{student}-base", b.backend, b.model_args)


def prebuild(cfg: StudyConfig, cache: Cache, zoo: Zoo, tasks: Artifact) -> None:
    """Build the matrix's corpora, then its students and evaluations, `cfg.workers` at a time.

    Two waves, so that no fine-tuning waits for a corpus another worker is still sampling; within
    a wave the costliest jobs start first. What is already cached is skipped."""
    runs = plan(cfg)
    models = cfg.zoo.models
    corpora = {(r["source"], r["temperature"], r["seed"]): r for r in runs}
    wave1 = [Job(model_size(models[s]), f"{s}-base", _base_evaluation, (zoo, tasks, s)) for s in cfg.transfer.students]
    wave1 += [Job(model_size(models[parse_model_ref(r["source"])[0]]) if r["source"] != "real-text" else 0.0,
                  f"sample {k}", _corpus, (zoo, r)) for k, r in corpora.items()]
    wave2 = [Job(model_size(models[r["student"]]), f"student {r}", _student, (zoo, tasks, r)) for r in runs]
    build_all(cache, wave1, cfg.workers, desc="synthetic corpora and base evaluations")
    build_all(cache, wave2, cfg.workers, desc="students and evaluations")


def _metric(task: str) -> str:
    from .benchmarks import PRIMARY_METRIC
    return PRIMARY_METRIC[task]


def headline_tasks(table: pd.DataFrame) -> list[str]:
    return sorted(table.loc[table["metric"].isin(HEADLINE_METRICS), "task"].unique())


def headline(table: pd.DataFrame) -> pd.DataFrame:
    """One score per run: the mean accuracy improvement (points) over the headline tasks."""
    acc = table[table["metric"].isin(HEADLINE_METRICS)]
    keys = ["student", "source", "relation", "temperature", "seed"]
    return acc.groupby(keys, dropna=False)["delta"].mean().rename("headline_delta").reset_index()


def main(argv=None) -> int:
    """`python -m resurface.transfer PROFILE`: build the zoo and the matrix outside the notebooks, e.g. under
    `accelerate launch --multi_gpu --num_processes N` (data-parallel fine-tuning); the notebooks then reuse it."""
    import argparse
    from .runtime import start
    from .zoo import build_zoo
    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("profile")
    a = ap.parse_args(argv)
    study = start(a.profile, notebook="transfer-helper", verbose=False)
    run_matrix(study.cfg, study.cache, build_zoo(study.cfg, study.cache))
    return 0


def corpus_table(cfg: StudyConfig, cache: Cache, zoo: Zoo) -> pd.DataFrame:
    """One row per synthetic corpus of the plan, with its provenance (each corpus looked up once)."""
    keys = {(r["source"], r["temperature"], r["seed"]) for r in plan(cfg) if r["source"] != "real-text"}
    cols = ("source_model", "revision", "start_token", "start_rule", "temperature", "seed", "documents", "tokens",
            "tokens_per_s", "wall_seconds")
    rows = []
    for src, t, seed in sorted(keys):
        a = synthetic_corpus(cache, zoo, src, t, seed)
        rows.append({"corpus": a.name, **{k: a.meta.get(k) for k in cols}})
    return pd.DataFrame(rows)


if __name__ == "__main__":
    raise SystemExit(main())
