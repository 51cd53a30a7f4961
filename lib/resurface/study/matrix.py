"""The runs of a fine-tuning plan (the recipe grid of 01, the matrix of 02): which runs there are, their relation
and strength labels, and building and reading them back (corpus -> student -> evaluation, `cfg.workers` at
a time)."""
from __future__ import annotations

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from resurface.builders.benchmarks import build_tasks
from resurface.builders.evaluations import (evaluate, item_loglosses, item_scores, item_margins, load_results, oriented_delta,
                                         paired_stderr, primary)
from resurface.builders.students import finetune
from resurface.builders.synthetic import (corpus_texts, real_text_corpus, replay_corpus, synthetic_corpus,
                                      task_text_corpus)
from resurface.builders.zoo import Zoo, model_size
from resurface.compute.pool import Job, build_all
from resurface.frame.cache import Artifact, Cache
from resurface.frame.schema import PRIMARY_METRIC, StudyConfig, parse_model_ref, split_schedule
from resurface.names import CONTROL_SOURCES, CONTROLS


def relation(cfg: StudyConfig, student: str, source_ref: str) -> str:
    if source_ref in CONTROL_SOURCES:
        return CONTROL_SOURCES[source_ref]
    name, step = parse_model_ref(source_ref)
    if name == student and step is None:
        return "self"
    kind = cfg.zoo.models[name].kind
    return "same_lineage" if kind == "lineage" else kind


def build_plan(cfg: StudyConfig, students: list[str], sources_for, temperatures: list[float], seeds: list[int],
               recipes: list[tuple[str, int]]) -> list[dict]:
    """Every fine-tuning run: model sources at each temperature, and the two controls, for every seed and
    recipe (schedule, budget)."""
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


def plan(cfg: StudyConfig, recipe: tuple[str, int] | None = None) -> list[dict]:
    """Every fine-tuning run of the matrix, in order (the notebook shows this before running it)."""
    recipe = recipe or (cfg.finetune.schedule, cfg.sampling.tokens_per_corpus)
    return build_plan(cfg, list(cfg.transfer.students), cfg.transfer.sources_for, list(cfg.sampling.temperatures),
                      list(cfg.transfer.seeds), [recipe])


def eval_tasks(cfg: StudyConfig, cache: Cache, zoo: Zoo, split: str = "test", only: list[str] | None = None
               ) -> Artifact:
    """The profile's benchmark items of `split` (of its tasks, only those named in `only`, when given)."""
    b = cfg.benchmarks
    keep = (lambda ts: [t for t in ts if t in only]) if only is not None else list  # noqa: E731
    return build_tasks(cache, zoo.corpora["lineage"], keep(b.tasks), b.items_per_task, b.ppl_documents, cfg.seed,
                       b.items_by_task, split=split, registry=keep(b.registry))


def run_plan(cfg: StudyConfig, cache: Cache, zoo: Zoo, runs: list[dict], tasks: Artifact,
             desc: str = "transfer matrix", extra: list[Job] = ()) -> tuple[pd.DataFrame, dict]:
    """Run (or reuse) every run of `runs`, evaluated on `tasks`; return the tidy table and the artifacts.

    `prebuild` builds what is missing (and the `extra` jobs a later step will read), `cfg.workers` at a time;
    the loop then reads it all back."""
    prebuild(cfg, cache, zoo, tasks, runs, extra)
    students_ = sorted({r["student"] for r in runs})
    base_arts = {s: base_evaluation(cache, zoo, tasks, s) for s in students_}
    rows, students, evals = [], {}, {}
    for run in tqdm(runs, desc=desc, mininterval=5):
        label, corpus, student, ev = _student(cache, zoo, tasks, run)
        students[label], evals[label] = student, ev
        rows += run_rows(run, label, corpus, base_arts[run["student"]], ev)
    base = {s: load_results(a) for s, a in base_arts.items()}
    return pd.DataFrame(rows), {"tasks": tasks, "base": base, "base_evaluations": base_arts, "students": students,
                                "evaluations": evals}


def run_rows(run: dict, label: str, corpus: Artifact, base_evaluation: Artifact, evaluation: Artifact) -> list[dict]:
    """One row per task of a run: the untouched student's score, the fine-tuned student's, the oriented change
    and its paired standard error over items."""
    base, base_items = load_results(base_evaluation), item_scores(base_evaluation)
    after, after_items = load_results(evaluation), item_scores(evaluation)
    pb, pa = primary(base), primary(after)
    rows = []
    for task in pa:
        se = (paired_stderr(base_items[task], after_items[task]) if task in after_items else float("nan"))
        rows.append({**run, "run_label": label, "task": task, "metric": _metric(task), "base": pb[task],
                     "after": pa[task], "delta": oriented_delta(task, pb[task], pa[task]), "delta_paired_se": se,
                     "corpus_tokens_per_s": corpus.meta.get("tokens_per_s")})
    return rows


def corpus_for(cache: Cache, zoo: Zoo, run: dict) -> Artifact:
    """Step 1 of a run: the text it fine-tunes on (a source's BOS samples, or a control's real text)."""
    if run["source"] == "real-text":
        return real_text_corpus(cache, zoo)
    if run["source"] == "replay":
        return replay_corpus(cache, zoo)
    if run["source"] == "task-text":
        return task_text_corpus(cache, zoo)
    return synthetic_corpus(cache, zoo, run["source"], run["temperature"], run["seed"])


