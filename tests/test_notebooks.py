"""Notebooks: committed clean, one `parameters` cell, and the whole smoke study runs end to end."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import no_network_prefix

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS and NOTEBOOKS[0].name == "00_zoo.ipynb"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebook_is_clean_and_parameterized(nb):
    cells = json.loads(nb.read_text())["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), "commit notebooks clean"
    tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1
    assert "profile" in "".join(tagged[0]["source"])
    # the profile is chosen once, for every notebook, by RESURFACE_PROFILE (Papermill's injection wins over it)
    for env, want in (({"RESURFACE_PROFILE": "workshop"}, "workshop"), ({}, "default")):
        scope: dict = {}
        old = os.environ.pop("RESURFACE_PROFILE", None)
        os.environ.update(env)
        try:
            exec("".join(tagged[0]["source"]), scope)
        finally:
            os.environ.pop("RESURFACE_PROFILE", None)
            if old is not None:
                os.environ["RESURFACE_PROFILE"] = old
        assert scope["profile"] == want and scope["overrides"] == {}
    assert json.loads(nb.read_text())["metadata"]["kernelspec"]["name"] == "resurface"


@pytest.mark.slow
def quoted_rules(nb: Path) -> dict[str, str]:
    """Every verdict rule a notebook's markdown quotes: the blockquote under a `verdicts.NAME` heading."""
    import re
    out = {}
    for cell in json.loads(nb.read_text())["cells"]:
        if cell["cell_type"] != "markdown":
            continue
        text = "".join(cell["source"])
        for m in re.finditer(r"\*\*`(?:verdicts|resurfacing)\.(\w+_RULE)`\*\*\n\n((?:>[^\n]*\n?)+)", text):
            out[m.group(1)] = " ".join(line[1:].strip() for line in m.group(2).splitlines())
    return out


def test_every_verdict_rule_is_stated_in_a_notebook_word_for_word_as_the_code_applies_it():
    """The markdown a reader reads before the results says exactly what the code applies: every rule of
    analysis/verdicts/ and analysis/resurfacing.py is quoted in a notebook, and every quote equals its rule
    (whitespace aside)."""
    from resurface.analysis import resurfacing, verdicts
    rules = {name: getattr(m, name) for m in (verdicts, resurfacing) for name in dir(m) if name.endswith("_RULE")}
    quoted = {}
    for nb in NOTEBOOKS:
        for name, text in quoted_rules(nb).items():
            assert name in rules, f"{nb.name} quotes verdicts.{name}, which does not exist"
            assert " ".join(text.split()) == " ".join(rules[name].split()), (
                f"{nb.name}'s quote of verdicts.{name} differs from the code: re-quote it")
            quoted[name] = nb.name
    assert set(quoted) == set(rules), f"rules no notebook states: {sorted(set(rules) - set(quoted))}"


def test_a_changed_rule_is_caught(tmp_path):
    """The check above can fail: a notebook whose quote drifted by one word is told apart."""
    nb = next(n for n in NOTEBOOKS if "TRANSFER_RULE" in quoted_rules(n))
    drifted = tmp_path / nb.name
    drifted.write_text(nb.read_text().replace("Finding 1, per student", "Finding 1, per seed", 1))
    assert quoted_rules(drifted)["TRANSFER_RULE"] != quoted_rules(nb)["TRANSFER_RULE"]
    from resurface.analysis import verdicts
    assert " ".join(quoted_rules(drifted)["TRANSFER_RULE"].split()) != " ".join(verdicts.TRANSFER_RULE.split())


