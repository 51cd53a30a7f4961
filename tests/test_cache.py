"""The artifact cache: keys, atomic publication, reuse, resume and corruption."""
from __future__ import annotations

import pytest

from resurface.cache import Cache


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
