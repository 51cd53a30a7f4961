"""k-extractability, as in Pythia's memorization work (Biderman et al., 2023).

A sequence is split into a `prefix_len`-token prefix and its true next
`suffix_len` tokens; the model decodes greedily from the prefix; the sequence is
*extracted* when every generated token equals the true one. The per-sequence
score is the fraction of matching tokens.
"""
from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from .sampling import decode


def extraction(model, sequences: list[list[int]], prefix_len: int = 32, suffix_len: int = 32,
               batch_size: int = 64) -> dict[str, np.ndarray]:
    """Greedy extraction per sequence: `extracted` (bool) and `match_fraction` (0..1)."""
    short = [i for i, s in enumerate(sequences) if len(s) < prefix_len + suffix_len]
    if short:
        raise ValueError(f"{len(short)} sequences are shorter than prefix_len + suffix_len = "
                         f"{prefix_len + suffix_len} tokens")
    seqs = torch.tensor([s[: prefix_len + suffix_len] for s in sequences], dtype=torch.long)
    matches = []
    for i in tqdm(range(0, len(seqs), batch_size), desc="extract", leave=False, mininterval=2):
        batch = seqs[i:i + batch_size]
        new = decode(model, batch[:, :prefix_len], suffix_len, greedy=True)
        matches.append((new == batch[:, prefix_len:]).float())  # decode returns CPU tokens
    m = torch.cat(matches).numpy() if matches else np.zeros((0, suffix_len))
    return {"extracted": m.min(axis=1) == 1.0 if len(m) else np.zeros(0, bool),
            "match_fraction": m.mean(axis=1) if len(m) else np.zeros(0)}


def canary_extraction(model, canaries: list[dict], prefix_len: int, suffix_len: int, batch_size: int = 64):
    """One row per canary: id, count, split, extracted, match_fraction."""
    import pandas as pd
    res = extraction(model, [c["token_ids"] for c in canaries], prefix_len, suffix_len, batch_size)
    return pd.DataFrame({"canary_id": [c["canary_id"] for c in canaries], "count": [c["count"] for c in canaries],
                         "split": [c["split"] for c in canaries], "extracted": res["extracted"],
                         "match_fraction": res["match_fraction"]})


def measure_canaries(cache, model_art, subdir: str, canaries_art, prefix_len: int, suffix_len: int,
                     batch_size: int, label: str):
    """Cached per-canary extraction of one model (a zoo model or a fine-tuned student)."""
    from .canaries import load_canaries
    from .zoo import load_model
    # built in the worker pool, one thread (session 6 on; before, the kernel's threads: other float rounding)
    cfg = {"subdir": subdir, "prefix_len": prefix_len, "suffix_len": suffix_len, "threads": 1}

    def build(tmp):
        df = canary_extraction(load_model(model_art.path / subdir), load_canaries(canaries_art), prefix_len,
                               suffix_len, batch_size)
        (tmp / "extraction.json").write_text(df.to_json(orient="records"))
        return {"heldout_rate": float(df[df.split == "heldout"].extracted.mean())}

    return cache.get_or_build("memorization", label, cfg, build, inputs=[model_art, canaries_art],
                              stage="memorization")


def memorized_probes(cache, hub_id: str, n: int, seed: int, data_files: str | None = None):
    """Hub students: the sequences Pythia is known to have memorized, stored in the canaries' format
    (all `held-out`: nothing guided our choices on them; `count` unknown, recorded as 0)."""
    import json

    def build(tmp):
        seqs = memorized_evals_sequences(hub_id, n, seed, data_files)
        recs = [{"canary_id": i, "count": 0, "split": "heldout", "token_ids": s} for i, s in enumerate(seqs)]
        (tmp / "canaries.json").write_text(json.dumps(recs))
        return {"n": len(recs), "source": MEMORIZED_EVALS, "split": memorized_evals_split(hub_id)}

    return cache.get_or_build("canaries", f"memorized-{hub_id.replace('/', '--')}", {"hub_id": hub_id, "n": n,
                              "seed": seed}, build, stage="memorization")


def load_extraction(art):
    import pandas as pd
    return pd.read_json(art.path / "extraction.json", orient="records")


MEMORIZATION_RULE = (
    "Extraction is measured on the held-out canaries only (the dev canaries may guide parameter choices). "
    "For each fine-tuning run, relative drop = 1 - (held-out extraction rate after) / (rate of the untouched "
    "student), pooled over the duplication counts the untouched student extracts at all; 95 % bootstrap CIs "
    "over runs. The paper's claim holds for a relation when its mean relative drop exceeds 0.95 AND its "
    "headline benchmark delta is kept or improved (the CI's upper end is >= 0). Verdict on `self`: `supported` "
    "when both hold; `not supported` when the drop's CI lies entirely below 0.95 or the delta's CI lies entirely "
    "below zero; `inconclusive` otherwise, and always when the untouched students extract under 10 % of the "
    "held-out canaries (nothing to forget)."
)


