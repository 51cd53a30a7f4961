"""The `resurface` lm-eval backend scores exactly what lm-eval's `hf` backend scores, only faster.

The comparison runs lm-eval itself on both backends: if lm-eval's own scoring changes under us (how it encodes a
context, truncates, or normalises), these tests fail."""
from __future__ import annotations

import json

import pytest

STANDARD_LOOKALIKES = {
    # a PIQA / ARC-style multiple choice: a templated question, choices after "Answer:"
    "qa_lookalike": ("output_type: multiple_choice\ndoc_to_text: \"Question: {{context}}\\nAnswer:\"\n"
                     "doc_to_choice: choices\ndoc_to_target: label\n"
                     "metric_list:\n  - metric: acc\n  - metric: acc_norm\n"),
    # a LAMBADA-style last-word task: one continuation, accuracy = greedy
    "lambada_lookalike": ("output_type: loglikelihood\ndoc_to_text: context\n"
                          "doc_to_target: \"{{' ' + choices[label]}}\"\n"
                          "metric_list:\n  - metric: perplexity\n  - metric: acc\n"),
}


def _values(sample) -> list[float]:
    return [float(r[0]) if isinstance(r, (list, tuple)) else float(r) for r in sample["filtered_resps"]]


def _scores(res, task):
    return [_values(s) for s in sorted(res["samples"][task], key=lambda s: s["doc_id"])]


@pytest.mark.slow
def test_every_task_type_scores_like_lm_evals_hf(smoke_zoo, smoke_cache, tmp_path):
    import lm_eval
    from lm_eval.tasks import TaskManager
    from resurface.lm import lm_backend# noqa: F401  registers `resurface`
    from resurface.builders.benchmarks import build_tasks, task_items, write_task_yamls
    from resurface.frame.cache import Cache

    tasks = build_tasks(Cache(smoke_cache), smoke_zoo.corpora["lineage"],
                        ["minimal_pairs", "word_cloze", "next_sentence", "heldout_ppl"], 40, 6, smoke_zoo.cfg.seed)
    names = write_task_yamls(tasks, tmp_path)
    data = tmp_path / "cloze.jsonl"
    data.write_text("".join(json.dumps(it) + "\n" for it in task_items(tasks, "word_cloze")))
    for name, body in STANDARD_LOOKALIKES.items():
        (tmp_path / f"{name}.yaml").write_text(
            f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {json.dumps(str(data))}\n"
            "test_split: test\n" + body)
        names.append(name)
    model = smoke_zoo.model_path("lineage-large")
    results = {}
    for backend in ("hf", "resurface"):
        results[backend] = lm_eval.simple_evaluate(
            model=backend, model_args=f"pretrained={model},tokenizer={model},dtype=float32", tasks=names,
            task_manager=TaskManager(include_path=str(tmp_path), include_defaults=False), batch_size=16,
            device="cpu", bootstrap_iters=0, log_samples=True, verbosity="ERROR")
    worst = {}
    for task in names:
        a, b = _scores(results["hf"], task), _scores(results["resurface"], task)
        assert len(a) == len(b) > 0
        for x, y in zip(a, b):
            for u, v in zip(x, y):
                # 1e-5 per nat of the score: a rolling paragraph sums hundreds of float32 token terms
                assert abs(v - u) <= 1e-5 * max(1.0, abs(u)), (task, u, v)
                worst[task] = max(worst.get(task, 0.0), abs(u - v) / max(1.0, abs(u)))
        for metric, value in results["hf"]["results"][task].items():
            if metric.startswith(("acc,", "acc_norm,")):
                assert results["resurface"]["results"][task][metric] == value, (task, metric)
    print("largest log-likelihood difference (nats, or relative where the score exceeds 1 nat):",
          {t: f"{w:.1e}" for t, w in worst.items()})


def test_backend_is_registered_and_selectable():
    from lm_eval.api.registry import get_model
    from resurface.lm import lm_backend
    from resurface.frame.profiles import load_config
    assert get_model("resurface") is lm_backend.ForwardPassLM
    assert load_config("smoke", {"benchmarks.backend": "resurface"}).benchmarks.backend == "resurface"
    assert load_config("smoke", {"benchmarks.backend": "hf"}).benchmarks.backend == "hf"


def test_the_environment_report_patch_fails_loudly_if_lm_eval_renames_it(monkeypatch):
    import lm_eval.evaluator
    from resurface.builders.evaluations import _without_env_report
    monkeypatch.delattr(lm_eval.evaluator, "add_env_info")
    with pytest.raises(RuntimeError, match="add_env_info is gone"):
        with _without_env_report():
            pass


def test_a_task_without_a_primary_metric_stops_before_any_compute():
    from resurface.frame.schema import ConfigError
    from resurface.frame.profiles import load_config
    with pytest.raises(ConfigError, match=r"\['mmlu'\] have no primary metric"):
        load_config("smoke", {"benchmarks.tasks": ["minimal_pairs", "mmlu"]})
