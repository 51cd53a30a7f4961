"""Content-addressed artifact cache.

Every artifact (corpus, tokenizer, checkpoint, synthetic corpus, evaluation) is a
directory `<cache>/<kind>/<name>-<key>` where `key` hashes its resolved config and
the keys of its inputs. It is built in a temporary sibling directory, a manifest
with a SHA-256 of every file is written last, and the directory is renamed into
place. So a directory with a valid manifest is complete; anything else is debris
from an interrupted run and is rebuilt. A per-artifact lock file keeps two runs
of the same profile from building the same thing at once.
"""
from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger("resurface")

MANIFEST = "manifest.json"
# Versions, one style: FORMAT_VERSION re-keys every artifact; a builder whose own computation changes bumps its
# `<BUILDER>_FORMAT` constant, which it puts in its config (zoo.PRETRAIN_FORMAT, memorization_measures.EXTRACTION_FORMAT).
FORMAT_VERSION = 3  # bump when an artifact layout or how it is computed changes (2: single-threaded pool builds;
#                    3: the fused loss in fewer passes, the lean GPTNeoX sampler and the two-level draw)


def stable_hash(obj: Any, n: int = 16) -> str:
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:n]


def write_atomically(path: Path, write: Callable[[Path], Any]) -> Path:
    """`write(tmp)` into a temporary file beside `path`, then rename it over `path`: a reader (or a notebook
    alongside) sees the old file or the new one, never half of one; the temporary name is this process's own."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def peak_memory() -> str:
    """This process's peak resident memory so far (Linux and macOS; "unknown" elsewhere): which build raised it
    shows in the run log."""
    try:
        import resource
    except ImportError:
        return "unknown"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return f"{peak / (2 ** 30 if os.uname().sysname == 'Darwin' else 2 ** 20):.1f} GiB"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class Artifact:
    kind: str
    name: str
    key: str
    path: Path
    meta: dict = field(default_factory=dict, compare=False)

    def __truediv__(self, other: str) -> Path:
        return self.path / other


@dataclass
class TimingRecord:
    stage: str
    artifact: str  # <kind>/<name>-<key>: its folder in the cache
    seconds: float
    status: str  # "built" or "reused"
    build_seconds: float | None = None  # what building it cost, also when it was reused
    worker: int = 0  # 0: this process; k: worker process k of a pool (resurface.compute.pool)


class NotYours(RuntimeError):
    """A notebook asked for an artifact that an earlier notebook builds, and the cache does not hold it."""


class CorruptArtifact(RuntimeError):
    pass


class NotBuilt(LookupError):
    """Raised inside `Cache.probe()` for an artifact that would have to be built."""


# write failures that mean "this place cannot hold the cache" rather than a bug in a build
_STORAGE_ERRORS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT}


def _storage_error(exc: OSError, where: Path) -> RuntimeError:
    path = exc.filename or where
    return RuntimeError(f"Cannot write to the artifact cache at {path}: {exc.strerror or exc}; "
                        "free some space or point RESURFACE_CACHE (or cache_dir) at a writable folder.")


class Cache:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.timings: list[TimingRecord] = []
        self._probing = False
        self.builds: tuple[str, dict[str, list[str]]] | None = None  # see `restrict`

    def restrict(self, notebook: str, builders: dict[str, list[str]]) -> None:
        """From now on build only the kinds `notebook` builds (`builders`: kind -> the notebooks that build it,
        from notebooks/pipeline.yaml); anything else it must find here, made by an earlier notebook."""
        self.builds = (notebook, builders)

    @contextmanager
    def probe(self):
        """Within: cached artifacts are returned as usual, anything missing raises NotBuilt; nothing is
        built and no timing is recorded (how a pool finds its pending jobs)."""
        n, self._probing = len(self.timings), True
        try:
            yield
        finally:
            self._probing = False
            del self.timings[n:]

    # -------------------------------------------------------------- keys
    def key(self, kind: str, config: Any, inputs: list[Artifact] | tuple = ()) -> str:
        return stable_hash({"v": FORMAT_VERSION, "kind": kind, "config": config,
                            "inputs": sorted(a.key for a in inputs)})

    def path_for(self, kind: str, name: str, key: str) -> Path:
        return self.root / kind / f"{name}-{key}"

    # ---------------------------------------------------------- manifest
    @staticmethod
    def verify(path: Path) -> dict:
        """Return the manifest if every listed file is present with its checksum, else raise."""
        mpath = path / MANIFEST
        if not mpath.exists():
            raise CorruptArtifact(f"{path} has no manifest (interrupted build)")
        try:
            manifest = json.loads(mpath.read_text())
        except json.JSONDecodeError as exc:
            raise CorruptArtifact(f"{mpath} is not valid JSON ({exc})") from None
        for rel, digest in manifest.get("files", {}).items():
            f = path / rel
            if not f.exists():
                raise CorruptArtifact(f"{f} is missing")
            if file_sha256(f) != digest:
                raise CorruptArtifact(f"{f} does not match its manifest checksum")
        return manifest

    @staticmethod
    def _write_manifest(path: Path, kind: str, name: str, key: str, config: Any,
                        inputs: list[Artifact], meta: dict, seconds: float) -> dict:
        files = {str(p.relative_to(path)): file_sha256(p)
                 for p in sorted(path.rglob("*")) if p.is_file() and p.name != MANIFEST}
        manifest = {"kind": kind, "name": name, "key": key, "config": config,
                    "inputs": {a.name: a.key for a in inputs}, "meta": meta,
                    "build_seconds": round(seconds, 3), "files": files}
        write_atomically(path / MANIFEST, lambda tmp: tmp.write_text(json.dumps(manifest, indent=1, default=str)))
        return manifest

    @contextmanager
    def _lock(self, target: Path):
        # filelock: an OS lock on Linux, macOS and Windows alike (fcntl exists on none but the first two)
        from filelock import FileLock
        lock_path = target.parent / f".{target.name}.lock"
        lock = FileLock(str(lock_path))
        try:
            lock.acquire()
        except OSError as exc:
            if exc.errno in _STORAGE_ERRORS:
                raise _storage_error(exc, lock_path) from None
            raise
        try:
            yield
        finally:
            lock.release()

    # -------------------------------------------------------------- main
    def get_or_build(self, kind: str, name: str, config: Any, build: Callable[[Path], dict | None],
                     inputs: list[Artifact] | tuple = (), stage: str | None = None) -> Artifact:
        """Return the cached artifact, or build it with `build(tmp_dir) -> meta` and publish it.

        `config` must be JSON-serialisable and hold everything that changes the result.
        """
        inputs = list(inputs)
        key = self.key(kind, config, inputs)
        target = self.path_for(kind, name, key)
        stage = stage or kind
        t0 = time.perf_counter()

        def reuse() -> Artifact | None:
            if not target.exists():
                return None
            try:
                manifest = self.verify(target)
            except CorruptArtifact as exc:
                return exc
            log.info("reused %s/%s (%s)", kind, name, key)
            self.timings.append(TimingRecord(stage, f"{kind}/{target.name}", time.perf_counter() - t0, "reused",
                                             manifest.get("build_seconds")))
            return Artifact(kind, name, key, target, manifest.get("meta", {}))

        # a complete artifact is never modified, so reading needs no lock (a read-only cache works)
        found = reuse()
        if isinstance(found, Artifact):
            return found
        if self._probing:
            raise NotBuilt(f"{kind}/{name}")
        if self.builds is not None and self.builds[0] not in self.builds[1].get(kind, []):
            notebook, owners = self.builds[0], self.builds[1].get(kind) or ["no notebook"]
            raise NotYours(f"{notebook} needs {kind}/{name}, which the cache does not hold and {' or '.join(owners)} "
                           f"builds; run {owners[0]} first (./run_all.sh --only {owners[0][:2]}) or the whole study")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RuntimeError(f"Cannot create the artifact cache at {exc.filename or self.root}: "
                               f"{exc.strerror}.") from None
        with self._lock(target):
            found = reuse()  # another run may have built it while we waited for the lock
            if isinstance(found, Artifact):
                return found
            if isinstance(found, CorruptArtifact):
                log.warning("rebuilding %s/%s: %s", kind, name, found)
                shutil.rmtree(target)
            # under the lock, any other temporary folder for this artifact is debris of a killed run
            for debris in target.parent.glob(f".tmp-{target.name}-*"):
                shutil.rmtree(debris, ignore_errors=True)
            tmp = target.parent / f".tmp-{target.name}-{os.getpid()}"
            try:
                tmp.mkdir(parents=True)
            except OSError as exc:
                raise _storage_error(exc, tmp.parent) from None
            log.info("building %s/%s (%s)", kind, name, key)
            try:
                meta = build(tmp) or {}
                seconds = time.perf_counter() - t0
                manifest = self._write_manifest(tmp, kind, name, key, config, inputs, meta, seconds)
                os.replace(tmp, target)
            except OSError as exc:
                shutil.rmtree(tmp, ignore_errors=True)
                if exc.errno in _STORAGE_ERRORS:  # disk full, read-only: say where, keep nothing half-written
                    raise _storage_error(exc, tmp) from None
                raise
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        log.info("built %s/%s in %.1f s (this process's peak memory so far: %s)", kind, name, seconds, peak_memory())
        self.timings.append(TimingRecord(stage, f"{kind}/{target.name}", seconds, "built", seconds))
        return Artifact(kind, name, key, target, manifest["meta"])

    def timings_frame(self):
        import pandas as pd
        # one row per artifact: a pool's "built" row, not the loop's "reused" look-up after it
        return pd.DataFrame([t.__dict__ for t in self.timings],
                            columns=["stage", "artifact", "seconds", "status", "build_seconds", "worker"]
                            ).drop_duplicates("artifact", keep="first").reset_index(drop=True)
