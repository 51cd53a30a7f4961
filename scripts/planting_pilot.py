"""How many copies, at what rate and share, make a real-weights twin extract its canaries without writing them?
The design research behind a planted profile, on throwaway passages.

Plants passages of another shuffle of the canary book (`--canary-seed`, never the profile's own) into the profile's
twin at one design point, then measures what a planted profile's choices rest on:
- extraction (32/32 greedy) and suffix NLL of the planted passages, by the twin and by its base model;
- the same for never-planted passages of the book (what planting costs text it did not plant);
- the validity gate as notebook 04 computes it: the share of the twin's own BOS-sample tokens (decoded and
  tokenized again) inside a >= `memorization.gate_tokens` match with a planted passage, on one corpus's worth of
  samples (`sampling.tokens_per_corpus` x 1.25).
Nothing here reads a benchmark item or a result of the profile. Every build goes through the artifact cache (a
design point run again is read back). Appends one row per design point to outputs/bench/planting_pilot.csv.
`--window` is `canaries.window`: fractions of the prose the copies are spread over; the row's `copies_end` says
where in the planting run the last copy ends. `--choose` applies the rule below to one profile's rows (same
canary and sample seeds), fixed before any of them was measured:

    CHOICE_RULE: a design point qualifies when
    - its twin extracts enough: the one-sided 95 % Clopper-Pearson lower bound on the planted passages'
      extraction rate is at least n / h, where h is the profile's held-out canaries and n = 59 the fewest
      memorized sequences over which 0 extracted after can bound a drop at 95 % (alpha 0.05);
    - it spares the rest: the twin extracts none of the never-planted passages, and their suffix NLL under the
      twin is at most 0.5 nats above the base model's (a damaged twin makes any fine-tuning look like erasure);
    - its gate passes with room: the gate share, scaled to the profile's number of planted passages, is at most
      half of `memorization.gate_max` (the other half: the noise of a small sample and of choosing among points).
    Of the qualifying points, the one with the fewest planting tokens per planted passage; if none qualifies,
    none is chosen and the rows say which condition failed.

Design points for `planted-gemma`, fixed before any was measured, run in this order (24 planted and 16
never-planted passages, peak rate 2e-4); a further point only if none qualifies, committed before it runs:

    .venv/bin/python scripts/planting_pilot.py planted-gemma --copies 16 --share 0.5                     # P1
    .venv/bin/python scripts/planting_pilot.py planted-gemma --copies 16 --share 0.25 --window 0,0.333   # P2
    .venv/bin/python scripts/planting_pilot.py planted-gemma --copies 8 --share 0.5                      # P3
    .venv/bin/python scripts/planting_pilot.py planted-gemma --choose

P2 plants the same copies into the first half of a run twice as long (its second half is prose alone), for a twin
that keeps its passages but has stopped writing them; P3 asks whether half the copies suffice. None qualified
(P1 extracts all but writes them, P2 writes few but extracts half, P3 neither extracts enough nor stops
writing), so a fourth point, between P1 and P2, was added before it ran: the same density of copies (half the
tokens) over the first three quarters of the run.

    .venv/bin/python scripts/planting_pilot.py planted-gemma --copies 16 --share 0.375 --window 0,0.606  # P4

P4 did not qualify either (16 of 24 extracted, gate 3.0 %). Over P1-P4, exact extraction and spontaneous writing
rose and fell together: a copy trained on like any text teaches the twin both to complete a passage and to begin
one, and prose after planting erases the two together. So the next points change what planting teaches, not how
much: each copy's extraction prefix (`memorization.prefix_len` tokens) is read but left out of the loss
(`planting_loss: suffix`), so the twin learns to complete a passage from its prefix, which extraction asks, and
never learns to write its beginning, which the gate counts. Added before either ran; P6 only if P5 passes the
gate and spares the rest but extracts too few:

    .venv/bin/python scripts/planting_pilot.py planted-gemma --copies 16 --share 0.5 --planting-loss suffix  # P5
    .venv/bin/python scripts/planting_pilot.py planted-gemma --copies 24 --share 0.5 --planting-loss suffix  # P6

What it costs the experiment: such a memory is keyed to its prefix, unlike text a model learned whole in
pretraining, and may be easier to erase; a drop measured on it would then belong to the instrument. So a suffix
point must also show, before it can qualify, that its memories are as durable as passage-trained ones (an
outside referee's condition, added with P5 and P6 before either ran):

    DURABILITY_RULE: the twin of a `planting_loss: suffix` point and the passage-trained reference P1 (the
    same 24 passages, fully extracted) are each fine-tuned with the profile's real-text control (its recipe from
    notebook 01's findings, seed 0; `--durability`). Per planted passage, the share of the planting's suffix-NLL
    gain the control undid: (after - twin) / (base - twin). The suffix point qualifies only if the one-sided 95 %
    t upper bound of the paired mean difference (suffix point minus P1) is at most 0.10.

P5 extracts enough only with 24 of 24 (23 of 24 gives a lower bound of 0.817, under 59 / 72); the gate is
scaled linearly from the pilot's 24 passages to the profile's 80, and `share` counts every copy token, though a
suffix point predicts only half of each copy. If P5 fails the gate, no further point runs without a new one
committed first.

    .venv/bin/python scripts/planting_pilot.py planted-gemma --copies 16 --share 0.5 --durability            # P1's
    .venv/bin/python scripts/planting_pilot.py planted-gemma --copies 16 --share 0.5 --planting-loss suffix --durability
    .venv/bin/python scripts/planting_pilot.py planted-gemma --copies 24 --share 0.5 --planting-loss suffix --durability

Neither qualified: both pass the gate, but P5 extracts too few and P6 one passage short of the bound.
"""
from __future__ import annotations

