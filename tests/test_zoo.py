"""The model zoo: save/load as HF safetensors directories, lineage data order, canaries."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from resurface.builders.canaries import load_canaries, plant
from resurface.frame.schema import ModelConfig
from resurface.frame.profiles import load_config
from resurface.lm.models import hf_config, load_model


@pytest.mark.parametrize("arch", ["gpt_neox", "llama", "gpt2"])
def test_save_load_round_trip_safetensors_only(tmp_path, arch):
    from transformers import AutoModelForCausalLM
    m = ModelConfig(kind="lineage", architecture=arch, tokenizer="t", layers=1, width=16, heads=2)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(hf_config(m, 300, 32)).eval()
    model.save_pretrained(str(tmp_path))
    assert (tmp_path / "model.safetensors").exists()
    assert not list(tmp_path.glob("*.bin")) and not list(tmp_path.glob("*.pt"))
    back = load_model(tmp_path)
    x = torch.randint(0, 300, (2, 10))
    assert torch.allclose(model(x).logits, back(x).logits, atol=1e-6)


def _copies(out, ids):
    """(document, offset) of every occurrence of `ids` inside the planted documents."""
    n = len(ids)
    return [(di, o) for di, d in enumerate(out) for o in range(len(d) - n + 1) if d[o:o + n] == ids]


def test_plant_puts_copies_inside_documents_in_the_window():
    docs = [[5] * 200 for _ in range(100)]  # 20k tokens (+ an end-of-text per document)
    canaries = [{"token_ids": [9, 9, 9, 9], "count": 6}, {"token_ids": [8, 8, 8], "count": 3}]
    out = plant(docs, canaries, horizon_tokens=20000, seed=0, window=(0.5, 1.0), margin_tokens=16)
    assert len(out) == len(docs)  # inside documents: no new document appears
    nines, eights = _copies(out, [9, 9, 9, 9]), _copies(out, [8, 8, 8])
    assert len(nines) == 6 and len(eights) == 3
    starts = np.cumsum([0] + [len(d) + 1 for d in out])
    for di, off in nines + eights:
        n = 4 if out[di][off] == 9 else 3
        assert off >= 16 and len(out[di]) - (off + n) >= 16  # never at a document edge (= next to end-of-text)
        assert 0.45 * 20000 <= starts[di] + off < 20000      # in the second half of the horizon
    # copies keep their distance from each other
    for di in {d for d, _ in nines + eights}:
        offs = sorted(o for d, o in nines + eights if d == di)
        assert all(b - a >= 16 for a, b in zip(offs, offs[1:]))


def test_plant_respects_word_starts_and_refuses_what_cannot_fit():
    docs = [[1, 2] * 100 for _ in range(50)]  # only token 2 begins a word
    word_start = np.zeros(10, bool)
    word_start[2] = True
    out = plant(docs, [{"token_ids": [9, 9], "count": 5}], 10000, 0, (0.0, 1.0), 8, word_start)
    for di, off in _copies(out, [9, 9]):
        assert out[di][off + 2] == 2  # the copy stands before a word start, not inside a word
    with pytest.raises(ValueError, match="more than the"):
        plant(docs, [{"token_ids": [9] * 64, "count": 200}], 10000, 0)
    with pytest.raises(ValueError, match="window"):
        plant(docs, [{"token_ids": [9], "count": 1}], 10000, 0, (0.8, 0.2))


def test_smoke_zoo_models_load_and_checkpoints_exist(smoke_zoo):
    from transformers import AutoTokenizer
    for name, art in smoke_zoo.models.items():
        m = load_model(smoke_zoo.model_path(name))
        tok = AutoTokenizer.from_pretrained(str(smoke_zoo.model_path(name)))
        assert m.config.vocab_size == len(tok)
        card = json.loads((art / "card.json").read_text())
        assert card["tokens_seen"] > 0 and np.isfinite(card["heldout_lineage_bpb"])
    assert (smoke_zoo.model_path("lineage-small@step30") / "model.safetensors").exists()


def test_lineage_shares_stream_and_larger_reads_further(smoke_zoo):
    small = json.loads((smoke_zoo.models["lineage-small"] / "manifest.json").read_text())
    large = json.loads((smoke_zoo.models["lineage-large"] / "manifest.json").read_text())
    stream_of = lambda m: {k: v for k, v in m["inputs"].items() if "lineage-d0" in k}
    assert stream_of(small) and stream_of(small) == stream_of(large)
    assert large["meta"]["tokens_seen"] > small["meta"]["tokens_seen"]


def test_all_canary_copies_are_in_the_twin_stream_only(smoke_zoo, smoke_cache):
    recs = load_canaries(smoke_zoo.canaries)
    assert {r["split"] for r in recs} == {"dev", "heldout", "control"}
    streams = {}
    for d in (smoke_cache / "streams").glob("lineage-lineage-d0-*"):
        meta = json.loads((d / "manifest.json").read_text())["meta"]
        flat = np.load(d / "blocks.npy", allow_pickle=False).reshape(-1).tolist()
        streams["twin" if "canary_copies" in meta else "students"] = (" ".join(map(str, flat)), meta)
    assert set(streams) == {"twin", "students"}
    twin, meta = streams["twin"]
    assert meta["canary_share"] <= load_config("smoke").canaries.max_share
    for r in recs:
        key = " ".join(map(str, r["token_ids"][:40]))
        assert twin.count(key) == r["count"], (r["count"], r["split"])
        assert streams["students"][0].count(key) == 0  # the students never see a canary


def test_a_pickled_checkpoint_is_never_loaded(tmp_path):
    """A directory holding only a pickle (pytorch_model.bin) is refused, not unpickled."""
    from transformers import AutoModelForCausalLM
    m = ModelConfig(kind="lineage", architecture="gpt_neox", tokenizer="t", layers=1, width=16, heads=2)
    model = AutoModelForCausalLM.from_config(hf_config(m, 300, 32))
    model.config.save_pretrained(str(tmp_path))
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(Exception):
        load_model(tmp_path)


def test_no_code_path_unpickles_or_runs_remote_code():
    """Static guard over the package: no trust_remote_code, no torch.load / pickle, safetensors only."""
    import re
    from pathlib import Path
    package = Path(__file__).resolve().parents[1] / "lib" / "resurface"
    src = {p.relative_to(package).as_posix(): p.read_text() for p in package.rglob("*.py")}
    assert len(src) > 40  # every module of every layer
    for name, text in src.items():
        assert not re.search(r"trust_remote_code\s*=\s*True", text), name
        assert not re.search(r"\btorch\.load\(|\bpickle\.loads?\(|import pickle|weights_only\s*=\s*False", text), name
    assert '"use_safetensors": True' in src["lm/models.py"]


def test_the_checkpoint_key_of_a_trained_model_is_stable():
    """Adding a config field must not silently invalidate every cached zoo (a 15-minute rebuild): this is
    the exact dict the default lineage model's checkpoint is keyed by. Change it only on purpose."""
    from resurface.frame.profiles import load_config
    from resurface.builders.zoo import model_key
    m = load_config("default").zoo.models["lineage-small"]
    assert model_key(m) == {
        "kind": "lineage", "hub_id": None, "revision": None, "architecture": "gpt_neox", "tokenizer": "lineage",
        "corpora": ["lineage"], "layers": 2, "width": 64, "heads": 4, "steps": 600, "batch_size": 32, "lr": 0.003,
        "warmup_steps": 50, "checkpoints": [150, 300], "data_seed": 0, "init_seed": 0,
        "canaries": False}  # the students never see a canary (the twin carries them)


def test_the_zoo_table_labels_each_model_with_this_profiles_relation():
    """A real model's cached card is shared by every profile that loads it (its key leaves the relation out), so
    the card says what the profile that built it first called it: the table takes this profile's label."""
    from types import SimpleNamespace
    from resurface.builders.zoo import Zoo
    from resurface.frame.profiles import load_config
    cfg = load_config("crossed-gemma")  # gemma: lineage, smollm2: cross_family
    cached = {"gemma": SimpleNamespace(meta={"name": "gemma", "kind": "cross_family", "parameters": 1}),
              "smollm2": SimpleNamespace(meta={"name": "smollm2", "kind": "lineage", "parameters": 2})}
    cards = Zoo(cfg, {}, {}, None, cached).cards().set_index("name")
    assert cards.loc["gemma", "kind"] == "lineage" and cards.loc["smollm2", "kind"] == "cross_family"
    assert cards.loc["smollm2", "parameters"] == 2 and cached["gemma"].meta["kind"] == "cross_family"
