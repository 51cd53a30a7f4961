"""Faults a long study must survive: SIGKILL at every stage, then resume to the same numbers, bit for bit.

The reference is the uninterrupted smoke run (`smoke_run`, built in the session cache). Here a second
study starts from an empty cache (only the registry downloads are copied, so no network is needed), is
killed with SIGKILL while it pretrains, samples, fine-tunes and evaluates, and is re-run each time.
It must finish with the same tables and findings, and the same bytes in every synthetic corpus and
every checkpoint, as the run that was never interrupted.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
WALL_CLOCK_FIELDS = ("seconds", "tokens_per_s", "wall")  # the only things allowed to differ between runs


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _run_and_kill_during(stage: str, cache: Path, env: dict, settle: float) -> str | None:
    """Start the smoke study; SIGKILL it and every process under it while `stage` has a build in flight.

    Returns the half-built artifact's folder if the kill landed mid-build (its debris is still there),
    None if the build finished first or the run never got there."""
    proc = subprocess.Popen(["./run_all.sh", "--profile", "smoke"], cwd=ROOT, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 900
    try:
        while proc.poll() is None and time.time() < deadline:
            building = [p for p in (cache / stage).glob(".tmp-*") if "real-text" not in p.name]
            if building:
                time.sleep(settle)
                victims = _descendants(proc.pid)
                os.killpg(proc.pid, signal.SIGKILL)
                for pid in victims:  # the Jupyter kernel runs in a session of its own
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                proc.wait(30)
                time.sleep(0.5)
                return building[0].name if building[0].exists() else None
            time.sleep(0.02)
        return None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)


def _scrub(obj):
    """Drop wall-clock fields from a findings document."""
    if isinstance(obj, dict):
        return {k: _scrub(v) for k, v in obj.items() if not any(w in k for w in WALL_CLOCK_FIELDS)}
    if isinstance(obj, list):
        return [_scrub(v) for v in obj]
    return obj


def _weights_and_corpora(cache: Path) -> dict[str, str]:
    """{artifact/file: sha256} for every checkpoint and synthetic-corpus data file, from the manifests."""
    out = {}
    for kind in ("zoo", "synthetic", "students"):
        for manifest in (cache / kind).glob("*/manifest.json"):
            files = json.loads(manifest.read_text())["files"]
            for rel, digest in files.items():
                if rel.endswith((".safetensors", ".arrow")):
                    out[f"{kind}/{manifest.parent.name}/{rel}"] = digest
    return out


@pytest.mark.slow
def test_sigkill_at_every_stage_then_resume_gives_identical_results(tmp_path, smoke_run, smoke_cache):
    reference, _, _ = smoke_run
    cache, out = tmp_path / "cache", tmp_path / "outputs"
    shutil.copytree(smoke_cache / "sources", cache / "sources")  # registry downloads only: the rest from scratch
    env = {**os.environ, "RESURFACE_CACHE": str(cache), "RESURFACE_OUTPUTS": str(out)}

    killed = {}
    for stage in ("zoo", "synthetic", "students", "evaluations"):  # pretraining, sampling, fine-tuning, lm-eval
        for _ in range(3):  # a smoke build can finish in the instant between seeing it and the kill: try again
            killed[stage] = _run_and_kill_during(stage, cache, env, settle=0.5 if stage == "zoo" else 0.0)
            if killed[stage]:
                break
        assert killed[stage], f"never managed to kill the smoke study while it was building in {stage}/"
        half_built = killed[stage][len(".tmp-"):].rsplit("-", 1)[0]
        assert not (cache / stage / half_built).exists(), "a killed build must never be published"

    proc = subprocess.run(["./run_all.sh", "--profile", "smoke"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    resumed = out / "smoke"

    # it resumed: the zoo, finished before the later kills, was reused, not retrained
    timings = pd.read_csv(resumed / "tables" / "timings.csv")
    zoo = timings[(timings["notebook"] == "00_zoo") & timings["artifact"].str.startswith("zoo/")]
    from resurface.frame.profiles import load_config
    n_models = sum(m.is_local for m in load_config("smoke").zoo.models.values())
    assert len(zoo) == n_models and (zoo["status"] == "reused").all()
    assert not list(cache.glob("*/.tmp-*")), "debris of the killed builds must be cleared"

    # and it got the same numbers as the run that was never interrupted
    tables = sorted(p.stem for p in (reference / "tables").glob("*.csv") if p.stem != "timings")
    assert {"transfer", "proxies", "memorization_before_after", "zoo_models", "synthetic_corpora"} <= set(tables)
    for table in tables:
        if (reference / "tables" / f"{table}.csv").stat().st_size < 2:  # an empty table (no rows, no columns)
            assert (resumed / "tables" / f"{table}.csv").read_text() == (reference / "tables" / f"{table}.csv").read_text()
            continue
        a = pd.read_csv(reference / "tables" / f"{table}.csv")
        b = pd.read_csv(resumed / "tables" / f"{table}.csv")
        keep = [c for c in a.columns if not any(w in c for w in WALL_CLOCK_FIELDS)]
        pd.testing.assert_frame_equal(a[keep], b[keep], check_exact=True, obj=table)
    for finding in sorted((reference / "findings").glob("*.json")):
        assert _scrub(json.loads(finding.read_text())) == \
            _scrub(json.loads((resumed / "findings" / finding.name).read_text())), finding.name

    # byte-identical synthetic corpora and checkpoints (same keys, same file digests)
    ref_files, new_files = _weights_and_corpora(smoke_cache), _weights_and_corpora(cache)
    assert new_files and set(new_files) <= set(ref_files)
    assert {k: ref_files[k] for k in new_files} == new_files