def run_names(run: dict, corpus: Artifact) -> tuple[str, str]:
    """(artifact name, run label) of a run. The name places the student and its evaluations in the cache. A
    control's corpus is the same for every seed: its runs differ only by the fine-tuning seed (in the artifact's
    key, not its name). The label must still tell them apart: every dict of artifacts is keyed by it, and a
    label shared by a control's seeds would collapse them into its last seed."""
    name = f"{run['student']}--{corpus.name}--{run['schedule']}-{run['budget']}"
    return name, (f"{name}--seed{run['seed']}" if run["source"] in CONTROL_SOURCES else name)


def student_for(cache: Cache, zoo: Zoo, run: dict, corpus: Artifact) -> Artifact:
    """Step 2: the student fine-tuned on the corpus with the run's schedule, token budget and seed."""
    cfg = zoo.cfg
    schedule, lr = split_schedule(run["schedule"])
    ft = cfg.finetune.model_copy(update={"schedule": schedule, **({"lr": lr} if lr else {})})
    return finetune(cache, run_names(run, corpus)[0], zoo.models[run["student"]], "main", corpus, corpus_texts,
                    run["budget"], ft, cfg.zoo.seq_len, run["seed"])


def evaluation_for(cache: Cache, zoo: Zoo, run: dict, corpus: Artifact, student: Artifact, tasks: Artifact) -> Artifact:
    """Step 3: the fine-tuned student on the benchmark items (lm-eval), per item."""
    b = zoo.cfg.benchmarks
    return evaluate(cache, student, "main", tasks, b.batch_size,
                    f"{run_names(run, corpus)[0]}-{tasks.meta.get('split', 'test')}", b.backend, b.model_args)


def _student(cache: Cache, zoo: Zoo, tasks: Artifact, run: dict) -> tuple[str, Artifact, Artifact, Artifact]:
    """One run, all three steps: its label, corpus, fine-tuned student and evaluation."""
    corpus = corpus_for(cache, zoo, run)
    student = student_for(cache, zoo, run, corpus)
    return run_names(run, corpus)[1], corpus, student, evaluation_for(cache, zoo, run, corpus, student, tasks)


def base_evaluation(cache: Cache, zoo: Zoo, tasks: Artifact, student: str) -> Artifact:
    b = zoo.cfg.benchmarks
    return evaluate(cache, zoo.models[student], "main", tasks, b.batch_size,
                    f"{student}-base-{tasks.meta.get('split', 'test')}", b.backend, b.model_args)


def prebuild(cfg: StudyConfig, cache: Cache, zoo: Zoo, tasks: Artifact, runs: list[dict], extra: list[Job] = ()
             ) -> None:
    """Build the runs' corpora, then their students and evaluations, `cfg.workers` at a time.

    Two waves, so that no fine-tuning waits for a corpus another worker is still sampling; within
    a wave the costliest jobs start first. What is already cached is skipped."""
    models = cfg.zoo.models
    # keyed by text: a control's temperature is NaN, and NaN != NaN would keep every copy of it as its own key
    corpora = {f"sample {r['source']} T{r['temperature']} seed {r['seed']}": r for r in runs}
    students = sorted({r["student"] for r in runs})
    wave1 = [Job(model_size(models[s]), f"{s}-base", base_evaluation, (zoo, tasks, s)) for s in students] + list(extra)
    wave1 += [Job(model_size(models[parse_model_ref(r["source"])[0]]) if r["source"] not in CONTROL_SOURCES else 0.0,
                  label, corpus_for, (zoo, r)) for label, r in corpora.items()]
    wave2 = [Job(model_size(models[r["student"]]) * r["budget"], f"student {r}", _student, (zoo, tasks, r))
             for r in runs]
    build_all(cache, wave1, cfg.workers, desc="synthetic corpora and base evaluations")
    build_all(cache, wave2, cfg.workers, desc="students and evaluations")


def _metric(task: str) -> str:
    return PRIMARY_METRIC[task]


def item_deltas(runs: pd.DataFrame, arts: dict, tasks: list[str], kind: str = "items") -> list:
    """Per task, the (runs, items) matrix of per-item changes against the untouched student, signed so that
    positive is better: accuracy in points (`items`), log-likelihood margins in nats (`margins`, a diagnostic:
    sharpening alone raises them), or the log-loss of the normalised choices in nats (`logloss`, the proper
    score: untouched minus fine-tuned)."""
    load, scale = {"items": (item_scores, 100.0), "margins": (item_margins, 1.0),
                   "logloss": (item_loglosses, -1.0)}[kind]
    base = {s: load(a) for s, a in arts["base_evaluations"].items()}
    after = {lbl: load(arts["evaluations"][lbl]) for lbl in runs["run_label"]}
    return [scale * np.array([np.asarray(after[r.run_label][t]) - np.asarray(base[r.student][t])
                              for r in runs.itertuples()]) for t in tasks]


def _size(m) -> float:
    """A model's size for strength labels: trained here, its shape; from the Hub, its parameter count."""
    return m.parameters if m.parameters is not None else model_size(m)


def strength_label(cfg: StudyConfig, student: str, source_ref: str) -> str:
    """What a source promises about its strength relative to the student, from the zoo's structure."""
    if source_ref in CONTROLS or source_ref in CONTROL_SOURCES:
        return "control"
    name, step = parse_model_ref(source_ref)
    if name == student and step is None:
        return "self"
    m, s = cfg.zoo.models[name], cfg.zoo.models[student]
    if m.kind == "stronger_different":
        return "stronger_different"
    if m.kind == "cross_family":
        return "cross"
    size_m, size_s = _size(m), _size(s)
    if step is not None:
        return "weaker" if size_m <= size_s else "checkpoint"
    if size_m > size_s:
        return "stronger"
    if size_m < size_s:
        return "weaker"
    return "equal" if m.steps == s.steps else ("stronger" if m.steps > s.steps else "weaker")