def test_smoke_study_products(smoke_run):
    out, proc, _ = smoke_run
    for nb in NOTEBOOKS:
        executed = json.loads((out / nb.name).read_text())
        errors = [o for c in executed["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors
    cards = pd.read_csv(out / "tables" / "zoo_models.csv")
    assert set(cards["name"]) == {"lineage-small", "lineage-small-sibling", "lineage-large", "stronger", "cross",
                                  "lineage-small-twin"}
    assert (cards["parameters"] > 0).all() and cards["heldout_lineage_bpb"].between(0.5, 10).all()
    for fig in ("zoo_loss_curves.png", "zoo_loss_curves.pdf"):
        assert (out / "figures" / fig).stat().st_size > 5000
    assert (out / "params.resolved.yaml").exists()
    timings = pd.read_csv(out / "tables" / "timings.csv")
    assert set(timings["status"]) <= {"built", "reused", "wall"} and len(timings) > 5
    # one wall-time row per executed notebook, and it covers the notebook's own builds
    walls = timings[timings["status"] == "wall"].set_index("notebook")["seconds"]
    assert set(walls.index) == set(timings["notebook"])
    assert not timings.duplicated(["notebook", "artifact"]).any()  # one row per artifact and notebook
    # a run log with every build and reuse, stamped by notebook; every table also as booktabs LaTeX
    log = (out / "run.log").read_text()
    assert "runner: ==> 00_zoo.ipynb" in log and "00_zoo: " in log and "zoo/lineage-small" in log
    assert "04_memorization: " in log and "finished in" in log
    for csv in (out / "tables").glob("*.csv"):
        tex = csv.with_suffix(".tex").read_text()
        assert "\\toprule" in tex and "\\bottomrule" in tex
    # every executed notebook also as HTML beside REPORT.html, linked from the report
    report = (out / "REPORT.md").read_text()
    for nb in NOTEBOOKS:
        page = out / nb.with_suffix(".html").name
        assert page.stat().st_size > 10_000 and f"]({page.name})" in report
    # the terminal shows stage-level progress: notebook, stage, done out of how many, time left
    import re
    lines = re.findall(r"^    \[(\d\d_\w+)\] .+ (\d+)/(\d+) done, \d+ s so far, about \d+ s left$", proc.stdout, re.M)
    assert {"00_zoo", "02_transfer"} <= {nb for nb, _, _ in lines}
    assert all(0 < int(k) <= int(n) for _, k, n in lines)
    # executed notebooks free of progress-bar debris (the kernels run with TQDM_DISABLE)
    for nb in NOTEBOOKS:
        text = (out / nb.name).read_text()
        assert "it/s]" not in text and "%|" not in text, f"progress bars in {nb.name}"
        # quiet: builds and reuses stay in run.log, the notebook shows one line per stage and no library logging
        assert '"reused ' not in text and '"building ' not in text and "fontTools" not in text, nb.name
    from resurface.compute.pool import usable_cores
    if usable_cores() > 1:  # pretraining and fine-tuning ran in the worker pool, not in the kernel
        built = timings[(timings["status"] == "built") & timings["stage"].isin(["finetune", "evaluate", "memorization"])]
        assert all((built[built["stage"] == s]["worker"] > 0).any() for s in ["finetune", "evaluate", "memorization"])
        # a pool given one job runs it here, single-threaded as a worker would (pool._build): in this profile only
        # notebook 00's canary extraction, which has one canary-trained model to measure, and notebook 01's one
        # untouched student that the grid did not evaluate on the dev items (the headline gate's second student)
        in_kernel = built[built["worker"] == 0]
        assert set(in_kernel["notebook"]) <= {"00_zoo", "01_recipe"}, in_kernel
        assert set(zip(in_kernel["notebook"], in_kernel["stage"])) <= {("00_zoo", "memorization"),
                                                                        ("01_recipe", "evaluate")}, in_kernel
        assert (in_kernel["notebook"] == "01_recipe").sum() <= 1, in_kernel


@pytest.mark.slow
def test_bad_profile_stops_before_any_notebook(tmp_path):
    env = {**os.environ, "RESURFACE_OUTPUTS": str(tmp_path)}
    proc = subprocess.run(["./run_all.sh", "--profile", "nope"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode != 0 and "Unknown profile `nope`" in proc.stderr
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_failing_notebook_is_named(tmp_path):
    import nbformat
    nbdir = tmp_path / "nbs"
    nbdir.mkdir()
    nb = nbformat.v4.new_notebook()
    p = nbformat.v4.new_code_cell('profile = "smoke"')
    p.metadata["tags"] = ["parameters"]
    nb.cells = [p, nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell("raise RuntimeError('boom')")]
    nb.metadata["kernelspec"] = {"name": "resurface", "display_name": "resurface", "language": "python"}
    nbformat.write(nb, nbdir / "07_broken.ipynb")
    (nbdir / "pipeline.yaml").write_text("notebooks:\n  07_broken: {reads: [], writes: []}\n")
    # a good executed copy and the log of an earlier run, which a failed run must not destroy
    out = tmp_path / "out" / "smoke"
    out.mkdir(parents=True)
    (out / "07_broken.ipynb").write_text("the good copy")
    (out / "run.log").write_text("2026-01-01 00:00:00 runner: an earlier run\n")
    env = {**os.environ, "RESURFACE_OUTPUTS": str(tmp_path / "out"), "RESURFACE_NOTEBOOKS": str(nbdir)}
    proc = subprocess.run(["./run_all.sh", "--profile", "smoke"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode != 0
    assert "notebook 07_broken.ipynb failed at" in proc.stderr and "boom" in proc.stderr
    assert (out / "07_broken.ipynb").read_text() == "the good copy" and "is untouched" in proc.stderr
    assert "boom" in (out / "07_broken.failed.ipynb").read_text()
    assert "without encryption" not in proc.stdout + proc.stderr  # no kernel warnings at the terminal
    log = (out / "run.log").read_text()
    assert log.startswith("2026-01-01 00:00:00 runner: an earlier run\n") and "07_broken.ipynb failed" in log


def test_the_pipeline_orders_the_notebooks_and_runs_the_ready_ones_side_by_side():
    from resurface.study import pipeline
    pipe = pipeline.load()
    assert pipe.stages() == [["00_zoo"], ["01_recipe"], ["02_transfer", "04_memorization"], ["03_proxies"]]
    assert pipe.stages(side_by_side=False) == [["00_zoo"], ["01_recipe"], ["02_transfer"], ["04_memorization"],
                                               ["03_proxies"]]
    assert pipe.stages(["04_memorization"]) == [["04_memorization"]]
    assert pipe.needs("03_proxies") == ["00_zoo", "02_transfer"]
    assert sorted(p.stem for p in NOTEBOOKS) == sorted(pipe.steps)


def test_bad_command_line_override_stops_before_any_notebook(tmp_path):
    env = {**os.environ, "RESURFACE_OUTPUTS": str(tmp_path), "RESURFACE_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run(["./run_all.sh", "--profile", "smoke", "--set", "sampling.top_p=3"], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "`sampling.top_p` = 3" in proc.stderr
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_smoke_report_matches_findings(smoke_run):
    out, _, _ = smoke_run
    report = (out / "REPORT.md").read_text()
    page = (out / "REPORT.html").read_text()
    for name in ("02_transfer", "03_proxies", "04_memorization"):
        finding = json.loads((out / "findings" / f"{name}.json").read_text())
        assert f"**{finding['verdict']}**" in report
        assert f"<strong>{finding['verdict']}</strong>" in page
    assert page.count("<table>") >= 3 and '<img alt="transfer_by_relation" src="figures/transfer_by_relation.png"' in page
    for fig in (out / "figures").glob("*.png"):  # every figure of the run is in the report, with its caption
        assert f"figures/{fig.name}" in report
    # the verdicts in the findings follow from the committed tables: the runs' headline deltas in the primary
    # score (SCORE_RULE), whose accuracy column is the per-task table's
    table = pd.read_csv(out / "tables" / "transfer.csv")
    h = pd.read_csv(out / "tables" / "transfer_runs.csv")
    f1 = json.loads((out / "findings" / "02_transfer.json").read_text())
    from resurface.analysis.findings import headline
    acc = headline(table, f1["headline_tasks"]).set_index("run_label")["headline_delta"]
    assert np.allclose(h.set_index("run_label")["accuracy_delta"], acc.loc[h["run_label"]], atol=1e-9)
    assert f1["score"] == "logloss" and np.allclose(h["headline_delta"], h["logloss_delta"])
    assert f1["headline_tasks"] and f1["recipe"]["schedule"] in ("continue", "constant", "rewarm")
    per = {(r["student"], r["relation"]): r["mean"] for r in f1["per_relation"]}
    for (st, rel), g in h[h.relation.isin(["self", "cross_family"])].groupby(["student", "relation"]):
        # a relation's mean is the mean over (source, temperature) cells of the mean over seeds
        assert abs(g.groupby(["source", "temperature"])["headline_delta"].mean().mean() - per[(st, rel)]) < 1e-9


@pytest.mark.slow
def test_smoke_finding_3_products_recompute_from_each_other(smoke_run):
    """Notebook 04's added tables agree with the ones they take apart: the planting cost with the untouched twin's
    and its base model's scores, the advantage's components with the advantage, the per-canary gate with the gate;
    and REPORT.md shows finding 3 from them."""
    out, _, _ = smoke_run
    t = lambda name: pd.read_csv(out / "tables" / f"{name}.csv")  # noqa: E731
    cost = t("memorization_planting_cost").set_index("task")
    twin = t("memorization_transfer").drop_duplicates("task").set_index("task")["base"]
    base = t("transfer").query("student == 'lineage-small'").drop_duplicates("task").set_index("task")["base"]
    tasks = [k for k in cost.index if k != "headline"]
    assert tasks and set(cost["base"]) == {"lineage-small"} and set(cost["twin"]) == {"lineage-small-twin"}
    for task in tasks:
        assert cost.loc[task, "twin_minus_base"] == pytest.approx(100 * (twin[task] - base[task]), abs=1e-9)
    assert cost.loc["headline", "twin_minus_base"] == pytest.approx(cost.loc[tasks, "twin_minus_base"].mean())
    parts = t("memorization_nll_components").set_index("source")
    before_after = t("memorization_before_after").set_index("source")
    for source in before_after.index:
        assert parts.loc[source, "advantage"] == pytest.approx(before_after.loc[source, "advantage_nats"], abs=1e-9)
    gate = t("memorization_gate")
    per_canary = out / "tables" / "memorization_gate_per_canary.csv"
    if gate["tokens_in_matches"].sum() == 0:
        assert not per_canary.exists()
    else:
        assert pd.read_csv(per_canary)["tokens_in_matches"].sum() >= gate["tokens_in_matches"].sum()
    report = (out / "REPORT.md").read_text()
    section = report[report.index("## 7 · Finding 3"):]
    assert "memorization_planting_cost.csv" in section and "memorization_nll_components.csv" in section


@pytest.mark.slow
def test_smoke_study_ran_without_network(smoke_run):
    if not no_network_prefix():
        pytest.skip("no `unshare -rn` on this machine: cannot cut the network for a process")
    assert smoke_run[2]


def test_network_is_really_cut():
    """Inside the prefix there is only loopback and no route anywhere (checked without sending traffic)."""
    prefix = no_network_prefix()
    if not prefix:
        pytest.skip("no `unshare -rn` on this machine: cannot cut the network for a process")
    links = subprocess.run(prefix + ["ip", "-o", "link"], capture_output=True, text=True).stdout.splitlines()
    routes = subprocess.run(prefix + ["ip", "route"], capture_output=True, text=True).stdout.strip()
    assert [l.split(":")[1].strip() for l in links] == ["lo"] and routes == ""


def test_progress_lines_are_followed_from_the_run_log_whole_lines_only(tmp_path, capsys):
    from resurface.study.runner import follow_progress
    log = tmp_path / "run.log"
    log.write_text("2026-01-01 00:00:00 runner: a run\n")
    follower = follow_progress(log, every=3600)  # flushed by hand below
    with log.open("a") as fh:
        fh.write("2026-01-01 00:00:01 02_transfer: progress: students 1/4 done, 10 s so far, about 30 s left\n"
                 "2026-01-01 00:00:01 02_transfer: reused students/x\n2026-01-01 00:00:02 03_proxies: progress: emb")
    follower.flush()
    assert capsys.readouterr().out == "    [02_transfer] students 1/4 done, 10 s so far, about 30 s left\n"
    with log.open("a") as fh:
        fh.write("eddings 2/2 done\n")
    follower.flush()
    assert capsys.readouterr().out == "    [03_proxies] embeddings 2/2 done\n"
