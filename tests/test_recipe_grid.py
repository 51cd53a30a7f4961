"""Notebook 01's grid scored on the held-out bits/byte alone (`recipe.grid_scores: bits_per_byte`, for real weights
whose dev items cost minutes per run): the same runs, the same bits/byte gains and the same choice as the grid
scored on every dev task, without the benchmark items."""
from __future__ import annotations

import numpy as np
import pytest


@pytest.mark.slow
def test_a_grid_scored_on_bits_per_byte_chooses_as_the_full_grid(smoke_zoo, smoke_cache):
    from resurface.frame.cache import Cache
    from resurface.frame.profiles import load_config
    from resurface.study import figures, recipe
    cache = Cache(smoke_cache)
    full_cfg = load_config("smoke")
    bpb_cfg = load_config("smoke", {"recipe.grid_scores": "bits_per_byte"})
    full, _ = recipe.run_grid(full_cfg, cache, smoke_zoo)
    bpb, arts = recipe.run_grid(bpb_cfg, cache, smoke_zoo)
    assert set(arts["tasks"].meta["items"]) == {"heldout_ppl"}       # no benchmark item was scored
    assert full["headline_delta"].notna().all() and bpb["headline_delta"].isna().all()
    both = full.merge(bpb, on="run_label", suffixes=("", "_bpb"))
    assert len(both) == len(full) == len(bpb) == len(recipe.grid_plan(full_cfg))
    np.testing.assert_allclose(both["bpb_gain_bpb"], both["bpb_gain"], rtol=0, atol=1e-6)  # the same documents
    assert (both["relation_bpb"] == both["relation"]).all() and (both["schedule_bpb"] == both["schedule"]).all()
    a, b = recipe.choose(full_cfg, full), recipe.choose(bpb_cfg, bpb)
    assert (a["schedule"], a["budget"], a["why"]) == (b["schedule"], b["budget"], b["why"])
    fig = figures.recipe_grid(recipe.grid_summary(bpb))
    assert fig.axes[0].get_ylabel() == "held-out bits/byte gain (dev)"
    plotted = [np.asarray(line.get_ydata(), float) for line in fig.axes[0].lines if len(line.get_ydata())]
    assert plotted and all(np.isfinite(y).any() for y in plotted)  # the gains, not NaN headline deltas


def test_a_grid_scored_on_bits_per_byte_needs_the_held_out_documents():
    from resurface.frame.profiles import load_config
    from resurface.frame.schema import ConfigError
    with pytest.raises(ConfigError, match="benchmarks.tasks has no heldout_ppl"):
        load_config("smoke", {"recipe.grid_scores": "bits_per_byte", "benchmarks.tasks": ["minimal_pairs"]})
    with pytest.raises(ConfigError, match="grid_scores"):
        load_config("smoke", {"recipe.grid_scores": "some"})