import argparse
import math

import pandas as pd

from resurface.analysis.verdicts.memorization import clopper_pearson_upper
from resurface.builders import zoo
from resurface.builders.canaries import load_canaries, repeated_passages
from resurface.builders.memorization_measures import load_extraction, measure_canaries
from resurface.builders.synthetic import OVERSAMPLE
from resurface.builders.tokenizers import load_tokenizer
from resurface.frame.cache import Cache
from resurface.frame.paths import ROOT, cache_root
from resurface.frame.profiles import load_config
from resurface.lm.extraction import regurgitation_share
from resurface.lm.models import load_model
from resurface.lm.sampler import sample_documents

NEEDED_ALPHA, TARGET_DROP, MAX_DAMAGE_NATS, MAX_LESS_DURABLE = 0.05, 0.95, 0.5, 0.10


def pilot_config(profile: str, passages: int, controls: int, copies: int, share: float, lr: float,
                 window: tuple[float, float], canary_seed: int, extra: dict | None = None,
                 planting_loss: str = "passage"):
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
        f"zoo.models.{twin}.lr": lr, f"zoo.models.{twin}.planting_loss": planting_loss})
    return cfg, twin


def extracted(cache: Cache, model, canaries, mem, label: str) -> pd.DataFrame:
    """Per canary: extracted and suffix NLL (cached, as notebook 00 measures them); a passage that repeats an
    earlier one counts once, as in notebook 04."""
    art = measure_canaries(cache, model, "main", canaries, mem.prefix_len, mem.suffix_len, mem.batch_size, label)
    rows = load_extraction(art)
    return rows[~rows["canary_id"].isin(repeated_passages(load_canaries(canaries)))]


