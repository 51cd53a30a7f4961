"""The package's layers (resurface/__init__.py): import-linter's contracts hold, and they would catch a break."""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lib" / "resurface"
LAYERS = ["names", "frame", "compute", "lm", "builders", "analysis", "study"]


def lint_imports(lib: Path) -> subprocess.CompletedProcess:
    """lint-imports with pyproject.toml's contracts, on the package found in `lib`."""
    exe = Path(sys.executable).with_name("lint-imports")
    env = {**os.environ, "PYTHONPATH": str(lib)}
    return subprocess.run([str(exe), "--config", str(ROOT / "pyproject.toml"), "--no-cache"], cwd=lib, env=env,
                          capture_output=True, text=True, timeout=120)


def test_the_import_contracts_hold():
    proc = lint_imports(ROOT / "lib")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 kept, 0 broken" in proc.stdout, proc.stdout


def test_the_contracts_fail_on_an_upward_import_a_circle_and_torch_in_analysis(tmp_path):
    """The same contracts on a copy of the package with three planted faults: each breaks its contract."""
    copy = tmp_path / "lib" / "resurface"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    def plant(rel: str, line: str):
        p = copy / rel
        p.write_text(p.read_text() + f"\n{line}\n")
    plant("frame/paths.py", "from resurface.study import runner  # upward")
    plant("builders/tokenizers.py", "from resurface.builders import zoo  # zoo already imports tokenizers: a circle")
    plant("analysis/stats.py", "import torch  # analysis is numbers only")
    proc = lint_imports(tmp_path / "lib")
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    assert "0 kept, 3 broken" in out, out
    assert "resurface.frame.paths -> resurface.study.runner" in out
    assert "No cycles are allowed in resurface.builders" in out and ".tokenizers -> .zoo" in out
    assert "resurface.analysis.stats -> torch" in out


def test_every_module_sits_in_a_layer():
    """Nothing at the top of the package but the layers: a new module has to choose one (and the layers
    contract then covers it; `exhaustive` fails on a new sub-package that no layer names)."""
    top = sorted(p.name for p in PACKAGE.iterdir() if p.suffix == ".py" or (p.is_dir() and not p.name.startswith((".", "__"))))
    assert top == sorted(["__init__.py", *LAYERS]), top
    for layer in LAYERS:
        assert (PACKAGE / layer / "__init__.py").exists()


def test_analysis_imports_without_torch():
    code = ("import sys, resurface.analysis.verdicts, resurface.analysis.stats, resurface.analysis.findings; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'transformers', 'lm_eval', 'datasets'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_worker_pool_preloads_modules_that_exist():
    """The forkserver preloads by name and skips a name it cannot import without a word: after a rename the
    workers would silently pay the imports again."""
    from resurface.compute.pool import PRELOAD
    missing = [m for m in PRELOAD if importlib.util.find_spec(m) is None]
    assert not missing


def test_the_architecture_tree_names_every_module():
    """docs/architecture.md's package tree lists every module under its layer."""
    readme = (ROOT / "docs" / "architecture.md").read_text()
    tree = readme[readme.index("lib/resurface/\n"):readme.index("scripts/     ")]
    for layer in LAYERS:
        line = next((l for l in tree.splitlines() if l.strip().startswith(f"{layer}/")), None)
        assert line is not None, layer
        block = tree[tree.index(line):]
        nxt = [tree.index(f"  {other}/") for other in LAYERS if f"  {other}/" in block and other != layer
               and tree.index(f"  {other}/") > tree.index(line)]
        block = tree[tree.index(line):min(nxt) if nxt else len(tree)]
        for mod in sorted(p.stem for p in (PACKAGE / layer).glob("*.py") if p.stem != "__init__"):
            assert mod in block, f"docs/architecture.md's tree does not list {layer}/{mod}.py"


@pytest.mark.parametrize("script", ["cost_bench", "build_matrix", "budget_pilot", "planting_pilot"])
def test_tools_live_beside_the_package(script):
    """The cost benchmark and the matrix launcher are scripts: nothing in the package imports them."""
    assert (ROOT / "scripts" / f"{script}.py").exists()
    for p in PACKAGE.rglob("*.py"):
        assert f"import {script}" not in p.read_text() and f"{script} import" not in p.read_text(), p


def test_relations_and_tasks_are_named_once():
    """The relation and task tables in resurface.names are what every layer reads: no layer keeps its own list."""
    import re
    from resurface import names
    from resurface.builders.benchmarks import MAKERS
    assert set(MAKERS) == set(names.EMBEDDED_TASKS)
    assert set(names.PRIMARY_METRIC) >= set(names.EMBEDDED_TASKS)
    pattern = re.compile(r"\"self\",\s*\"same_lineage\",\s*\"stronger_different\"|\"real_text\",\s*\"replay\"|"
                         r"\"minimal_pairs\",\s*\"word_cloze\"")
    own_lists = [str(p.relative_to(ROOT)) for p in (ROOT / "lib" / "resurface").rglob("*.py")
                 if p.parent.name != "names" and pattern.search(p.read_text())]
    assert not own_lists, f"modules with their own list of relations or tasks: {own_lists}"
