"""How many copies, at what rate and share, make a real-weights twin extract its canaries without writing them?
The design research behind a planted profile, on throwaway passages.

Plants passages of another shuffle of the canary book (`--canary-seed`, never the profile's own) into the profile's
twin at one design point, then measures what a planted profile's choices rest on:
- extraction (32/32 greedy) and suffix NLL of the planted passages, by the twin and by its base model;
- the same for never-planted passages of the book (what planting costs text it did not plant);
- the validity gate: the share of the twin's own BOS-sample tokens inside a >= `memorization.gate_tokens` match with
  a planted passage (notebook 04 judges finding 3 only below `memorization.gate_max`).
Nothing here reads a benchmark item or a result of the profile. Every build goes through the artifact cache (a
design point run again is read back). Appends one row per design point to outputs/bench/planting_pilot.csv.
`--choose` applies the rule below to one profile's rows, fixed before any of them was measured:

    CHOICE_RULE: of the design points whose twin extracts at least 90 % of its planted passages and none of the
    never-planted ones, and whose gate share is at most half of `memorization.gate_max` (room for the profile's
    larger sample), the one with the fewest planting tokens per planted passage; if none qualifies, none is
    chosen and the rows say which condition failed.

    .venv/bin/python scripts/planting_pilot.py planted-smollm2 --passages 24 --share 0.5 --lr 2e-4
    .venv/bin/python scripts/planting_pilot.py planted-smollm2 --passages 24 --share 0.25 --window 0,0.5
    .venv/bin/python scripts/planting_pilot.py planted-smollm2 --choose
"""
from __future__ import annotations

import argparse
import math

import pandas as pd

from resurface.builders import zoo
from resurface.builders.canaries import load_canaries
from resurface.builders.tokenizers import load_tokenizer
from resurface.frame.cache import Cache
from resurface.frame.paths import ROOT, cache_root
from resurface.frame.profiles import load_config
from resurface.lm.extraction import regurgitation_share
from resurface.lm.models import load_model
from resurface.lm.sampler import sample_documents
from resurface.study.zoo_tables import zoo_canary_extraction


def pilot_config(profile: str, passages: int, controls: int, copies: int, share: float, lr: float,
                 window: tuple[float, float], canary_seed: int, extra: dict | None = None):
    """The profile (with `extra` overrides) with its twin planted at one design point, on `passages` throwaway
    canaries: steps chosen so that the canaries make up `share` of the planting tokens."""
    base = load_config(profile, extra)
    twin = base.memorization.twin
    if twin is None or not base.zoo.models[twin].is_planted:
        raise SystemExit(f"profile `{profile}` has no planted twin (`memorization.twin` with `init_from`)")
    if canary_seed == base.canaries.seed:
        raise SystemExit(f"--canary-seed {canary_seed} is the profile's own: the pilot must not see its passages")
    m, k = base.zoo.models[twin], base.canaries
    steps = math.ceil(passages * copies * k.length_tokens / (share * m.batch_size * base.zoo.seq_len))
    cfg = load_config(profile, {
        **(extra or {}), "canaries.seed": canary_seed, "canaries.counts": [copies], "canaries.per_count": passages,
        "canaries.controls": controls, "canaries.window": list(window),
        "canaries.max_share": min(0.99, max(share, k.max_share)), f"zoo.models.{twin}.steps": steps,
        f"zoo.models.{twin}.lr": lr})
    return cfg, twin


