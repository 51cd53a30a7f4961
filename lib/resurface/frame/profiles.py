"""Profiles: `params/<name>.yaml` (with `extends:`), dotted-key overrides, and validation against the schema.

A profile is loaded into the frozen models of `schema` before any compute; anything wrong raises `ConfigError`
with one sentence naming the key, the value and what is allowed. Nothing is written before validation passes.
"""
from __future__ import annotations

import copy
import difflib
import json
import re
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from resurface.frame.paths import PARAMS_DIR
from resurface.frame.schema import ConfigError, StudyConfig


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PARAMS_DIR.glob("*.yaml"))


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    node = tree
    parts = dotted.split(".")
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value


def _sentence(err: ValidationError, raw: dict) -> str:
    """Turn pydantic's first error into one sentence naming key, value and what is allowed."""
    e = err.errors()[0]
    loc = [str(x) for x in e["loc"] if not str(x).startswith("function-")]
    # pydantic puts literal/union branch names in loc; keep only real keys
    loc = [x for x in loc if not x.startswith("literal[") and x not in ("int", "str", "float")]
    key = ".".join(loc) or "(top level)"
    if e["type"] == "extra_forbidden":
        siblings = _allowed_keys(loc[:-1])
        close = difflib.get_close_matches(loc[-1], siblings, n=1)
        hint = f"; did you mean `{close[0]}`?" if close else f"; allowed keys here are {siblings}."
        return f"Unknown parameter `{key}`{hint}".rstrip(".") + ("" if close else ".")
    value = e.get("input")
    msg = e["msg"]
    if msg.startswith("Value error, "):
        return msg[len("Value error, "):].rstrip(".") + f" (at `{key}`)." if key != "(top level)" \
            else msg[len("Value error, "):].rstrip(".") + "."
    shown = json.dumps(value, default=str) if not isinstance(value, dict) else "{...}"
    return f"Parameter `{key}` = {shown} is not allowed: {msg[0].lower() + msg[1:]}."


def _allowed_keys(loc: list[str]) -> list[str]:
    """The field names allowed at `loc` (for did-you-mean), walking dicts of models by key."""
    model: Any = StudyConfig
    skip_key = False
    for part in loc:
        if skip_key:  # `part` is a user-chosen dict key such as a model name
            skip_key = False
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        args = getattr(ann, "__args__", ())
        if getattr(ann, "__origin__", None) is dict:
            model, skip_key = args[1], True
        elif isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
        else:
            return []
    return sorted(getattr(model, "model_fields", {}))


def load_raw(profile: str, _seen: frozenset = frozenset()) -> dict:
    path = PARAMS_DIR / f"{profile}.yaml"
    if not re.fullmatch(r"[A-Za-z0-9_\-]+", profile or ""):
        raise ConfigError(f"Profile name `{profile}` is not allowed: use letters, digits, `-` or `_` "
                          f"(available: {available_profiles()}).")
    if not path.exists():
        close = difflib.get_close_matches(profile, available_profiles(), n=1)
        hint = f" Did you mean `{close[0]}`?" if close else ""
        raise ConfigError(f"Unknown profile `{profile}`: available profiles are {available_profiles()}.{hint}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"params/{profile}.yaml is not valid YAML{where}: "
                          f"{getattr(exc, 'problem', exc)}.") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"params/{profile}.yaml must hold a mapping of parameters, not {type(raw).__name__}.")
    parent = raw.pop("extends", None)
    if parent is not None:  # `extends: default`: the parent's parameters, with this file's on top
        if parent == profile or parent in _seen:
            raise ConfigError(f"params/{profile}.yaml extends `{parent}`, which leads back to itself.")
        base = load_raw(parent, _seen | {profile})
        base.pop("description", None)
        raw = _merge(base, raw)
    return raw


def _merge(base: dict, top: dict) -> dict:
    """Mappings merge key by key; anything else (lists included) is replaced by `top`'s value; a key set to
    null in `top` is removed, so the schema's default applies (how a profile leaves out one of its parent's
    models)."""
    out = dict(base)
    for k, v in top.items():
        if v is None and k in out:
            out.pop(k)
            continue
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config(profile: str, overrides: dict[str, Any] | None = None) -> StudyConfig:
    """Load `params/<profile>.yaml`, apply dotted-key overrides, validate; raise ConfigError."""
    raw = copy.deepcopy(load_raw(profile))
    raw.setdefault("profile", profile)
    for key, value in (overrides or {}).items():
        if not isinstance(key, str) or not key:
            raise ConfigError(f"Override key {key!r} must be a dotted parameter name such as `sampling.top_p`.")
        _set_dotted(raw, key, value)
    try:
        return StudyConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_sentence(err, raw)) from None


def config_dict(cfg: StudyConfig) -> dict:
    return cfg.model_dump(mode="json")


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`key=value` strings (the command line's) -> {dotted key: YAML-parsed value}; one sentence on a bad one."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"Override `{item}` must look like key=value.")
        key, value = item.split("=", 1)
        try:
            out[key] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ConfigError(f"Override `{item}` has a value that is not valid YAML.") from None
    return out


def main(argv: list[str] | None = None) -> int:
    """`python -m resurface.frame.profiles PROFILE [key=value ...]`: validate and print, exit 1 on error."""
    import argparse
    import sys

    ap = argparse.ArgumentParser(prog="resurface check", description="Validate a resurface profile.")
    ap.add_argument("profile")
    ap.add_argument("overrides", nargs="*", help="dotted key=value (value parsed as YAML)")
    args = ap.parse_args(argv)
    try:
        cfg = load_config(args.profile, parse_overrides(args.overrides))
    except ConfigError as exc:
        print(f"resurface: {exc}", file=sys.stderr)
        return 1
    print(yaml.safe_dump(config_dict(cfg), sort_keys=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
