"""The first call of every notebook: validate parameters, go offline, set up outputs.

`study = start(profile, overrides, notebook="00_zoo")` validates before anything is
written, prints the resolved parameters, saves them beside the outputs, and gives
the notebook a cache plus helpers to save tables, figures and findings.
"""
from __future__ import annotations

import json
import logging
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from resurface.compute.pool import quiet_libraries
from resurface.frame.cache import Cache, write_atomically
from resurface.frame.schema import ConfigError, StudyConfig
from resurface.frame.profiles import config_dict, load_config
from resurface.frame.paths import cache_root, outputs_dir

log = logging.getLogger("resurface")


def go_offline(hf_home: Path) -> None:
    """Embedded profiles never touch the network: the Hub is off and caches stay in the project."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("HF_HOME", str(hf_home))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def notebook_lines(record: logging.LogRecord) -> bool:
    """What the executed notebook shows of the logs: warnings, and one summary line per finished stage. Every
    build, reuse and progress line goes to run.log only (log_to_file): hundreds of `reused` lines for other
    notebooks' artifacts told a reader nothing."""
    return record.levelno >= logging.WARNING or getattr(record, "summary", False)


def log_to_file(path: Path, notebook: str) -> None:
    """Every build, reuse and timing of this process also goes to `path` (outputs/<profile>/run.log), one line
    each, stamped with the time and the notebook; notebooks side by side append to the same file."""
    logger = logging.getLogger("resurface")
    for h in [h for h in logger.handlers if getattr(h, "_resurface_run_log", False)]:
        logger.removeHandler(h)
        h.close()
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter(f"%(asctime)s {notebook}: %(message)s", "%Y-%m-%d %H:%M:%S"))
    handler._resurface_run_log = True
    logger.addHandler(handler)


@dataclass
class Study:
    cfg: StudyConfig
    cache: Cache
    out: Path
    notebook: str
    threads: int
    _products: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)

    @property
    def profile(self) -> str:
        return self.cfg.profile

    def path(self, kind: str, name: str) -> Path:
        d = self.out / kind
        d.mkdir(parents=True, exist_ok=True)
        return d / name

    def _record_products(self) -> None:
        """What this notebook has written so far, in .products/<notebook>.json: the runner holds it against the
        notebook's declaration in notebooks/pipeline.yaml."""
        d = self.out / ".products"
        d.mkdir(parents=True, exist_ok=True)
        write_atomically(d / f"{self.notebook}.json", lambda t: t.write_text(json.dumps(sorted(set(self._products)))))

    def save_table(self, df, name: str) -> Path:
        """tables/<name>.csv, and the same table as LaTeX (booktabs) in tables/<name>.tex for a paper."""
        from resurface.study.report import latex_table
        p = self.path("tables", f"{name}.csv")
        for path, write in ((p, lambda t: df.to_csv(t, index=False)),
                            (p.with_suffix(".tex"), lambda t: t.write_text(latex_table(df, name)))):
            write_atomically(path, write)
            self._products.append(str(path.relative_to(self.out)))
        self._record_products()
        return p

    def save_figure(self, fig, name: str) -> list[Path]:
        paths = []
        for ext in ("png", "pdf"):
            p = self.path("figures", f"{name}.{ext}")
            write_atomically(p, lambda t, ext=ext: fig.savefig(t, format=ext, dpi=200 if ext == "png" else None,
                                                               bbox_inches="tight"))
            paths.append(p)
            self._products.append(str(p.relative_to(self.out)))
        self._record_products()
        return paths

    def save_json(self, obj: Any, kind: str, name: str) -> Path:
        p = self.path(kind, f"{name}.json")
        text = json.dumps(_finite(obj), indent=2, default=_json_default, allow_nan=False)
        write_atomically(p, lambda t: t.write_text(text))
        self._products.append(str(p.relative_to(self.out)))
        self._record_products()
        return p

    def read_table(self, name: str):
        """tables/<name>.csv, written by an earlier notebook, as a DataFrame (see `upstream`)."""
        import pandas as pd
        return pd.read_csv(self.upstream("tables", name, ".csv"))

    def read_json(self, kind: str, name: str) -> dict:
        """<kind>/<name>.json (e.g. findings/02_transfer), written by an earlier notebook (see `upstream`)."""
        return json.loads(self.upstream(kind, name, ".json").read_text())

    def upstream(self, kind: str, name: str, suffix: str) -> Path:
        """The file of product <kind>/<name> under this profile's outputs. The product must be one this notebook
        declares it reads in notebooks/pipeline.yaml; when the file is missing, one sentence names the notebook
        to run first."""
        from resurface.study.pipeline import PipelineError, current
        product = f"{kind}/{name}"
        pipe = current()
        step = pipe.steps.get(self.notebook) if pipe is not None else None
        if step is not None and product not in step.reads:
            raise PipelineError(f"{self.notebook} reads {product}, which notebooks/pipeline.yaml does not declare "
                                f"for it; add it to the notebook's reads")
        p = self.out / kind / f"{name}{suffix}"
        if not p.exists():
            writers = [s.name for s in (pipe.steps.values() if pipe is not None else ()) if product in s.writes]
            first = (f"run {writers[0]} first (run_all.sh --profile {self.profile} --only {writers[0][:2]})"
                     if writers else "run the notebook that writes it first")
            raise FileNotFoundError(f"{self.notebook} reads {product}, which {self.out} does not hold; {first}")
        return p

    def record_timings(self) -> Path:
        """Append this notebook's stage timings to tables/timings.csv (replacing its earlier rows)."""
        import pandas as pd
        p = self.path("tables", "timings.csv")
        mine = self.cache.timings_frame()
        # builds in a worker pool overlap, so their seconds do not add up to the notebook's: say both
        wall = {"stage": "notebook", "artifact": self.notebook, "seconds": time.perf_counter() - self.started,
                "status": "wall", "build_seconds": None, "worker": 0}
        mine = pd.concat([mine, pd.DataFrame([wall])], ignore_index=True) if len(mine) else pd.DataFrame([wall])
        mine.insert(0, "notebook", self.notebook)
        from filelock import FileLock
        with FileLock(str(p.parent / ".timings.lock")):  # notebooks that run side by side share this file
            if p.exists():
                old = pd.read_csv(p)
                mine = pd.concat([old[old["notebook"] != self.notebook], mine], ignore_index=True)
            return self.save_table(mine, "timings")


