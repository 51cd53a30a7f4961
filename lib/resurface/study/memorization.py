"""Finding 3: extraction before and after fine-tuning, per sequence, on the canary twin (embedded) or the
students (Hub), with the validity gate and the twin's capability on finding 1's test items."""
from __future__ import annotations

import numpy as np
import pandas as pd

from resurface.analysis import verdicts
from resurface.analysis.findings import headline
from resurface.builders.canaries import canary_share, load_canaries, repeated_passages
from resurface.builders.evaluations import item_scores
from resurface.builders.memorization_measures import load_extraction, measure_canaries, memorized_probes
from resurface.builders.natural_probes import natural_probes, scan_summary
from resurface.builders.synthetic import load_synthetic, synthetic_corpus
from resurface.builders.tokenizers import load_tokenizer
from resurface.builders.zoo import model_size
from resurface.compute.pool import Job, build_all
from resurface.lm.extraction import regurgitation_by_canary, regurgitation_share
from resurface.study.matrix import base_evaluation, build_plan, eval_tasks, item_deltas, plan, run_plan
from resurface.study.transfer import run_matrix


def probes_for(cfg, cache, zoo, student: str):
    """What a student may have memorized: the planted canaries here; the natural scan's windows for real
    weights without a twin (`memorization.natural`); Pythia's memorized evals for Hub students."""
    if zoo.canaries is not None:
        return zoo.canaries
    if cfg.memorization.natural is not None:  # real weights we did not train: famous text they may have seen
        return natural_probes(cfg, cache, zoo, student)
    m = cfg.zoo.models[student]
    if not m.is_hub:
        raise ValueError(f"student `{student}` has no canaries and is not a Pythia Hub model: nothing to extract")
    return memorized_probes(cache, m.hub_id, cfg.memorization.memorized_evals, cfg.seed,
                            pinned=cfg.memorization.memorized_evals_data)


def twin_plan(cfg, recipe: tuple[str, int]) -> list[dict]:
    """The fine-tuning runs of finding 3 under notebook 01's `recipe` (schedule, budget); the notebook shows them
    before running them."""
    m = cfg.memorization
    if m.twin is None:
        return plan(cfg, recipe)
    return build_plan(cfg, [m.twin], lambda s: list(m.sources), list(cfg.sampling.temperatures), list(m.seeds),
                      [recipe])


def twin_runs(cfg, cache, zoo, recipe: tuple[str, int]) -> tuple[pd.DataFrame, dict]:
    """The twin fine-tuned on its sources and the controls with the matrix's recipe, scored on the test items.
    Without a twin (Hub profiles), the transfer matrix's runs."""
    if cfg.memorization.twin is None:
        return run_matrix(cfg, cache, zoo, recipe)
    return run_plan(cfg, cache, zoo, twin_plan(cfg, recipe), eval_tasks(cfg, cache, zoo), desc="canary twin")


def measured_model(cfg, table: pd.DataFrame) -> str:
    """The model finding 3 is judged on: the twin, or (Hub profiles) the first student."""
    return cfg.memorization.twin or sorted(table["student"].unique())[0]


def per_sequence(cfg, cache, zoo, table: pd.DataFrame, arts: dict) -> pd.DataFrame:
    """One row per (model, sequence): extraction by the untouched model (`run_label` = `<student>-base`) and by
    every fine-tuned run, with the run's source, relation, temperature and seed. After a natural scan that found
    fewer memorized held-out passages than `min_memorized`, the untouched model's rows only."""
    m = cfg.memorization
    students = sorted(table["student"].unique())
    probes = {s: probes_for(cfg, cache, zoo, s) for s in students}
    runs = headline(table)
    if m.natural is not None and any(probes[s].meta.get("memorized_heldout", 0) < m.min_memorized for s in students):
        # a natural scan that found too few memorized passages for the rule: say how many and stop there
        runs = runs.iloc[:0]
    lengths = (m.prefix_len, m.suffix_len, m.batch_size)
    # every extraction is an independent build: the pool runs them (single-threaded, like every pooled build)
    rows = [(f"{s}-base", s, zoo.models[s], {"student": s, "source": "untouched", "relation": "untouched"})
            for s in students]
    # a control (real text, replay) has no seed of its own: its seed rows share one run label, one student and
    # so one extraction, built once
    rows += [(r.run_label, r.student, arts["students"][r.run_label],
              dict(student=r.student, source=r.source, relation=r.relation, temperature=r.temperature, seed=r.seed))
             for r in runs.itertuples()]
    jobs = {label: Job(model_size(cfg.zoo.models[s]), label, measure_canaries,
                       (model, "main", probes[s], *lengths, label)) for label, s, model, _ in rows}
    base = twin_base(cfg)
    if base is not None and zoo.canaries is not None and base in zoo.models:  # read by `base_sequences`, built here
        label = f"{base}-base"  # in the pool with the rest, not alone in the kernel
        jobs.setdefault(label, Job(model_size(cfg.zoo.models[base]), label, measure_canaries,
                                   (zoo.models[base], "main", zoo.canaries, *lengths, label)))
    done = build_all(cache, list(jobs.values()), cfg.workers, desc="extraction before and after")
    return pd.concat([load_extraction(done[label]).assign(run_label=label, **info) for label, _, _, info in rows],
                     ignore_index=True)


