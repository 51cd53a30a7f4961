"""Parameters are validated before any compute, with one sentence per problem."""
from __future__ import annotations

import subprocess
import sys

import pytest

from resurface.frame import profiles as C
from resurface.frame import schema as S
from resurface.frame.schema import ConfigError
from resurface.frame.profiles import load_config

PROFILES = C.available_profiles()


@pytest.mark.parametrize("profile", PROFILES)
def test_every_committed_profile_validates(profile):
    cfg = load_config(profile)
    assert cfg.profile == profile


def test_required_profiles_exist():
    assert {"smoke", "default", "small-budget", "workshop", "pythia", "smollm2"} <= set(PROFILES)


@pytest.mark.parametrize("overrides, words", [
    ({"sampling.temperatures": [0.0]}, ["temperatures", "> 0"]),
    ({"sampling.temperatures": [-1]}, ["temperatures"]),
    ({"zoo.models.lineage-small.steps": -5}, ["zoo.models.lineage-small.steps", "-5", "greater than 0"]),
    ({"zoo.models.lineage-small.layers": "two"}, ["layers", "two", "integer"]),
    ({"zoo.models.lineage-small.architecture": "rwkv"}, ["architecture", "rwkv", "gpt_neox"]),
    ({"zoo.models.cross.kind": "enemy"}, ["kind", "enemy", "cross_family"]),
    ({"transfer.relations": ["self", "cousin"]}, ["relations", "cousin", "same_lineage"]),
    ({"transfer.students": ["nobody"]}, ["student", "nobody", "lineage-small"]),
    ({"transfer.sources": ["lineage-small@step7"]}, ["lineage-small@step7", "checkpoints"]),
    ({"transfer.sources": ["ghost"]}, ["ghost", "no zoo model"]),
    ({"sampling.top_p": 1.5}, ["top_p", "1.5"]),
    ({"corpora.heldout_fraction": 0}, ["heldout_fraction", "greater than 0"]),
    ({"zoo.models.lineage-small.width": 65}, ["width", "heads"]),
    ({"cache_dir": "../../elsewhere"}, ["cache_dir", "escapes the project"]),
    ({"workers": 0}, ["workers", "at least 1", "0"]),
    ({"workers": "many"}, ["workers", "many"]),
    ({"threads": -2}, ["threads", "at least 1"]),
    ({"transfer.relations": ["self", "task_text"]}, ["task_text", "registry"]),
    ({"benchmarks.registry": ["hellaswagg"]}, ["registry", "hellaswagg", "hellaswag"]),
    ({"benchmarks.registry": ["word_cloze"]}, ["registry", "word_cloze"]),
    ({"recipe.schedules": ["continue@3e-5"]}, ["continue@3e-5", "only `rewarm`"]),
    ({"recipe.schedules": ["rewarm@fast"]}, ["rewarm@fast", "not a learning rate"]),
])


def test_impossible_values_name_key_value_and_allowed(overrides, words):
    with pytest.raises(ConfigError) as exc:
        load_config("smoke", overrides)
    msg = str(exc.value)
    for w in words:
        assert w in msg, (w, msg)
    assert msg.count(". ") == 0 or msg.count(". ") == 1 and "Did you mean" in msg, f"not one sentence: {msg}"


def test_a_schedule_with_its_own_learning_rate_reaches_the_fine_tuning(monkeypatch):
    """`rewarm@3e-05` in a recipe grid fine-tunes at that peak rate; a plain name keeps finetune.lr."""
    from types import SimpleNamespace
    from resurface.study import matrix
    cfg = load_config("smoke", {"recipe.schedules": ["rewarm@3e-05", "rewarm"]})
    seen = []
    monkeypatch.setattr(matrix, "finetune", lambda cache, name, model, sub, corpus, texts, budget, ft, *a: seen.append(
        (name, ft.schedule, ft.lr)))
    zoo = SimpleNamespace(cfg=cfg, models={"lineage-small": None})
    corpus = SimpleNamespace(name="c")
    for schedule in cfg.recipe.schedules:
        matrix.student_for(None, zoo, {"student": "lineage-small", "source": "x", "schedule": schedule, "budget": 64,
                                       "seed": 0}, corpus)
    assert seen == [("lineage-small--c--rewarm@3e-05-64", "rewarm", 3e-05),
                    ("lineage-small--c--rewarm-64", "rewarm", cfg.finetune.lr)]
def test_unknown_key_gets_did_you_mean():
    with pytest.raises(ConfigError, match=r"Unknown parameter `zoo.models.lineage-small.layrs`; did you mean `layers`"):
        load_config("smoke", {"zoo.models.lineage-small.layrs": 3})
    with pytest.raises(ConfigError, match=r"did you mean `sampling`"):
        load_config("smoke", {"samplin.top_p": 0.9})


def test_unknown_profile_lists_available():
    with pytest.raises(ConfigError, match=r"Unknown profile `smok`.*Did you mean `smoke`"):
        load_config("smok")


def test_malformed_yaml(tmp_path, monkeypatch):
    (tmp_path / "broken.yaml").write_text("zoo: [unclosed\n  models: {")
    monkeypatch.setattr(C, "PARAMS_DIR", tmp_path)
    with pytest.raises(ConfigError, match=r"not valid YAML at line \d+"):
        load_config("broken")


