"""The committed default results (outputs/default/) agree with themselves: findings follow from the tables."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from resurface.analysis import verdicts
from resurface.frame.profiles import available_profiles, config_dict, load_config
from resurface.study.proxies import finding2

OUT = Path(__file__).resolve().parents[1] / "outputs" / "default"


def _finding(name):
    return json.loads((OUT / "findings" / f"{name}.json").read_text())


def test_committed_outputs_are_complete():
    for name in ("00_zoo", "01_recipe", "02_transfer", "03_proxies", "04_memorization"):
        assert (OUT / f"{name}.ipynb").exists(), name
    for name in ("02_transfer", "03_proxies", "04_memorization"):
        assert _finding(name)["verdict"] in {"supported", "not supported", "inconclusive", "inconclusive (fragile)"}
    assert (OUT / "REPORT.md").exists()


def test_transfer_finding_follows_from_the_runs():
    f = _finding("02_transfer")
    cfg = load_config("default")
    runs = pd.read_csv(OUT / "tables" / "transfer_runs.csv")
    primary = runs["temperature"] == cfg.analysis.primary_temperature
    keep = runs[runs["in_verdict"] & primary & ~runs["strength"].isin(verdicts.WEAKER)]
    cells = keep.groupby(["student", "relation", "source", "temperature"], dropna=False)["headline_delta"].mean()
    per = cells.groupby(["student", "relation"]).mean()
    committed = {(r["student"], r["relation"]): r["mean"] for r in f["per_relation"]}
    for key, value in per.items():
        assert value == pytest.approx(committed[key])
    # the instrument's point estimates: each control's runs averaged over seeds per student, then over students
    ctrl = runs[runs["relation"].isin(verdicts.CONTROLS)].groupby(["relation", "student"])["headline_delta"].mean()
    for c, v in f["instrument"]["controls"].items():
        assert ctrl[c].mean() == pytest.approx(v["estimate"])
    # the verdict: the comparisons combined, then the preconditions (instrument, headline tasks, robustness)
    assert f["verdict_of_the_comparisons"] == verdicts.combine([c["outcome"] for c in f["pooled"].values()])
    if not f["instrument"]["passed"] or not f["capability_axis_ok"]:
        assert f["verdict"] == "inconclusive"
    elif f["fragile_variants"]:
        assert f["verdict"] == "inconclusive (fragile)"
    else:
        assert f["verdict"] == f["verdict_of_the_comparisons"]
    robust = pd.read_csv(OUT / "tables" / "transfer_robustness.csv")
    assert robust.loc[robust["variant"] == "all runs", "verdict"].item() == f["verdict_of_the_comparisons"]
    # the recipe the matrix used is the one the grid's rule picks
    grid = pd.read_csv(OUT / "tables" / "recipe_grid_runs.csv")
    pick = verdicts.choose_recipe(grid, list(cfg.recipe.schedules), cfg.recipe.fallback)
    assert (f["recipe"]["schedule"], f["recipe"]["budget"]) == (pick["schedule"], pick["budget"])


def test_proxies_finding_follows_from_the_table():
    from resurface.study.proxies import upstream_checks
    f = _finding("03_proxies")
    up = upstream_checks(_finding("00_zoo_checks"), _finding("02_transfer"))
    again = finding2(load_config("default"), pd.read_csv(OUT / "tables" / "proxies.csv"), up["axis_ok"],
                     up["instrument_ok"], up["instrument_why"])
    assert again["verdict"] == f["verdict"]
    for score, a in again["associations"].items():
        assert a["rho"] == pytest.approx(f["associations"][score]["rho"])
        assert a["outcome"] == f["associations"][score]["outcome"]


def test_memorization_finding_follows_from_the_tables():
    f = _finding("04_memorization")
    seq = pd.read_csv(OUT / "tables" / "memorization_per_sequence.csv")
    gates = pd.read_csv(OUT / "tables" / "memorization_gate.csv")
    assert f["gate_share"] == pytest.approx(gates["tokens_in_matches"].sum() / gates["tokens"].sum())
    assert f["n_memorized"] == int((seq["extracted_before"] == 1).sum())
    sec = f["secondary"]
    assert sec["before"] == pytest.approx(seq["advantage_before"].mean())
    for src, r in sec["per_source"].items():
        assert r["after"] == pytest.approx(seq[f"advantage_{src}"].mean())
    m = load_config("default").memorization
    if f["n_memorized"] < m.min_memorized or f["gate_share"] > m.gate_max:
        assert f["verdict"] == "inconclusive"


def test_memorization_figure_and_report_agree_with_the_finding():
    """The figure's "before" line and the report's "before" number are the finding's, for every measure."""
    from resurface.study import figures
    f = _finding("04_memorization")
    shown = [v for v in (f["primary"], f["secondary"]) if v]
    fig = figures.memorization_before_after(shown)
    report = (OUT / "REPORT.md").read_text()
    for ax, v in zip(fig.axes, shown):
        if v["per_source"]:
            assert ax.lines[0].get_ydata()[0] == pytest.approx(v["before"])
            assert f"({v['measure']}, {v['verdict']}): before {v['before']:.3f}" in report


def test_the_report_shows_finding_1_on_the_secondary_score_with_its_instrument():
    """The paper's measure (accuracy) sits beside the proper score in REPORT.md: its verdict and each control."""
    second = _finding("02_transfer")["secondary_score"]
    report = (OUT / "REPORT.md").read_text()
    assert f"### Finding 1 on the secondary score: {second['score']}" in report
    assert f"**{second['verdict']}**" in report
    for control, c in second["instrument"]["controls"].items():
        assert f"| {control} | {c['estimate']:.4g} |" in report


