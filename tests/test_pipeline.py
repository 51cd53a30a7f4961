"""notebooks/pipeline.yaml: the declared graph orders the run, checks `--only`, and holds every notebook to what it
declares (products written, kinds of artifact built)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from resurface.study import pipeline
from resurface.frame.cache import Cache, NotYours

ROOT = Path(__file__).resolve().parents[1]


def _write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "pipeline.yaml"
    path.write_text(body)
    return path


@pytest.mark.parametrize("body, says", [
    ("notebooks:\n  00_a: {reads: [findings/b], writes: [findings/a]}\n"
     "  01_b: {reads: [findings/a], writes: [findings/b]}\n", "read each other in a circle"),
    ("notebooks:\n  00_a: {reads: [tables/nowhere], writes: []}\n", "reads tables/nowhere, which no notebook writes"),
    ("notebooks:\n  00_a: {writes: [tables/t]}\n  01_b: {writes: [tables/t]}\n", "written by both"),
    ("notebooks:\n  00_a: {writes: [plots/t]}\n", "a product is tables/NAME"),
    ("notebooks:\n  00_a: {writes: [], make: [x]}\n", "unknown field(s) ['make']"),
])
def test_a_broken_pipeline_file_is_refused_in_one_sentence(tmp_path, body, says):
    with pytest.raises(pipeline.PipelineError, match=None) as err:
        pipeline.load(_write(tmp_path, body))
    assert says in str(err.value)


def test_a_notebook_is_held_to_the_products_it_declares():
    pipe = pipeline.load()
    step = pipe.steps["01_recipe"]
    files = [f"{p}{s}" for p in step.writes for s in pipeline.SUFFIXES[p.split("/")[0]]] + ["tables/timings.csv"]
    pipe.check_products("01_recipe", files)  # exactly what it declares: fine
    with pytest.raises(pipeline.PipelineError, match="wrote tables/surprise, which notebooks/pipeline.yaml"):
        pipe.check_products("01_recipe", files + ["tables/surprise.csv"])
    with pytest.raises(pipeline.PipelineError, match="ended without writing findings/01_recipe"):
        pipe.check_products("01_recipe", [f for f in files if "findings" not in f])
    # a product only some profiles make (a loss curve for models trained here) may be there or not
    zoo = [f"{p}{s}" for p in pipe.steps["00_zoo"].writes for s in pipeline.SUFFIXES[p.split("/")[0]]]
    pipe.check_products("00_zoo", zoo)
    pipe.check_products("00_zoo", zoo + ["figures/zoo_loss_curves.png", "figures/zoo_loss_curves.pdf"])


def test_a_later_notebook_never_silently_rebuilds_an_earlier_ones_artifact(tmp_path):
    pipe = pipeline.load()
    cache = Cache(tmp_path)
    cache.restrict("02_transfer", pipe.builders())
    assert cache.get_or_build("students", "s", {}, lambda tmp: {"ok": 1}).meta == {"ok": 1}  # its own kind
    with pytest.raises(NotYours) as err:
        cache.get_or_build("zoo", "lineage-small", {}, lambda tmp: {})
    assert str(err.value) == ("02_transfer needs zoo/lineage-small, which the cache does not hold and 00_zoo builds; "
                              "run 00_zoo first (./run_all.sh --only 00) or the whole study")
    assert not (tmp_path / "zoo").exists()
    Cache(tmp_path).get_or_build("zoo", "lineage-small", {}, lambda tmp: {})  # built by 00 (unrestricted here)
    cache.get_or_build("zoo", "lineage-small", {}, lambda tmp: {})  # now 02 reads it


def test_the_committed_notebooks_match_their_declarations():
    """Every product a notebook saves (`study.save_table/figure/json("...")` in its code) is declared for it."""
    import re
    pipe = pipeline.load()
    for nb in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        code = "".join("".join(c["source"]) for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code")
        saved = {f"tables/{n}" for n in re.findall(r'save_table\([^,]+, f?"(\w+)"', code)}
        saved |= {f"figures/{n}" for n in re.findall(r'save_figure\(.+?, "(\w+)"\)', code)}
        saved |= {f"findings/{n}" for n in re.findall(r'save_json\(.+?, "findings", "(\w+)"\)', code)}
        step = pipe.steps[nb.stem]
        assert saved and saved <= set(step.writes) | set(step.may_write), (nb.name, saved)


def _run_all(tmp_path, *args):
    env = {**os.environ, "RESURFACE_OUTPUTS": str(tmp_path / "out"), "RESURFACE_CACHE": str(tmp_path / "cache")}
    return subprocess.run(["./run_all.sh", "--profile", "smoke", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


def test_only_refuses_an_unknown_notebook_before_creating_anything(tmp_path):
    proc = _run_all(tmp_path, "--only", "07")
    assert proc.returncode == 1
    assert "no notebook starts with '07'; the notebooks are 00_zoo, 01_recipe" in proc.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


def test_only_names_the_notebook_to_run_first(tmp_path):
    proc = _run_all(tmp_path, "--only", "02")
    assert proc.returncode == 1
    assert ("02_transfer reads findings/00_zoo_checks from 00_zoo, which" in proc.stderr
            and "run 00_zoo first (run_all.sh --profile smoke --only 00)" in proc.stderr)
    assert not (tmp_path / "out").exists()


def test_the_flow_tables_are_the_pipeline_file():
    """notebooks/README.md and the report show the flow as the pipeline file declares it."""
    table = pipeline.flow_table(pipeline.load())
    assert table in (ROOT / "notebooks" / "README.md").read_text()


def test_the_memorization_notebook_may_fetch_the_texts_it_scans(tmp_path):
    """A real-weights profile's natural scan (params/gemma.yaml) fetches its texts (sources/kjv) in notebook 04;
    no earlier notebook does, so the cache must let 04 build them (a look-alike test that puts the texts in the
    cache first would not see a NotYours there)."""
    from resurface.frame.profiles import load_config
    assert load_config("gemma").memorization.natural is not None
    cache = Cache(tmp_path)
    cache.restrict("04_memorization", pipeline.load().builders())
    assert cache.get_or_build("sources", "kjv", {}, lambda tmp: {"ok": 1}).meta == {"ok": 1}


def _fake_upstream(out: Path, config: dict) -> None:
    """02_transfer's inputs as empty files, with provenance records of the notebooks that wrote them."""
    from resurface.study.pipeline import record_provenance
    for name in ("findings/00_zoo_checks.json", "findings/01_recipe.json"):
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text("{}")
    for nb in ("00_zoo", "01_recipe"):
        record_provenance(out, nb, config, ROOT / "notebooks" / f"{nb}.ipynb")


