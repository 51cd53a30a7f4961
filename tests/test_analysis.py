"""Verdict rules, correlations, relation labels and benchmark construction."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from resurface.builders import benchmarks
from resurface.analysis import stats
from resurface.frame.profiles import load_config
from resurface.study.matrix import plan, relation, strength_label


def test_relations_are_derived_from_the_zoo():
    cfg = load_config("smoke")
    assert relation(cfg, "lineage-small", "lineage-small") == "self"
    assert relation(cfg, "lineage-small", "lineage-small@step30") == "same_lineage"
    assert relation(cfg, "lineage-small", "lineage-large") == "same_lineage"
    assert relation(cfg, "lineage-small", "stronger") == "stronger_different"
    assert relation(cfg, "lineage-small", "cross") == "cross_family"
    assert relation(cfg, "lineage-small", "replay") == "replay"
    p = plan(cfg)
    assert {r["relation"] for r in p} == {"self", "same_lineage", "stronger_different", "cross_family", "real_text",
                                          "replay"}
    only = plan(load_config("smoke", {"transfer.relations": ["self", "cross_family"]}))
    assert {r["relation"] for r in only} == {"self", "cross_family"}


def test_strength_labels_cross_relation_with_strength():
    cfg = load_config("small-budget")
    s = "lineage-small"
    assert [strength_label(cfg, s, r) for r in cfg.transfer.sources_for(s)] == [
        "self", "weaker", "equal", "equal", "equal", "stronger", "stronger_different", "stronger_different",
        "stronger_different", "cross", "cross", "cross"]  # three sources per relation (replicated)
    assert strength_label(cfg, s, "real-text") == "control"


def test_the_default_replicates_every_relation_and_student():
    """The design the default runs: at least four students, and for each at least three independently trained
    sources per relation (siblings and the larger member for the lineage), no weaker checkpoint pooled."""
    cfg = load_config("default")
    assert len(cfg.transfer.students) >= 4
    for s in cfg.transfer.students:
        labels = [strength_label(cfg, s, r) for r in cfg.transfer.sources_for(s)]
        assert labels.count("self") == 1 and "weaker" not in labels
        assert labels.count("equal") + labels.count("stronger") >= 3
        assert labels.count("stronger_different") >= 3 and labels.count("cross") >= 3


def test_students_never_see_a_canary():
    cfg = load_config("default")
    assert not any(cfg.zoo.models[s].canaries for s in cfg.transfer.students)
    assert cfg.zoo.models[cfg.memorization.twin].canaries
    twin, student = cfg.zoo.models[cfg.memorization.twin], cfg.zoo.models["lineage-small"]
    assert twin.model_dump(exclude={"canaries", "checkpoints"}) == student.model_dump(exclude={"canaries", "checkpoints"})
    from resurface.frame.schema import ConfigError
    with pytest.raises(ConfigError, match="never see one"):
        load_config("default", {"zoo.models.lineage-small.canaries": True})


def test_bootstrap_ci_covers_the_mean():
    m, lo, hi = stats.bootstrap_ci(np.arange(10.0))
    assert lo < m == 4.5 < hi


def test_minimal_pairs_are_minimal_and_deterministic():
    docs = ["The committee was ready to report. We have seen the results of the war in every state. "
            "These measures are necessary for the public good of the nation today."] * 3
    a = benchmarks.make_minimal_pairs(docs, 5, seed=0)
    assert a == benchmarks.make_minimal_pairs(docs, 5, seed=0)
    for it in a:
        good, bad = it["choices"]
        assert good != bad and sorted(good.split()) == sorted(bad.split()) or \
            sum(x != y for x, y in zip(good.split(), bad.split())) == 1


def test_smoke_benchmarks_come_from_heldout_only(smoke_zoo, smoke_cache):
    from resurface.frame.cache import Cache
    from resurface.builders.corpora import load_corpus
    cfg = smoke_zoo.cfg
    tasks = benchmarks.build_tasks(Cache(smoke_cache), smoke_zoo.corpora["lineage"], list(cfg.benchmarks.tasks),
                                   cfg.benchmarks.items_per_task, cfg.benchmarks.ppl_documents, cfg.seed)
    train_text = "\n".join(load_corpus(smoke_zoo.corpora["lineage"])["train"]["text"])
    _, control = benchmarks.split_heldout(smoke_zoo.corpora["lineage"], cfg.seed)
    control_text = "\n".join(control)
    items = benchmarks.task_items(tasks, "minimal_pairs")
    assert len(items) == cfg.benchmarks.items_per_task
    for it in items[:40]:
        good = it["choices"][it["label"]]
        assert good not in train_text and good not in control_text


def test_per_task_item_counts_and_unchanged_keys(smoke_zoo, smoke_cache):
    """`items_by_task` sets one task's count; leaving it empty keeps the cache key of every earlier run."""
    from resurface.frame.cache import Cache
    cfg = smoke_zoo.cfg
    cache, lineage = Cache(smoke_cache), smoke_zoo.corpora["lineage"]
    args = (cache, lineage, list(cfg.benchmarks.tasks), 20, 3, cfg.seed)
    plain = benchmarks.build_tasks(*args)
    assert benchmarks.build_tasks(*args, items_by_task={}).key == plain.key
    per_task = benchmarks.build_tasks(*args, items_by_task={"word_cloze": 7})
    assert per_task.key != plain.key
    assert len(benchmarks.task_items(per_task, "word_cloze")) == 7
    assert len(benchmarks.task_items(per_task, "minimal_pairs")) == 20