def measure(cfg, cache: Cache, twin: str, sample_seed: int = 0) -> dict:
    """One design point: planting (cached), extraction by the twin and its base, the gate on the twin's samples."""
    corpora = zoo.build_corpora(cfg, cache)
    canaries = zoo.build_canaries(cfg, cache, {})
    planted = zoo.train_models(cfg, cache, corpora, {}, canaries)[twin]
    init_from = cfg.zoo.models[twin].init_from
    mem, k = cfg.memorization, cfg.canaries
    horizon = planted.meta["planting_tokens"]
    row = {"canary_seed": k.seed, "sample_seed": sample_seed, "twin": twin, "init_from": init_from,
           "copies": k.counts[0], "passages": k.per_count, "controls": k.controls, "lr": cfg.zoo.models[twin].lr,
           "steps": cfg.zoo.models[twin].steps, "planting_tokens": horizon,
           "window": f"{k.window[0]}-{k.window[1]}", "canary_share": planted.meta["canary_share"],
           "copies_end": round(k.window[1] * 0.99 * (1 - planted.meta["canary_share"])
                               + planted.meta["canary_share"], 3),
           "frozen_embeddings": bool(planted.meta.get("frozen_embeddings", False)),
           "planting_loss": planted.meta.get("planting_loss", "passage"),
           "planting_s": planted.meta["seconds"], "planting_tok_s": planted.meta["tokens_per_s"]}
    for label, model in (("twin", planted), ("base", zoo._external(cfg, cache, init_from))):
        rows = extracted(cache, model, canaries, mem, f"{label}-pilot-{twin}")
        for part, sel in (("planted", rows["count"] > 0), ("never_planted", rows["count"] == 0)):
            row[f"{label}_{part}_extracted"] = f"{int(rows[sel].extracted.sum())}/{int(sel.sum())}"
            row[f"{label}_{part}_nll"] = round(float(rows[sel].suffix_nll.mean()), 3)
    # the gate on one corpus's worth of the twin's samples, drawn and read back as notebook 04 does
    s, tok = cfg.sampling, load_tokenizer(planted.path / "main")
    docs, prov = sample_documents(load_model(planted.path / "main"), tok,
                                  n_tokens=math.ceil(s.tokens_per_corpus * OVERSAMPLE), temperature=1.0,
                                  top_k=s.top_k, top_p=s.top_p, max_new_tokens=s.max_new_tokens,
                                  batch_size=s.batch_size, seed=sample_seed, backend=s.backend, desc=f"sample {twin}")
    texts = tok(tok.batch_decode(docs, skip_special_tokens=True), add_special_tokens=False)["input_ids"]
    gate = regurgitation_share(texts, [c["token_ids"] for c in load_canaries(canaries, planted_only=True)],
                               mem.gate_tokens)
    row.update(gate_share=round(gate["share"], 5), gate_documents=f"{gate['documents_with_a_match']}/"
               f"{gate['documents']}", sample_tokens=gate["tokens"], sampling_tok_s=prov["tokens_per_s"])
    return row


def durability(cfg, cache: Cache, twin: str) -> pd.DataFrame:
    """DURABILITY_RULE's measurement: per planted passage of one design point, suffix NLL under the base model,
    the twin, and the twin fine-tuned with the real-text control under the profile's recipe (notebook 01's
    findings, seed 0), extraction by the twin and after, and the share of the planting gain the control undid."""
    import json
    from types import SimpleNamespace

    from resurface.builders.students import finetune
    from resurface.builders.synthetic import corpus_texts, real_text_corpus
    from resurface.frame.schema import split_schedule
    corpora = zoo.build_corpora(cfg, cache)
    canaries = zoo.build_canaries(cfg, cache, {})
    planted = zoo.train_models(cfg, cache, corpora, {}, canaries)[twin]
    lender = (cfg.borrow or {}).get("01_recipe", cfg.profile)
    recipe = json.loads((ROOT / "outputs" / lender / "findings" / "01_recipe.json").read_text())
    schedule, lr = split_schedule(recipe["schedule"])
    ft = cfg.finetune.model_copy(update={"schedule": schedule, **({"lr": lr} if lr else {})})
    corpus = real_text_corpus(cache, SimpleNamespace(corpora=corpora, cfg=cfg))
    after = finetune(cache, f"{twin}--real-text--pilot", planted, "main", corpus, corpus_texts, recipe["budget"], ft,
                     cfg.zoo.seq_len, 0)
    mem = cfg.memorization
    rows = {label: extracted(cache, art, canaries, mem, f"{label}-pilot-{twin}").set_index("canary_id")
            for label, art in (("base", zoo._external(cfg, cache, cfg.zoo.models[twin].init_from)),
                               ("twin", planted), ("after", after))}
    keep = rows["twin"]["count"] > 0
    out = pd.DataFrame({f"{label}_nll": r.loc[keep, "suffix_nll"] for label, r in rows.items()})
    out["twin_extracted"] = rows["twin"].loc[keep, "extracted"].astype(int)
    out["after_extracted"] = rows["after"].loc[keep, "extracted"].astype(int)
    out["gain_undone"] = (out["after_nll"] - out["twin_nll"]) / (out["base_nll"] - out["twin_nll"])
    return out.reset_index().assign(canary_share=round(planted.meta["canary_share"], 4))


