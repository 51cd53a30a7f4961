"""Score a saved model directory on lm-eval tasks, cached per (model, tasks)."""
from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path

from resurface.builders.benchmarks import write_task_yamls
from resurface.builders.task_files import HIGHER_IS_BETTER, TASK_PREFIX
from resurface.frame.schema import PRIMARY_METRIC
from resurface.frame.cache import Artifact, Cache

log = logging.getLogger("resurface")


def run_lm_eval(model_dir: Path, task_dir: Path | None, task_names: list[str], batch_size: int,
                seed: int = 0, include_defaults: bool = False, backend: str = "hf",
                model_args: str = "") -> tuple[dict, dict]:
    """`simple_evaluate` with an lm-eval backend (`resurface`: this project's, `hf`, `vllm`) on a saved HF directory.

    Returns the aggregate results and, per accuracy task in doc order, the per-item scores (so a before/after
    difference can get a paired standard error), margins and log-likelihoods of every choice."""
    import lm_eval
    from lm_eval.tasks import TaskManager
    from resurface.compute.device import current
    if backend == "resurface":
        from resurface.lm import lm_backend  # noqa: F401  registers the backend with lm-eval
    place = current()
    # embedded tasks from their YAMLs; Hub profiles add lm-eval's own registry (lambada_openai, piqa, ...)
    tm = TaskManager(include_path=str(task_dir) if task_dir is not None else None,
                     include_defaults=include_defaults or task_dir is None)
    args = f"pretrained={model_dir},tokenizer={model_dir},dtype={place.dtype}" + (f",{model_args}" if model_args else "")
    with _without_env_report():
        res = lm_eval.simple_evaluate(
            model=backend, model_args=args,
            tasks=task_names, task_manager=tm, batch_size=batch_size, device=place.device, bootstrap_iters=0,
            random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed,
            log_samples=True, verbosity="ERROR")
    items, margins, choices = {}, {}, {}
    for task, samples in res.get("samples", {}).items():
        short = task[len(TASK_PREFIX):] if task.startswith(TASK_PREFIX) else task
        metric = PRIMARY_METRIC.get(short)
        if metric in ("acc", "acc_norm"):
            ordered = sorted(samples, key=lambda x: x["doc_id"])
            items[short] = [float(x[metric]) for x in ordered]
            margins[short] = [item_margin(x) for x in ordered]
            choices[short] = [[float(r[0]) for r in x["filtered_resps"]] + [_target(x)] for x in ordered]
    return res["results"], items, margins, choices


def _target(sample: dict) -> int:
    """The right choice's index; a task scored on one continuation (LAMBADA's last word) has only that one."""
    return 0 if len(sample["filtered_resps"]) == 1 else int(sample["target"])


def item_margin(sample: dict) -> float:
    """Log-likelihood of the right choice minus the best wrong one (nats): a per-item outcome with far more
    information than its 0/1 accuracy. A task with one continuation has no wrong choice: its margin is the
    continuation's log-likelihood."""
    lls = [float(r[0]) for r in sample["filtered_resps"]]
    target = _target(sample)
    if len(lls) == 1:
        return lls[0]
    return lls[target] - max(ll for i, ll in enumerate(lls) if i != target)


def choice_logloss(lls_and_target: list[float]) -> float:
    """The proper score of one item: minus the log of the right choice's probability when the choices'
    likelihoods are normalised over the choices (nats). Unlike a raw margin it is not improved by
    sharpening alone: a confident wrong answer costs more than an unsure one."""
    import numpy as np
    lls, target = np.asarray(lls_and_target[:-1], float), int(lls_and_target[-1])
    if len(lls) == 1:  # one continuation (LAMBADA): its log-loss over the vocabulary, not over choices
        return float(-lls[0])
    top = lls.max()
    return float(top + np.log(np.exp(lls - top).sum()) - lls[target])


@contextlib.contextmanager
def _without_env_report():
    """lm-eval attaches torch's environment report to every result: `pip list`, `nvidia-smi` and more in
    subprocesses, 0.5 s a call and 68 calls a default study. We keep only scores; the study's report records
    the environment once. Nothing that scores is touched."""
    import lm_eval.evaluator
    saved = getattr(lm_eval.evaluator, "add_env_info", None)
    if saved is None:
        raise RuntimeError("lm_eval.evaluator.add_env_info is gone (lm-eval renamed what resurface skips to keep "
                           "`pip list` out of every evaluation); update evaluation._without_env_report")
    lm_eval.evaluator.add_env_info = lambda results: None
    try:
        yield
    finally:
        lm_eval.evaluator.add_env_info = saved