def test_products_from_other_parameters_or_another_notebook_are_stale(tmp_path):
    from resurface.frame.profiles import config_dict, load_config
    from resurface.study.pipeline import load
    pipe = load(ROOT / "notebooks" / "pipeline.yaml")
    config = config_dict(load_config("smoke"))
    _fake_upstream(tmp_path, config)
    assert pipe.stale_inputs("02_transfer", tmp_path, config, ROOT / "notebooks") == {}
    changed = config_dict(load_config("smoke", {"recipe.budgets": [4096]}))
    stale = pipe.stale_inputs("02_transfer", tmp_path, changed, ROOT / "notebooks")
    assert list(stale) == ["00_zoo", "01_recipe"] and "recipe.budgets changed" in stale["01_recipe"]
    edited = tmp_path / "nbs"
    shutil.copytree(ROOT / "notebooks", edited)
    nb = json.loads((edited / "01_recipe.ipynb").read_text())
    nb["cells"][0]["source"].append("\nOne more line.")  # any edit, whatever the file's JSON escaping
    (edited / "01_recipe.ipynb").write_text(json.dumps(nb, indent=1))
    assert pipe.stale_inputs("02_transfer", tmp_path, config, edited) == {
        "01_recipe": "ran from another version of 01_recipe.ipynb"}


def test_only_refuses_products_of_other_parameters_naming_the_notebook_to_rerun(tmp_path):
    """Change 01's recipe through params and ask for 02 alone: the runner names 01 before any kernel starts."""
    from resurface.frame.profiles import config_dict, load_config
    _fake_upstream(tmp_path / "out" / "smoke", config_dict(load_config("smoke")))
    proc = _run_all(tmp_path, "--only", "02", "--set", "recipe.budgets=[4096]")
    assert proc.returncode == 1, proc.stderr
    assert "02_transfer reads the products of 00_zoo, which ran under other parameters" in proc.stderr
    assert "run 00_zoo first" in proc.stderr and not (tmp_path / "out" / "smoke" / "02_transfer.ipynb").exists()