def test_a_report_of_findings_judged_by_earlier_rules_says_so(tmp_path):
    """Findings written before the instrument check existed are flagged above them; the default's are not."""
    from resurface.study.report import _stale_notice
    old = tmp_path / "old"
    (old / "findings").mkdir(parents=True)
    (old / "findings" / "02_transfer.json").write_text(json.dumps({"verdict": "not supported", "per_relation": []}))
    assert "earlier version of the rules" in " ".join(_stale_notice(old))
    assert "instrument" in _finding("02_transfer")
    assert _stale_notice(OUT) == [] and "earlier version of the rules" not in (OUT / "REPORT.md").read_text()


def _code_cells(path: Path) -> list[str]:
    cells = json.loads(path.read_text())["cells"]
    return ["".join(c["source"]) for c in cells if c["cell_type"] == "code"
            and "injected-parameters" not in c.get("metadata", {}).get("tags", [])]


@pytest.mark.parametrize("profile", sorted(p.name for p in OUT.parent.iterdir()  # a profile's run, not a contrast
                                            if (p / "REPORT.md").exists() and (p / "params.resolved.yaml").exists()))
def test_committed_executed_notebooks_ran_the_notebooks_of_this_repository(profile):
    """Every committed executed notebook's code is its source notebook's (papermill's injected parameters aside),
    so executed copies cannot drift from the code unnoticed; a profile whose report says its notebooks ran an
    earlier version is the only exception, and it must say so."""
    from resurface.study.report import _stale_notice
    out = OUT.parent / profile
    executed = sorted(out.glob("[0-9][0-9]_*.ipynb"))
    assert executed, f"outputs/{profile} has no executed notebook"
    source = Path(__file__).resolve().parents[1] / "notebooks"
    drifted = [nb.name for nb in executed if _code_cells(nb) != _code_cells(source / nb.name)]
    if _stale_notice(out):
        assert "executed notebooks ran an earlier version" in (out / "REPORT.md").read_text()
    else:
        assert not drifted, f"outputs/{profile}: {drifted} ran other code than notebooks/; re-run the profile"


def test_the_planted_twin_report_takes_finding_3_apart_from_its_tables():
    """outputs/planted-smollm2: a passage planted twice is counted once, the report says what the controls
    erase with their CIs, and the NLL components recompute the advantage and the share of planting's gain undone."""
    out = OUT.parent / "planted-smollm2"
    f = json.loads((out / "findings" / "04_memorization.json").read_text())
    seq = pd.read_csv(out / "tables" / "memorization_per_sequence.csv")
    repeats = f["design"]["repeated_passages"]
    assert not set(repeats) & set(seq["canary_id"])          # judged once, under the first id
    assert f["n_memorized"] == int((seq["extracted_before"] == 1).sum())
    report = (out / "REPORT.md").read_text()
    # the design paragraph says what this partial run does not have, before any table
    head = report[:report.index("## The three claims")]
    assert "no finding-1 matrix" in head and "no capability axis" in head
    section = report[report.index("## 7 · Finding 3"):]
    for src, r in f["primary"]["per_source"].items():
        if r["relation"] in ("real_text", "task_text"):
            assert f"{src} {r['relative_drop']:.2f} [{r['drop_ci'][0]:.2f}, {r['drop_ci'][1]:.2f}]" in section
    parts = pd.read_csv(out / "tables" / "memorization_nll_components.csv").set_index("source")
    gained = parts.loc["base", "canary_nll"] - parts.loc["untouched", "canary_nll"]
    for src in f["primary"]["per_source"]:
        assert parts.loc[src, "planting_gain_undone"] == pytest.approx(parts.loc[src, "canary_change"] / gained)
        assert parts.loc[src, "advantage"] == pytest.approx(
            f["secondary"]["per_source"][src]["after"], abs=1e-9)
    # capability against the model the twin copies: the twin's start plus each source's change
    cost = pd.read_csv(out / "tables" / "memorization_planting_cost.csv").set_index("task")
    for src, r in f["primary"]["per_source"].items():
        assert f"{src} {cost.loc['headline', 'twin_minus_base'] + r['capability']['estimate']:+.2f}" in section


@pytest.mark.parametrize("profile", [p for p in available_profiles() if load_config(p).borrow])
def test_every_borrow_finds_its_lenders_committed_products(profile):
    """A profile that borrows a notebook finds it in the lender's committed outputs, made by this notebook under
    every parameter it reads, so `./run_all.sh --profile P` on a fresh clone does not stop at the borrow: a
    change to either profile's parameters without re-running the lender fails here."""
    from resurface.study import pipeline
    cfg = load_config(profile)
    for name, lender in cfg.borrow.items():
        assert pipeline.borrowable(name, lender, OUT.parent / lender, config_dict(cfg), OUT.parents[1] / "notebooks",
                                   pipeline.load())


def test_a_report_that_judges_no_claim_says_so():
    """outputs/crossed-gemma-recipe ran 00 and 01 only: its report says no claim is judged there rather than
    leaving the claims' section empty."""
    report = (OUT.parent / "crossed-gemma-recipe" / "REPORT.md").read_text()
    claims = report.split("## The three claims, and what this run found", 1)[1].split("\n## ", 1)[0]
    assert "None is judged in this run" in claims and "| finding |" not in claims