def less_durable_upper(point: pd.DataFrame, reference: pd.DataFrame, alpha: float = NEEDED_ALPHA) -> dict:
    """DURABILITY_RULE: the paired mean difference in gain undone (point minus reference) over their shared
    passages, with its one-sided upper t bound."""
    from scipy import stats
    d = (point.set_index("canary_id")["gain_undone"] - reference.set_index("canary_id")["gain_undone"]).dropna()
    mean, se = float(d.mean()), float(d.std(ddof=1) / math.sqrt(len(d)))
    upper = mean + float(stats.t.ppf(1 - alpha, len(d) - 1)) * se
    return {"passages": len(d), "mean_difference": mean, "upper": upper, "as_durable": upper <= MAX_LESS_DURABLE}


def fraction(cell: str) -> tuple[int, int]:
    """'22/24' -> (22, 24)."""
    k, n = (int(x) for x in str(cell).split("/"))
    return k, n


def needed_memorized(alpha: float = NEEDED_ALPHA, target: float = TARGET_DROP) -> int:
    """The fewest memorized sequences over which 0 extracted after bounds the rate by 1 - target: 1 - alpha^(1/n)
    <= 1 - target."""
    return math.ceil(math.log(alpha) / math.log(target))


DESIGN = ["copies", "canary_share", "window", "planting_loss"]  # what tells one design point from another
REFERENCE = (16, 0.5, "0.0-1.0", "passage")  # P1: DURABILITY_RULE's passage-trained reference


def durable(per_passage: pd.DataFrame) -> dict[tuple, dict]:
    """DURABILITY_RULE for every suffix point measured beside the reference (`--durability` rows)."""
    groups = {k: g for k, g in per_passage.groupby(DESIGN)}
    ref = groups.get(REFERENCE)
    return {k: less_durable_upper(g, ref) for k, g in groups.items() if k[3] == "suffix" and ref is not None}