def measure(cfg, cache: Cache, twin: str, sample_tokens: int, seed: int = 0) -> dict:
    """One design point: planting (cached), extraction by the twin and its base, the gate on the twin's samples."""
    corpora = zoo.build_corpora(cfg, cache)
    canaries = zoo.build_canaries(cfg, cache, {})
    planted = zoo.train_models(cfg, cache, corpora, {}, canaries)[twin]
    init_from = cfg.zoo.models[twin].init_from
    the_zoo = zoo.Zoo(cfg, corpora, {}, canaries, {twin: planted, init_from: zoo._external(cfg, cache, init_from)})
    mem = cfg.memorization
    ext = zoo_canary_extraction(cache, the_zoo, mem.prefix_len, mem.suffix_len, mem.batch_size)
    # the gate's sample, drawn as the profile samples (T = 1), smaller than a corpus: a pilot reads a share
    s, tok = cfg.sampling, load_tokenizer(planted.path / "main")
    docs, prov = sample_documents(load_model(planted.path / "main"), tok, n_tokens=sample_tokens, temperature=1.0,
                                  top_k=s.top_k, top_p=s.top_p, max_new_tokens=s.max_new_tokens,
                                  batch_size=s.batch_size, seed=seed, desc=f"sample {twin}")
    gate = regurgitation_share(docs, [c["token_ids"] for c in load_canaries(canaries, planted_only=True)],
                               mem.gate_tokens)
    row = {"twin": twin, "init_from": init_from, "copies": cfg.canaries.counts[0],
           "passages": cfg.canaries.per_count, "lr": cfg.zoo.models[twin].lr, "steps": cfg.zoo.models[twin].steps,
           "planting_tokens": planted.meta["planting_tokens"],
           "window": f"{cfg.canaries.window[0]}-{cfg.canaries.window[1]}", "canary_share": planted.meta["canary_share"],
           "planting_s": planted.meta["seconds"], "planting_tok_s": planted.meta["tokens_per_s"]}
    for model, label in ((twin, "twin"), (init_from, "base")):
        for planted_or_not, part in (("planted", ext[(ext.model == model) & (ext["count"] > 0)]),
                                     ("never_planted", ext[(ext.model == model) & (ext["count"] == 0)])):
            n = int(part["n"].sum())
            row[f"{label}_{planted_or_not}_extracted"] = f"{round((part.extraction_rate * part.n).sum())}/{n}"
            row[f"{label}_{planted_or_not}_nll"] = round(float((part.suffix_nll * part.n).sum() / max(n, 1)), 3)
    row.update(gate_share=round(gate["share"], 4), gate_documents=f"{gate['documents_with_a_match']}/"
               f"{gate['documents']}", sample_tokens=gate["tokens"],
               sampling_tok_s=prov["tokens_per_s"])
    return row


def fraction(cell: str) -> float:
    """'22/24' -> 0.9167."""
    k, n = (int(x) for x in str(cell).split("/"))
    return k / n if n else float("nan")


def choose(table: pd.DataFrame, gate_max: float) -> pd.DataFrame:
    """CHOICE_RULE over one profile's design points: each row with the conditions it meets, the chosen one marked
    (planting tokens compared per planted passage, which is what scales to the profile's own passages)."""
    t = table.reset_index(drop=True)
    t = t.assign(extracts=t["twin_planted_extracted"].map(fraction) >= 0.9,
                 spares_the_rest=t["twin_never_planted_extracted"].map(fraction) == 0,
                 gate_passes=t["gate_share"] <= gate_max / 2,
                 tokens_per_passage=t["planting_tokens"] / t["passages"], chosen=False)
    ok = t[t.extracts & t.spares_the_rest & t.gate_passes]
    if len(ok):
        t.loc[ok["tokens_per_passage"].idxmin(), "chosen"] = True
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("profile", help="a profile with a planted twin (params/NAME.yaml)")
    ap.add_argument("--passages", type=int, default=24, help="throwaway canaries planted")
    ap.add_argument("--controls", type=int, default=16, help="never-planted passages measured beside them")
    ap.add_argument("--copies", type=int, default=16)
    ap.add_argument("--share", type=float, default=0.5, help="canary tokens / planting tokens")
    ap.add_argument("--lr", type=float, default=2e-4, help="peak planting rate")
    ap.add_argument("--window", default="0,1", help="where in the planting run the copies go (fractions)")
    ap.add_argument("--canary-seed", type=int, default=7, help="the passages' shuffle (not the profile's)")
    ap.add_argument("--sample-tokens", type=int, default=8192, help="twin BOS-sample tokens the gate reads")
    ap.add_argument("--out", default="planting_pilot.csv", help="file name under outputs/bench/")
    ap.add_argument("--choose", action="store_true", help="apply CHOICE_RULE to the profile's rows; plant nothing")
    args = ap.parse_args()
    out = ROOT / "outputs" / "bench" / args.out
    if args.choose:
        rows = pd.read_csv(out)
        print(choose(rows[rows["profile"] == args.profile], load_config(args.profile).memorization.gate_max)
              .to_string())
        return
    window = tuple(float(x) for x in args.window.split(","))
    cfg, twin = pilot_config(args.profile, args.passages, args.controls, args.copies, args.share, args.lr, window,
                             args.canary_seed)
    row = {"profile": args.profile, **measure(cfg, Cache(cache_root(cfg.cache_dir)), twin, args.sample_tokens)}
    table = pd.concat([pd.read_csv(out), pd.DataFrame([row])]) if out.exists() else pd.DataFrame([row])
    table.to_csv(out, index=False)
    print(pd.DataFrame([row]).T.to_string(header=False))
    print(out)


if __name__ == "__main__":
    main()
