"""The benchmark's arithmetic (the benchmark itself is a tool to run, not a timed test)."""
from __future__ import annotations

import pytest

from conftest import load_script

bench = load_script("cost_bench")
flops_per_token, matmul_params, scaling_fit = bench.flops_per_token, bench.matmul_params, bench.scaling_fit


def test_scaling_fit_recovers_a_known_rate_and_flags_a_bad_fit():
    rows = [{"activity": a, "tokens": t, "params": p, "seconds": 2e-12 * t * p}
            for a in ("training", "sampling") for t in (1e4, 2e4, 4e4) for p in (1e6, 4e6)]
    fit = scaling_fit(rows)
    assert fit["training"]["seconds_per_token_param"] == pytest.approx(2e-12)
    assert fit["sampling"]["r2"] == pytest.approx(1.0)
    noisy = [dict(r, seconds=1.0 + (i % 3)) for i, r in enumerate(rows)]  # time unrelated to the work
    assert scaling_fit(noisy)["training"]["r2"] < 0.5


@pytest.mark.parametrize("arch", ["gpt_neox", "llama", "gpt2"])
def test_model_flops_count_every_matmul_once_and_no_lookup(arch):
    """By hand: 12 d^2 per GPTNeoX / GPT-2 layer (qkv, out, 4d MLP), 4 d^2 + 3 d I per Llama layer, plus
    the output head once (tied or not); the input embedding (and GPT-2's positions) are look-ups."""
    from resurface.frame.schema import ModelConfig
    _model = bench._model
    d, layers, vocab, seq = 32, 3, 500, 64
    m = ModelConfig(kind="lineage", architecture=arch, tokenizer="t", layers=layers, width=d, heads=4)
    model = _model(m, vocab, seq)
    per_layer = 4 * d * d + 3 * d * model.config.intermediate_size if arch == "llama" else 12 * d * d
    assert matmul_params(model) == layers * per_layer + vocab * d
    fwd = 2 * (layers * per_layer + vocab * d) + 4 * layers * d * seq
    assert flops_per_token(model, seq, training=False) == fwd
    assert flops_per_token(model, seq, training=True) == 3 * fwd


def test_scoring_clock_times_only_the_backends_own_methods_and_restores_them():
    import time
    _evaluation_lines, _scoring_clock = bench._evaluation_lines, bench._scoring_clock

    class Backend:
        def loglikelihood(self, requests):
            time.sleep(0.2)
            return [0.0] * len(requests)

        def loglikelihood_rolling(self, requests):
            return self.loglikelihood(requests)

    original = Backend.__dict__["loglikelihood"]
    with _scoring_clock(Backend) as clock:
        assert Backend().loglikelihood([1, 2]) == [0.0, 0.0]
        assert 0.19 < clock[0] < 0.39
        before = clock[0]
        Backend().loglikelihood_rolling([1])  # one method calling the other: counted once
        assert 0.19 < clock[0] - before < 0.39  # twice would be >= 0.4
    assert Backend.__dict__["loglikelihood"] is original
    row = {"model": "m", "task": "t", "items": 10, "hf_items_per_s": 5.0, "resurface_items_per_s": 10.0,
           "ratio": 2.0, "hf_scoring_s": 1.0, "resurface_scoring_s": 0.25, "scoring_ratio": 4.0}
    assert "| m | t | 10 | 5 | 10 | 2.00x | 1.00 | 0.25 | 4.00x |" in _evaluation_lines([row])
