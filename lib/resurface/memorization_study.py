"""Finding 3: extraction before and after fine-tuning, on the canary twin (embedded) or the students (Hub)."""
from __future__ import annotations

import pandas as pd

from .memorization import load_extraction, measure_canaries
from .transfer import headline
from .workers import Job, build_all
from .zoo import model_size


def probes_for(cfg, cache, zoo, student: str):
    """What a student may have memorized: the planted canaries here; Pythia's memorized evals for Hub students."""
    if zoo.canaries is not None:
        return zoo.canaries
    m = cfg.zoo.models[student]
    if not m.is_hub:
        raise ValueError(f"student `{student}` has no canaries and is not a Pythia Hub model: nothing to extract")
    from .memorization import memorized_probes
    return memorized_probes(cache, m.hub_id, cfg.memorization.memorized_evals, cfg.seed)


def twin_runs(cfg, cache, zoo) -> tuple[pd.DataFrame, dict]:
    """The fine-tuning runs of finding 3: the canary twin on its sources and the controls, with the matrix's
    recipe, scored on the test items. Without a twin (Hub profiles), the transfer matrix's runs."""
    from .transfer import build_plan, eval_tasks, matrix_recipe, run_matrix, run_plan
    m = cfg.memorization
    if m.twin is None:
        return run_matrix(cfg, cache, zoo)
    runs = build_plan(cfg, [m.twin], lambda s: list(m.sources), list(cfg.sampling.temperatures), list(m.seeds),
                      [matrix_recipe(cfg, cache, zoo)])
    return run_plan(cfg, cache, zoo, runs, eval_tasks(cfg, cache, zoo), desc="canary twin")


def extraction_tables(cfg, cache, zoo, table: pd.DataFrame, arts: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per canary group (before/after per run) and per run (held-out rate after, headline delta)."""
    m = cfg.memorization
    students = sorted(table["student"].unique())
    probes = {s: probes_for(cfg, cache, zoo, s) for s in students}
    runs = headline(table)
    # every extraction is an independent build: the pool runs them (single-threaded, like every pooled build)
    lengths = (m.prefix_len, m.suffix_len, m.batch_size)
    jobs = [Job(model_size(cfg.zoo.models[s]), f"extraction {s}", measure_canaries,
                (zoo.models[s], "main", probes[s], *lengths, f"{s}-base")) for s in students]
    jobs += [Job(model_size(cfg.zoo.models[r.student]), f"extraction {r.run_label}", measure_canaries,
                 (arts["students"][r.run_label], "main", probes[r.student], *lengths, r.run_label))
             for r in runs.itertuples()]
    build_all(cache, jobs, cfg.workers, desc="extraction before and after")
    extracted = {job.args[-1]: load_extraction(job.fn(cache, *job.args)) for job in jobs}  # from the cache
    before = {s: extracted[f"{s}-base"] for s in students}
    groups, per_run = [], []
    for r in runs.itertuples():
        after = extracted[r.run_label]
        b = before[r.student]
        for (count, split), g in after.groupby(["count", "split"]):
            gb = b[(b["count"] == count) & (b["split"] == split)]
            groups.append({"student": r.student, "source": r.source, "relation": r.relation,
                           "temperature": r.temperature, "seed": r.seed, "count": count, "split": split,
                           "extraction_before": gb["extracted"].mean(), "extraction_after": g["extracted"].mean(),
                           "match_before": gb["match_fraction"].mean(), "match_after": g["match_fraction"].mean(),
                           "n_canaries": len(g), "headline_delta": r.headline_delta})
        per_run.append({"student": r.student, "source": r.source, "relation": r.relation,
                        "temperature": r.temperature, "seed": r.seed, "headline_delta": r.headline_delta,
                        "after": after, "before": b})
    return pd.DataFrame(groups), per_run, before


def pooled_rates(per_run: list[dict], before: dict) -> tuple[pd.DataFrame, float]:
    """Held-out extraction pooled over the counts the untouched students extract at all."""
    rows, base_hits, base_n = [], 0, 0
    active, rate_before = {}, {}
    for s, b in before.items():
        h = b[b["split"] == "heldout"]
        counts = sorted(h.groupby("count")["extracted"].mean().loc[lambda x: x > 0].index)
        active[s] = counts
        sel = h[h["count"].isin(counts)]
        base_hits += sel["extracted"].sum()
        base_n += len(sel)
        rate_before[s] = sel["extracted"].mean() if len(sel) else 0.0
    for r in per_run:
        a = r["after"]
        sel = a[(a["split"] == "heldout") & a["count"].isin(active[r["student"]])]
        rows.append({k: r[k] for k in ("student", "source", "relation", "temperature", "seed", "headline_delta")}
                    | {"rate_before": rate_before[r["student"]],
                       "rate_after": sel["extracted"].mean() if len(sel) else float("nan"),
                       "counts_pooled": ",".join(map(str, active[r["student"]]))})
    return pd.DataFrame(rows), (base_hits / base_n if base_n else 0.0)