def test_config_is_frozen():
    cfg = load_config("smoke")
    with pytest.raises(Exception):
        cfg.seed = 3


def test_cli_exits_nonzero_with_one_line(isolated):
    proc = subprocess.run([sys.executable, "-m", "resurface.frame.profiles", "smoke", "sampling.temperatures=[0]"],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "temperatures" in proc.stderr
    assert not (isolated / "outputs").exists() and not (isolated / "cache").exists()


def test_start_writes_nothing_on_bad_params(isolated):
    from resurface.study.session import start
    with pytest.raises(SystemExit, match="temperatures"):
        start("smoke", {"sampling.temperatures": [0]})
    assert not (isolated / "outputs").exists() and not (isolated / "cache").exists()


def test_model_refs():
    assert S.parse_model_ref("lineage-small@step300") == ("lineage-small", 300)
    assert S.parse_model_ref("cross") == ("cross", None)
    with pytest.raises(ValueError):
        S.parse_model_ref("x@latest")


@pytest.mark.slow
@pytest.mark.parametrize("params, words", [
    (["-p", "profile", "nope"], "Unknown profile `nope`"),
    (["-y", '{"profile": "smoke", "overrides": {"sampling.top_p": 3}}'], "`sampling.top_p` = 3"),
    (["-y", '{"profile": "smoke", "overrides": {"sampling.temprature": [1.0]}}'], "did you mean"),
])
def test_bad_papermill_parameters_stop_in_the_first_cell_and_write_nothing(isolated, params, words):
    """Running a notebook directly with Papermill (not through run_all.sh) is validated just the same."""
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    executed = isolated / "executed.ipynb"
    proc = subprocess.run([sys.executable, "-m", "papermill", str(root / "notebooks" / "02_transfer.ipynb"),
                           str(executed), *params, "-k", "resurface", "--cwd", str(root / "notebooks")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and words in proc.stderr
    assert not (isolated / "outputs").exists() and not (isolated / "cache").exists()


def _fake_hub_snapshot(hf_home, repo: str, revision: str) -> None:
    """The layout huggingface_hub uses for a downloaded model (refs/<rev> -> snapshots/<commit>/)."""
    d = hf_home / "hub" / f"models--{repo.replace('/', '--')}"
    commit = "0" * 40
    (d / "refs").mkdir(parents=True, exist_ok=True)
    (d / "refs" / revision).write_text(commit)
    (d / "snapshots" / commit).mkdir(parents=True, exist_ok=True)
    (d / "snapshots" / commit / "config.json").write_text("{}")


def test_a_hub_model_missing_offline_stops_with_one_sentence(isolated, monkeypatch):
    from resurface.builders import hub
    from resurface.study.session import start
    hf_home = isolated / "hf"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("HF_HUB_CACHE", str(hf_home / "hub"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(hf_home / "hub"))
    cfg = C.load_config("pythia")
    need = hub.required_revisions(cfg)
    assert ("EleutherAI/pythia-160m-deduped", "step71000") in need  # the intermediate-checkpoint source
    with pytest.raises(SystemExit, match=r"model `EleutherAI/pythia-160m-deduped` at revision `step143000` \(and \d+ more\) "
                                         r"is not in the local Hugging Face cache"):
        start("pythia")
    assert not (isolated / "outputs").exists() and not (isolated / "cache").exists()
    for repo, rev in need:  # once every pinned revision is present, the check passes
        _fake_hub_snapshot(hf_home, repo, rev)
    assert hub.missing_offline(cfg) == []


def test_a_profile_can_extend_another(tmp_path, monkeypatch):
    d, s = load_config("small-budget"), load_config("smollm2")
    assert {n: m for n, m in s.zoo.models.items() if n != "smollm2"} == d.zoo.models  # shared artifacts reused
    assert s.sampling.temperatures == [1.0] and s.sampling.tokens_per_corpus == d.sampling.tokens_per_corpus
    assert s.description != d.description
    monkeypatch.setattr(C, "PARAMS_DIR", tmp_path)
    (tmp_path / "a.yaml").write_text("extends: b\n")
    (tmp_path / "b.yaml").write_text("extends: a\n")
    with pytest.raises(ConfigError, match="leads back to itself"):
        load_config("a")


def test_canaries_beyond_their_share_stop_before_any_compute():
    """The twin's canaries must stay rare (issue 18): a design above canaries.max_share is refused."""
    with pytest.raises(ConfigError, match=r"canary copies would be 4\.5 % of the twin's pretraining tokens"):
        load_config("default", {"canaries.counts": [24, 48]})
    with pytest.raises(ConfigError, match="window"):
        load_config("default", {"canaries.window": [0.9, 0.1]})


def test_an_extending_profile_can_leave_out_a_parent_model():
    """`key: null` under `extends` removes the parent's entry: the workshop trains none of small-budget's
    replicated sources, and its students' source lists name only models it has."""
    default, workshop = load_config("small-budget"), load_config("workshop")
    gone = set(default.zoo.models) - set(workshop.zoo.models)
    assert {"lineage-small-s2", "stronger-b", "cross-c"} <= gone
    assert list(workshop.transfer.sources) == ["lineage-small"]
    assert all(S.parse_model_ref(r)[0] in workshop.zoo.models for r in workshop.transfer.sources_for("lineage-small"))
