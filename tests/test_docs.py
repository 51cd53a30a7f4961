"""The README and docs speak to users: short, agreeing with the committed products, free of development history."""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]

# words that narrate how the project was built rather than what it is
HISTORY = re.compile(r"\bsessions? ?\d+|\bsession-\d|\b(this|previous|earlier|last|next) session\b|\bissue \d+\b"
                     r"|\bwe (now|used to)\b|\bno longer\b|\bused to be\b", re.I)


def _texts():
    files = [ROOT / "README.md", ROOT / "notebooks" / "README.md", *sorted((ROOT / "docs").glob("*.md")),
             *sorted((ROOT / "params").glob("*.yaml")), *sorted((ROOT / "lib").rglob("*.py")),
             *sorted((ROOT / "outputs").glob("*/REPORT.md"))]
    return [(f, f.read_text()) for f in files]


def test_no_development_history_in_what_users_read():
    hits = [f"{f.relative_to(ROOT)}:{text[:m.start()].count(chr(10)) + 1}: {m.group(0)!r}"
            for f, text in _texts() for m in HISTORY.finditer(text)]
    assert not hits, "development history in user-facing text:\n" + "\n".join(hits)


def test_the_history_check_can_fail():
    assert HISTORY.search("as measured in session 7") and HISTORY.search("see issue 33")
    assert not HISTORY.search("one working session fits the profile")


def test_readme_is_a_five_minute_read():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert lines[2:6] and lines[3].startswith("./run_all.sh") and lines[4].startswith("./run_tests.sh")
    assert len(lines) <= 130, f"README has {len(lines)} lines: move detail to docs/"
    for link in re.findall(r"\]\(((?:docs|notebooks|outputs)/[^)#]+)", "\n".join(lines)):
        assert (ROOT / link).exists(), f"README links to {link}, which does not exist"


@pytest.mark.parametrize("profile", ["default", "small-budget", "calibrated"])
def test_readme_times_agree_with_the_committed_timings(profile):
    """A committed profile's row of the profile table quotes each notebook's wall time as in its timings.csv."""
    readme = (ROOT / "README.md").read_text()
    row = next(l for l in readme.splitlines() if l.startswith(f"| `{profile}` |"))
    walls = pd.read_csv(ROOT / "outputs" / profile / "tables" / "timings.csv")
    walls = walls[walls["status"] == "wall"].set_index("notebook")["seconds"]
    quoted = dict(re.findall(r"\b(0\d) [a-z ]*?(\d+\.\d)\b", row))
    assert set(quoted) >= {"00", "01", "02", "03"}, row
    for nb, minutes in quoted.items():
        wall = next(s for n, s in walls.items() if n.startswith(nb))
        assert abs(float(minutes) - wall / 60) <= 0.06, f"README says {nb} took {minutes} min; timings.csv {wall:.0f} s"