def memorization_verdict(runs, base_rate: float, relation: str = "self", seed: int = 0) -> dict:
    """runs: one row per fine-tuning run with columns relation, rate_before, rate_after, headline_delta.

    `base_rate` is the untouched students' pooled held-out extraction rate."""
    import numpy as np
    from .stats import bootstrap_ci
    out = {}
    for rel, g in runs.groupby("relation"):
        before = g["rate_before"].to_numpy(dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            drop = np.where(before > 0, 1 - g["rate_after"].to_numpy(dtype=float) / before, np.nan)
        d_mean, d_lo, d_hi = bootstrap_ci(drop, seed=seed)
        a_mean, a_lo, a_hi = bootstrap_ci(g["rate_after"], seed=seed)
        h_mean, h_lo, h_hi = bootstrap_ci(g["headline_delta"], seed=seed)
        out[rel] = {"n_runs": int(len(g)), "extraction_after": {"mean": a_mean, "ci_low": a_lo, "ci_high": a_hi},
                    "relative_drop": {"mean": d_mean, "ci_low": d_lo, "ci_high": d_hi},
                    "benchmark_delta": {"mean": h_mean, "ci_low": h_lo, "ci_high": h_hi}}
    r = out.get(relation)
    if r is None or not base_rate >= 0.10:
        verdict = "inconclusive"
    else:
        kept = not (r["benchmark_delta"]["ci_high"] < 0) if r["n_runs"] > 1 else r["benchmark_delta"]["mean"] >= 0
        dropped = r["relative_drop"]["mean"] > 0.95
        if dropped and kept:
            verdict = "supported"
        elif r["relative_drop"]["ci_high"] < 0.95 or r["benchmark_delta"]["ci_high"] < 0:
            verdict = "not supported"
        else:
            verdict = "inconclusive"
    return {"verdict": verdict, "rule": MEMORIZATION_RULE, "extraction_before": base_rate, "per_relation": out}


# ------------------------------------------------------------------ real Pythia models

MEMORIZED_EVALS = "EleutherAI/pythia-memorized-evals"


def memorized_evals_split(hub_id: str) -> str:
    """`EleutherAI/pythia-160m-deduped` -> `deduped.160m`; `EleutherAI/pythia-160m` -> `duped.160m`."""
    import re
    m = re.fullmatch(r"(?:.*/)?pythia-(?P<size>[0-9.]+[mb])(?P<dedup>-deduped)?(?:-v0)?", hub_id)
    if not m:
        raise ValueError(f"`{hub_id}` is not a Pythia model id; pythia-memorized-evals covers Pythia models only")
    return f"{'deduped' if m['dedup'] else 'duped'}.{m['size']}"


def memorized_evals_sequences(hub_id: str, n: int, seed: int = 0, data_files: str | None = None) -> list[list[int]]:
    """A seeded sample of `n` sequences that the given Pythia model memorized (Biderman et al., 2023).

    Reads the Hub dataset (needs the network), or `data_files` (a local parquet in the same schema: columns
    `index` and `tokens`), which is how the tests exercise this path offline."""
    from datasets import load_dataset
    split = memorized_evals_split(hub_id)
    if data_files is not None:
        ds = load_dataset("parquet", data_files={split: data_files}, split=split)
    else:
        ds = load_dataset(MEMORIZED_EVALS, split=split)
    idx = np.random.default_rng(seed).permutation(len(ds))[:n]
    return [list(map(int, ds[int(i)]["tokens"])) for i in sorted(idx)]


def per_source_summary(runs, seed: int = 0):
    """One row per (student, source): mean relative drop and benchmark delta with 95 % bootstrap CIs."""
    import pandas as pd
    from .stats import bootstrap_ci
    rows = []
    for (student, source, rel), g in runs.groupby(["student", "source", "relation"]):
        before = g["rate_before"].to_numpy(dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            drop = np.where(before > 0, 1 - g["rate_after"].to_numpy(dtype=float) / before, np.nan)
        d, dlo, dhi = bootstrap_ci(drop, seed=seed)
        h, hlo, hhi = bootstrap_ci(g["headline_delta"], seed=seed)
        rows.append({"student": student, "source": source, "relation": rel, "n_runs": len(g),
                     "rate_before": float(before.mean()), "rate_after": float(g["rate_after"].mean()),
                     "drop_mean": d, "drop_lo": dlo, "drop_hi": dhi, "delta_mean": h, "delta_lo": hlo, "delta_hi": hhi})
    return pd.DataFrame(rows)