def tidy_results(results: dict) -> list[dict]:
    """lm-eval's nested results -> rows of (task, metric, value, stderr)."""
    rows = []
    for task, metrics in results.items():
        short = task[len(TASK_PREFIX):] if task.startswith(TASK_PREFIX) else task
        for k, v in metrics.items():
            if "," not in k or "_stderr" in k or not isinstance(v, (int, float)):
                continue
            metric = k.split(",")[0]
            se = metrics.get(f"{metric}_stderr,{k.split(',')[1]}")
            rows.append({"task": short, "metric": metric, "value": float(v),
                         "stderr": float(se) if isinstance(se, (int, float)) else None})
    return rows


def evaluate(cache: Cache, model: Artifact, model_subdir: str, tasks: Artifact, batch_size: int,
             label: str, backend: str = "hf", model_args: str = "") -> Artifact:
    """Evaluate `model/model_subdir` on the embedded tasks; the result is cached as JSON rows."""
    from resurface.compute.device import current
    cfg = {"subdir": model_subdir, "batch_size": batch_size, "layout": 4,  # 4: per-item scores, margins and every choice's log-likelihood
           **current().key(), **({"backend": backend, "model_args": model_args} if backend != "hf" or model_args
                                  else {}),
           # 2: logits only at scored positions: equal to hf within 2e-7, not bit-equal to scorer 1
           **({"scorer": 2} if backend == "resurface" else {})}

    def build(tmp: Path) -> dict:
        names = write_task_yamls(tasks, tmp / "tasks")
        standard = list(tasks.meta.get("standard") or [])
        results, items, margins, choices = run_lm_eval(model.path / model_subdir, tmp / "tasks", names + standard, batch_size,
                                     include_defaults=bool(standard), backend=backend, model_args=model_args)
        rows = tidy_results(results)
        for r in rows:  # binomial standard error for accuracies (lm-eval's needs bootstrap iterations)
            if r["metric"] in ("acc", "acc_norm") and r["stderr"] is None and r["task"] in items:
                n = len(items[r["task"]])
                r["stderr"] = (r["value"] * (1 - r["value"]) / max(1, n - 1)) ** 0.5
                r["n"] = n
        (tmp / "results.json").write_text(json.dumps(rows, indent=1))
        (tmp / "items.json").write_text(json.dumps(items))
        (tmp / "margins.json").write_text(json.dumps(margins))
        (tmp / "choices.json").write_text(json.dumps(choices))
        import shutil
        shutil.rmtree(tmp / "tasks")
        return {"n_rows": len(rows)}

    return cache.get_or_build("evaluations", label, cfg, build, inputs=[model, tasks], stage="evaluate")


def load_results(art: Artifact) -> list[dict]:
    return json.loads((art / "results.json").read_text())


def item_scores(art: Artifact) -> dict[str, list[float]]:
    return json.loads((art / "items.json").read_text())


def item_margins(art: Artifact) -> dict[str, list[float]]:
    return json.loads((art / "margins.json").read_text())


def item_loglosses(art: Artifact) -> dict[str, list[float]]:
    """Per accuracy task, each item's log-loss of the normalised choice probabilities (nats; lower is better)."""
    choices = json.loads((art / "choices.json").read_text())
    return {t: [choice_logloss(c) for c in rows] for t, rows in choices.items()}


def paired_stderr(before: list[float], after: list[float]) -> float:
    """Standard error (points) of the mean per-item difference: the same items scored twice."""
    import numpy as np
    d = np.asarray(after, float) - np.asarray(before, float)
    return float(100 * d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")


def primary(rows: list[dict]) -> dict[str, float]:
    """{task: value of its primary metric}."""
    return {r["task"]: r["value"] for r in rows if PRIMARY_METRIC.get(r["task"]) == r["metric"]}


def oriented_delta(task: str, base: float, after: float) -> float:
    """after - base, signed so that positive always means better; accuracies in points."""
    metric = PRIMARY_METRIC[task]
    d = (after - base) if HIGHER_IS_BETTER[metric] else (base - after)
    return 100 * d if metric in ("acc", "acc_norm") else d
