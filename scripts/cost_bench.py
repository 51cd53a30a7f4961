"""`resurface bench [--profile default]` (or `.venv/bin/python scripts/cost_bench.py`): what the study costs on
this machine. A tool beside the package, like nanoGPT's bench.py: nothing in `resurface` imports it.

Measures, in one run:
- the machine's fp32 matmul throughput (the FLOP ceiling every ratio below refers to);
- BOS sampling tokens/s: this project's sampler against `model.generate`, same model, batch, temperature;
- training tokens/s and model FLOP utilisation (PaLM's model FLOPs x tokens/s over the ceiling) per zoo
  architecture, and what the worker pool buys (single-threaded processes side by side against one process);
- how cost grows: sampling and training seconds against tokens for GPTNeoX models of growing size,
  with a fitted seconds-per-token-per-parameter rate to predict a bigger run (figure + CSV);
- stage-by-stage and per-notebook wall time of the profile's last study run (outputs/<profile>/tables/timings.csv).
Writes outputs/bench/bench.json, bench.md, scaling.csv and scaling.png/.pdf.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import json
import platform
import time

import numpy as np
import torch

from resurface.frame.profiles import load_config
from resurface.frame.paths import outputs_dir
from resurface.lm.training import set_threads, train_lm


def matmul_flops(n: int = 1024, seconds: float = 0.5, trials: int = 6) -> float:
    """fp32 matmul FLOP/s, the best of several short trials: a shared machine has slow moments, and a
    ceiling measured in one of them would inflate every utilisation below."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = 0.0
    for _ in range(trials):
        reps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            a @ b
            reps += 1
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - t0))
    return best


def _model(m, vocab: int, seq_len: int):
    from transformers import AutoModelForCausalLM
    from resurface.lm.models import hf_config
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(hf_config(m, vocab, seq_len)).eval()


def n_params(model, non_embedding: bool = True) -> int:
    total = sum(p.numel() for p in model.parameters())
    if non_embedding:
        total -= model.get_input_embeddings().weight.numel()
    return total


def matmul_params(model) -> int:
    """Weights that take part in a matrix product per token: every linear layer, the output head
    included (also when it is tied to the input embedding); not the embedding look-ups."""
    from transformers.pytorch_utils import Conv1D  # GPT-2's linear layers
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, (torch.nn.Linear, Conv1D)))


def flops_per_token(model, context: int, training: bool) -> float:
    """Model FLOPs per token, PaLM's accounting: 2 x matmul weights + 4 x layers x width x context
    for the attention products (forward); three times that for forward + backward."""
    c = model.config
    layers = getattr(c, "num_hidden_layers", None) or c.n_layer
    width = getattr(c, "hidden_size", None) or c.n_embd
    forward = 2 * matmul_params(model) + 4 * layers * width * context
    return 3 * forward if training else forward


def bench_sampling(model, batch: int, new_tokens: int, repeats: int = 2) -> dict:
    from resurface.lm.sampler import decode
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


def _training_in_worker(m, vocab: int, seq_len: int, batch: int, steps: int, threads: int, barrier) -> float:
    """One process of `bench_workers`: train with `threads` threads once every process is ready."""
    torch.set_num_threads(threads)
    model = _model(m, vocab, seq_len).train()
    blocks = np.random.default_rng(0).integers(0, vocab, (batch * steps, seq_len)).astype(np.uint16)
    train_lm(model, blocks, steps=2, batch_size=batch, lr=1e-4, warmup_steps=0)  # warm-up
    barrier.wait()  # the processes train at the same time
    return train_lm(model, blocks, steps=steps, batch_size=batch, lr=1e-4, warmup_steps=0)["tokens_per_s"]


def bench_workers(m, vocab: int, seq_len: int, batch: int, cores: int, steps: int = 16) -> dict:
    """What the worker pool buys: `cores` single-threaded processes training side by side against one
    process with `cores` threads (tokens/s summed over processes; same model, batch and steps)."""
    import multiprocessing
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager:
        out = {}
        for label, procs, threads in (("one_process", 1, cores), ("workers", cores, 1)):
            barrier = manager.Barrier(procs)
            with ctx.Pool(procs) as pool:
                tps = pool.starmap(_training_in_worker,
                                   [(m, vocab, seq_len, batch, steps, threads, barrier)] * procs)
            out[label] = float(sum(tps))
    out["ratio"] = out["workers"] / out["one_process"]
    return out


SCALING_SHAPES = ((2, 64), (4, 128), (4, 256), (6, 384))  # (layers, width): ~0.6M to ~14M parameters