def choose(table: pd.DataFrame, gate_max: float, heldout: int, planted: int,
           durability: dict[tuple, dict] | None = None) -> pd.DataFrame:
    """CHOICE_RULE over one profile's design points (`heldout` and `planted`: the profile's own canary counts):
    each row with the conditions it meets, the chosen one marked; a suffix point also needs DURABILITY_RULE
    (`durability`, from `durable`), a passage point does not."""
    t = table.reset_index(drop=True)
    if "planting_loss" not in t:
        t["planting_loss"] = "passage"
    t["planting_loss"] = t["planting_loss"].fillna("passage")
    lower = [1 - clopper_pearson_upper(n - k, n, NEEDED_ALPHA) for k, n in map(fraction, t["twin_planted_extracted"])]
    t = t.assign(extraction_lower=lower)
    t = t.assign(extracts=t["extraction_lower"] >= needed_memorized() / heldout,
                 spares_the_rest=(t["twin_never_planted_extracted"].map(lambda c: fraction(c)[0]) == 0)
                 & (t["twin_never_planted_nll"] - t["base_never_planted_nll"] <= MAX_DAMAGE_NATS),
                 gate_scaled=t["gate_share"] * planted / t["passages"],
                 tokens_per_passage=t["planting_tokens"] / t["passages"], chosen=False)
    t["gate_passes"] = t["gate_scaled"] <= gate_max / 2
    t["as_durable"] = [loss == "passage" or bool((durability or {}).get(tuple(t.loc[i, DESIGN]), {})
                                                  .get("as_durable", False))
                       for i, loss in t["planting_loss"].items()]
    ok = t[t.extracts & t.spares_the_rest & t.gate_passes & t.as_durable]
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
    ap.add_argument("--window", default="0,1", help="canaries.window: the fractions of the prose the copies span")
    ap.add_argument("--planting-loss", default="passage", choices=["passage", "suffix"],
                    help="the twin's `planting_loss`: suffix leaves each copy's extraction prefix out of the loss")
    ap.add_argument("--canary-seed", type=int, default=7, help="the passages' shuffle (not the profile's)")
    ap.add_argument("--sample-seed", type=int, default=0, help="the seed of the twin's samples the gate reads")
    ap.add_argument("--out", default="planting_pilot.csv", help="file name under outputs/bench/")
    ap.add_argument("--choose", action="store_true", help="apply CHOICE_RULE to the profile's rows; plant nothing")
    ap.add_argument("--durability", action="store_true",
                    help="DURABILITY_RULE's measurement of this design point (to planting_durability.csv) instead")
    args = ap.parse_args()
    out = ROOT / "outputs" / "bench" / args.out
    durability_out = out.with_name("planting_durability.csv")
    if args.choose:
        rows, cfg = pd.read_csv(out), load_config(args.profile)
        rows = rows[(rows["profile"] == args.profile) & (rows["canary_seed"] == args.canary_seed)
                    & (rows["sample_seed"] == args.sample_seed)]
        tests = {}
        if durability_out.exists():
            per_passage = pd.read_csv(durability_out)
            tests = durable(per_passage[(per_passage["profile"] == args.profile)
                                        & (per_passage["canary_seed"] == args.canary_seed)])
        for key, result in tests.items():
            print("DURABILITY_RULE", dict(zip(DESIGN, key)), result)
        k = cfg.canaries
        print(choose(rows, cfg.memorization.gate_max, k.heldout(), k.per_count * len(k.counts), tests)
              .T.to_string(header=False))
        return
    window = tuple(float(x) for x in args.window.split(","))
    cfg, twin = pilot_config(args.profile, args.passages, args.controls, args.copies, args.share, args.lr, window,
                             args.canary_seed, planting_loss=args.planting_loss)
    if args.durability:
        per = durability(cfg, Cache(cache_root(cfg.cache_dir)), twin).assign(
            profile=args.profile, canary_seed=args.canary_seed, copies=args.copies,
            window=f"{window[0]}-{window[1]}", planting_loss=args.planting_loss)
        table = pd.concat([pd.read_csv(durability_out), per]) if durability_out.exists() else per
        table.to_csv(durability_out, index=False)
        print(per.describe().T.to_string())
        print(durability_out)
        return
    row = {"profile": args.profile, **measure(cfg, Cache(cache_root(cfg.cache_dir)), twin, args.sample_seed)}
    table = pd.concat([pd.read_csv(out), pd.DataFrame([row])]) if out.exists() else pd.DataFrame([row])
    table["planting_loss"] = table["planting_loss"].fillna("passage")  # rows measured before the column existed
    table.to_csv(out, index=False)
    print(pd.DataFrame([row]).T.to_string(header=False))
    print(out)


if __name__ == "__main__":
    main()
