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


CONTROL_SOURCES = {"real-text": "real_text", "replay": "replay"}  # source name in a plan -> relation


def relation(cfg: StudyConfig, student: str, source_ref: str) -> str:
    if source_ref in CONTROL_SOURCES:
        return CONTROL_SOURCES[source_ref]
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


def replay_corpus(cache: Cache, zoo: Zoo) -> Artifact:
    """The control for the cost of fine-tuning alone: paragraphs of the lineage's own pretraining documents,
    drawn at random, as much text as a synthetic corpus holds (about 5 characters per token, generously)."""
    corpus = zoo.corpora["lineage"]
    chars = int(zoo.cfg.sampling.tokens_per_corpus * OVERSAMPLE * 5)

    def build(tmp: Path) -> dict:
        import numpy as np
        from datasets import Dataset
        from .corpora import load_corpus
        paras = [p for d in load_corpus(corpus)["train"]["text"] for p in d.split("\n\n") if len(p) > 40]
        picked, total = [], 0
        for i in np.random.default_rng(zoo.cfg.seed).permutation(len(paras)):
            picked.append(paras[i])
            total += len(paras[i])
            if total >= chars:
                break
        Dataset.from_dict({"text": picked}).save_to_disk(str(tmp / "data"))
        return {"documents": len(picked), "chars": total}

    return cache.get_or_build("synthetic", "replay", {"seed": zoo.cfg.seed, "chars": chars}, build, inputs=[corpus],
                              stage="sample")


def _texts(art: Artifact) -> list[str]:
    return list(load_synthetic(art.path)["text"])


def build_plan(cfg: StudyConfig, students: list[str], sources_for, temperatures: list[float], seeds: list[int],
               recipes: list[tuple[str, int]]) -> list[dict]:
    """Every fine-tuning run: model sources at each temperature, and the two controls, for every seed and
    recipe (schedule, budget)."""
    from .zoo_checks import strength_label
    runs = []
    rels = set(cfg.transfer.relations)
    for schedule, budget in recipes:
        for student in students:
            for src in sources_for(student):
                rel = relation(cfg, student, src)
                if rel not in rels:
                    continue
                for t in temperatures:
                    for seed in seeds:
                        runs.append({"student": student, "source": src, "relation": rel,
                                     "strength": strength_label(cfg, student, src), "temperature": t, "seed": seed,
                                     "schedule": schedule, "budget": budget})
            for src, rel in CONTROL_SOURCES.items():
                if rel in rels:
                    runs += [{"student": student, "source": src, "relation": rel, "strength": "control",
                              "temperature": float("nan"), "seed": seed, "schedule": schedule, "budget": budget}
                             for seed in seeds]
    return runs


def matrix_recipe(cfg: StudyConfig, cache: Cache, zoo: Zoo) -> tuple[str, int]:
    """The matrix's (schedule, budget): chosen by the recipe rule on the grid when the profile has one."""
    if cfg.recipe is None:
        return cfg.finetune.schedule, cfg.sampling.tokens_per_corpus
    from .recipe import chosen_recipe
    pick = chosen_recipe(cfg, cache, zoo)
    return pick["schedule"], pick["budget"]


def plan(cfg: StudyConfig, recipe: tuple[str, int] | None = None) -> list[dict]:
    """Every fine-tuning run of the matrix, in order (the notebook shows this before running it)."""
    recipe = recipe or (cfg.finetune.schedule, cfg.sampling.tokens_per_corpus)
    return build_plan(cfg, list(cfg.transfer.students), cfg.transfer.sources_for, list(cfg.sampling.temperatures),
                      list(cfg.transfer.seeds), [recipe])


def eval_tasks(cfg: StudyConfig, cache: Cache, zoo: Zoo, split: str = "test") -> Artifact:
    b = cfg.benchmarks
    return build_tasks(cache, zoo.corpora["lineage"], list(b.tasks), b.items_per_task, b.ppl_documents, cfg.seed,
                       b.items_by_task, split=split)


