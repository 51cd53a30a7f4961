"""Run the whole study for one profile: validate, execute every numbered notebook through Papermill, report.

`./run_all.sh` calls `python -m resurface.study.runner` after it has made the virtual environment. One process drives
all the notebooks: Papermill and nbformat take about 3 s to import (jsonschema's format checkers), which a
process per notebook paid four times. Each notebook still gets a fresh kernel, so no state leaks between them.

The order comes from `notebooks/pipeline.yaml` (resurface.study.pipeline): a notebook runs once every product it reads
has been written, and notebooks that become ready together run side by side (their builds are single-threaded
pool jobs, which share the cores without the stalls of two multi-threaded processes), unless the profile keeps
one model in memory at a time (`workers: 1`). Each notebook is held to what the file declares it writes.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from resurface.frame.schema import ConfigError
from resurface.frame.profiles import config_dict, load_config, parse_overrides
from resurface.frame.paths import outputs_dir
from resurface.study.pipeline import (Pipeline, PipelineError, borrow, borrowable, load, notebooks_folder,
                                      record_provenance)

NAME = "run_all.sh"  # what the user typed; messages name it


def notebooks(folder: Path, pipe: Pipeline, only: str | None = None, profile: list[str] | None = None) -> list[str]:
    """The pipeline's notebooks (those the profile names in `profile`, if given; of those, the ones starting with
    `only`, if given); each must exist in `folder`, and every numbered notebook there must be in the pipeline."""
    files = {p.stem for p in folder.glob("[0-9][0-9]_*.ipynb")}
    if set(pipe.steps) - files:
        raise PipelineError(f"notebooks/pipeline.yaml names {', '.join(sorted(set(pipe.steps) - files))}, "
                            f"which is not in {folder}")
    if files - set(pipe.steps):
        raise PipelineError(f"{', '.join(sorted(files - set(pipe.steps)))} is not in {folder / 'pipeline.yaml'}; "
                            "declare what it reads and writes there")
    if profile is not None:
        unknown = [n for n in profile if n not in pipe.steps]
        if unknown:
            raise PipelineError(f"the profile's notebooks name {unknown[0]}, which is not in notebooks/pipeline.yaml "
                                f"({', '.join(pipe.steps)})")
        for name in profile:
            lacking = [w for w in pipe.needs(name) if w not in profile]
            if lacking:
                raise PipelineError(f"the profile runs {name}, which reads the products of {lacking[0]}; add "
                                    f"{lacking[0]} to its notebooks (or borrow it)")
    return [n for n in pipe.steps if (profile is None or n in profile) and (not only or n.startswith(only))]


# Two kernels started side by side can race for a port (jupyter_client picks free ports, then the kernel binds
# them): the loser dies before running any cell. Seen once in 2 runs of the tiny Gemma profile; retried once.
KERNEL_START_RACE = "Kernel died before replying to kernel_info"


def failed_copy(out: Path, nb: Path) -> Path:
    """Where a failed execution of `nb` is kept: beside the last good executed copy, which it never replaces."""
    return out / f"{nb.stem}.failed.ipynb"


def run_notebook(nb: Path, out: Path, profile: str, overrides: dict, progress: bool = True) -> None:
    """Execute `nb` into `out/<name>` with a fresh kernel; raise papermill's error naming the failing cell.

    The kernel writes into a staging copy; only a run that finishes replaces `out/<name>`, so a failed run
    (a missing cache, a broken cell) leaves the last good executed notebook in place and keeps its own copy,
    with the error, as `<name>.failed.ipynb`."""
    import papermill
    staging = out / ".running" / nb.name
    staging.parent.mkdir(parents=True, exist_ok=True)
    failed_copy(out, nb).unlink(missing_ok=True)
    try:
        _execute(papermill, nb, staging, profile, overrides, progress)
    except BaseException:
        if staging.exists():
            os.replace(staging, failed_copy(out, nb))
        raise
    os.replace(staging, out / nb.name)


def _execute(papermill, nb: Path, target: Path, profile: str, overrides: dict, progress: bool) -> None:
    for attempt in (1, 2):
        try:
            papermill.execute_notebook(
                str(nb), str(target), parameters={"profile": profile, "overrides": overrides},
                kernel_name="resurface", cwd=str(nb.parent), progress_bar=progress, log_output=False,
                # every cell has run and its outputs are saved; a graceful shutdown only waited ~3 s per
                # notebook for the interpreter to tear down torch and transformers
                shutdown_kernel="immediate")
            return
        except RuntimeError as exc:  # no cell has run when the kernel never started: safe to start again
            if KERNEL_START_RACE not in str(exc) or attempt == 2:
                raise
            print(f"    {nb.name}: the kernel did not start ({KERNEL_START_RACE}); starting it again", flush=True)


def describe_failure(exc: BaseException) -> str:
    """`at cell N (RuntimeError: boom)` from Papermill's execution error."""
    count = getattr(exc, "exec_count", None)
    ename, evalue = getattr(exc, "ename", type(exc).__name__), getattr(exc, "evalue", str(exc))
    return f"at cell {count} ({ename}: {evalue})" if count is not None else f"({ename}: {evalue})"


