"""Synthetic corpora: text a source model writes from its start token alone (cached per source, temperature
and seed), and the two controls fine-tuned on in their place: real held-out lineage text and replayed
pretraining paragraphs."""
from __future__ import annotations

import json
import math
from pathlib import Path

from resurface.builders.benchmarks import split_heldout
from resurface.builders.corpora import load_corpus
from resurface.builders.tokenizers import load_tokenizer
from resurface.builders.zoo import Zoo
from resurface.compute.device import current
from resurface.frame.cache import Artifact, Cache
from resurface.frame.schema import parse_model_ref
from resurface.lm.models import load_model
from resurface.lm.sampler import sample_documents, vllm_engine


def save_corpus(path: Path, tokenizer, docs: list[list[int]], provenance: dict) -> None:
    """A synthetic corpus as a `datasets` dataset (text + token count) plus its provenance."""
    from datasets import Dataset
    texts = tokenizer.batch_decode(docs)
    Dataset.from_dict({"text": texts, "n_tokens": [len(d) for d in docs]}).save_to_disk(str(path / "data"))
    (path / "provenance.json").write_text(json.dumps(provenance, indent=1))


def load_synthetic(path: Path):
    from datasets import load_from_disk
    return load_from_disk(str(Path(path) / "data"))


OVERSAMPLE = 1.25  # source tokens per student token budget: tokenizers compress differently


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
    hub = zoo.cfg.corpora.replay  # Hub students: their own pretraining data (the deduplicated Pile), pinned

    def documents() -> list[str]:
        if hub is None:
            return list(load_corpus(corpus)["train"]["text"])
        import pyarrow.parquet as pq
        from resurface.builders.hub import dataset_files
        return [t for f in dataset_files(hub) for t in pq.read_table(f, columns=[hub.text_column]).column(0).to_pylist()]

    def build(tmp: Path) -> dict:
        import numpy as np
        from datasets import Dataset

        paras = [p for d in documents() for p in d.split("\n\n") if len(p) > 40]
        picked, total = [], 0
        for i in np.random.default_rng(zoo.cfg.seed).permutation(len(paras)):
            picked.append(paras[i])
            total += len(paras[i])
            if total >= chars:
                break
        Dataset.from_dict({"text": picked}).save_to_disk(str(tmp / "data"))
        return {"documents": len(picked), "chars": total}

    key = {"seed": zoo.cfg.seed, "chars": chars, **({"hub": hub.model_dump()} if hub else {})}
    return cache.get_or_build("synthetic", "replay", key, build, inputs=[] if hub else [corpus], stage="sample")


def task_text_corpus(cache: Cache, zoo: Zoo) -> Artifact:
    """The control that says whether fine-tuning can teach the benchmark at all: the registry tasks' third
    split (items neither dev nor test), each item's context followed by its correct answer, as plain text."""
    from resurface.builders.registry_tasks import build_registry_tasks, task_text
    b = zoo.cfg.benchmarks
    items = build_registry_tasks(cache, list(b.registry), "task_text", zoo.cfg.seed)

    def build(tmp: Path) -> dict:
        from datasets import Dataset
        # round robin over the tasks, so that a budget smaller than the corpus reads every task, not mostly the
        # largest one (HellaSwag's third split alone is ~2,500 items)
        per_task = [[task_text(json.loads(line)) for line in (items.path / f"{t}.jsonl").read_text().splitlines()]
                    for t in sorted(b.registry)]
        texts = [rows[i] for i in range(max(map(len, per_task))) for rows in per_task if i < len(rows)]
        Dataset.from_dict({"text": texts}).save_to_disk(str(tmp / "data"))
        return {"documents": len(texts), "chars": sum(map(len, texts)), "tasks": sorted(b.registry)}

    return cache.get_or_build("synthetic", "task-text", {"tasks": sorted(b.registry), "seed": zoo.cfg.seed,
                                                         "order": "round robin"}, build,
                              inputs=[items], stage="sample")


def corpus_texts(art: Artifact) -> list[str]:
    return list(load_synthetic(art.path)["text"])
