"""The recipe (notebook 01): how should a student be fine-tuned, judged on the controls and DEV items only?

A grid over schedule (continue from the student's own optimizer state, a fresh optimizer at the final
learning rate, or a re-warmed one), budget and temperature, over self, a lineage source, real held-out text
and replay of the student's pretraining data. The rule in `verdicts.RECIPE_RULE` then picks the matrix's
schedule and budget from the real-text control alone. The grid is also the study's answer to "where, if
anywhere, does self-training help?": every cell is published.
"""
from __future__ import annotations

import itertools

import pandas as pd

from resurface.frame.cache import Cache
from resurface.frame.schema import StudyConfig
from resurface.study.matrix import build_plan, eval_tasks, item_deltas, plan, run_plan
from resurface.analysis.findings import RUN_KEYS, headline
from resurface.builders.zoo import Zoo
from resurface.analysis import verdicts
from resurface.study import zoo_checks


def grid_plan(cfg: StudyConfig) -> list[dict]:
    r = cfg.recipe
    recipes = list(itertools.product(r.schedules, sorted(r.budgets)))
    return build_plan(cfg, list(r.students), lambda s: r.sources[s], list(r.temperatures), list(r.seeds), recipes)


def grid_tasks(cfg: StudyConfig, cache: Cache, zoo: Zoo):
    """The DEV tasks a grid run is scored on: every dev task, or only the held-out documents whose bits/byte
    RECIPE_RULE reads (`recipe.grid_scores: bits_per_byte`; the same documents, without the benchmark items)."""
    return eval_tasks(cfg, cache, zoo, "dev", only=["heldout_ppl"] if cfg.recipe.grid_scores == "bits_per_byte"
                      else None)


def run_grid(cfg: StudyConfig, cache: Cache, zoo: Zoo, tasks: list[str] | None = None) -> tuple[pd.DataFrame, dict]:
    """Every grid run on the DEV items; one row per run with its headline delta over `tasks` (notebook 00's
    capability-axis tasks; recomputed from the cache when not given) and its held-out bits/byte gain. A grid
    scored on bits/byte alone (`recipe.grid_scores`) has no headline delta (NaN)."""
    table, arts = run_plan(cfg, cache, zoo, grid_plan(cfg), grid_tasks(cfg, cache, zoo), desc="recipe grid")
    bpb = table[table["metric"] == "bits_per_byte"]
    if cfg.recipe.grid_scores == "bits_per_byte":
        keys = [k for k in RUN_KEYS if k in bpb.columns] + ["run_label"]
        return (bpb[keys + ["delta"]].rename(columns={"delta": "bpb_gain"})
                .assign(headline_delta=float("nan"), item_se=float("nan")).reset_index(drop=True), arts)
    if tasks is None:
        tasks, _ = zoo_checks.headline(cfg, cache, zoo)
    runs = headline(table, tasks)
    deltas = item_deltas(runs, arts, tasks, verdicts.score_kind(cfg.analysis.score))  # SCORE_RULE
    runs["headline_delta"] = verdicts.run_means(deltas)
    runs["item_se"] = verdicts.per_run_paired_se(deltas)  # one run's noise from its items
    bpb = bpb[["run_label", "delta"]].rename(columns={"delta": "bpb_gain"})
    return runs.merge(bpb, on="run_label", how="left"), arts


def choose(cfg: StudyConfig, grid: pd.DataFrame) -> dict:
    """Apply the recipe rule to the grid's runs."""
    r = cfg.recipe
    return verdicts.choose_recipe(grid, list(r.schedules), r.fallback)


def chosen_recipe(cfg: StudyConfig, cache: Cache, zoo: Zoo) -> dict:
    """Apply the recipe rule to the grid (all of it from the cache after notebook 01)."""
    runs, _ = run_grid(cfg, cache, zoo)
    return choose(cfg, runs)


def controls_on_dev(cfg: StudyConfig, cache: Cache, zoo: Zoo, pick: dict) -> tuple[pd.DataFrame, dict]:
    """The positive controls under the chosen recipe for every student and seed of the matrix (the runs
    notebook 02's instrument check reads on test items), evaluated on the DEV items: one row per run."""
    runs = [r for r in plan(cfg, (pick["schedule"], pick["budget"])) if r["relation"] in verdicts.CONTROLS]
    table, arts = run_plan(cfg, cache, zoo, runs, eval_tasks(cfg, cache, zoo, "dev"), desc="controls, dev items")
    return headline(table, zoo_checks.accuracy_tasks(cfg)), arts


def headline_gate(cfg: StudyConfig, controls: pd.DataFrame, arts: dict, axis_tasks: list[str], axis_ok: bool
                  ) -> tuple[pd.DataFrame, list[str], bool, str]:
    """HEADLINE_RULE on the dev items: does each control, pooled over the students (`controls`, `arts`: from
    `controls_on_dev`), move each task that rose along the capability axis (notebook 00's `axis_tasks`,
    `axis_ok`)? Returns (the gate's table, headline tasks, whether any task passed, why not)."""
    controls = controls.reset_index(drop=True)
    tasks = zoo_checks.accuracy_tasks(cfg)
    deltas = dict(zip(tasks, item_deltas(controls, arts, tasks, verdicts.score_kind(cfg.analysis.score))))
    a = cfg.analysis
    th = verdicts.Thresholds(alpha=a.alpha, power=a.power, bootstrap=a.bootstrap, seed=cfg.seed)  # the gate reads its lower bounds only
    gate = verdicts.headline_gate(axis_tasks if axis_ok else [], deltas, controls, th)
    passed = gate.loc[gate["in_headline"], "task"].tolist()
    if passed:
        return gate, passed, True, ""
    why = ("no benchmark task rose along the capability axis" if not axis_ok else
           "the positive controls, pooled over the students, moved no capability-axis task on the dev items "
           "(HEADLINE_RULE)")
    return gate, axis_tasks, False, why


def grid_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean headline delta (dev items, in the primary score) and bits/byte gain per schedule x budget x relation x
    temperature."""
    keys = ["schedule", "budget", "relation", "temperature"]
    return (runs.groupby(keys, dropna=False)
            .agg(headline_delta=("headline_delta", "mean"), bpb_gain=("bpb_gain", "mean"), runs=("seed", "size"),
                 item_se=("item_se", lambda se: float((se ** 2).mean() ** 0.5 / len(se) ** 0.5)))
            .reset_index())


def matrix_recipe(cfg: StudyConfig, cache: Cache, zoo: Zoo) -> tuple[str, int]:
    """The matrix's (schedule, budget): chosen by the recipe rule on the grid when the profile has one."""
    if cfg.recipe is None:
        return cfg.finetune.schedule, cfg.sampling.tokens_per_corpus
    pick = chosen_recipe(cfg, cache, zoo)
    return pick["schedule"], pick["budget"]


def budget_calibration(cfg: StudyConfig, axis: pd.DataFrame) -> pd.DataFrame:
    """How many points the capability axis says a token buys, and what the controls may gain at each budget of
    the grid and the matrix (verdicts.budget_calibration)."""
    budgets = sorted(set(cfg.recipe.budgets if cfg.recipe else []) | {cfg.sampling.tokens_per_corpus})
    return verdicts.budget_calibration(axis, zoo_checks.tokens_seen(cfg), budgets, cfg.analysis.alpha,
                                       cfg.analysis.power)
