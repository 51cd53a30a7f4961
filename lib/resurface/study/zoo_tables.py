"""What notebook 00 shows of the zoo it built: its corpora, tokenizers and canaries as tables, how well each
canary-trained model extracts its canaries, and a few samples of each model from its start token."""
from __future__ import annotations

import json

from resurface.builders.canaries import load_canaries
from resurface.builders.corpora import SOURCES
from resurface.builders.memorization_measures import load_extraction, measure_canaries
from resurface.builders.tokenizers import load_tokenizer
from resurface.builders.zoo import Zoo, model_size
from resurface.compute.pool import Job, build_all
from resurface.frame.cache import Artifact, Cache
from resurface.lm.models import load_model
from resurface.lm.sampler import sample_documents


def corpus_table(corpora: dict[str, Artifact]):
    import pandas as pd

    rows = []
    for role, a in corpora.items():
        m = a.meta
        srcs = a.path.name  # keyed directory name
        rows.append({"corpus": role, "sources": ", ".join(f"{SOURCES[s].package}@{SOURCES[s].version}"
                                                         for s in _sources_of(a)),
                     "train_docs": m["documents"]["train"], "heldout_docs": m["documents"]["heldout"],
                     "train_MB": round(m["chars"]["train"] / 1e6, 2), "heldout_MB": round(m["chars"]["heldout"] / 1e6, 2),
                     "dup_paragraphs_dropped": m["duplicate_paragraphs_dropped"], "artifact": srcs})
    return pd.DataFrame(rows)


def _sources_of(corpus: Artifact) -> list[str]:
    manifest = json.loads((corpus / "manifest.json").read_text())
    return manifest["config"]["sources"]


def tokenizer_table(tokenizers: dict[str, Artifact]):
    import pandas as pd
    return pd.DataFrame([{"tokenizer": n, **a.meta} for n, a in tokenizers.items()])


def canary_table(canaries: Artifact | None):
    import pandas as pd
    if canaries is None:  # no model of this profile is trained here with canaries
        return pd.DataFrame(columns=["count", "dev", "heldout", "copies_planted"])
    df = pd.DataFrame(load_canaries(canaries))
    return (df.groupby(["count", "split"]).size().unstack(fill_value=0)
            .assign(copies_planted=lambda d: d.sum(axis=1) * d.index).reset_index())


def zoo_canary_extraction(cache: Cache, zoo: Zoo, prefix_len: int, suffix_len: int, batch_size: int = 64):
    """Extraction and suffix NLL of the canaries by every canary-trained zoo model, per duplication count (count 0:
    the never-planted control passages, the NLL a passage has without being memorized).

    Measured the one way every extraction is: a cached build in the worker pool, one thread. Notebook 04's
    "before" of the twin is this very artifact (`<model>-base`), read back rather than measured again."""
    import pandas as pd

    if zoo.canaries is None:  # no model here was trained with canaries (e.g. a Hub profile)
        return pd.DataFrame(columns=["model", "count", "split", "extraction_rate", "mean_match", "suffix_nll", "n"])
    names = [n for n, m in zoo.cfg.zoo.models.items() if n in zoo.models and m.canaries]
    # a planted twin's base model too: the canaries must be unknown to it before planting
    names += [m.init_from for n, m in zoo.cfg.zoo.models.items() if n in names and m.is_planted]
    jobs = [Job(model_size(zoo.cfg.zoo.models[n]), f"{n}-base", measure_canaries,
                (zoo.models[n], "main", zoo.canaries, prefix_len, suffix_len, batch_size, f"{n}-base")) for n in names]
    done = build_all(cache, jobs, zoo.cfg.workers, desc="canary extraction by the zoo")
    per = pd.concat([load_extraction(done[f"{n}-base"]).assign(model=n) for n in names], ignore_index=True)
    return (per.groupby(["model", "count", "split"])
            .agg(extraction_rate=("extracted", "mean"), mean_match=("match_fraction", "mean"),
                 suffix_nll=("suffix_nll", "mean"), n=("extracted", "size"))
            .reset_index())


def preview_samples(zoo: Zoo, n: int = 2, max_new_tokens: int = 60, seed: int = 0):
    """A few unconditional samples per model, to see what each source 'sounds like'."""
    import pandas as pd

    rows = []
    for name in zoo.models:
        model, tok = load_model(zoo.model_path(name)), load_tokenizer(zoo.model_path(name))
        docs, _ = sample_documents(model, tok, n_tokens=1, temperature=1.0, batch_size=n,
                                   max_new_tokens=min(max_new_tokens, zoo.cfg.zoo.seq_len - 1), seed=seed)
        rows += [{"model": name, "sample": tok.decode(d)} for d in docs]
    return pd.DataFrame(rows)
