"""`python -m resurface.bench [--profile default]`: what the study costs on this machine.

Measures, in one run:
- the machine's fp32 matmul throughput (the FLOP ceiling every ratio below refers to);
- BOS sampling tokens/s: this project's sampler against `model.generate`, same model, batch, temperature;
- training tokens/s and model FLOP utilisation (6 x params x tokens/s over the ceiling) per zoo architecture;
- stage-by-stage wall time of the profile's last study run (from outputs/<profile>/tables/timings.csv).
Writes outputs/bench/bench.json and outputs/bench/bench.md.
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch

from .config import load_config
from .paths import outputs_dir
from .training import set_threads, train_lm


def matmul_flops(n: int = 1024, seconds: float = 2.0) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        reps += 1
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def _model(m, vocab: int, seq_len: int):
    from transformers import AutoModelForCausalLM
    from .zoo import hf_config
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(hf_config(m, vocab, seq_len)).eval()


def n_params(model, non_embedding: bool = True) -> int:
    total = sum(p.numel() for p in model.parameters())
    if non_embedding:
        total -= model.get_input_embeddings().weight.numel()
    return total


def bench_sampling(model, batch: int, new_tokens: int, repeats: int = 2) -> dict:
    from .sampling import decode
    bos = torch.zeros(batch, 1, dtype=torch.long)
    out = {}
    for name in ("project_sampler", "hf_generate"):
        best = float("inf")
        for r in range(repeats):
            g = torch.Generator().manual_seed(r)
            t0 = time.perf_counter()
            if name == "project_sampler":
                decode(model, bos, new_tokens, temperature=1.0, generator=g)
            else:
                torch.manual_seed(r)
                with torch.no_grad():
                    model.generate(input_ids=bos, attention_mask=torch.ones_like(bos), do_sample=True, temperature=1.0,
                                   top_k=0, top_p=1.0, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                   pad_token_id=0, eos_token_id=None)
            best = min(best, time.perf_counter() - t0)
        out[name] = batch * new_tokens / best
    out["ratio"] = out["project_sampler"] / out["hf_generate"]
    return out


def bench_training(model, vocab: int, seq_len: int, batch: int, steps: int = 12) -> float:
    blocks = np.random.default_rng(0).integers(0, vocab, (batch * steps, seq_len)).astype(np.uint16)
    train_lm(model, blocks, steps=2, batch_size=batch, lr=1e-4, warmup_steps=0)  # warm-up
    return train_lm(model, blocks, steps=steps, batch_size=batch, lr=1e-4, warmup_steps=0)["tokens_per_s"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="default")
    ap.add_argument("--batch", type=int, nargs="+", default=[256, 512])
    args = ap.parse_args(argv)
    cfg = load_config(args.profile)
    threads = set_threads(cfg.threads)
    ceiling = matmul_flops()
    report = {"machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": threads,
                          "matmul_fp32_gflops": ceiling / 1e9}, "sampling": [], "training": []}
    vocab = max((t.vocab_size for t in cfg.tokenizers.values()), default=4096)
    seq = cfg.zoo.seq_len
    for name, m in cfg.zoo.models.items():
        if not m.is_local:
            continue
        model = _model(m, vocab, seq)
        p = n_params(model, non_embedding=False)
        if m.kind == "lineage":
            for b in args.batch:
                s = bench_sampling(model, b, min(cfg.sampling.max_new_tokens, seq - 1))
                report["sampling"].append({"model": name, "params": p, "batch": b, **s,
                                           "sampler_flop_fraction": 2 * p * s["project_sampler"] / ceiling})
        tps = bench_training(model.train(), vocab, seq, m.batch_size)
        report["training"].append({"model": name, "architecture": m.architecture, "params": p, "tokens_per_s": tps,
                                   "mfu": 6 * p * tps / ceiling})
    timings = outputs_dir(args.profile) / "tables" / "timings.csv"
    if timings.exists():
        import pandas as pd
        t = pd.read_csv(timings)
        report["stages"] = (t.groupby(["stage", "status"])["seconds"].sum().round(1).reset_index()
                            .to_dict("records"))
    out = outputs_dir("bench")
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(report, indent=1))
    lines = [f"# resurface benchmark ({args.profile})", "",
             f"fp32 matmul ceiling: {ceiling / 1e9:.1f} GFLOP/s on {threads} thread(s)", "",
             "| model | batch | sampler tok/s | generate tok/s | ratio | sampler FLOP fraction |", "|---|---|---|---|---|---|"]
    lines += [f"| {s['model']} | {s['batch']} | {s['project_sampler']:.0f} | {s['hf_generate']:.0f} | "
              f"{s['ratio']:.2f}x | {s['sampler_flop_fraction']:.1%} |" for s in report["sampling"]]
    lines += ["", "| model | params | train tok/s | MFU |", "|---|---|---|---|"]
    lines += [f"| {t['model']} | {t['params']:,} | {t['tokens_per_s']:.0f} | {t['mfu']:.1%} |"
              for t in report["training"]]
    (out / "bench.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