def _finite(o):
    """NaN / inf become null: findings files must be strict JSON."""
    import math
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    if hasattr(o, "item") and not isinstance(o, (str, bytes)):  # numpy scalars
        try:
            return _finite(o.item())
        except (ValueError, TypeError):
            return o
    return o


def _json_default(o):
    import numpy as np
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o))


def profile_summary(cfg, resolved: Path) -> str:
    """The profile in a few lines (what a reader needs to follow the notebook); every value is in `resolved`."""
    models = cfg.zoo.models
    kinds: dict[str, list[str]] = {}
    for name, m in models.items():
        kinds.setdefault(m.kind, []).append(name)
    t = cfg.transfer
    per = (t.sources.values() if isinstance(t.sources, dict) else [t.sources or []]) if t else []
    sources = sorted({s for names in per for s in names})
    lines = [f"  {cfg.description}",
             "  zoo: " + "; ".join(f"{k} {', '.join(v)}" for k, v in kinds.items())]
    if t:
        lines.append(f"  students: {', '.join(t.students)}; {len(sources)} sources; seeds {list(t.seeds)}")
    s = cfg.sampling
    lines.append(f"  sampling: T {list(s.temperatures)}, top_p {s.top_p}, {s.tokens_per_corpus:,} tokens per corpus")
    if cfg.recipe:
        r = cfg.recipe
        lines.append(f"  recipe grid: {', '.join(r.schedules)} x budgets {list(r.budgets)} x seeds {list(r.seeds)}; "
                     f"fallback {list(r.fallback) if r.fallback else None}")
    b = cfg.benchmarks
    lines.append(f"  benchmarks: {', '.join([*b.tasks, *b.registry])} ({b.items_per_task} items per split)")
    a = cfg.analysis
    lines.append(f"  analysis: alpha {a.alpha}, power {a.power}, SESOI {a.sesoi_points} points, "
                 f"{a.bootstrap} bootstrap resamples")
    lines.append(f"  every parameter: {resolved}")
    return "\n".join(lines)


def start(profile: str, overrides: dict | None = None, notebook: str = "notebook", verbose: bool = True) -> Study:
    """Validate `profile` (+ overrides) and prepare the run; raise ConfigError before writing anything."""
    try:
        cfg = load_config(profile, overrides or {})
    except ConfigError as exc:
        # one sentence for the reader; papermill shows it as the failing cell's error
        raise SystemExit(f"resurface: {exc}") from None
    root = cache_root(cfg.cache_dir)
    if not any(m.is_hub for m in cfg.zoo.models.values()):
        go_offline(root / "hf_home")  # embedded profiles never touch the network
    else:
        from resurface.builders.hub import check_available_offline
        check_available_offline(cfg)  # a model id that is not here offline: one sentence, nothing written
    from resurface.compute.pool import set_build_threads, warm_up
    set_build_threads(cfg.build_threads)
    warm_up(cfg.workers, cfg.device)  # the pool's fork server: before torch is imported here, to overlap
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout, force=True)
    logging.getLogger().handlers[0].addFilter(notebook_lines)
    quiet_libraries()
    from resurface.lm.training import set_threads
    threads = set_threads(cfg.threads)
    from resurface.compute.device import use
    placement = use(cfg.device, cfg.dtype)
    from resurface.compute.distributed import accelerator
    accelerator()  # under `accelerate launch`: join the process group, one GPU per rank, before any model loads
    seed_everything(cfg.seed)
    out = outputs_dir(cfg.profile)
    out.mkdir(parents=True, exist_ok=True)
    log_to_file(out / "run.log", notebook)
    resolved = config_dict(cfg)
    write_atomically(out / "params.resolved.yaml", lambda t: t.write_text(yaml.safe_dump(resolved, sort_keys=False)))
    if verbose:
        print(f"profile: {cfg.profile} | cache: {root} | outputs: {out} | torch threads: {threads} | "
              f"device: {placement}")
        print(profile_summary(cfg, out / "params.resolved.yaml"))
    cache = Cache(root)
    from resurface.study.pipeline import current
    pipe = current()
    if pipe is not None and notebook in pipe.steps:  # held to notebooks/pipeline.yaml: see resurface.study.pipeline
        cache.restrict(notebook, pipe.builders())
    study = Study(cfg, cache, out, notebook, threads)
    study._record_products()  # none yet: an earlier run's list must not count for this one
    return study

