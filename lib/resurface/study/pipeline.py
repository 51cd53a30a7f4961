"""The declared notebook graph (`notebooks/pipeline.yaml`): what each notebook reads, writes and may build.

From it the runner derives the running order and what may run side by side (a notebook runs once every product it
reads has been written), checks `--only NN` before running anything, and holds each notebook to its declaration;
the cache refuses to build, inside a notebook, a kind of artifact that notebook does not build (it names the
notebook that does), so a later notebook reads what an earlier one made and never silently rebuilds it.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from resurface.frame.paths import NOTEBOOKS_DIR
from resurface.frame.schema import field_default

SUFFIXES = {"tables": (".csv", ".tex"), "figures": (".png", ".pdf"), "findings": (".json",)}


class PipelineError(RuntimeError):
    """A pipeline file that does not describe a graph, or a run that breaks it; one sentence."""


@dataclass(frozen=True)
class Step:
    name: str  # the notebook's file name without .ipynb, e.g. "02_transfer"
    question: str
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    may_write: tuple[str, ...]
    builds: tuple[str, ...]
    independent_of: tuple[str, ...] = ()  # parameter sections it never reads (what a profile may borrow across)


@dataclass(frozen=True)
class Pipeline:
    steps: dict[str, Step]
    every_notebook_writes: tuple[str, ...]

    def writer(self, product: str) -> str:
        return next(s.name for s in self.steps.values() if product in s.writes)

    def builders(self) -> dict[str, list[str]]:
        """Each kind of cached artifact -> the notebooks that may build it (what `Cache.restrict` takes)."""
        kinds = dict.fromkeys(k for s in self.steps.values() for k in s.builds)
        return {k: [s.name for s in self.steps.values() if k in s.builds] for k in kinds}

    def needs(self, name: str) -> list[str]:
        """The notebooks whose products `name` reads, in running order."""
        return sorted({self.writer(p) for p in self.steps[name].reads})

    def levels(self) -> dict[str, int]:
        """Each notebook's distance from the start: 0 for one that reads nothing, else one more than the
        farthest notebook it reads from."""
        level: dict[str, int] = {}

        def visit(name: str, path: tuple[str, ...]) -> int:
            if name in path:
                raise PipelineError(f"the notebooks {' -> '.join(path + (name,))} read each other in a circle")
            if name not in level:
                level[name] = 1 + max((visit(n, path + (name,)) for n in self.needs(name)), default=-1)
            return level[name]
        for name in self.steps:
            visit(name, ())
        return level

    def stages(self, names: list[str] | None = None, side_by_side: bool = True) -> list[list[str]]:
        """`names` (default: every notebook) in running order: groups of notebooks that may run side by side,
        or one notebook per group when `side_by_side` is off (a profile that keeps one model in memory)."""
        level = self.levels()
        chosen = sorted(names if names is not None else self.steps, key=lambda n: (level[n], n))
        if not side_by_side:
            return [[n] for n in chosen]
        return [[n for n in chosen if level[n] == k] for k in sorted({level[n] for n in chosen})]

    def missing_inputs(self, name: str, out: Path) -> dict[str, list[str]]:
        """The products `name` reads that are not in `out` yet, by the notebook that writes them."""
        missing: dict[str, list[str]] = {}
        for product in self.steps[name].reads:
            if not all(p.exists() for p in files_of(out, product)):
                missing.setdefault(self.writer(product), []).append(product)
        return missing

    def stale_inputs(self, name: str, out: Path, config: dict, folder: Path) -> dict[str, str]:
        """The notebooks whose products `name` reads that ran under other parameters than `config`, or from
        another version of their notebook, than what `out/provenance.json` recorded: {notebook: why}. A
        notebook with no record (products from before records were kept) is taken as it is."""
        record = read_provenance(out)
        stale = {}
        for up in self.needs(name):
            if up not in record:
                continue
            changed = computing_keys(changed_keys(record[up]["config"], config))
            if changed:
                shown = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
                stale[up] = f"ran under other parameters ({shown} changed since)"
            elif record[up]["notebook_sha256"] != file_sha256(folder / f"{up}.ipynb"):
                stale[up] = f"ran from another version of {up}.ipynb"
        return stale

    def check_products(self, name: str, written: list[str]) -> None:
        """Raise PipelineError when the notebook wrote a product it did not declare, or not one it declared."""
        step = self.steps[name]
        made = {product_of(p) for p in written}
        extra = sorted(made - set(step.writes) - set(step.may_write) - set(self.every_notebook_writes))
        absent = sorted(set(step.writes) - made)
        if extra:
            raise PipelineError(f"{name} wrote {', '.join(extra)}, which notebooks/pipeline.yaml does not declare "
                                f"for it; declare it there (writes, or may_write) or stop writing it")
        if absent:
            raise PipelineError(f"{name} ended without writing {', '.join(absent)}, which notebooks/pipeline.yaml "
                                "says it writes")


def product_of(path: str) -> str:
    """`tables/x.csv` -> `tables/x`: the product a written file belongs to."""
    p = Path(path)
    return f"{p.parent.as_posix()}/{p.stem}"


def files_of(out: Path, product: str) -> list[Path]:
    kind = product.split("/")[0]
    return [out / f"{product}{suffix}" for suffix in SUFFIXES[kind]]


def load(path: Path | None = None) -> Pipeline:
    """Read and check the pipeline file: known fields, every read written by exactly one notebook, no circle."""
    path = path or NOTEBOOKS_DIR / "pipeline.yaml"
    raw = yaml.safe_load(path.read_text())
    fields = {"question", "reads", "writes", "may_write", "builds", "independent_of"}
    steps = {}
    for name, spec in (raw.get("notebooks") or {}).items():
        unknown = set(spec) - fields
        if unknown:
            raise PipelineError(f"{path.name}: notebook {name} has unknown field(s) {sorted(unknown)}; "
                                f"known: {sorted(fields)}")
        steps[name] = Step(name, spec.get("question", ""), *(tuple(spec.get(f) or ()) for f in
                                                               ("reads", "writes", "may_write", "builds",
                                                                "independent_of")))
    pipe = Pipeline(steps, tuple(raw.get("every_notebook_writes") or ()))
    for step in steps.values():
        for product in step.reads + step.writes + step.may_write:
            if product.split("/")[0] not in SUFFIXES:
                raise PipelineError(f"{path.name}: {step.name} names {product!r}; a product is tables/NAME, "
                                    "figures/NAME or findings/NAME")
        for product in step.writes:
            others = [s.name for s in steps.values() if product in s.writes and s.name != step.name]
            if others:
                raise PipelineError(f"{path.name}: {product} is written by both {step.name} and {others[0]}")
        for product in step.reads:
            if not any(product in s.writes for s in steps.values()):
                raise PipelineError(f"{path.name}: {step.name} reads {product}, which no notebook writes")
    pipe.levels()  # a circle fails here, before anything runs
    return pipe


def notebooks_folder() -> Path:
    """The notebooks being run: $RESURFACE_NOTEBOOKS (another folder of numbered notebooks), else notebooks/."""
    return Path(os.environ.get("RESURFACE_NOTEBOOKS") or NOTEBOOKS_DIR)


def current() -> Pipeline | None:
    """The pipeline of the notebooks being run, if their folder has one."""
    path = notebooks_folder() / "pipeline.yaml"
    return load(path) if path.exists() else None


def flow_table(pipe: Pipeline) -> str:
    """The notebooks as a Markdown table (notebooks/README.md and every report show this one)."""
    def names(products) -> str:
        return ", ".join(f"`{p}`" for p in products) or "registry packages"
    rows = ["| notebook | question | reads | writes (under `outputs/<profile>/`; a table also as `.tex`, a figure "
            "as `.png` and `.pdf`) |", "| --- | --- | --- | --- |"]
    for step in pipe.steps.values():
        writes = names(step.writes) + (f"; for some profiles {names(step.may_write)}" if step.may_write else "")
        rows.append(f"| `{step.name}` | {step.question} | {names(step.reads)} | {writes} |")
    return "\n".join(rows)


PROVENANCE = "provenance.json"


def file_sha256(path: Path) -> str:
    import hashlib
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_provenance(out: Path) -> dict:
    f = out / PROVENANCE
    return json.loads(f.read_text()) if f.exists() else {}


def record_provenance(out: Path, name: str, config: dict, notebook: Path, borrowed_from: str | None = None) -> None:
    """After a notebook ran: the resolved parameters and the notebook's hash its products came from (and the
    profile they were borrowed from, when they were)."""
    record = read_provenance(out)
    record[name] = {"config": config, "notebook_sha256": file_sha256(notebook)}
    if borrowed_from:
        record[name]["borrowed_from"] = borrowed_from
    tmp = out / f".{PROVENANCE}.tmp"
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, out / PROVENANCE)


_BOTH = object()

# Keys that say how a profile runs or what it is called, never what a notebook computes.
RUN_KEYS = ("profile", "description", "notebooks", "borrow")


def computing_keys(keys: list[str]) -> list[str]:
    """`keys` (dotted) without those that cannot change a product (RUN_KEYS)."""
    return [k for k in keys if k.split(".")[0] not in RUN_KEYS]


def borrowable(name: str, lender: str, lender_out: Path, config: dict, folder: Path, pipe: "Pipeline") -> list[Path]:
    """The files of notebook `name`'s products (and its executed copy) in profile `lender`'s outputs, after
    checking they are what running `name` under `config` would write: the same version of the notebook, run
    under the same parameters except the sections `name` never reads (`independent_of` in the pipeline file)
    and models the lender does not have. Raises PipelineError, in one sentence, when they are not."""
    record = read_provenance(lender_out).get(name)
    again = f"run it there first (run_all.sh --profile {lender} --only {name[:2]})"
    if record is None:
        raise PipelineError(f"{name} is borrowed from profile {lender}, whose outputs ({lender_out}) hold no "
                            f"record of it; {again}")
    if record["notebook_sha256"] != file_sha256(folder / f"{name}.ipynb"):
        raise PipelineError(f"{name} is borrowed from profile {lender}, whose products came from another version "
                            f"of {name}.ipynb; {again}")
    lent_models = set(record["config"].get("zoo", {}).get("models", {}))
    ignored = pipe.steps[name].independent_of
    changed = [k for k in computing_keys(changed_keys(record["config"], config))
               if not any(k == p or k.startswith(p + ".") for p in ignored)
               and not (k.startswith("zoo.models.") and k.split(".")[2] not in lent_models)]
    if changed:
        shown = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
        raise PipelineError(f"{name} is borrowed from profile {lender}, which ran it under other parameters "
                            f"({shown} differ, and {name} reads them); run {name} here instead")
    step = pipe.steps[name]
    files = [f for p in step.writes for f in files_of(lender_out, p)]
    files += [f for p in step.may_write for f in files_of(lender_out, p) if f.exists()]
    files += [f for f in (lender_out / f"{name}.ipynb", lender_out / f"{name}.html") if f.exists()]
    missing = [f for f in files if not f.exists()]
    if missing:
        raise PipelineError(f"{name} is borrowed from profile {lender}, whose outputs lack "
                            f"{missing[0].relative_to(lender_out)}; {again}")
    return files


def borrow(name: str, lender: str, lender_out: Path, config: dict, folder: Path, out: Path,
           pipe: "Pipeline") -> list[Path]:
    """Copy notebook `name`'s products from profile `lender`'s outputs into `out` once `borrowable` has checked
    them (nothing is copied when it refuses), and record where they came from in `out/provenance.json`."""
    import shutil
    files = borrowable(name, lender, lender_out, config, folder, pipe)
    copied = []
    for f in files:
        target = out / f.relative_to(lender_out)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        shutil.copyfile(f, tmp)
        os.replace(tmp, target)
        copied.append(target)
    record_provenance(out, name, config, folder / f"{name}.ipynb", borrowed_from=lender)
    return copied


def changed_keys(before: dict, after: dict, prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two resolved profiles. A parameter present on one side only
    and off there (None or False) or at its schema default (added to the schema since) changes nothing."""
    keys = []
    for k in sorted(set(before) | set(after)):
        a, b = before.get(k), after.get(k)
        one_side = b if k not in before else a if k not in after else _BOTH
        if one_side is not _BOTH and (one_side in (None, False) or one_side == field_default(prefix + k)):
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            keys += changed_keys(a, b, f"{prefix}{k}.")
        elif a != b:
            keys.append(f"{prefix}{k}")
    return keys
