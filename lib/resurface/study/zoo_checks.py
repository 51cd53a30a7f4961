"""The zoo's checks (notebook 00): is every relation label true, and do the benchmarks measure capability?

- **Labels.** Per (student, source) of the study: source minus student bits per byte on held-out lineage
  text, with a bootstrap CI over documents, against what the label promises (`verdicts.LABEL_RULE`).
- **Capability axis.** The lineage's checkpoints, final weights and larger member scored on the DEV items:
  a task enters the headline only if it rises along the axis by more than the noise
  (`verdicts.CAPABILITY_RULE`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from resurface.analysis import verdicts
from resurface.builders.benchmarks import build_tasks, split_heldout, task_items
from resurface.builders.evaluations import evaluate, item_loglosses, item_scores
from resurface.builders.tokenizers import load_tokenizer
from resurface.builders.zoo import Zoo, model_size
from resurface.compute.pool import Job, build_all
from resurface.frame.cache import Artifact, Cache
from resurface.frame.schema import PRIMARY_METRIC, StudyConfig, parse_model_ref
from resurface.lm.models import load_model
from resurface.lm.training import document_bits as bits_of
from resurface.study.matrix import base_evaluation, relation, strength_label


def study_pairs(cfg: StudyConfig) -> list[tuple[str, str]]:
    """Every (student, model source) that the recipe grid or the matrix fine-tunes on."""
    pairs = [(s, r) for s in cfg.transfer.students for r in cfg.transfer.sources_for(s)]
    if cfg.recipe is not None:
        pairs += [(s, r) for s, refs in cfg.recipe.sources.items() for r in refs]
    return list(dict.fromkeys(pairs))


def label_texts(zoo: Zoo) -> list[str]:
    """Held-out lineage documents that no benchmark item comes from, capped for cost."""
    _, control = split_heldout(zoo.corpora["lineage"], zoo.cfg.seed)
    n = zoo.cfg.analysis.label_documents
    return [t[:2000] for t in control[:n]]


def document_bits(cache: Cache, zoo: Zoo, ref: str) -> Artifact:
    """Per held-out document, the bits a model needs for it (and its bytes): cached per model reference."""
    name, step = parse_model_ref(ref)
    cfg = {"ref": ref, "documents": zoo.cfg.analysis.label_documents, "seq_len": zoo.cfg.zoo.seq_len}

    def build(tmp: Path) -> dict:
        path = zoo.model_path(ref)
        bits, n_bytes = bits_of(load_model(path), load_tokenizer(path), label_texts(zoo), zoo.cfg.zoo.seq_len)
        np.save(tmp / "bits.npy", bits, allow_pickle=False)
        np.save(tmp / "bytes.npy", n_bytes, allow_pickle=False)
        return {"bpb": float(bits.sum() / n_bytes.sum())}

    return cache.get_or_build("strength", ref.replace("@", "-"), cfg, build,
                              inputs=[zoo.models[name], zoo.corpora["lineage"]], stage="zoo checks")


def label_checks(cfg: StudyConfig, cache: Cache, zoo: Zoo) -> pd.DataFrame:
    """One row per (student, source): relation, promised strength, bits/byte gap with CI, and the check."""
    pairs = study_pairs(cfg)
    refs = list(dict.fromkeys([r for p in pairs for r in p]))
    jobs = [Job(model_size(cfg.zoo.models[parse_model_ref(r)[0]]), r, document_bits, (zoo, r)) for r in refs]
    arts = build_all(cache, jobs, cfg.workers, desc="held-out bits per model").results
    bits = {r: np.load(a.path / "bits.npy") for r, a in arts.items()}
    n_bytes = np.load(arts[refs[0]].path / "bytes.npy")
    rows = []
    for student, src in pairs:
        strength = strength_label(cfg, student, src)
        gap = verdicts.bpb_gap(bits[src], bits[student], n_bytes, cfg.analysis.bootstrap, cfg.seed)
        rows.append({"student": student, "source": src, "relation": relation(cfg, student, src),
                     "promised": strength, "student_bpb": arts[student].meta["bpb"], "source_bpb": arts[src].meta["bpb"],
                     "gap_bpb": gap["gap"], "ci_low": gap["ci_low"], "ci_high": gap["ci_high"],
                     "label_ok": verdicts.label_ok(strength, gap, cfg.analysis.sibling_tolerance_bpb)})
    return pd.DataFrame(rows)


def dev_tasks(cfg: StudyConfig, cache: Cache, zoo: Zoo) -> Artifact:
    b = cfg.benchmarks
    return build_tasks(cache, zoo.corpora["lineage"], list(b.tasks), b.items_per_task, b.ppl_documents, cfg.seed,
                       b.items_by_task, split="dev", registry=list(b.registry))


def accuracy_tasks(cfg: StudyConfig) -> list[str]:
    """The benchmark tasks judged on accuracy: lm-eval's (embedded or standard), then the registry's."""
    b = cfg.benchmarks
    return [t for t in [*b.tasks, *b.registry] if PRIMARY_METRIC.get(t) in ("acc", "acc_norm")]


def _evaluate_ref(cache: Cache, zoo: Zoo, tasks: Artifact, ref: str) -> Artifact:
    name, step = parse_model_ref(ref)
    b = zoo.cfg.benchmarks
    return evaluate(cache, zoo.models[name], "main" if step is None else f"step{step}", tasks, b.batch_size,
                    f"{ref.replace('@', '-')}-{tasks.meta['split']}", b.backend, b.model_args)


def capability_check(cfg: StudyConfig, cache: Cache, zoo: Zoo) -> pd.DataFrame:
    """Apply CAPABILITY_RULE on the dev items (empty when the profile names no axis: every task then counts)."""
    axis = list(cfg.zoo.capability_axis)
    if not axis:
        return pd.DataFrame(columns=["task", "from", "to", "rise", "paired_se", "step_ok", "task_in_headline"])
    tasks = dev_tasks(cfg, cache, zoo)
    jobs = [Job(model_size(cfg.zoo.models[parse_model_ref(r)[0]]), r, _evaluate_ref, (zoo, tasks, r)) for r in axis]
    done = build_all(cache, jobs, cfg.workers, desc="capability axis on dev items")
    return verdicts.capability_axis(axis, {r: per_item_score(cfg, a) for r, a in done.results.items()},
                                    accuracy_tasks(cfg), scale=100.0 if cfg.analysis.score == "accuracy" else 1.0)


def per_item_score(cfg: StudyConfig, evaluation: Artifact) -> dict[str, list[float]]:
    """Per task, each item's primary score (SCORE_RULE), higher is better: 0/1 accuracy, or minus the log-loss."""
    if cfg.analysis.score == "accuracy":
        return item_scores(evaluation)
    return {t: [-x for x in v] for t, v in item_loglosses(evaluation).items()}


