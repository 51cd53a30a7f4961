"""The README's "Extend the study" recipe works: a task added in the two files it names is validated, built,
written as an lm-eval task and scored, with nothing else touched."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

ROW = '    Task("last_word", "mc", "acc", "the true last word of a sentence against another sentence\'s last word"),\n'
MAKER = '''

def make_last_word(docs: list[str], n: int, seed: int) -> list[dict]:
    """Context = a sentence without its last word; choices = that word and another sentence's last word."""
    rng = random.Random(seed)
    pool = [s.split() for d in docs for s in sentences(d)]
    rng.shuffle(pool)
    items = []
    for words, other in zip(pool, pool[1:]):
        if words[-1] == other[-1]:
            continue
        choices = [words[-1], other[-1]]
        rng.shuffle(choices)
        items.append({"context": " ".join(words[:-1]), "choices": choices, "label": choices.index(words[-1])})
        if len(items) == n:
            break
    return items


MAKERS["last_word"] = make_last_word
'''

SCRIPT = '''
import json, sys
from pathlib import Path
from resurface.frame.cache import Cache
from resurface.frame.profiles import load_config
from resurface.study.session import go_offline
from resurface.builders.zoo import build_zoo
from resurface.builders.benchmarks import build_tasks, write_task_yamls, task_items
from resurface.builders.evaluations import run_lm_eval
cache_dir, out = Path(sys.argv[1]), Path(sys.argv[2])
go_offline(cache_dir / "hf_home")
cfg = load_config("smoke", {"benchmarks.tasks": ["minimal_pairs", "last_word", "heldout_ppl"]})
zoo = build_zoo(cfg, Cache(cache_dir))
tasks = build_tasks(Cache(cache_dir), zoo.corpora["lineage"], ["last_word"], 12, 4, cfg.seed)
names = write_task_yamls(tasks, out / "tasks")
results, items = run_lm_eval(zoo.model_path("lineage-small"), out / "tasks", names, 8)[:2]
json.dump({"names": names, "items": len(task_items(tasks, "last_word")), "scored": len(items["last_word"]),
           "acc": results[names[0]]["acc,none"]}, open(out / "result.json", "w"))
'''


@pytest.mark.slow
def test_a_task_added_by_the_readme_recipe_is_built_and_scored(smoke_zoo, smoke_cache, tmp_path):
    readme = (ROOT / "README.md").read_text()
    recipe = readme[readme.index("- **A task.**"):readme.index("- **A relation.**")]
    assert "lib/resurface/names/__init__.py" in recipe and "lib/resurface/builders/benchmarks.py" in recipe
    lib = tmp_path / "lib"
    shutil.copytree(ROOT / "lib", lib, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "params", tmp_path / "params")
    names = lib / "resurface" / "names" / "__init__.py"
    text = names.read_text()
    anchor = next(l for l in text.splitlines(keepends=True) if l.strip().startswith('Task("heldout_ppl"'))
    names.write_text(text.replace(anchor, anchor + ROW))                 # one row in the task table
    bench = lib / "resurface" / "builders" / "benchmarks.py"
    bench.write_text(bench.read_text() + MAKER)                          # its builder in MAKERS
    env = {**os.environ, "PYTHONPATH": str(lib)}
    bad = subprocess.run([sys.executable, "-c", "from resurface.frame.profiles import load_config; "
                          "load_config('smoke', {'benchmarks.tasks': ['last_word']})"],
                         env={**os.environ, "PYTHONPATH": str(ROOT / "lib")}, capture_output=True, text=True)
    assert bad.returncode != 0 and "last_word" in bad.stderr             # unknown without the two edits
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(smoke_cache), str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads((tmp_path / "result.json").read_text())
    assert [n.split("_", 1)[-1] for n in got["names"]] == ["last_word"] and got["items"] == got["scored"] == 12
    assert 0.0 <= got["acc"] <= 1.0