def run_group(group: list[Path], out: Path, profile: str, overrides: dict, say=print, pipe: Pipeline | None = None):
    """Run the group's notebooks side by side; return (notebook, error) of the first that failed, or None.
    With `pipe`, a notebook that did not write what the pipeline declares for it has failed too."""
    from concurrent.futures import ThreadPoolExecutor

    def one(nb: Path):
        t0 = time.perf_counter()
        try:
            run_notebook(nb, out, profile, overrides, progress=len(group) == 1)
            if pipe is not None:
                pipe.check_products(nb.stem, written_products(out, nb.stem))
                record_provenance(out, nb.stem, config_dict(load_config(profile, overrides)), nb)
        except Exception as exc:  # papermill's PapermillExecutionError, a kernel that died, a broken declaration
            return nb, exc
        say(f"    {nb.name} done in {time.perf_counter() - t0:.0f} s")
        return None

    with ThreadPoolExecutor(len(group)) as pool:  # each notebook waits on its own kernel: threads suffice
        results = list(pool.map(one, group))
    return next((r for r in results if r is not None), None)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=NAME, description="Run the whole study for one profile (params/NAME.yaml).")
    ap.add_argument("--profile", default="default", help="a profile in params/ (default: default)")
    ap.add_argument("--only", default=None, help="only the notebooks whose name starts with this (e.g. 01)")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="dotted-key override, validated first (repeatable)")
    args = ap.parse_args(argv)
    try:  # before any compute: one sentence and a non-zero exit on a bad profile, nothing written
        overrides = parse_overrides(args.sets)
        cfg = load_config(args.profile, overrides)
    except ConfigError as exc:
        print(f"resurface: {exc}", file=sys.stderr)
        return 1
    folder = notebooks_folder()
    out = outputs_dir(args.profile)
    try:  # the graph, and what --only needs, before anything is created or run
        pipe = load(folder / "pipeline.yaml")
        chosen = notebooks(folder, pipe, args.only, cfg.notebooks)
        if not chosen:
            ran = cfg.notebooks or list(pipe.steps)
            raise PipelineError(f"no notebook starts with {args.only!r}; the notebooks "
                                f"{'of this profile ' if cfg.notebooks else ''}are {', '.join(ran)}")
        for name in chosen if args.only else []:
            missing = {w: p for w, p in pipe.missing_inputs(name, out).items() if w not in chosen}
            if missing:
                first = sorted(missing)[0]
                raise PipelineError(f"{name} reads {', '.join(missing[first])} from {first}, which {out} does not "
                                    f"hold; run {first} first ({NAME} --profile {args.profile} --only {first[:2]})")
            stale = {w: why for w, why in pipe.stale_inputs(name, out, config_dict(cfg), folder).items()
                     if w not in chosen}
            if stale:
                first = sorted(stale)[0]
                raise PipelineError(f"{name} reads the products of {first}, which {stale[first]}; run {first} "
                                    f"first ({NAME} --profile {args.profile} --only {first[:2]})")
        for name in [n for n in chosen if n in cfg.borrow]:  # a borrow that would be refused, before any compute
            borrowable(name, cfg.borrow[name], outputs_dir(cfg.borrow[name]), config_dict(cfg), folder, pipe)
    except PipelineError as exc:
        print(f"resurface: {exc}", file=sys.stderr)
        return 1
    side_by_side = cfg.workers != 1  # workers 1: one model in memory at a time
    logging.getLogger("papermill").setLevel(logging.WARNING)
    out.mkdir(parents=True, exist_ok=True)
    # The kernels inherit this: no progress-bar debris in the executed notebooks (tqdm reads it when a process
    # imports it; this process imported it with papermill already, so its own cell counter stays).
    import tqdm.auto  # noqa: F401  (imported before the switch: this process keeps its bars)
    os.environ["TQDM_DISABLE"] = "1"
    run_log = out / "run.log"  # every run of the profile: the kernels append every build and reuse to it
    say = _logger(run_log, f"run of profile `{args.profile}` ({' '.join(argv or sys.argv[1:]) or 'defaults'})")
    start = time.perf_counter()
    follower = follow_progress(run_log)
    for names in pipe.stages(chosen, side_by_side):
        for name in [n for n in names if n in cfg.borrow]:  # products made elsewhere: checked, then copied
            lender = cfg.borrow[name]
            try:
                borrow(name, lender, outputs_dir(lender), config_dict(cfg), folder, out, pipe)
                timings_say_borrowed(out, name, lender)
            except PipelineError as exc:
                print(f"{NAME}: {exc}", file=sys.stderr)
                say(f"{NAME}: {exc}", echo=False)
                return 1
            say(f"==> {name}: borrowed from profile {lender} (outputs/{lender}/; the same notebook, run under "
                f"the parameters it reads)")
        names = [n for n in names if n not in cfg.borrow]
        if not names:
            continue
        group = [folder / f"{n}.ipynb" for n in names]
        say(f"==> {' + '.join(nb.name for nb in group)} (profile: {args.profile})")
        failed = run_group(group, out, args.profile, overrides, say, pipe)
        follower.flush()
        if failed:
            nb, exc = failed
            kept = (f"; the last good executed copy {out / nb.name} is untouched"
                    if (out / nb.name).exists() else "")
            msg = (f"{NAME}: notebook {nb.name} failed {describe_failure(exc)}; the executed copy with the error "
                   f"is {failed_copy(out, nb)}{kept}")
            print(msg, file=sys.stderr)
            say(msg, echo=False)
            return 1
    if not args.only:
        from resurface.study.report import build_report
        say(f"Report: {build_report(args.profile)}")
    say(f"Study '{args.profile}' finished in {time.perf_counter() - start:.0f} s; results in {out}/ "
        f"(log: {run_log})")
    return 0