def memorized_set(seqs: pd.DataFrame) -> pd.DataFrame:
    """Per student: the held-out sequences its untouched model extracts 32/32."""
    base = seqs[(seqs["source"] == "untouched") & (seqs["split"] == "heldout") & seqs["extracted"].astype(bool)]
    return base[["student", "canary_id"]]


def with_advantage(seqs: pd.DataFrame) -> pd.DataFrame:
    """Adds each sequence's likelihood advantage: the mean suffix NLL of the never-planted passages under the
    same model minus its own (nats per token; NaN without control passages, e.g. Pythia's memorized evals)."""
    ctrl = seqs[seqs["split"] == "control"].groupby("run_label")["suffix_nll"].mean()
    return seqs.assign(advantage=seqs["run_label"].map(ctrl).astype(float) - seqs["suffix_nll"])


def before_after(seqs: pd.DataFrame) -> pd.DataFrame:
    """Per student x source (the untouched model included): exact extraction of every held-out sequence and of
    the memorized set, mean match fraction and mean likelihood advantage, each averaged over the source's runs.
    `seqs`: `per_sequence` rows with `with_advantage`'s column."""
    held = seqs[seqs["split"] == "heldout"]
    mem = memorized_set(seqs).assign(memorized=True)
    held = held.merge(mem, on=["student", "canary_id"], how="left")
    held["memorized"] = held["memorized"].astype("boolean").fillna(False).astype(bool)
    rows = []
    for (student, source), g in held.groupby(["student", "source"], sort=False):
        rows.append({"student": student, "source": source, "relation": g["relation"].iloc[0],
                     "runs": g["run_label"].nunique(), "heldout_sequences": g["canary_id"].nunique(),
                     "extraction_all_heldout": float(g["extracted"].mean()),
                     "match_fraction_all_heldout": float(g["match_fraction"].mean()),
                     "extraction_memorized_set": float(g.loc[g["memorized"], "extracted"].mean())
                     if g["memorized"].any() else float("nan"),
                     "advantage_nats": float(g["advantage"].mean())})
    return pd.DataFrame(rows)


