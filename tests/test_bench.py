"""The benchmark's arithmetic (the benchmark itself is a tool to run, not a timed test)."""
from __future__ import annotations

import pytest

from resurface.bench import scaling_fit


def test_scaling_fit_recovers_a_known_rate_and_flags_a_bad_fit():
    rows = [{"activity": a, "tokens": t, "params": p, "seconds": 2e-12 * t * p}
            for a in ("training", "sampling") for t in (1e4, 2e4, 4e4) for p in (1e6, 4e6)]
    fit = scaling_fit(rows)
    assert fit["training"]["seconds_per_token_param"] == pytest.approx(2e-12)
    assert fit["sampling"]["r2"] == pytest.approx(1.0)
    noisy = [dict(r, seconds=1.0 + (i % 3)) for i, r in enumerate(rows)]  # time unrelated to the work
    assert scaling_fit(noisy)["training"]["r2"] < 0.5