def timings_say_borrowed(out: Path, name: str, lender: str) -> None:
    """tables/timings: the borrowed notebook's rows (of an earlier run here) become one row that says it spent
    nothing here; what it cost is in the lender's timings."""
    import pandas as pd
    from resurface.study.report import latex_table
    p = out / "tables" / "timings.csv"
    row = pd.DataFrame([{"notebook": name, "stage": "notebook", "artifact": f"borrowed from {lender}",
                         "seconds": 0.0, "status": "borrowed", "build_seconds": None, "worker": 0}])
    if p.exists():
        old = pd.read_csv(p)
        row = pd.concat([old[old["notebook"] != name], row], ignore_index=True)
    p.parent.mkdir(parents=True, exist_ok=True)
    for path, text in ((p, row.to_csv(index=False)), (p.with_suffix(".tex"), latex_table(row, "timings"))):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)


def written_products(out: Path, notebook: str) -> list[str]:
    """The files the notebook's last run wrote (recorded by session.Study in .products/<notebook>.json)."""
    import json
    path = out / ".products" / f"{notebook}.json"
    return json.loads(path.read_text()) if path.exists() else []


class follow_progress:
    """Shows the kernels' stage-level progress lines (`pool.PROGRESS`) from the run log at the terminal, as
    they are written: `[02_transfer] students and evaluations 12/40 done, 300 s so far, about 700 s left`."""

    def __init__(self, path: Path, every: float = 2.0):
        import threading
        self.path, self.every, self.pos = path, every, path.stat().st_size if path.exists() else 0
        self._lock = threading.Lock()
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self) -> None:
        while True:
            time.sleep(self.every)
            self.flush()

    def flush(self) -> None:
        from resurface.compute.pool import PROGRESS
        with self._lock:
            with self.path.open("rb") as fh:
                fh.seek(self.pos)
                lines = fh.read().split(b"\n")[:-1]  # the last piece is a line still being written, or empty
                self.pos += sum(len(l) + 1 for l in lines)
            for line in (l.decode("utf-8", "replace") for l in lines):
                if PROGRESS in line:  # "<date> <time> <notebook>: progress: <what>"
                    stamp, _, rest = line.partition(" ")[2].partition(" ")
                    notebook, _, what = rest.partition(": " + PROGRESS)
                    print(f"    [{notebook}] {what.strip()}", flush=True)


def _logger(path: Path, first: str):
    """`say(line)`: print it, and append it, time-stamped, to the run log. The log keeps every run of the
    profile (an `--only` run adds to it, never replaces it); each run starts with a `first` line."""
    def stamp() -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S")
    with path.open("a") as fh:
        fh.write(f"{stamp()} runner: {first}\n")

    def say(line: str, echo: bool = True) -> None:
        if echo:
            print(line, flush=True)
        with path.open("a") as fh:
            fh.write(f"{stamp()} runner: {line}\n")
    return say


if __name__ == "__main__":
    raise SystemExit(main())