def run_plan(cfg: StudyConfig, cache: Cache, zoo: Zoo, runs: list[dict], tasks: Artifact,
             desc: str = "transfer matrix") -> tuple[pd.DataFrame, dict]:
    """Run (or reuse) every run of `runs`, evaluated on `tasks`; return the tidy table and the artifacts.

    `prebuild` builds what is missing, `cfg.workers` at a time; the loop then reads it all back."""
    prebuild(cfg, cache, zoo, tasks, runs)
    students_ = sorted({r["student"] for r in runs})
    base_arts = {s: _base_evaluation(cache, zoo, tasks, s) for s in students_}
    base = {s: load_results(a) for s, a in base_arts.items()}
    base_items = {s: load_items(a) for s, a in base_arts.items()}
    rows, students, evals = [], {}, {}
    for run in tqdm(runs, desc=desc, mininterval=5):
        st = run["student"]
        label, corpus, student, ev = _student(cache, zoo, tasks, run)
        students[label], evals[label] = student, ev
        after, after_items = load_results(ev), load_items(ev)
        pb, pa = primary(base[st]), primary(after)
        for task in pa:
            se = (paired_stderr(base_items[st][task], after_items[task]) if task in after_items else float("nan"))
            rows.append({**run, "run_label": label, "task": task, "metric": _metric(task), "base": pb[task],
                         "after": pa[task], "delta": oriented_delta(task, pb[task], pa[task]), "delta_paired_se": se,
                         "corpus_tokens_per_s": corpus.meta.get("tokens_per_s")})
    return pd.DataFrame(rows), {"tasks": tasks, "base": base, "base_evaluations": base_arts, "students": students,
                                "evaluations": evals}


def run_matrix(cfg: StudyConfig, cache: Cache, zoo: Zoo) -> tuple[pd.DataFrame, dict]:
    """The matrix of finding 1 on the TEST items, with the recipe the grid chose."""
    recipe = matrix_recipe(cfg, cache, zoo)
    table, arts = run_plan(cfg, cache, zoo, plan(cfg, recipe), eval_tasks(cfg, cache, zoo))
    arts["recipe"] = recipe
    return table, arts


def _corpus(cache: Cache, zoo: Zoo, run: dict) -> Artifact:
    if run["source"] == "real-text":
        return real_text_corpus(cache, zoo)
    if run["source"] == "replay":
        return replay_corpus(cache, zoo)
    return synthetic_corpus(cache, zoo, run["source"], run["temperature"], run["seed"])


def _student(cache: Cache, zoo: Zoo, tasks: Artifact, run: dict) -> tuple[str, Artifact, Artifact, Artifact]:
    """One cell: its corpus, the student fine-tuned on it, and the student's evaluation."""
    cfg, b = zoo.cfg, zoo.cfg.benchmarks
    corpus = _corpus(cache, zoo, run)
    ft = cfg.finetune.model_copy(update={"schedule": run["schedule"]})
    name = f"{run['student']}--{corpus.name}--{run['schedule']}-{run['budget']}"  # artifact names (cache paths)
    # A control's corpus is the same for every seed: its runs differ only by the fine-tuning seed (in the
    # artifact's key, not its name). The run label must still tell them apart: every dict of artifacts is keyed
    # by it, and before session 11 a control's seeds collapsed there into its last seed.
    label = f"{name}--seed{run['seed']}" if run["source"] in CONTROL_SOURCES else name
    student = finetune(cache, name, zoo.models[run["student"]], "main", corpus, _texts, run["budget"], ft,
                       cfg.zoo.seq_len, run["seed"])
    return label, corpus, student, evaluate(cache, student, "main", tasks, b.batch_size,
                                            f"{name}-{tasks.meta.get('split', 'test')}", b.backend, b.model_args)


def _base_evaluation(cache: Cache, zoo: Zoo, tasks: Artifact, student: str) -> Artifact:
    b = zoo.cfg.benchmarks
    return evaluate(cache, zoo.models[student], "main", tasks, b.batch_size,
                    f"{student}-base-{tasks.meta.get('split', 'test')}", b.backend, b.model_args)


def prebuild(cfg: StudyConfig, cache: Cache, zoo: Zoo, tasks: Artifact, runs: list[dict]) -> None:
    """Build the runs' corpora, then their students and evaluations, `cfg.workers` at a time.

    Two waves, so that no fine-tuning waits for a corpus another worker is still sampling; within
    a wave the costliest jobs start first. What is already cached is skipped."""
    models = cfg.zoo.models
    # keyed by text: a control's temperature is NaN, and NaN != NaN would keep every copy of it as its own key
    corpora = {f"sample {r['source']} T{r['temperature']} seed {r['seed']}": r for r in runs}
    students = sorted({r["student"] for r in runs})
    wave1 = [Job(model_size(models[s]), f"{s}-base", _base_evaluation, (zoo, tasks, s)) for s in students]
    wave1 += [Job(model_size(models[parse_model_ref(r["source"])[0]]) if r["source"] not in CONTROL_SOURCES else 0.0,
                  label, _corpus, (zoo, r)) for label, r in corpora.items()]
    wave2 = [Job(model_size(models[r["student"]]) * r["budget"], f"student {r}", _student, (zoo, tasks, r))
             for r in runs]
    build_all(cache, wave1, cfg.workers, desc="synthetic corpora and base evaluations")
    build_all(cache, wave2, cfg.workers, desc="students and evaluations")