def bench_scaling(vocab: int, seq_len: int, batch: int = 16, sample_batch: int = 256) -> list[dict]:
    """Seconds for growing token counts, training and sampling, per model size (time should be linear in tokens)."""
    from resurface.frame.schema import ModelConfig
    from resurface.lm.sampler import decode
    rows = []
    for layers, width in SCALING_SHAPES:
        m = ModelConfig(kind="lineage", architecture="gpt_neox", tokenizer="t", layers=layers, width=width, heads=4)
        model = _model(m, vocab, seq_len)
        p = n_params(model, non_embedding=False)
        blocks = np.random.default_rng(0).integers(0, vocab, (batch * 16, seq_len)).astype(np.uint16)
        train_lm(model, blocks, steps=1, batch_size=batch, lr=1e-4, warmup_steps=0)  # warm-up
        for steps in (2, 4, 8):
            r = train_lm(model, blocks, steps=steps, batch_size=batch, lr=1e-4, warmup_steps=0)
            rows.append({"activity": "training", "layers": layers, "width": width, "params": p,
                         "tokens": r["tokens"], "seconds": r["seconds"]})
        model.eval()
        bos = torch.zeros(sample_batch, 1, dtype=torch.long)
        decode(model, bos, 8)  # warm-up
        for new in (32, 64, 127):
            t0 = time.perf_counter()
            decode(model, bos, new, temperature=1.0, generator=torch.Generator().manual_seed(0))
            rows.append({"activity": "sampling", "layers": layers, "width": width, "params": p,
                         "tokens": sample_batch * new, "seconds": time.perf_counter() - t0})
    return rows


def scaling_fit(rows: list[dict]) -> dict:
    """Per activity, least squares of seconds on tokens x params: seconds ~ rate * tokens * params."""
    out = {}
    for act in ("training", "sampling"):
        r = [x for x in rows if x["activity"] == act]
        work = np.array([x["tokens"] * x["params"] for x in r], float)
        sec = np.array([x["seconds"] for x in r], float)
        rate = float(work @ sec / (work @ work))
        out[act] = {"seconds_per_token_param": rate,
                    "r2": float(1 - ((sec - rate * work) ** 2).sum() / ((sec - sec.mean()) ** 2).sum())}
    return out


