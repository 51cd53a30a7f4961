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
    no earlier notebook does. Session 12's gemma run stopped there with NotYours (the look-alike test had put the
    texts in the cache first, so it never saw this)."""
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
