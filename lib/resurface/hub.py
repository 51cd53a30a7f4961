"""Hub profiles: which pinned models a profile needs, and whether they are here when the Hub is off."""
from __future__ import annotations

import os

from .config import StudyConfig, parse_model_ref


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def required_revisions(cfg: StudyConfig) -> list[tuple[str, str]]:
    """(hub id, revision) for every Hub model a profile uses, intermediate `@stepN` sources included."""
    need = {(m.hub_id, m.revision or "main") for m in cfg.zoo.models.values() if not m.is_local}
    for ref in (*cfg.transfer.sources, *cfg.transfer.students):
        name, step = parse_model_ref(ref)
        m = cfg.zoo.models[name]
        if not m.is_local and step is not None:
            need.add((m.hub_id, f"step{step}"))
    return sorted(need)


def missing_offline(cfg: StudyConfig) -> list[tuple[str, str]]:
    """The pinned (hub id, revision) pairs with no config.json in the local Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache
    return [(repo, rev) for repo, rev in required_revisions(cfg)
            if not isinstance(try_to_load_from_cache(repo, "config.json", revision=rev), str)]


def check_available_offline(cfg: StudyConfig) -> None:
    """With the Hub off, stop before any compute if a pinned model is not already downloaded."""
    if not hub_offline():
        return
    missing = missing_offline(cfg)
    if missing:
        repo, rev = missing[0]
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise SystemExit(f"resurface: model `{repo}` at revision `{rev}`{more} is not in the local Hugging Face "
                         f"cache and the Hub is offline (HF_HUB_OFFLINE=1); download it on a connected machine "
                         f"or unset HF_HUB_OFFLINE.")