def headroom_check(cfg: StudyConfig, cache: Cache, zoo: Zoo) -> pd.DataFrame:
    """Apply HEADROOM_RULE: every untouched student on the dev items, per accuracy task, against chance (from
    the items' numbers of choices) and ceiling."""
    tasks = dev_tasks(cfg, cache, zoo)
    students = list(cfg.transfer.students)
    jobs = [Job(model_size(cfg.zoo.models[s]), s, base_evaluation, (zoo, tasks, s)) for s in students]
    done = build_all(cache, jobs, cfg.workers, desc="untouched students on dev items").results
    rows = []
    for t in accuracy_tasks(cfg):
        items = task_items(tasks, t) if (tasks.path / f"{t}.jsonl").exists() else []
        chance = 100 * float(np.mean([1 / len(i["choices"]) if "choices" in i else 0.0 for i in items])) if items else 0.0
        for s in students:
            scores = item_scores(done[s])[t]
            rows.append({"student": s, "task": t, "items": len(scores), "accuracy": 100 * float(np.mean(scores)),
                         "chance": chance})
    a = cfg.analysis
    return verdicts.headroom(pd.DataFrame(rows), a.headroom_above_chance_points, a.headroom_below_ceiling_points)


def headline_from(check: pd.DataFrame, cfg: StudyConfig, room: pd.DataFrame | None = None) -> tuple[list[str], bool]:
    """(headline tasks, whether they passed) from `capability_check`'s and `headroom_check`'s tables.

    The tasks are those that rose along the axis (every accuracy task when the profile has no axis) and where
    every student has headroom; all accuracy tasks when none passes (then no verdict of findings 1-2 can be
    more than `inconclusive`)."""
    every = accuracy_tasks(cfg)
    rose = set(check.loc[check["task_in_headline"], "task"]) if not check.empty else set(every)
    roomy = set(room.loc[room["task_in_headline"], "task"]) if room is not None and not room.empty else set(every)
    passed = [t for t in every if t in rose and t in roomy]
    return passed or every, bool(passed)


def tokens_seen(cfg: StudyConfig) -> dict[str, int]:
    """Pretraining tokens behind every model ref this profile trains (its checkpoints included); Hub and
    registry models are absent (their pretraining is not ours to count)."""
    out = {}
    for name, m in cfg.zoo.models.items():
        if not m.is_local:
            continue
        per_step = m.batch_size * cfg.zoo.seq_len
        out[name] = m.steps * per_step
        out |= {f"{name}@step{k}": k * per_step for k in m.checkpoints}
    return out


def headline(cfg: StudyConfig, cache: Cache, zoo: Zoo) -> tuple[list[str], bool]:
    """notebook 00's capability axis and headroom, read back from the cache: (headline tasks, both passed)."""
    return headline_from(capability_check(cfg, cache, zoo), cfg, headroom_check(cfg, cache, zoo))
