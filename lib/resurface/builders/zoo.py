"""The embedded model zoo: a "Pythia in a box" lineage plus differently trained models.

Every model is a Hugging Face directory with safetensors (`main/` = final weights,
`stepN/` = intermediate checkpoints, like Pythia's revisions) and a tokenizer,
loadable with the Auto classes. Lineage members share tokenizer, data and data
order, as in Pythia; if a profile lets a larger member train for more steps, it
reads further along the same stream, so the smaller member's data is a prefix of
the larger's.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from resurface.builders.canaries import canary_share, load_canaries, plant, select_canaries, word_starts
from resurface.builders.corpora import build_corpus, fetch_sources, load_corpus
from resurface.builders.gguf import fetch_gguf_model
from resurface.builders.hub import fetch_model
from resurface.builders.planted import plant_twin
from resurface.builders.tokenizers import build_tokenizer, load_tokenizer
from resurface.compute.distributed import collective_build
from resurface.compute.pool import Job, build_all
from resurface.frame.cache import Artifact, Cache
from resurface.frame.schema import ModelConfig, StudyConfig, parse_model_ref
from resurface.lm.models import hf_config
from resurface.lm.training import bits_per_byte, lr_at, mean_loss, pack_documents, tokenize_texts, train_lm

log = logging.getLogger("resurface")


# ------------------------------------------------------------- the data stream

def build_stream(cache: Cache, name: str, corpora: list[Artifact], tokenizer: Artifact, seq_len: int,
                 data_seed: int, canaries: Artifact | None, horizon_tokens: int, window: tuple[float, float] = (0, 1),
                 margin_tokens: int = 16) -> Artifact:
    """Tokenized, shuffled-by-document, packed training blocks (plus canary copies inside documents)."""
    cfg = {"seq_len": seq_len, "data_seed": data_seed, "horizon": horizon_tokens if canaries else None}
    if canaries is not None:
        cfg |= {"window": list(window), "margin": margin_tokens, "placement": "inside documents"}
    inputs = list(corpora) + [tokenizer] + ([canaries] if canaries else [])

    def build(tmp: Path) -> dict:
        tok = load_tokenizer(tokenizer.path)
        docs = [t for c in corpora for t in load_corpus(c)["train"]["text"]]
        rng = np.random.default_rng(data_seed)
        docs = [docs[i] for i in rng.permutation(len(docs))]
        doc_tokens = tokenize_texts(tok, docs)
        meta: dict = {}
        if canaries is not None:
            recs = load_canaries(canaries, planted_only=True)
            doc_tokens = plant(doc_tokens, recs, horizon_tokens, data_seed, tuple(window), margin_tokens,
                               word_starts(tok))
            meta["canary_copies"] = int(sum(r["count"] for r in recs))
            meta["canary_share"] = canary_share(recs, horizon_tokens)
        blocks = pack_documents(doc_tokens, tok.eos_token_id, seq_len)
        if canaries is not None:
            # every canary copy must lie inside the horizon that all canary models train on
            flat = blocks.reshape(-1)
            last = _last_canary_position(flat, load_canaries(canaries, planted_only=True))
            if last >= horizon_tokens:
                raise RuntimeError(f"canary planted at token {last}, beyond the {horizon_tokens}-token horizon")
            meta["last_canary_token"] = int(last)
        np.save(tmp / "blocks.npy", blocks, allow_pickle=False)
        meta.update({"blocks": int(blocks.shape[0]), "tokens": int(blocks.size), "documents": len(docs)})
        return meta

    return cache.get_or_build("streams", name, cfg, build, inputs=inputs, stage="zoo")


def _last_canary_position(flat: np.ndarray, recs: list[dict]) -> int:
    from numpy.lib.stride_tricks import sliding_window_view
    first8 = {tuple(r["token_ids"][:8]) for r in recs}
    win = sliding_window_view(flat, 8)
    lead = {t[0] for t in first8}
    last = -1
    for pos in np.nonzero(np.isin(flat[: len(win)], list(lead)))[0]:
        if tuple(win[pos]) in first8:
            last = max(last, int(pos))
    return last


def load_blocks(stream: Artifact) -> np.ndarray:
    return np.load(stream / "blocks.npy", allow_pickle=False)


def heldout_blocks(corpus: Artifact, tokenizer, seq_len: int, max_blocks: int = 256) -> np.ndarray:
    texts = load_corpus(corpus)["heldout"]["text"]
    blocks = pack_documents(tokenize_texts(tokenizer, texts), tokenizer.eos_token_id, seq_len)
    step = max(1, len(blocks) // max_blocks)
    return blocks[::step][:max_blocks]


# ------------------------------------------------------------- pretraining

def model_key(m: ModelConfig) -> dict:
    """The part of a locally trained model's config that keys its checkpoint. Fields added to ModelConfig for
    other kinds of models (`gguf`, a planted twin's `init_from` and `planting_loss`) stay out, so adding them
    does not invalidate every trained zoo."""
    return m.model_dump(mode="json", exclude={"gguf", "init_from", "parameters", "planting_loss"})


# A builder's own format version, in its config (the one style; cache.FORMAT_VERSION would re-key every artifact).
# Bump when hf_config or what is saved changes. (Its key is "recipe": renaming the key would re-key every zoo.)
PRETRAIN_FORMAT = 3


def pretrain(cache: Cache, name: str, m: ModelConfig, stream: Artifact, tokenizer: Artifact,
             lineage_corpus: Artifact, seq_len: int) -> Artifact:
    cfg = {"model": model_key(m), "seq_len": seq_len, "recipe": PRETRAIN_FORMAT}

    def build(tmp: Path) -> dict:
        from transformers import AutoModelForCausalLM
        tok = load_tokenizer(tokenizer.path)
        torch.manual_seed(m.init_seed)
        model = AutoModelForCausalLM.from_config(hf_config(m, len(tok), seq_len))
        blocks = load_blocks(stream)

        def save(step: int | str):
            d = tmp / (f"step{step}" if isinstance(step, int) else step)
            model.save_pretrained(str(d), safe_serialization=True)
            tok.save_pretrained(str(d))

        save(0) if 0 in m.checkpoints else None
        result = train_lm(model, blocks, steps=m.steps, batch_size=m.batch_size, lr=m.lr,
                          warmup_steps=m.warmup_steps, checkpoint_steps=m.checkpoints,
                          on_checkpoint=save, desc=f"pretrain {name}",
                          save_optimizer_to=tmp / "optimizer.safetensors")  # students may continue from it
        save("main")
        held = heldout_blocks(lineage_corpus, tok, seq_len)
        held_texts = load_corpus(lineage_corpus)["heldout"]["text"][:20]
        card = {
            "name": name, "kind": m.kind, "architecture": m.architecture,
            "parameters": int(sum(p.numel() for p in model.parameters())),
            "layers": m.layers, "width": m.width, "vocab_size": len(tok),
            "steps": m.steps, "tokens_seen": int(result["tokens"]),
            "tokens_per_parameter": round(result["tokens"] / sum(p.numel() for p in model.parameters()), 2),
            "final_lr": lr_at(m.steps - 1, m.steps, m.lr, m.warmup_steps),
            "epochs": round(result["tokens"] / max(1, stream.meta["tokens"]), 3),
            "train_seconds": round(result["seconds"], 1), "tokens_per_s": round(result["tokens_per_s"]),
            "heldout_lineage_loss": round(mean_loss(model, held), 4),
            "heldout_lineage_bpb": round(bits_per_byte(model, tok, held_texts, seq_len), 4),
            "checkpoints": [f"step{s}" for s in m.checkpoints],
        }
        (tmp / "card.json").write_text(json.dumps(card, indent=1))
        (tmp / "loss_history.json").write_text(json.dumps(result["history"]))
        return card

    # every train_lm under a launcher is collective (DDP): all ranks train, rank 0 publishes
    return collective_build(cache, "zoo", name, cfg, build, inputs=[stream, tokenizer, lineage_corpus], stage="zoo")


@dataclass
class Zoo:
    """What notebook 00 builds and every later notebook reads."""
    cfg: StudyConfig
    corpora: dict[str, Artifact]
    tokenizers: dict[str, Artifact]
    canaries: Artifact | None
    models: dict[str, Artifact]

    def model_path(self, ref: str) -> Path:
        """`name` -> final weights, `name@stepN` -> the intermediate checkpoint."""
        name, step = parse_model_ref(ref)
        return self.models[name].path / ("main" if step is None else f"step{step}")

    def cards(self):
        """One row per model. The relation label is this profile's: a model's key leaves it out (the weights do
        not depend on it), so a cached card may carry the label of the profile that built it first."""
        import pandas as pd
        return pd.DataFrame([{**a.meta, "kind": self.cfg.zoo.models[name].kind} if name in self.cfg.zoo.models
                             else a.meta for name, a in self.models.items()])

    def loss_histories(self):
        import pandas as pd
        rows = []
        for name, a in self.models.items():
            if not (a / "loss_history.json").exists():  # not trained here (Hub, GGUF)
                continue
            for step, loss in json.loads((a / "loss_history.json").read_text()):
                rows.append({"model": name, "step": step, "tokens": step * self.cfg.zoo.models[name].batch_size
                             * self.cfg.zoo.seq_len, "loss": loss})
        return pd.DataFrame(rows)


def build_corpora(cfg: StudyConfig, cache: Cache) -> dict[str, Artifact]:
    c = cfg.corpora
    fetch_sources(cache, [*c.lineage, *c.cross_family, c.canary_source])  # side by side; reused below
    return {role: build_corpus(cache, role, list(getattr(c, role)), c.heldout_fraction, c.split_seed, c.max_chars)
            for role in ("lineage", "cross_family")}


def build_tokenizers(cfg: StudyConfig, cache: Cache, corpora: dict[str, Artifact]) -> dict[str, Artifact]:
    return {name: build_tokenizer(cache, name, [corpora[r] for r in t.corpora], t.vocab_size, cfg.zoo.seq_len)
            for name, t in cfg.tokenizers.items()}


def _canary_models(cfg: StudyConfig) -> dict[str, ModelConfig]:
    return {n: m for n, m in cfg.zoo.models.items() if m.is_local and m.canaries}


def _planted_models(cfg: StudyConfig) -> dict[str, ModelConfig]:
    return {n: m for n, m in cfg.zoo.models.items() if m.is_planted}


def build_canaries(cfg: StudyConfig, cache: Cache, tokenizers: dict[str, Artifact]) -> Artifact | None:
    """The canary passages, cut with the tokenizer of the models that plant them: a tokenizer trained here, or
    the real-weights model a planted twin starts from (fetched here; reused when the zoo is assembled)."""
    models, planted = _canary_models(cfg), _planted_models(cfg)
    if not models and not planted:
        return None
    tok_names = {m.tokenizer for m in models.values()} | {m.init_from for m in planted.values()}
    if len(tok_names) != 1:
        raise ValueError("all canary-planted models must share one tokenizer")
    name = tok_names.pop()
    tokenizer = tokenizers[name] if models else _external(cfg, cache, name)
    k = cfg.canaries
    return select_canaries(cache, cfg.corpora.canary_source, tokenizer, list(k.counts),
                           k.per_count, k.length_tokens, k.dev_fraction, k.seed, k.controls)


def train_models(cfg: StudyConfig, cache: Cache, corpora: dict[str, Artifact], tokenizers: dict[str, Artifact],
                 canaries: Artifact | None) -> dict[str, Artifact]:
    """Pretrain every local zoo model (each reused from the cache when already built)."""
    # canaries are planted early enough that the shortest canary model sees every copy
    horizon = min((m.steps * m.batch_size * cfg.zoo.seq_len for m in _canary_models(cfg).values()), default=0)
    jobs = []
    for name, m in cfg.zoo.models.items():
        if not m.is_local:
            continue
        stream = build_stream(cache, f"{'+'.join(m.corpora)}-{m.tokenizer}-d{m.data_seed}",
                              [corpora[r] for r in m.corpora], tokenizers[m.tokenizer], cfg.zoo.seq_len,
                              m.data_seed, canaries if m.canaries else None, horizon,
                              *((tuple(cfg.canaries.window), cfg.canaries.margin_tokens) if m.canaries else ()))
        args = (name, m, stream, tokenizers[m.tokenizer], corpora["lineage"], cfg.zoo.seq_len)
        jobs.append(Job(pretrain_cost(m), name, pretrain, args))
    trained = build_all(cache, jobs, cfg.workers, desc="pretraining the zoo").results
    for name, m in _planted_models(cfg).items():  # one real-weights model at a time, with every core
        base = _external(cfg, cache, m.init_from, corpora["lineage"])
        trained[name] = plant_twin(cache, cfg, name, base, corpora["lineage"], canaries)
    return trained


def model_size(m: ModelConfig) -> float:
    """Relative matmul work per token, to start the costliest builds first. Models not trained here are real,
    far larger models: they go first."""
    return m.layers * m.width ** 2 if m.is_local else float("inf")


def pretrain_cost(m: ModelConfig) -> float:
    """Relative pretraining cost: work per token x tokens."""
    return model_size(m) * m.steps * m.batch_size


def build_zoo(cfg: StudyConfig, cache: Cache) -> Zoo:
    """Every step of notebook 00 in one call (later notebooks use it; all of it comes from the cache)."""
    corpora = build_corpora(cfg, cache)
    tokenizers = build_tokenizers(cfg, cache, corpora)
    canaries = build_canaries(cfg, cache, tokenizers)
    trained = train_models(cfg, cache, corpora, tokenizers, canaries)
    return Zoo(cfg, corpora, tokenizers, canaries, {**trained, **external_models(cfg, cache, corpora)})


def external_models(cfg: StudyConfig, cache: Cache, corpora: dict[str, Artifact]) -> dict[str, Artifact]:
    """Zoo members not trained here: pinned Hub revisions and registry GGUF files."""
    return {name: _external(cfg, cache, name, corpora["lineage"]) for name, m in cfg.zoo.models.items()
            if m.is_hub or m.gguf is not None}


def _external(cfg: StudyConfig, cache: Cache, name: str, lineage: Artifact | None = None) -> Artifact:
    """One zoo member not trained here (from the cache once fetched); its card reads the lineage corpus."""
    if lineage is None:
        c = cfg.corpora
        lineage = build_corpus(cache, "lineage", list(c.lineage), c.heldout_fraction, c.split_seed, c.max_chars)
    fetch = fetch_model if cfg.zoo.models[name].is_hub else fetch_gguf_model
    return fetch(cache, cfg, name, lineage)
