"""Scoring goes through lm-eval's own `simple_evaluate`; our wrapper only drops its environment report."""
from __future__ import annotations

import pytest


@pytest.mark.slow
def test_scores_equal_plain_simple_evaluate_without_the_environment_report(smoke_zoo, smoke_cache, tmp_path,
                                                                           monkeypatch):
    import lm_eval
    import torch.utils.collect_env as collect_env
    from lm_eval.tasks import TaskManager
    from resurface.builders.benchmarks import build_tasks, write_task_yamls
    from resurface.frame.cache import Cache
    from resurface.builders.evaluations import run_lm_eval

    b = smoke_zoo.cfg.benchmarks
    tasks = build_tasks(Cache(smoke_cache), smoke_zoo.corpora["lineage"], ["minimal_pairs", "next_sentence"],
                        40, 4, smoke_zoo.cfg.seed)
    names = write_task_yamls(tasks, tmp_path / "tasks")
    model = smoke_zoo.model_path("lineage-small")

    reports = []
    real = collect_env.get_pretty_env_info
    monkeypatch.setattr(collect_env, "get_pretty_env_info", lambda: reports.append(1) or real())
    ours, items, margins, choices = run_lm_eval(model, tmp_path / "tasks", names, b.batch_size)
    assert reports == []  # no `pip list` in a subprocess for every evaluation

    plain = lm_eval.simple_evaluate(
        model="hf", model_args=f"pretrained={model},tokenizer={model},dtype=float32",
        tasks=names, task_manager=TaskManager(include_path=str(tmp_path / "tasks"), include_defaults=False),
        batch_size=b.batch_size, device="cpu", bootstrap_iters=0, random_seed=0, numpy_random_seed=0,
        torch_random_seed=0, fewshot_random_seed=0, log_samples=True, verbosity="ERROR")
    assert reports == [1] and "pretty_env_info" in plain  # lm-eval itself still reports; only our calls skip it
    assert ours == plain["results"]
    assert len(items["minimal_pairs"]) == 40 and len(items["next_sentence"]) == 40
    # a margin is positive exactly when the right choice wins on raw log-likelihood (acc)
    assert [m > 0 for m in margins["minimal_pairs"]] == [a == 1.0 for a in items["minimal_pairs"]]
    # the proper score: log-loss of the normalised choices; for two choices it is softplus(-margin)
    import numpy as np
    from resurface.builders.evaluations import choice_logloss
    ll = np.array([choice_logloss(c) for c in choices["minimal_pairs"]])
    np.testing.assert_allclose(ll, np.log1p(np.exp(-np.array(margins["minimal_pairs"]))), rtol=1e-9, atol=1e-12)
    four = np.array([choice_logloss(c) for c in choices["next_sentence"]])
    assert len(choices["next_sentence"][0]) == 5  # four choices and the target
    want = [np.logaddexp.reduce(c[:-1]) - c[int(c[-1])] for c in choices["next_sentence"]]
    np.testing.assert_allclose(four, want, rtol=1e-9, atol=1e-12)
    assert (four >= 0).all()  # a probability of at most one
