"""Hub profiles: which pinned models a profile needs, and whether they are here when the Hub is off."""
from __future__ import annotations

import os
from pathlib import Path

from resurface.builders.corpora import load_corpus
from resurface.builders.tokenizers import load_tokenizer
from resurface.frame.cache import Artifact
from resurface.frame.schema import StudyConfig, parse_model_ref
from resurface.lm.models import load_model
from resurface.lm.training import bits_per_byte


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def required_revisions(cfg: StudyConfig) -> list[tuple[str, str]]:
    """(hub id, revision) for every Hub model a profile uses, intermediate `@stepN` sources included."""
    return sorted({(m.hub_id, rev) for name, m in cfg.zoo.models.items() if m.is_hub
                   for _, rev in hub_subdirs(cfg, name)})


def required_datasets(cfg: StudyConfig) -> dict:
    """The pinned Hub data sets a profile reads: {"replay": HubData, "memorized_evals": HubData}, those it names."""
    data = {"replay": cfg.corpora.replay}
    if any(cfg.zoo.models[s].is_hub for s in cfg.transfer.students) and cfg.memorization.twin is None:
        data["memorized_evals"] = cfg.memorization.memorized_evals_data
    return {k: v for k, v in data.items() if v is not None}


def dataset_files(spec, split: str | None = None) -> list[Path]:
    """The local paths of a pinned Hub data set's files (downloaded once into the Hugging Face cache; offline,
    read from it). `split` fills `{split}` in the file patterns."""
    from huggingface_hub import snapshot_download
    patterns = [f.format(split=split) if split else f for f in spec.files]
    snap = Path(snapshot_download(spec.hub_id, repo_type="dataset", revision=spec.revision,
                                  allow_patterns=patterns))
    files = sorted({p for pat in patterns for p in snap.glob(pat) if p.is_file()})
    if not files:
        raise RuntimeError(f"data set `{spec.hub_id}` at revision `{spec.revision}` has no file matching "
                           f"{patterns}")
    return files


def missing_offline(cfg: StudyConfig) -> list[tuple[str, str]]:
    """The pinned (hub id, revision) pairs with no config.json in the local Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache
    return [(repo, rev) for repo, rev in required_revisions(cfg)
            if not isinstance(try_to_load_from_cache(repo, "config.json", revision=rev), str)]


def check_available_offline(cfg: StudyConfig) -> None:
    """With the Hub off, stop before any compute if a pinned model is not already downloaded."""
    if not hub_offline():
        return
    missing = missing_offline(cfg)
    if missing:
        repo, rev = missing[0]
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise SystemExit(f"resurface: model `{repo}` at revision `{rev}`{more} is not in the local Hugging Face "
                         f"cache and the Hub is offline (HF_HUB_OFFLINE=1); download it on a connected machine "
                         f"or unset HF_HUB_OFFLINE.")


# Only what a safetensors model directory needs; never *.bin / *.pt (pickles).
ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken", "tokenizer*"]


def hub_subdirs(cfg: StudyConfig, name: str) -> list[tuple[str, str]]:
    """[(subdir, revision)] for one Hub model: `main` (its pinned revision) and each `@stepN` a source uses."""
    m = cfg.zoo.models[name]
    refs = (*[r for st in cfg.transfer.students for r in cfg.transfer.sources_for(st)], *cfg.transfer.students,
            *cfg.zoo.capability_axis)
    steps = sorted({step for ref in refs for n, step in [parse_model_ref(ref)] if n == name and step is not None})
    return [("main", m.revision or "main")] + [(f"step{s}", f"step{s}") for s in steps]


def fetch_model(cache, cfg: StudyConfig, name: str, lineage_corpus):
    """A pinned Hub model as a zoo artifact: `main/` and `stepN/` link to the files in the HF cache.

    The links keep the cache small; the manifest still checksums the weights, so a changed or
    deleted file in the HF cache is noticed and fetched again."""
    m = cfg.zoo.models[name]
    subdirs = hub_subdirs(cfg, name)

    def build(tmp: Path) -> dict:
        from huggingface_hub import snapshot_download
        for sub, rev in subdirs:
            snap = Path(snapshot_download(m.hub_id, revision=rev, allow_patterns=ALLOW_PATTERNS))
            if not list(snap.glob("*.safetensors")):
                raise RuntimeError(f"`{m.hub_id}` at revision `{rev}` has no safetensors weights; resurface never "
                                   "loads pickled checkpoints.")
            (tmp / sub).mkdir()
            for f in snap.iterdir():
                if f.is_file():
                    os.symlink(f.resolve(), tmp / sub / f.name)
        model, tok = load_model(tmp / "main"), load_tokenizer(tmp / "main")
        return {**external_card(name, m.kind, model, tok, lineage_corpus, cfg.zoo.seq_len),
                "hub_id": m.hub_id, "revision": m.revision or "main",
                "checkpoints": [s for s, _ in subdirs if s != "main"]}

    return cache.get_or_build("zoo", name, {"hub_id": m.hub_id, "subdirs": subdirs}, build,
                              inputs=[lineage_corpus], stage="zoo")


def external_card(name: str, kind: str, model, tok, lineage_corpus: Artifact, seq_len: int) -> dict:
    """The card of a model not trained here, comparable with the trained ones on held-out bits per byte
    (40k held-out characters: enough for the number, cheap for a 100M+ model on a CPU)."""
    held = [t[:2000] for t in load_corpus(lineage_corpus)["heldout"]["text"][:20]]
    return {"name": name, "kind": kind, "architecture": model.config.model_type,
            "parameters": int(sum(p.numel() for p in model.parameters())), "vocab_size": len(tok),
            "heldout_lineage_bpb": round(bits_per_byte(model, tok, held, seq_len), 4)}