def test_a_parameter_added_at_its_default_does_not_make_products_stale():
    from resurface.study.pipeline import changed_keys
    before = {"finetune": {"lr": 0.001}, "zoo": {"models": {"a": {"steps": 600}}}}
    after = {"finetune": {"lr": 0.001, "freeze_embeddings": False}, "zoo": {"models": {"a": {"steps": 600,
                                                                                           "init_from": None}}}}
    assert changed_keys(before, after) == []
    after["finetune"]["freeze_embeddings"] = True
    after["zoo"]["models"]["a"]["steps"] = 700
    assert changed_keys(before, after) == ["finetune.freeze_embeddings", "zoo.models.a.steps"]
    # a key added at a default that is neither None nor False: unchanged at the default, changed off it
    assert changed_keys({"analysis": {"alpha": 0.05}}, {"analysis": {"alpha": 0.05, "score": "accuracy"}}) == []
    assert changed_keys({"analysis": {"alpha": 0.05}},
                        {"analysis": {"alpha": 0.05, "score": "logloss"}}) == ["analysis.score"]
    # ... inside an optional section too (`recipe` may be null)
    assert changed_keys({"recipe": {"seeds": [0]}}, {"recipe": {"seeds": [0], "grid_scores": "all"}}) == []
    assert changed_keys({"recipe": {"seeds": [0]}},
                        {"recipe": {"seeds": [0], "grid_scores": "bits_per_byte"}}) == ["recipe.grid_scores"]
    # ... and inside an entry of a mapping (`zoo.models.<name>`)
    assert changed_keys({"zoo": {"models": {"t": {"steps": 9}}}},
                        {"zoo": {"models": {"t": {"steps": 9, "planting_loss": "passage"}}}}) == []
    assert changed_keys({"zoo": {"models": {"t": {"steps": 9}}}}, {"zoo": {"models": {"t": {
        "steps": 9, "planting_loss": "suffix"}}}}) == ["zoo.models.t.planting_loss"]


def _lender(out: Path, config: dict, notebook: str = "01_recipe") -> None:
    """A lender profile's outputs: every product `notebook` declares, its executed copy, its provenance record."""
    from resurface.study.pipeline import SUFFIXES, record_provenance
    step = pipeline.load().steps[notebook]
    for product in step.writes:
        for suffix in SUFFIXES[product.split("/")[0]]:
            (out / f"{product}{suffix}").parent.mkdir(parents=True, exist_ok=True)
            (out / f"{product}{suffix}").write_text(f"{product} of the lender")
    (out / f"{notebook}.ipynb").write_text("{}")
    record_provenance(out, notebook, config, ROOT / "notebooks" / f"{notebook}.ipynb")


def test_a_profile_borrows_a_notebook_run_under_the_parameters_it_reads(tmp_path):
    """planted-smollm2 takes crossed-smollm2's recipe: the two differ only where 01 never reads (canaries,
    memorization) and in a model the lender does not have (the planted twin)."""
    from resurface.frame.profiles import config_dict, load_config
    lender, here = tmp_path / "crossed-smollm2", tmp_path / "planted-smollm2"
    _lender(lender, config_dict(load_config("crossed-smollm2")))
    cfg = load_config("planted-smollm2")
    assert cfg.borrow == {"01_recipe": "crossed-smollm2"}
    copied = pipeline.borrow("01_recipe", "crossed-smollm2", lender, config_dict(cfg), ROOT / "notebooks", here,
                             pipeline.load())
    assert (here / "findings" / "01_recipe.json").read_text() == "findings/01_recipe of the lender"
    assert (here / "01_recipe.ipynb").exists() and len(copied) == 2 * 4 + 2 + 1 + 1  # 4 tables, a figure, the finding, the notebook
    record = pipeline.read_provenance(here)["01_recipe"]
    assert record["borrowed_from"] == "crossed-smollm2" and record["config"]["profile"] == "planted-smollm2"
    from resurface.study.runner import timings_say_borrowed
    timings_say_borrowed(here, "01_recipe", "crossed-smollm2")  # what the runner does next
    timings = (here / "tables" / "timings.csv").read_text()
    assert "01_recipe,notebook,borrowed from crossed-smollm2,0.0,borrowed" in timings
    # what 04 then reads is current: its upstream record is this profile's parameters
    assert pipeline.load().stale_inputs("04_memorization", here, config_dict(cfg), ROOT / "notebooks") == {}


