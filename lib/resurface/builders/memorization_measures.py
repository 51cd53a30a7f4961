"""Extraction measurements as cached artifacts: every canary of the zoo measured on one model (a zoo model or a
fine-tuned student), and the probe sets of Hub students (the sequences Pythia is known to have memorized).
The measuring itself is lm/extraction.py."""
from __future__ import annotations

import numpy as np

from resurface.builders.canaries import load_canaries
from resurface.compute.pool import BUILD_THREADS
from resurface.lm.extraction import canary_extraction
from resurface.lm.models import load_model


# A builder's own format version, in its config (the one style, as zoo.PRETRAIN_FORMAT). Bump when what is
# measured per canary changes. (Its key is "measures": renaming the key would re-key every extraction.)
EXTRACTION_FORMAT = 2


def measure_canaries(cache, model_art, subdir: str, canaries_art, prefix_len: int, suffix_len: int,
                     batch_size: int, label: str):
    """Cached per-canary extraction of one model (a zoo model or a fine-tuned student)."""

    # built in the worker pool, one thread (the kernel's threads would give other float rounding)
    cfg = {"subdir": subdir, "prefix_len": prefix_len, "suffix_len": suffix_len, "threads": BUILD_THREADS,
           "measures": EXTRACTION_FORMAT}

    def build(tmp):
        df = canary_extraction(load_model(model_art.path / subdir), load_canaries(canaries_art), prefix_len,
                               suffix_len, batch_size)
        (tmp / "extraction.json").write_text(df.to_json(orient="records"))
        return {"heldout_rate": float(df[df.split == "heldout"].extracted.mean()) if (df.split == "heldout").any()
                else float("nan")}

    return cache.get_or_build("memorization", label, cfg, build, inputs=[model_art, canaries_art],
                              stage="memorization")


def memorized_probes(cache, hub_id: str, n: int, seed: int, data_files: str | None = None, pinned=None):
    """Hub students: the sequences Pythia is known to have memorized, stored in the canaries' format
    (all `held-out`: nothing guided our choices on them; `count` unknown, recorded as 0). `pinned` (a HubData)
    reads them from a pinned revision of the data set."""
    import json

    if pinned is not None and data_files is None:
        from resurface.builders.hub import dataset_files
        data_files = [str(f) for f in dataset_files(pinned, memorized_evals_split(hub_id))]

    def build(tmp):
        seqs = memorized_evals_sequences(hub_id, n, seed, data_files)
        recs = [{"canary_id": i, "count": 0, "split": "heldout", "token_ids": s} for i, s in enumerate(seqs)]
        (tmp / "canaries.json").write_text(json.dumps(recs))
        return {"n": len(recs), "source": MEMORIZED_EVALS, "split": memorized_evals_split(hub_id)}

    key = {"hub_id": hub_id, "n": n, "seed": seed, **({"pinned": pinned.model_dump()} if pinned else {})}
    return cache.get_or_build("canaries", f"memorized-{hub_id.replace('/', '--')}", key, build, stage="memorization")


EXTRACTION_COLUMNS = {"canary_id": "int64", "count": "int64", "split": "object", "extracted": "bool",
                      "match_fraction": "float64", "suffix_nll": "float64"}


def load_extraction(art):
    """Per-probe extraction rows (with every column even when the set was empty)."""
    import pandas as pd
    df = pd.read_json(art.path / "extraction.json", orient="records")
    return df if len(df) else pd.DataFrame({c: pd.Series(dtype=t) for c, t in EXTRACTION_COLUMNS.items()})


# ------------------------------------------------------------------ real Pythia models

MEMORIZED_EVALS = "EleutherAI/pythia-memorized-evals"


def memorized_evals_split(hub_id: str) -> str:
    """`EleutherAI/pythia-160m-deduped` -> `deduped.160m`; `EleutherAI/pythia-160m` -> `duped.160m`."""
    import re
    m = re.fullmatch(r"(?:.*/)?pythia-(?P<size>[0-9.]+[mb])(?P<dedup>-deduped)?(?:-v0)?", hub_id)
    if not m:
        raise ValueError(f"`{hub_id}` is not a Pythia model id; pythia-memorized-evals covers Pythia models only")
    return f"{'deduped' if m['dedup'] else 'duped'}.{m['size']}"


def memorized_evals_sequences(hub_id: str, n: int, seed: int = 0, data_files: str | list[str] | None = None) -> list[list[int]]:
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