def nll_components(seqs: pd.DataFrame, base: pd.DataFrame | None = None) -> pd.DataFrame:
    """The likelihood advantage taken apart, per source: the held-out canaries' mean suffix NLL and the
    never-planted passages' (nats per token, each source's runs averaged), and each one's change from the
    untouched model with its standard error over sequences (paired: the same sequences before and after). A
    source that lowers the never-planted passages' NLL (real prose of the same kind) shrinks the advantage
    without touching the canaries; this table tells the two apart. With `base` (the twin's canary-free base
    model's rows, source `base`): its row too, and per source the share of what planting gained on the canaries
    (base minus twin NLL) that the source undid. Empty without control passages."""
    parts = seqs[seqs["split"].isin(["heldout", "control"])]
    if not (parts["split"] == "control").any():
        return pd.DataFrame()
    if base is not None and len(base):
        keep = base[base["canary_id"].isin(parts["canary_id"])]
        parts = pd.concat([parts, keep.assign(source="base", relation="base")], ignore_index=True)
    per_seq = parts.groupby(["source", "split", "canary_id"])["suffix_nll"].mean()
    rows = []
    sources = [s for s in parts["source"].drop_duplicates() if s not in ("untouched", "base")]
    for source in ["base"] * bool((parts["source"] == "base").any()) + ["untouched"] + sources:
        row = {"source": source, "relation": parts.loc[parts["source"] == source, "relation"].iloc[0]}
        for split, name in (("heldout", "canary"), ("control", "never_planted")):
            after, before = per_seq[(source, split)], per_seq[("untouched", split)]
            d = (after - before.reindex(after.index)).dropna()
            row |= {f"{name}_nll": float(after.mean()), f"{name}_change": float(d.mean()),
                    f"{name}_change_se": float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")}
        row["advantage"] = row["never_planted_nll"] - row["canary_nll"]
        rows.append(row)
    out = pd.DataFrame(rows)
    if "base" in set(out["source"]):
        gained = out.loc[out.source == "base", "canary_nll"].iloc[0] - out.loc[out.source == "untouched", "canary_nll"].iloc[0]
        out["planting_gain_undone"] = out["canary_change"] / gained if gained > 0 else float("nan")
        out.loc[out.source == "base", "planting_gain_undone"] = float("nan")
    return out


def base_sequences(cfg, cache, zoo) -> pd.DataFrame | None:
    """The twin's canary-free base model on the same passages (suffix NLL and extraction per passage): notebook
    00's measurement of a planted twin's base, or the one `per_sequence` built beside the twin's; None without a
    twin or a base."""
    base, m = twin_base(cfg), cfg.memorization
    if base is None or zoo.canaries is None or base not in zoo.models:
        return None
    label = f"{base}-base"
    job = Job(model_size(cfg.zoo.models[base]), label, measure_canaries,
              (zoo.models[base], "main", zoo.canaries, m.prefix_len, m.suffix_len, m.batch_size, label))
    return load_extraction(build_all(cache, [job], cfg.workers, desc="the twin's base model")[label])


def written_vs_kept(by_canary: pd.DataFrame, seqs: pd.DataFrame, memorized: pd.DataFrame) -> pd.DataFrame:
    """Does self-training keep what the twin writes? Per source, exact extraction after fine-tuning of the
    memorized set, split by whether the twin's own samples write the canary (`gate_by_canary`): if self-training
    re-taught what it samples, self would keep the written canaries more than the unwritten ones, and more than
    the other sources do. Empty when the twin writes none or nothing is memorized."""
    if not len(by_canary) or not len(memorized):
        return pd.DataFrame()
    on_set = seqs[seqs["canary_id"].isin(memorized["canary_id"]) & (seqs["split"] == "heldout")]
    on_set = on_set.assign(extracted=on_set["extracted"].astype(float))
    after = on_set[on_set["source"] != "untouched"].groupby(["source", "canary_id"])["extracted"].mean().reset_index()
    after["written"] = after["canary_id"].isin(by_canary["canary_id"])
    out = (after.groupby(["source", "written"])["extracted"].agg(kept="mean", sequences="size").reset_index())
    relation = seqs.groupby("source")["relation"].first()
    return out.assign(relation=out["source"].map(relation))[["source", "relation", "written", "sequences", "kept"]]


def twin_base(cfg) -> str | None:
    """The model the twin is a canary-carrying copy of: a planted twin's `init_from`, or (embedded) the zoo model
    with the twin's very recipe and no canaries (saved checkpoints aside); None when there is none."""
    twin = cfg.memorization.twin
    if twin is None:
        return None
    t = cfg.zoo.models[twin]
    if t.is_planted:
        return t.init_from
    recipe = lambda m: {k: v for k, v in m.model_dump().items() if k not in ("canaries", "checkpoints")}  # noqa: E731
    return next((name for name, m in cfg.zoo.models.items()
                 if name != twin and not m.canaries and recipe(m) == recipe(t)), None)


def planting_cost(cfg, cache, zoo, arts: dict, tasks: list[str]) -> pd.DataFrame:
    """Where the twin starts: the untouched twin against its base model (`twin_base`) on the test items, per
    headline task and as the headline (points, + = the twin scores higher), with the paired standard error over
    items. For the embedded twin only the canaries differ; for a planted twin, the whole planting run. Empty
    without a twin or a base model."""
    twin, base = cfg.memorization.twin, twin_base(cfg)
    if twin is None or base is None or twin not in arts.get("base_evaluations", {}):
        return pd.DataFrame()
    base_items = item_scores(base_evaluation(cache, zoo, arts["tasks"], base))
    twin_items = item_scores(arts["base_evaluations"][twin])
    rows, var = [], []
    for task in tasks:
        d = 100 * (np.asarray(twin_items[task], float) - np.asarray(base_items[task], float))
        se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")
        rows.append({"task": task, "twin": twin, "base": base, "items": len(d), "twin_minus_base": float(d.mean()),
                     "se": se})
        var.append(se ** 2)
    head = {"task": "headline", "twin": twin, "base": base, "items": sum(r["items"] for r in rows),
            "twin_minus_base": float(np.mean([r["twin_minus_base"] for r in rows])),
            "se": float(np.sqrt(np.sum(var)) / len(var)) if var else float("nan")}
    out = pd.DataFrame(rows + [head])
    return out.assign(ci_low=out["twin_minus_base"] - 1.96 * out["se"], ci_high=out["twin_minus_base"] + 1.96 * out["se"])


def sequence_table(seqs: pd.DataFrame) -> pd.DataFrame:
    """One row per held-out sequence: extraction and likelihood advantage before (untouched) and, per source,
    the mean over its runs. `seqs`: `per_sequence` rows with `with_advantage`'s column."""
    held = seqs[seqs["split"] == "heldout"]
    wide = held.pivot_table(index=["student", "canary_id", "count"], columns="source",
                            values=["extracted", "advantage"], aggfunc="mean")
    wide.columns = [f"{measure}_{'before' if src == 'untouched' else src}" for measure, src in wide.columns]
    return wide.reset_index()


def twin_samples(cache, zoo, plan_runs: list[dict]) -> list:
    """The self corpora of the plan (the twin's own BOS samples), one artifact per temperature x seed."""
    keys = sorted({(r["source"], r["temperature"], r["seed"]) for r in plan_runs if r["relation"] == "self"})
    return [synthetic_corpus(cache, zoo, s, t, seed) for s, t, seed in keys]


def own_samples(cfg, cache, zoo, table: pd.DataFrame):
    """The measured model's self corpora (its own BOS samples, one per temperature x seed), each as (artifact,
    token ids re-tokenized with the model's own tokenizer): what the gate and its per-canary listing read."""
    student = measured_model(cfg, table)
    plan_runs = [r for r in headline(table).to_dict("records") if r["student"] == student]
    tok = load_tokenizer(zoo.models[student].path / "main")
    for art in twin_samples(cache, zoo, plan_runs):
        yield art, tok(list(load_synthetic(art.path)["text"]), add_special_tokens=False)["input_ids"]


def gate(cfg, cache, zoo, table: pd.DataFrame) -> pd.DataFrame:
    """The validity gate per self corpus: the share of sample tokens inside a >= k-token match with a canary
    (dev and held-out)."""
    canaries = [c["token_ids"] for c in _load_probes(cfg, cache, zoo, measured_model(cfg, table))]
    return pd.DataFrame([{"corpus": art.name, "temperature": art.meta["temperature"], "seed": art.meta["seed"],
                          **regurgitation_share(docs, canaries, cfg.memorization.gate_tokens)}
                         for art, docs in own_samples(cfg, cache, zoo, table)])


def gate_by_canary(cfg, cache, zoo, table: pd.DataFrame) -> pd.DataFrame:
    """The validity gate, listed per canary: over all the measured model's self corpora, the sample tokens inside
    a match with each canary and the samples that hold one, most-written first (canaries never written are left
    out). Shows whether contamination is a few passages written often or many written once."""
    if zoo.canaries is None and not _hub_probes(cfg):
        return pd.DataFrame()
    probes = _load_probes(cfg, cache, zoo, measured_model(cfg, table))
    repeats = set(repeated_passages(probes))
    probes = [c for c in probes if c["canary_id"] not in repeats]  # a repeated passage counts once
    tokens, docs = np.zeros(len(probes), int), np.zeros(len(probes), int)
    for _, texts in own_samples(cfg, cache, zoo, table):
        per = regurgitation_by_canary(texts, [c["token_ids"] for c in probes], cfg.memorization.gate_tokens)
        tokens += [r["tokens_in_matches"] for r in per]
        docs += [r["documents_with_a_match"] for r in per]
    rows = pd.DataFrame({"canary_id": [c["canary_id"] for c in probes], "split": [c["split"] for c in probes],
                         "copies": [c["count"] for c in probes], "tokens_in_matches": tokens,
                         "documents_with_a_match": docs})
    rows = rows[rows["tokens_in_matches"] > 0]
    total = rows["tokens_in_matches"].sum()
    return (rows.assign(share_of_matched_tokens=rows["tokens_in_matches"] / total if total else 0.0)
            .sort_values(["tokens_in_matches", "canary_id"], ascending=[False, True]).reset_index(drop=True))


def _hub_probes(cfg) -> bool:
    return cfg.memorization.twin is None and cfg.memorization.natural is None and \
        all(cfg.zoo.models[s].is_hub for s in cfg.transfer.students)


def _load_probes(cfg, cache, zoo, student: str) -> list[dict]:
    """The sequences the gate looks for: the planted canaries, or every memorized-evals sequence (none of which
    was planted by us, so none has a count)."""
    return load_canaries(probes_for(cfg, cache, zoo, student), planted_only=not _hub_probes(cfg))


def capability(cfg, table: pd.DataFrame, arts: dict, tasks: list[str]) -> tuple[pd.DataFrame, dict]:
    """Per source: the headline delta (points, TEST items) as a point and bootstrap replicates, items and seeds
    resampled (seeds within each temperature)."""
    runs = headline(table, tasks).reset_index(drop=True)
    rng = np.random.default_rng(cfg.seed)
    deltas = item_deltas(runs, arts, tasks)
    scores = verdicts.item_resampled_scores(deltas, cfg.analysis.bootstrap, rng)
    point = verdicts.run_means(deltas)
    cells = verdicts.cell_means(runs, scores, point, ["source"], ["temperature"], rng)
    return runs, {k[0]: v for k, v in cells.items()}


def sequences(cfg, cache, zoo, table: pd.DataFrame, arts: dict) -> pd.DataFrame:
    """Step 2: the measured model's per-sequence rows (`per_sequence`), with each sequence's likelihood advantage;
    a passage that repeats an earlier one (`repeated_passages`) counts once, under its first id."""
    student = measured_model(cfg, table)
    repeats = repeated_passages(load_canaries(probes_for(cfg, cache, zoo, student)))
    seqs = per_sequence(cfg, cache, zoo, table, arts)
    seqs = with_advantage(seqs[~seqs["canary_id"].isin(repeats)])
    return seqs[seqs["student"] == student]


def self_gate(cfg, cache, zoo, table: pd.DataFrame) -> tuple[pd.DataFrame, float]:
    """Step 1: the validity gate on the measured model's own samples: per corpus, and the share over all of them.
    On the planted canaries (embedded twin) and on Pythia's memorized evals (Hub students): self-training on
    samples that write them out would teach them again. A natural scan has no gate (its probes are whatever
    famous text the model half-remembers)."""
    if zoo.canaries is None and not _hub_probes(cfg):
        return pd.DataFrame(), 0.0
    gates = gate(cfg, cache, zoo, table)
    return gates, float(gates["tokens_in_matches"].sum() / gates["tokens"].sum()) if len(gates) else 0.0


def judged_sets(seqs: pd.DataFrame, memorized: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """What each measure is judged on: exact extraction of the memorized set (held-out sequences), and the
    likelihood advantage of every held-out sequence that has one."""
    on_set = seqs[seqs["canary_id"].isin(memorized["canary_id"]) & (seqs["split"] == "heldout")]
    held = seqs[(seqs["split"] == "heldout") & seqs["advantage"].notna()]
    return on_set.assign(extracted=on_set["extracted"].astype(float)), held


def sign_tests(cfg, table: pd.DataFrame, seqs: pd.DataFrame, memorized: pd.DataFrame) -> pd.DataFrame:
    """Exact sign tests over sequences, per measure: the untouched model and self-training against each source."""
    student = measured_model(cfg, table)
    on_set, held = judged_sets(seqs, memorized)
    return pd.concat([verdicts.paired_sign_tests(on_set, "extracted", student).assign(measure="extracted")
                      if len(on_set) else pd.DataFrame(),
                      verdicts.paired_sign_tests(held, "advantage", student).assign(measure="advantage")
                      if len(held) else pd.DataFrame()], ignore_index=True)


def finding3(cfg, table: pd.DataFrame, seqs: pd.DataFrame, memorized: pd.DataFrame, capability_by_source: dict,
             gate_share: float, axis_ok: bool = True) -> tuple[dict, dict | None]:
    """Step 4: MEMORIZATION_RULE on each measure, from the steps before: (primary verdict, secondary or None)."""
    m, a = cfg.memorization, cfg.analysis
    th = verdicts.Thresholds(alpha=a.alpha, power=a.power, sesoi=a.sesoi_points, bootstrap=a.bootstrap, seed=cfg.seed)
    args = dict(capability=capability_by_source, gate_share=gate_share, th=th, margin=a.noninferiority_points,
                self_source=measured_model(cfg, table), gate_max=m.gate_max)
    on_set, held = judged_sets(seqs, memorized)
    primary = verdicts.memorization_verdict(on_set, "extracted", n_memorized=len(memorized),
                                            min_memorized=m.min_memorized, **args)
    secondary = (verdicts.memorization_verdict(held, "advantage", n_memorized=held["canary_id"].nunique(),
                                               min_memorized=1, **args) if len(held) else None)
    if not axis_ok:
        primary = verdicts.without_capability(primary, axis_ok)
        secondary = verdicts.without_capability(secondary, axis_ok) if secondary else None
    return primary, secondary


def design(cfg, zoo, cache=None) -> dict:
    """The twin's canary design, as configured and as planted (read from the canaries artifact); for a natural
    scan, what was scanned and found (`cache` needed)."""
    m = cfg.memorization
    if m.natural is not None and cache is not None:
        student = cfg.transfer.students[0]
        meta = natural_probes(cfg, cache, zoo, student).meta
        keys = ("source", "documents", "windows", "tokens_scanned", "scan_seconds", "scan_tokens_per_s",
                "memorized_windows", "memorized_dev", "memorized_heldout", "probes", "start_token")
        return {"natural_scan_of": student, **{k: meta.get(k) for k in keys}}
    if _hub_probes(cfg) and cache is not None:  # Hub students: Pythia's memorized evals, not planted by us
        probes = {s: probes_for(cfg, cache, zoo, s).meta for s in cfg.transfer.students}
        return {"memorized_evals_of": sorted(probes), "source": next(iter(probes.values())).get("source"),
                "splits": [p.get("split") for p in probes.values()], "sequences": [p.get("n") for p in probes.values()],
                "measured_on": sorted(cfg.transfer.students)[0]}
    if zoo.canaries is None or m.twin is None:
        return {"twin": m.twin, "canaries": 0}
    t = cfg.zoo.models[m.twin]
    tokens = t.steps * t.batch_size * cfg.zoo.seq_len
    planted = load_canaries(zoo.canaries, planted_only=True)
    k = cfg.canaries
    planted_into = {"planted_into": t.init_from} if t.is_planted else {}  # a real-weights student, fine-tuned
    return {"twin": m.twin, **planted_into,
            "pretraining_tokens": tokens, "canaries": len(planted),
            "repeated_passages": repeated_passages(load_canaries(zoo.canaries)),  # counted once, under the first id
            "heldout_canaries": sum(c["split"] == "heldout" for c in planted),
            "control_passages": len(load_canaries(zoo.canaries)) - len(planted),
            "copies": sum(c["count"] for c in planted), "counts": list(k.counts),
            "canary_share": canary_share(planted, tokens), "window": list(k.window), "margin_tokens": k.margin_tokens,
            **({"planting_loss": "suffix", "prefix_len": m.prefix_len} if t.planting_loss == "suffix" else {})}


def summary(verdict: dict | None) -> pd.DataFrame:
    """One row per source of a MEMORIZATION_RULE verdict: before, after, relative drop and capability, with CIs."""
    if not verdict:
        return pd.DataFrame()
    rows = []
    for src, r in verdict["per_source"].items():
        c = r["capability"]
        rows.append({"source": src, "relation": r["relation"], "before": r["before"], "after": r["after"],
                     "after_lo": r["after_ci"][0], "after_hi": r["after_ci"][1], "relative_drop": r["relative_drop"],
                     "drop_lo": r["drop_ci"][0], "drop_hi": r["drop_ci"][1], "drop_mde": r["drop_mde"],
                     "capability_delta": c["estimate"], "capability_lo": r["capability_ci"][0],
                     "capability_hi": r["capability_ci"][1], "capability": c["outcome"]})
    return pd.DataFrame(rows)


def natural_scan(cfg, cache, zoo):
    """Per scanned document (real-weights profiles): split, windows, best and mean suffix agreement and memorized
    windows; an empty table when the profile has a canary twin or Pythia's memorized evals instead."""
    if cfg.memorization.natural is None or zoo.canaries is not None:
        return pd.DataFrame()
    return scan_summary(natural_probes(cfg, cache, zoo, cfg.transfer.students[0]))