def _metric(task: str) -> str:
    from .benchmarks import PRIMARY_METRIC
    return PRIMARY_METRIC[task]


RUN_KEYS = ["student", "source", "relation", "strength", "temperature", "seed", "schedule", "budget"]


def headline(table: pd.DataFrame, tasks: list[str] | None = None) -> pd.DataFrame:
    """One score per run: the mean accuracy improvement (points) over the headline tasks (default: every
    accuracy task)."""
    acc = table[table["metric"].isin(HEADLINE_METRICS)]
    if tasks is not None:
        acc = acc[acc["task"].isin(tasks)]
    keys = [k for k in RUN_KEYS if k in acc.columns] + ["run_label"]
    return acc.groupby(keys, dropna=False)["delta"].mean().rename("headline_delta").reset_index()


def item_deltas(runs: pd.DataFrame, arts: dict, tasks: list[str], kind: str = "items") -> list:
    """Per task, the (runs, items) matrix of per-item changes (after - untouched student): accuracy in points
    (`items`) or log-likelihood margins in nats (`margins`)."""
    import numpy as np
    from .evaluation import load_margins
    load = load_items if kind == "items" else load_margins
    scale = 100.0 if kind == "items" else 1.0
    base = {s: load(a) for s, a in arts["base_evaluations"].items()}
    after = {lbl: load(arts["evaluations"][lbl]) for lbl in runs["run_label"]}
    return [scale * np.array([np.asarray(after[r.run_label][t]) - np.asarray(base[r.student][t])
                              for r in runs.itertuples()]) for t in tasks]


def finding1(cfg: StudyConfig, table: pd.DataFrame, arts: dict, labels: pd.DataFrame, tasks: list[str],
             axis_ok: bool = True):
    """The per-run table and the verdicts of finding 1 (accuracy headline, and margins as a secondary outcome)."""
    import numpy as np
    from . import verdicts
    runs = headline(table, tasks).merge(labels[["student", "source", "label_ok", "gap_bpb"]],
                                        on=["student", "source"], how="left")
    runs["in_verdict"] = runs["label_ok"].fillna(False).astype(bool) & runs["relation"].isin(verdicts.RELATIONS)
    runs["gap_bpb"] = np.where(runs["relation"] == "self", 0.0, runs["gap_bpb"])
    runs["in_verdict"] |= runs["relation"] == "self"
    a = cfg.analysis
    th = verdicts.Thresholds(alpha=a.alpha, power=a.power, sesoi=a.sesoi_points, proxy_rho0=a.proxy_rho0,
                             bootstrap=a.bootstrap, seed=cfg.seed)
    deltas = item_deltas(runs, arts, tasks)
    runs["item_se"] = verdicts.per_run_paired_se(deltas)
    verdict = verdicts.transfer_verdict(runs, deltas, th, runs["gap_bpb"].to_numpy(float))
    margins = item_deltas(runs, arts, tasks, "margins")
    runs["margin_delta"] = np.mean([m.mean(1) for m in margins], axis=0)
    secondary = verdicts.transfer_verdict(runs, margins, verdicts.Thresholds(
        alpha=a.alpha, power=a.power, sesoi=a.margin_sesoi_nats, bootstrap=a.bootstrap, seed=cfg.seed))
    return runs, verdicts.without_capability(verdict, axis_ok), verdicts.without_capability(secondary, axis_ok)


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
    keys = {(r["source"], r["temperature"], r["seed"]) for r in plan(cfg) if r["source"] not in CONTROL_SOURCES}
    cols = ("source_model", "revision", "start_token", "start_rule", "temperature", "seed", "documents", "tokens",
            "tokens_per_s", "wall_seconds")
    rows = []
    for src, t, seed in sorted(keys):
        a = synthetic_corpus(cache, zoo, src, t, seed)
        rows.append({"corpus": a.name, **{k: a.meta.get(k) for k in cols}})
    return pd.DataFrame(rows)


if __name__ == "__main__":
    raise SystemExit(main())