def test_figure_legends_name_relations_in_words():
    import matplotlib
    matplotlib.use("Agg")
    from resurface.study import figures
    rng = np.random.default_rng(0)
    rels = ["self", "same_lineage", "stronger_different", "cross_family"] * 3
    runs = pd.DataFrame({"relation": rels, "gap_bpb": rng.normal(size=12), "headline_delta": rng.normal(size=12),
                         "student": ["a", "b"] * 6, "score": rng.normal(size=12)})
    corr = {"score": {"rho": 0.1, "ci_low": -0.2, "ci_high": 0.4}}
    for fig in (figures.strength_vs_delta(runs), figures.proxy_scatter(runs, ["score"], corr)):
        labels = [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
        assert "same lineage" in labels and "cross-family" in labels
        assert not any("_" in t for t in labels), labels


def test_every_run_of_the_matrix_has_its_own_label_controls_included(monkeypatch):
    """A control's corpus is the same for every seed, so its runs differ only by the fine-tuning seed. Their
    labels must differ too: the matrix keys students and evaluations by label, and a shared label once made every
    seed of a control read its last seed's student (finding 1's item deltas, finding 3's extractions)."""
    from types import SimpleNamespace
    from resurface.study import matrix
    cfg = load_config("default")
    built = []
    def corpus(cache, zoo, run):  # named as the real builders name them: a model's samples by temperature and seed
        control = run["source"] in matrix.CONTROL_SOURCES
        return SimpleNamespace(name=run["source"] if control else f"{run['source']}-T{run['temperature']}-s{run['seed']}")
    monkeypatch.setattr(matrix, "corpus_for", corpus)
    monkeypatch.setattr(matrix, "finetune", lambda cache, name, *a: built.append((name, a[-1])) or name)
    monkeypatch.setattr(matrix, "evaluate", lambda cache, student, *a: student)
    zoo = SimpleNamespace(cfg=cfg, models={s: None for s in cfg.zoo.models})
    runs = plan(cfg, ("rewarm", 98304))
    labels = [matrix._student(None, zoo, SimpleNamespace(meta={}), r)[0] for r in runs]
    assert len(set(labels)) == len(runs)
    controls = [(name, seed) for name, seed in built if "--real-text--" in name]
    # one artifact name per student (so no cache path moved), one fine-tuning seed per run
    assert len({name for name, _ in controls}) == len(cfg.transfer.students)
    assert len(set(controls)) == len(controls) == len(cfg.transfer.students) * len(cfg.transfer.seeds)
    assert len(cfg.transfer.seeds) > 1


def test_finding_tables_read_the_verdict_and_keep_only_the_controls():
    from resurface.analysis import findings
    comp = {"estimate": 1.234, "lower": 0.5, "upper": 2.0, "mde": 0.9, "outcome": "holds"}
    verdict = {"pooled": {"self > 0": comp}, "per_student": {"s1": {"comparisons": {"self > 0": dict(comp, outcome="fails")}}},
               "verdict": "supported", "ordering_observed": ["self", "cross_family"]}
    table = findings.comparison_table(verdict)
    assert list(table.columns) == ["pooled", "s1"]
    assert table.loc["self > 0", "pooled"] == "+1.23 [+0.50, +2.00] MDE 0.90: holds"
    assert table.loc["self > 0", "s1"].endswith(": fails")
    assert findings.transfer_sentence(verdict).startswith("**Verdict: supported.** Observed ordering (pooled): self > cross_family")
    runs = pd.DataFrame({"student": ["s1"] * 4, "relation": ["self", "real_text", "real_text", "replay"],
                         "headline_delta": [9.0, 1.0, 3.0, -1.0]})
    summary = findings.control_summary(runs)
    assert summary.loc[("s1", "real_text"), "mean"] == 2.0 and summary.loc[("s1", "real_text"), "size"] == 2
    assert ("s1", "self") not in summary.index
