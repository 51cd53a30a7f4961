"""Throughput and memory of the real profiles' models on one GPU, measured on look-alikes.

The Hub is out of reach from the machines this was run on, so the models are randomly
initialised with the exact configs of pythia-160m/410m and Qwen2.5-0.5B; the speed of a
forward pass does not depend on the weights (only documents' lengths do: random models
rarely emit end-of-text, so every row runs to max_new_tokens). Run on a GPU machine:

    OUT=outputs/bench python scripts/gpu_lookalike_bench.py b c

b: sampler (`fast`) and `model.generate` (`hf`) at batch 256, training at batch 32 (and 8);
c: sampling at batch 1024/2048 and micro-batched training (batch 32, micro-batch 8).
Results from one H100 are in outputs/bench/gpu_lookalikes.json and the README."""
import json, os, sys, time
sys.path.insert(0, "lib")
import numpy as np
import torch
from transformers import AutoModelForCausalLM, GPTNeoXConfig, Qwen2Config
from resurface.compute import device as dev
from resurface.builders.lookalikes import family_tokenizer
from resurface.lm.training import train_lm

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
OUT = os.environ.get("OUT", "/tmp")
results = {}


def peak_gib() -> float:
    return round(torch.cuda.max_memory_allocated() / 2**30, 1)


def pythia(hidden, layers, heads):
    return GPTNeoXConfig(vocab_size=50304, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                         intermediate_size=4 * hidden, max_position_embeddings=2048, rotary_pct=0.25,
                         rotary_emb_base=10000, use_parallel_residual=True, tie_word_embeddings=False,
                         bos_token_id=0, eos_token_id=0)


def part_b():
    from resurface.lm.sampler import sample_documents
    dev.use("cuda", "bfloat16")
    configs = {
        "pythia-160m": pythia(768, 12, 12),
        "pythia-410m": pythia(1024, 24, 16),
        "qwen2.5-0.5b": Qwen2Config(vocab_size=151936, hidden_size=896, num_hidden_layers=24, num_attention_heads=14,
                                    num_key_value_heads=2, intermediate_size=4864, max_position_embeddings=32768,
                                    tie_word_embeddings=True, bos_token_id=151643, eos_token_id=151643),
    }
    out = results.setdefault("hub_lookalikes", [])
    for name, cfg in configs.items():
        print(name, time.strftime("%X"), flush=True)
        tok = family_tokenizer("gpt_neox", min(cfg.vocab_size, 50304))
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(cfg)
        n = sum(p.numel() for p in model.parameters())
        m16 = model.to("cuda", torch.bfloat16).eval()
        row = {"model": name, "params": n}
        for backend, bs in (("fast", 256), ("hf", 256)):
            torch.cuda.reset_peak_memory_stats()
            try:
                _, prov = sample_documents(m16, tok, n_tokens=1, temperature=1.0, max_new_tokens=64, batch_size=bs,
                                           seed=0, backend=backend)  # warm-up batch (compiles kernels)
                _, prov = sample_documents(m16, tok, n_tokens=1, temperature=1.0, max_new_tokens=512, batch_size=bs,
                                           seed=1, backend=backend)
                row[f"sample_{backend}_b{bs}_tok_s"] = prov["tokens_per_s"]
                row[f"sample_{backend}_b{bs}_peak_gib"] = peak_gib()
            except Exception as e:  # noqa
                row[f"sample_{backend}_b{bs}_error"] = repr(e)[:200]
            print(json.dumps(row), time.strftime("%X"), flush=True)
        del m16
        torch.cuda.empty_cache()
        if name.startswith("qwen"):
            out.append(row)
            continue
        model = AutoModelForCausalLM.from_config(cfg).to("cuda")  # fp32 weights, bf16 autocast (as finetune)
        for bs in (32, 8):
            torch.cuda.reset_peak_memory_stats()
            try:
                blocks = np.random.default_rng(0).integers(2, 50000, (bs * 6, 2048)).astype(np.int32)
                train_lm(model, blocks[: bs * 2], steps=2, batch_size=bs, lr=1e-5, warmup_steps=1, desc="warm")
                torch.cuda.synchronize()
                r = train_lm(model, blocks, steps=6, batch_size=bs, lr=1e-5, warmup_steps=1, desc="train")
                row[f"train_b{bs}x2048_tok_s"] = round(r["tokens_per_s"])
                row[f"train_b{bs}x2048_peak_gib"] = peak_gib()
                break
            except torch.OutOfMemoryError:
                row[f"train_b{bs}x2048_error"] = "out of memory"
                torch.cuda.empty_cache()
        print(json.dumps(row), flush=True)
        out.append(row)
        del model
        torch.cuda.empty_cache()
        json.dump(results, open(f"{OUT}/results.json", "w"), indent=1)


def part_c():
    from resurface.lm.sampler import sample_documents
    dev.use("cuda", "bfloat16")
    out = results.setdefault("scaling", [])
    for name, cfg, batches in (("pythia-160m", pythia(768, 12, 12), (1024, 2048)), ("pythia-410m", pythia(1024, 24, 16), (1024,))):
        tok = family_tokenizer("gpt_neox", 50304)
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(cfg)
        m16 = model.to("cuda", torch.bfloat16).eval()
        for bs in batches:
            torch.cuda.reset_peak_memory_stats()
            _, prov = sample_documents(m16, tok, n_tokens=1, temperature=1.0, max_new_tokens=512, batch_size=bs, seed=1)
            row = {"model": name, "batch": bs, "tok_s": prov["tokens_per_s"],
                   "peak_gib": peak_gib()}
            print(json.dumps(row), flush=True); out.append(row)
        del m16; torch.cuda.empty_cache()
        model = AutoModelForCausalLM.from_config(cfg).to("cuda")
        for bs, micro in ((32, 8),):
            torch.cuda.reset_peak_memory_stats()
            blocks = np.random.default_rng(0).integers(2, 50000, (bs * 4, 2048)).astype(np.int32)
            train_lm(model, blocks[:bs], steps=1, batch_size=bs, lr=1e-5, warmup_steps=1, micro_batch_size=micro)
            r = train_lm(model, blocks, steps=3, batch_size=bs, lr=1e-5, warmup_steps=1, micro_batch_size=micro)
            row = {"model": name, "train_batch": bs, "micro": micro, "tok_s": round(r["tokens_per_s"]),
                   "peak_gib": peak_gib()}
            print(json.dumps(row), flush=True); out.append(row)
        del model; torch.cuda.empty_cache()
        json.dump(results, open(f"{OUT}/results.json", "w"), indent=1)


if __name__ == "__main__":
    print(torch.__version__, torch.cuda.get_device_name(0))
    for part in sys.argv[1:]:
        t0 = time.time()
        {"b": part_b, "c": part_c}[part]()
        print(f"part {part}: {time.time() - t0:.0f} s", flush=True)
        json.dump(results, open(f"{OUT}/results.json", "w"), indent=1)