@pytest.mark.parametrize("change, says", [
    ({"finetune.lr": 0.0001}, "ran it under other parameters (finetune.lr differ, and 01_recipe reads them)"),
    ({"zoo.models.gemma.kind": "stronger_different"}, "(zoo.models.gemma.kind differ"),
    ("notebook", "came from another version of 01_recipe.ipynb"),
    ("no record", "hold no record of it; run it there first (run_all.sh --profile crossed-smollm2 --only 01)"),
    ("no finding", "lack findings/01_recipe.json"),
])
def test_a_borrow_that_would_not_be_the_same_products_is_refused_before_copying(tmp_path, change, says):
    from resurface.frame.profiles import config_dict, load_config
    lender, here = tmp_path / "lender", tmp_path / "here"
    _lender(lender, config_dict(load_config("crossed-smollm2")))
    folder = ROOT / "notebooks"
    if change == "notebook":
        folder = tmp_path / "nbs"
        shutil.copytree(ROOT / "notebooks", folder)
        (folder / "01_recipe.ipynb").write_text((folder / "01_recipe.ipynb").read_text() + "\n")
    elif change == "no record":
        (lender / "provenance.json").unlink()
    elif change == "no finding":
        (lender / "findings" / "01_recipe.json").unlink()
    overrides = change if isinstance(change, dict) else {}
    with pytest.raises(pipeline.PipelineError) as err:
        pipeline.borrow("01_recipe", "crossed-smollm2", lender, config_dict(load_config("planted-smollm2", overrides)),
                        folder, here, pipeline.load(folder / "pipeline.yaml"))
    assert says in str(err.value)
    assert not here.exists()


def test_a_profile_runs_the_notebooks_it_names_and_each_needs_its_upstream():
    from resurface.study.runner import notebooks
    pipe = pipeline.load()
    folder = ROOT / "notebooks"
    assert notebooks(folder, pipe, None, ["00_zoo", "01_recipe", "04_memorization"]) == [
        "00_zoo", "01_recipe", "04_memorization"]
    assert notebooks(folder, pipe, "04", ["00_zoo", "01_recipe", "04_memorization"]) == ["04_memorization"]
    assert notebooks(folder, pipe, "02", ["00_zoo", "01_recipe", "04_memorization"]) == []
    with pytest.raises(pipeline.PipelineError, match="runs 04_memorization, which reads the products of 01_recipe"):
        notebooks(folder, pipe, None, ["00_zoo", "04_memorization"])
    with pytest.raises(pipeline.PipelineError, match="name 05_extra, which is not in notebooks/pipeline.yaml"):
        notebooks(folder, pipe, None, ["00_zoo", "05_extra"])


@pytest.mark.parametrize("overrides, says", [
    ({"borrow": {"01_recipe": "planted-smollm2"}}, "cannot borrow from itself"),
    ({"borrow": {"01_recipe": "nowhere"}}, "there is no profile `nowhere`"),
    ({"notebooks": ["00_zoo", "04_memorization"]}, "borrow names 01_recipe, which is not among the profile's"),
    ({"notebooks": ["4"]}, "`notebooks.0` = \"4\" is not allowed"),
])
def test_notebooks_and_borrow_are_validated_in_one_sentence(overrides, says):
    from resurface.frame.profiles import load_config
    from resurface.frame.schema import ConfigError
    with pytest.raises(ConfigError) as err:
        load_config("planted-smollm2", overrides)
    assert says in str(err.value)


def test_the_runner_refuses_a_borrow_before_running_anything(tmp_path):
    """smoke borrowing workshop's recipe: workshop ran 01 under other parameters, so the run stops with one
    sentence naming them, before notebook 00 or anything else has run."""
    from resurface.frame.profiles import config_dict, load_config
    _lender(tmp_path / "out" / "workshop", config_dict(load_config("workshop")))
    proc = _run_all(tmp_path, "--set", "borrow={01_recipe: workshop}")
    assert proc.returncode == 1, proc.stderr
    assert "01_recipe is borrowed from profile workshop, which ran it under other parameters (" in proc.stderr
    assert not (tmp_path / "out" / "smoke").exists() and not (tmp_path / "cache").exists()
    proc = _run_all(tmp_path, "--set", "notebooks=[00_zoo, 02_transfer]")
    assert proc.returncode == 1 and "runs 02_transfer, which reads the products of 01_recipe" in proc.stderr
