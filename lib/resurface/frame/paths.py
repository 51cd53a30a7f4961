"""Where things live: the project root, the artifact cache and a profile's outputs."""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]  # lib/resurface/frame/paths.py
PARAMS_DIR = ROOT / "params"
NOTEBOOKS_DIR = ROOT / "notebooks"


def cache_root(configured: str | None = None) -> Path:
    """The artifact cache: $RESURFACE_CACHE, else the profile's `cache_dir`, else `.cache/`."""
    env = os.environ.get("RESURFACE_CACHE")
    if env:
        return Path(env).resolve()
    if configured:
        p = Path(configured)
        return (p if p.is_absolute() else ROOT / p).resolve()
    return ROOT / ".cache"


def outputs_dir(profile: str) -> Path:
    """What a reader wants from one profile: notebooks, figures, tables, findings."""
    base = os.environ.get("RESURFACE_OUTPUTS")
    return (Path(base) if base else ROOT / "outputs") / profile