def scaling_figure(rows: list[dict]):
    import pandas as pd
    import seaborn as sns
    from resurface.study.figures import figure, set_style
    set_style()
    df = pd.DataFrame(rows)
    df["model"] = df.apply(lambda r: f"{r['layers']}x{r['width']} ({r['params'] / 1e6:.1f}M)", axis=1)
    fig, axes = figure("double", aspect=0.38, ncols=2)
    for ax, act in zip(axes, ("training", "sampling")):
        sns.lineplot(data=df[df["activity"] == act], x="tokens", y="seconds", hue="model", marker="o", ax=ax,
                     linewidth=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("tokens" + (" (batch 16 x 128)" if act == "training" else " generated (batch 256)"))
        ax.set_ylabel("wall seconds")
        ax.set_title(f"{act} cost on this machine")
    return fig


def bench_evaluation(cfg, models: list[str]) -> list[dict]:
    """Items per second of this project's lm-eval backend against lm-eval's `hf`, side by side, on the profile's
    dev tasks and models (read from the study's cache: run the study first), one thread as in the worker pool."""
    import time
    from resurface.frame.cache import Cache
    from resurface.builders.evaluations import run_lm_eval
    from resurface.builders.benchmarks import write_task_yamls
    from resurface.frame.paths import cache_root
    from resurface.builders.zoo import build_zoo
    from resurface.study.zoo_checks import dev_tasks
    import tempfile
    from pathlib import Path
    cache = Cache(cache_root(cfg.cache_dir))
    zoo = build_zoo(cfg, cache)  # from the cache after a study run
    tasks = dev_tasks(cfg, cache, zoo)
    from lm_eval.models.huggingface import HFLM
    from resurface.lm.lm_backend import ForwardPassLM
    rows = []
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with tempfile.TemporaryDirectory() as tmp, _scoring_clock(HFLM) as hf_clock, \
                _scoring_clock(ForwardPassLM) as our_clock:
            clocks = {"hf": hf_clock, "resurface": our_clock}
            names = write_task_yamls(tasks, Path(tmp))
            for name in models:
                for task in names:
                    n = tasks.meta["items"].get(task.removeprefix("rs_"), cfg.benchmarks.ppl_documents)
                    got, scoring = {}, {}
                    for backend in ("hf", "resurface", "hf", "resurface"):  # interleaved: machine drift hits both
                        clocks[backend][0] = 0.0
                        t0 = time.perf_counter()
                        run_lm_eval(zoo.model_path(name), Path(tmp), [task], cfg.benchmarks.batch_size,
                                    backend=backend)
                        got.setdefault(backend, []).append(time.perf_counter() - t0)
                        scoring.setdefault(backend, []).append(clocks[backend][0])
                    hf, ours = min(got["hf"]), min(got["resurface"])
                    hf_s, ours_s = min(scoring["hf"]), min(scoring["resurface"])
                    rows.append({"model": name, "task": task.removeprefix("rs_"), "items": n,
                                 "hf_items_per_s": n / hf, "resurface_items_per_s": n / ours, "ratio": hf / ours,
                                 "hf_scoring_s": hf_s, "resurface_scoring_s": ours_s,
                                 "scoring_ratio": hf_s / ours_s})
    finally:
        torch.set_num_threads(old)
    return rows


@contextlib.contextmanager
def _scoring_clock(cls):
    """Seconds spent inside a backend's own scoring methods (what the backend decides; lm-eval's task set-up,
    request building, metrics and the model's loading are outside), summed into clock[0]."""
    clock, depth = [0.0], [0]
    saved = {m: cls.__dict__[m] for m in ("loglikelihood", "loglikelihood_rolling") if m in cls.__dict__}

    def timed(fn):
        @functools.wraps(fn)
        def run(self, *a, **k):
            depth[0] += 1
            t0 = time.perf_counter()
            try:
                return fn(self, *a, **k)
            finally:
                depth[0] -= 1
                if depth[0] == 0:  # one method calling the other is counted once
                    clock[0] += time.perf_counter() - t0
        return run

    for m, fn in saved.items():
        setattr(cls, m, timed(fn))
    try:
        yield clock
    finally:
        for m, fn in saved.items():
            setattr(cls, m, fn)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="resurface bench", description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="default")
    ap.add_argument("--batch", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--only", choices=["evaluation"], help="run one part of the benchmark")
    args = ap.parse_args(argv)
    cfg = load_config(args.profile)
    threads = set_threads(cfg.threads)
    ceiling = matmul_flops()
    report = {"machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": threads,
                          "matmul_fp32_gflops": ceiling / 1e9}, "sampling": [], "training": [], "workers": []}
    report["evaluation"] = bench_evaluation(cfg, list(cfg.transfer.students))
    if args.only == "evaluation":
        return _write_evaluation(report["evaluation"])
    vocab = max((t.vocab_size for t in cfg.tokenizers.values()), default=4096)
    seq = cfg.zoo.seq_len
    for name, m in cfg.zoo.models.items():
        if not m.is_local:
            continue
        model = _model(m, vocab, seq)
        p = n_params(model, non_embedding=False)
        if m.kind == "lineage":
            new = min(cfg.sampling.max_new_tokens, seq - 1)
            for b in args.batch:
                s = bench_sampling(model, b, new)
                report["sampling"].append({"model": name, "params": p, "batch": b, **s, "sampler_flop_fraction":
                                           flops_per_token(model, new // 2, False) * s["project_sampler"] / ceiling})
        tps = bench_training(model.train(), vocab, seq, m.batch_size)
        report["training"].append({"model": name, "architecture": m.architecture, "params": p,
                                   "matmul_params": matmul_params(model), "tokens_per_s": tps,
                                   "mfu": flops_per_token(model, seq, True) * tps / ceiling})
        if m.kind == "lineage" and threads > 1:
            w = bench_workers(m, vocab, seq, cfg.finetune.batch_size, threads)
            report["workers"].append({"model": name, "processes": threads, **w})
    report["scaling"] = bench_scaling(vocab, seq)
    # measured again at the end: if the machine was faster then, every ratio above uses the higher ceiling
    report["machine"]["matmul_fp32_gflops_end"] = matmul_flops() / 1e9
    if report["machine"]["matmul_fp32_gflops_end"] * 1e9 > ceiling:
        rescale = ceiling / (report["machine"]["matmul_fp32_gflops_end"] * 1e9)
        ceiling = report["machine"]["matmul_fp32_gflops_end"] * 1e9
        for row in report["sampling"]:
            row["sampler_flop_fraction"] *= rescale
        for row in report["training"]:
            row["mfu"] *= rescale
    report["machine"]["ceiling_gflops_used"] = ceiling / 1e9
    report["scaling_fit"] = scaling_fit(report["scaling"])
    timings = outputs_dir(args.profile) / "tables" / "timings.csv"
    if timings.exists():
        import pandas as pd
        t = pd.read_csv(timings)
        # per stage: what the last run spent, and what building its artifacts cost (from an empty cache)
        built = t[t["status"] != "wall"].drop_duplicates("artifact")
        report["stages"] = (built.groupby("stage")[["seconds", "build_seconds"]].sum()
                            .round(1).reset_index().to_dict("records"))
        report["notebooks"] = (t[t["status"] == "wall"][["notebook", "seconds"]].round(1).to_dict("records"))
    out = outputs_dir("bench")
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(report, indent=1))
    lines = [f"# resurface benchmark ({args.profile})", "",
             f"fp32 matmul ceiling: {ceiling / 1e9:.1f} GFLOP/s on {threads} thread(s) (best of short trials at the "
             f"start, {report['machine']['matmul_fp32_gflops']:.0f}, and the end, "
             f"{report['machine']['matmul_fp32_gflops_end']:.0f})", "",
             "| model | batch | sampler tok/s | generate tok/s | ratio | sampler FLOP fraction |", "|---|---|---|---|---|---|"]
    lines += [f"| {s['model']} | {s['batch']} | {s['project_sampler']:.0f} | {s['hf_generate']:.0f} | "
              f"{s['ratio']:.2f}x | {s['sampler_flop_fraction']:.1%} |" for s in report["sampling"]]
    lines += ["", "MFU: model FLOPs (6 x matmul weights + 12 x layers x width x 128 positions per token, PaLM's "
              "accounting; embedding look-ups are not FLOPs) x tokens/s over the ceiling.", "",
              "| model | params | matmul weights | train tok/s | MFU |", "|---|---|---|---|---|"]
    lines += [f"| {t['model']} | {t['params']:,} | {t['matmul_params']:,} | {t['tokens_per_s']:.0f} | {t['mfu']:.1%} |"
              for t in report["training"]]
    if report["workers"]:
        lines += ["", "The worker pool: fine-tuning tokens/s of single-threaded processes side by side against one "
                  "process using every thread (the zoo and the transfer matrix build this way):", "",
                  "| model | processes | one process tok/s | workers tok/s (sum) | ratio |", "|---|---|---|---|---|"]
        lines += [f"| {w['model']} | {w['processes']} | {w['one_process']:.0f} | {w['workers']:.0f} | "
                  f"{w['ratio']:.2f}x |" for w in report["workers"]]
    import pandas as pd
    pd.DataFrame(report["scaling"]).to_csv(out / "scaling.csv", index=False)
    fig = scaling_figure(report["scaling"])
    for ext in ("png", "pdf"):
        fig.savefig(out / f"scaling.{ext}", dpi=200 if ext == "png" else None, bbox_inches="tight")
    fit = report["scaling_fit"]
    lines += ["", "How cost grows (scaling.png): seconds ~ rate x tokens x parameters, fitted over "
              f"{len(SCALING_SHAPES)} GPTNeoX sizes:", "", "| activity | seconds per (token x parameter) | R² |",
              "|---|---|---|"]
    lines += [f"| {a} | {v['seconds_per_token_param']:.3g} | {v['r2']:.3f} |" for a, v in fit.items()]
    lines += ["", "Example: training a 10M-parameter model on 10M tokens takes about "
              f"{fit['training']['seconds_per_token_param'] * 1e14 / 60:.0f} min here."]
    lines += ["", *_evaluation_lines(report["evaluation"])]
    if "stages" in report:
        lines += ["", f"Stages of the last `{args.profile}` study run (tables/timings.csv):", "",
                  "| stage | seconds in that run | seconds to build from an empty cache |", "|---|---|---|"]
        lines += [f"| {r['stage']} | {r['seconds']} | {r['build_seconds']} |" for r in report["stages"]]
        if report["notebooks"]:
            lines += ["", "Builds in the worker pool overlap; each notebook's wall time:", "",
                      "| notebook | wall seconds |", "|---|---|"]
            lines += [f"| {r['notebook']} | {r['seconds']} |" for r in report["notebooks"]]
            lines += [f"| all | {sum(r['seconds'] for r in report['notebooks']):.1f} |"]
    (out / "bench.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def _evaluation_lines(rows: list[dict]) -> list[str]:
    lines = ["Evaluation: this project's lm-eval backend (`resurface`: contexts read once, logits only at scored "
             "positions) against lm-eval's `hf`, same model, tasks and items, one thread, best of two interleaved "
             "runs each. *Whole call*: `simple_evaluate` with model loading and lm-eval's task set-up, requests "
             "and metrics, which no backend changes. *Scoring*: the time inside the backend's `loglikelihood` "
             "methods, what the backend decides.", "",
             "| model | task | items | hf items/s | resurface items/s | whole-call ratio | hf scoring s | "
             "resurface scoring s | scoring ratio |", "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['task']} | {r['items']} | {r['hf_items_per_s']:.0f} | "
              f"{r['resurface_items_per_s']:.0f} | {r['ratio']:.2f}x | {r['hf_scoring_s']:.2f} | "
              f"{r['resurface_scoring_s']:.2f} | {r['scoring_ratio']:.2f}x |" for r in rows]
    return lines


def _write_evaluation(rows: list[dict]) -> int:
    out = outputs_dir("bench")
    out.mkdir(parents=True, exist_ok=True)
    (out / "evaluation.json").write_text(json.dumps(rows, indent=1))
    text = "\n".join(_evaluation_lines(rows)) + "\n"
    (out / "evaluation.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
