"""The artifact cache: keys, atomic publication, reuse, resume and corruption."""
from __future__ import annotations

import pytest

from resurface.frame.cache import Cache


def _build_counter(calls, content="hello"):
    def build(tmp):
        calls.append(tmp)
        (tmp / "data.txt").write_text(content)
        (tmp / "sub").mkdir()
        (tmp / "sub" / "x.bin").write_bytes(b"\x00\x01")
        return {"n": 1}
    return build


def test_key_depends_on_config_and_inputs(tmp_path):
    c = Cache(tmp_path)
    a = c.get_or_build("k", "a", {"x": 1}, _build_counter([]))
    assert c.key("k", {"x": 1}) == a.key
    assert c.key("k", {"x": 2}) != a.key
    assert c.key("k", {"x": 1}, [a]) != a.key
    assert c.key("other", {"x": 1}) != a.key


def test_reuse_does_no_work_and_logs(tmp_path, caplog):
    c, calls = Cache(tmp_path), []
    first = c.get_or_build("k", "a", {"x": 1}, _build_counter(calls))
    caplog.set_level("INFO", logger="resurface")
    second = c.get_or_build("k", "a", {"x": 1}, _build_counter(calls))
    assert len(calls) == 1 and first.path == second.path and second.meta == {"n": 1}
    assert any("reused k/a" in r.message for r in caplog.records)
    assert [t.status for t in c.timings] == ["built", "reused"]
    assert c.timings[1].build_seconds == pytest.approx(c.timings[0].seconds, abs=1e-3)


def test_timings_keep_one_row_per_artifact_and_tell_same_names_apart(tmp_path):
    """Three seeds of `lineage-small--real-text` share a name, not a key: three rows, and a later look-up of
    an artifact does not add a second row for it."""
    c = Cache(tmp_path)
    arts = [c.get_or_build("students", "s--real-text", {"seed": s}, _build_counter([])) for s in range(3)]
    c.get_or_build("students", "s--real-text", {"seed": 0}, _build_counter([]))  # reused
    t = c.timings_frame()
    assert list(t["artifact"]) == [f"students/{a.path.name}" for a in arts] and set(t["status"]) == {"built"}


def test_interrupted_build_leaves_nothing_and_is_redone(tmp_path):
    c = Cache(tmp_path)

    def crash(tmp):
        (tmp / "half.txt").write_text("partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        c.get_or_build("k", "a", {"x": 1}, crash)
    assert not list((tmp_path / "k").glob("a-*"))
    assert not list((tmp_path / "k").glob(".tmp-*"))
    calls = []
    c.get_or_build("k", "a", {"x": 1}, _build_counter(calls))
    assert len(calls) == 1


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete", "manifest"])
def test_corrupted_artifact_is_detected_and_rebuilt(tmp_path, damage, caplog):
    c, calls = Cache(tmp_path), []
    a = c.get_or_build("k", "a", {"x": 1}, _build_counter(calls))
    if damage == "truncate":
        (a.path / "data.txt").write_text("hel")
    elif damage == "flip":
        (a.path / "sub" / "x.bin").write_bytes(b"\x00\x02")
    elif damage == "delete":
        (a.path / "data.txt").unlink()
    else:
        (a.path / "manifest.json").unlink()
    caplog.set_level("WARNING", logger="resurface")
    b = c.get_or_build("k", "a", {"x": 1}, _build_counter(calls))
    assert len(calls) == 2 and (b.path / "data.txt").read_text() == "hello"
    assert any("rebuilding k/a" in r.message for r in caplog.records)


def test_unwritable_cache_names_the_path(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(RuntimeError, match=str(blocker)):
        Cache(blocker / "cache").get_or_build("k", "a", {}, _build_counter([]))


_READ_ONLY_PROBE = """
import sys
from resurface.frame.cache import Cache
calls = []
def build(tmp):
    calls.append(tmp)
    (tmp / "x").write_text("x")
c = Cache(sys.argv[1])
assert c.get_or_build("k", "a", {"x": 1}, build).meta == {"n": 1} and not calls  # reuse writes nothing
try:
    c.get_or_build("k", "b", {"x": 2}, build)
except RuntimeError as exc:
    print(exc)
"""


def test_read_only_cache_reuses_complete_artifacts_and_names_the_path_when_it_must_build(tmp_path):
    """The cache folder is mounted read-only (a private mount namespace): reuse works, building says where."""
    import shutil
    import subprocess
    import sys
    Cache(tmp_path / "cache").get_or_build("k", "a", {"x": 1}, _build_counter([]))
    ro = f'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && exec "$2" -c "$3" "$1"'
    if not shutil.which("unshare") or subprocess.run(["unshare", "-rm", "sh", "-c", ro, "sh", str(tmp_path),
                                                      "true", ""], capture_output=True).returncode != 0:
        pytest.skip("cannot make a read-only mount here (needs `unshare -rm`)")
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", ro, "sh", str(tmp_path / "cache"), sys.executable,
                           _READ_ONLY_PROBE], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"Cannot write to the artifact cache at {tmp_path / 'cache' / 'k'}" in proc.stdout
    assert "Read-only file system" in proc.stdout


def test_disk_full_during_a_build_names_the_path_and_leaves_nothing(tmp_path):
    import errno

    def fill(tmp):
        (tmp / "part.bin").write_bytes(b"x")
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp / "part.bin"))

    c = Cache(tmp_path)
    with pytest.raises(RuntimeError, match=r"Cannot write to the artifact cache at .*part\.bin: No space left"):
        c.get_or_build("k", "a", {"x": 1}, fill)
    assert not [p for p in (tmp_path / "k").iterdir() if not p.name.endswith(".lock")]


def test_debris_of_a_killed_build_is_cleared(tmp_path):
    c = Cache(tmp_path)
    target = c.path_for("k", "a", c.key("k", {"x": 1}))
    debris = target.parent / f".tmp-{target.name}-999999"  # a build whose process was SIGKILLed
    (debris / "sub").mkdir(parents=True)
    (debris / "half.bin").write_bytes(b"partial")
    calls = []
    a = c.get_or_build("k", "a", {"x": 1}, _build_counter(calls))
    assert len(calls) == 1 and not debris.exists() and Cache.verify(a.path)


def _build_in_process(root, results):
    import time
    c = Cache(root)

    def slow(tmp):
        (tmp / "who.txt").write_text(str(__import__("os").getpid()))
        time.sleep(1.0)  # long enough for the other process to arrive while this one builds
        return {}

    a = c.get_or_build("k", "shared", {"x": 1}, slow)
    results.put((c.timings[-1].status, (a.path / "who.txt").read_text()))


def test_two_processes_building_the_same_artifact_build_it_once(tmp_path):
    import multiprocessing as mp
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    procs = [ctx.Process(target=_build_in_process, args=(tmp_path, q)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    got = sorted(q.get(timeout=5) for _ in procs)
    assert [s for s, _ in got] == ["built", "reused"]
    assert got[0][1] == got[1][1]  # both read the one published copy
    assert len(list((tmp_path / "k").glob("shared-*"))) == 1 and not list((tmp_path / "k").glob(".tmp-*"))


def test_write_atomically_keeps_the_old_file_when_writing_fails(tmp_path):
    from resurface.frame.cache import write_atomically
    target = tmp_path / "table.csv"
    write_atomically(target, lambda t: t.write_text("old"))

    def half_then_crash(t):
        t.write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomically(target, half_then_crash)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["table.csv"]
