"""One short causal-LM training loop, used for pretraining the zoo and fine-tuning students.

A plain torch loop beats the HF Trainer's per-step overhead on models this small;
fp32 on CPU because bf16 autocast is barely faster here (the small matmuls are not the whole step)
and several times slower on AVX2-only CPUs.
"""
from __future__ import annotations

import contextlib
import math
import os
import time
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
from tqdm.auto import tqdm

from resurface.compute.device import autocast, rows_per_pass
from resurface.compute.distributed import accelerator


def set_threads(threads: int | str = "auto") -> int:
    """`auto`: every core this process may use (or RESURFACE_THREADS).

    Not fewer when the machine looks busy: float reductions split differently across thread
    counts, so the same params would give different bits. Results are reproducible for a
    given thread count; the count is printed at the start of every notebook."""
    if threads == "auto":
        env = os.environ.get("RESURFACE_THREADS")
        n_cpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        n = int(env) if env else n_cpu
    else:
        n = int(threads)
    torch.set_num_threads(n)
    return n


def pack_documents(token_lists: Iterable[list[int]], eos_id: int, seq_len: int,
                   bos_id: int | None = None) -> np.ndarray:
    """Concatenate documents, each followed by EOS (and preceded by `bos_id` when the family starts documents
    with its own BOS, as Gemma does), and cut into full blocks of `seq_len` tokens."""
    flat: list[int] = []
    for ids in token_lists:
        if bos_id is not None:
            flat.append(bos_id)
        flat.extend(ids)
        flat.append(eos_id)
    n = len(flat) // seq_len
    dtype = np.uint16 if max(flat, default=0) < 65535 else np.int32
    return np.asarray(flat[: n * seq_len], dtype=dtype).reshape(n, seq_len)


def document_start_id(tokenizer) -> int | None:
    """The token packed before each document for training and scoring, when the family starts documents with
    a BOS of its own (Gemma's `<bos>`). None when BOS is EOS (GPT-NeoX's end-of-text, the zoo's tokenizers) or
    absent: the EOS that ends the previous document is then the next one's start."""
    bos = tokenizer.bos_token_id
    return bos if bos is not None and bos != tokenizer.eos_token_id else None


def tokenize_texts(tokenizer, texts: list[str], batch: int = 256) -> list[list[int]]:
    # the backend tokenizer: no special tokens, no max-length warnings for whole documents
    backend = tokenizer.backend_tokenizer
    out: list[list[int]] = []
    for i in range(0, len(texts), batch):
        out.extend(e.ids for e in backend.encode_batch(texts[i:i + batch], add_special_tokens=False))
    return out


def lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 10 % of the peak."""
    if warmup and step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


class _ChunkedHeadLoss(torch.autograd.Function):
    """Mean cross-entropy of `hidden @ weight.T` against `targets`, a chunk of rows at a time.

    The logits of one 32 x 128 batch over a 4096-token vocabulary are 67 MB of fp32. Unfused, a
    CPU streams them through memory five times (head, softmax, its backward, two gradient
    products) and two worker processes share that bandwidth. Chunk by chunk the logits stay in
    cache; the gradients are computed in the forward pass (softmax minus one-hot) and only
    scaled in backward. Equal to the unfused loss and gradients up to float rounding (tested)."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk: int):
        n = hidden.shape[0]
        loss = hidden.new_zeros((), dtype=torch.float32)
        grad_hidden = torch.empty_like(hidden)
        grad_weight = torch.zeros_like(weight)
        for s in range(0, n, chunk):
            h, y = hidden[s:s + chunk], targets[s:s + chunk]
            rows = torch.arange(len(y))
            logits = h @ weight.t()
            # three passes over the chunk's logits, all in place: shift by the row max, exp, scale
            # (logsumexp + softmax would allocate and stream them twice more)
            top = logits.amax(-1, keepdim=True)
            target = logits[rows, y] - top.squeeze(1)
            total = logits.sub_(top).exp_().sum(-1, keepdim=True)
            loss += (total.log().squeeze(1) - target).sum()
            probs = logits.mul_(1.0 / (n * total))      # softmax / n
            probs[rows, y] -= 1.0 / n                    # d(mean loss)/d(logits)
            torch.mm(probs, weight, out=grad_hidden[s:s + chunk])
            grad_weight.addmm_(probs.t(), h)
        ctx.save_for_backward(grad_hidden, grad_weight)
        return loss / n

    @staticmethod
    def backward(ctx, grad_loss):
        grad_hidden, grad_weight = ctx.saved_tensors
        if grad_loss.item() == 1.0:  # the usual `loss.backward()`: the gradients are ready as they are
            return grad_hidden, grad_weight, None, None
        return grad_hidden * grad_loss, grad_weight * grad_loss, None, None


FUSED_HEAD_ARCHITECTURES = ("gpt_neox", "llama", "gpt2")  # plain linear head: no bias, scaling or soft-capping


def causal_lm_loss(model, x: torch.Tensor, chunk: int = 512, targets: torch.Tensor | None = None) -> torch.Tensor:
    """Mean next-token cross-entropy of the blocks `x`, as `model(input_ids=x, labels=x).loss`; `targets`
    (booleans shaped like `x`) keeps only the positions it marks as tokens to predict, as labels of -100 do.

    For this project's CPU architectures the output head and the loss run fused in chunks
    (`_ChunkedHeadLoss`); anything else (a GPU, a wrapped DDP model, another head) takes the
    model's own loss."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    fused = (x.device.type == "cpu" and getattr(getattr(model, "config", None), "model_type", None)
             in FUSED_HEAD_ARCHITECTURES
             and isinstance(head, torch.nn.Linear) and head.bias is None and torch.is_grad_enabled())
    if not fused:
        return model(input_ids=x, labels=x if targets is None else x.masked_fill(~targets, -100)).loss
    hidden = model.base_model(input_ids=x).last_hidden_state
    h, y = hidden[:, :-1].reshape(-1, hidden.shape[-1]), x[:, 1:].reshape(-1)
    if targets is not None:
        keep = targets[:, 1:].reshape(-1)
        h, y = h[keep], y[keep]
    return _ChunkedHeadLoss.apply(h, head.weight, y, chunk)


def train_lm(model, blocks: np.ndarray, *, steps: int, batch_size: int, lr: float, warmup_steps: int,
             order: np.ndarray | None = None, checkpoint_steps: Iterable[int] = (),
             on_checkpoint: Callable[[int], None] | None = None, log_every: int = 10,
             desc: str = "train", micro_batch_size: int | None = None,
             lr_fn: Callable[[int], float] | None = None, optimizer_state: Path | None = None,
             save_optimizer_to: Path | None = None, targets: np.ndarray | None = None) -> dict:
    """Train for `steps` steps reading blocks in `order` (default: stream order, cycling).

    Returns the loss history and throughput. `on_checkpoint(step)` is called after
    the given step numbers, the way Pythia exposes `stepN` revisions.

    `batch_size` is the global batch. `micro_batch_size` splits it into accumulated pieces
    (for models whose whole batch does not fit in memory); under `accelerate launch` each
    process takes its share of the global batch, so the hyper-parameters mean the same on one
    device or eight.

    `lr_fn(step)` replaces the warm-up + cosine schedule; `optimizer_state` continues from AdamW moments saved
    by `save_optimizer_to` (how a student continues its own pretraining instead of re-warming a fresh optimizer).
    `targets` (booleans shaped like `blocks`) leaves the positions it marks False out of the loss.
    """
    model.train()
    acc = accelerator()
    world, rank = (acc.num_processes, acc.process_index) if acc is not None else (1, 0)
    local = batch_size // world
    micro = min(micro_batch_size or local, local)
    if batch_size % world or local % micro:
        raise ValueError(f"batch_size {batch_size} must split evenly over {world} process(es) "
                         f"and micro-batches of {micro}")
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.01)
    if optimizer_state is not None:
        load_optimizer_state(opt, model, optimizer_state)
    if acc is not None:
        model, opt = acc.prepare(model, opt)
    device = next(model.parameters()).device
    n = len(blocks)
    order = np.arange(n) if order is None else order
    checkpoint_steps = set(checkpoint_steps)
    history: list[tuple[int, float]] = []
    running, t0 = 0.0, time.perf_counter()
    quiet = {"disable": True} if rank != 0 else {}  # no explicit False: a pool worker's TQDM_DISABLE must win
    bar = tqdm(range(steps), desc=desc, leave=False, mininterval=2, **quiet)
    for step in bar:
        idx = order[(np.arange(step * batch_size, (step + 1) * batch_size)) % len(order)][rank::world]
        for g in opt.param_groups:
            g["lr"] = lr_fn(step) if lr_fn is not None else lr_at(step, steps, lr, warmup_steps)
        step_loss = 0.0
        for start in range(0, local, micro):
            rows = idx[start:start + micro]
            x = torch.from_numpy(blocks[rows].astype(np.int64)).to(device)
            y = None if targets is None else torch.from_numpy(targets[rows].astype(bool)).to(device)
            last = start + micro >= local
            # DDP all-reduces gradients once per step, on the last micro-batch
            sync = acc.no_sync(model) if acc is not None and not last else contextlib.nullcontext()
            with sync, autocast():
                loss = causal_lm_loss(model, x, targets=y)
                if micro < local:  # the whole batch in one piece is left untouched (same bits as before)
                    loss = loss * (micro / local)
            acc.backward(loss) if acc is not None else loss.backward()
            step_loss += loss.item()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        running += step_loss
        if (step + 1) % log_every == 0 or step == steps - 1:
            k = (step % log_every) + 1
            history.append((step + 1, running / k))
            bar.set_postfix(loss=f"{running / k:.3f}")
            running = 0.0
        if on_checkpoint and (step + 1) in checkpoint_steps:
            on_checkpoint(step + 1)
    seconds = time.perf_counter() - t0
    if save_optimizer_to is not None and rank == 0:
        save_optimizer_state(opt, model, save_optimizer_to)
    model.eval()
    tokens = steps * batch_size * blocks.shape[1]
    return {"history": history, "seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds,
            "processes": world, "local_batch": local, "micro_batch": micro}


def save_optimizer_state(opt, model, path: Path) -> None:
    """AdamW's moments by parameter name, as safetensors (never a pickle), with the step count."""
    from safetensors.torch import save_file
    tensors, step = {}, 0
    for name, p in model.named_parameters():
        st = opt.state.get(p)
        if st:
            tensors[f"{name}.exp_avg"] = st["exp_avg"].detach().contiguous()
            tensors[f"{name}.exp_avg_sq"] = st["exp_avg_sq"].detach().contiguous()
            step = int(float(st["step"]))
    save_file(tensors, str(path), metadata={"step": str(step)})


def load_optimizer_state(opt, model, path: Path) -> None:
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:
        step = float(f.metadata()["step"])
        for name, p in model.named_parameters():
            opt.state[p] = {"step": torch.tensor(step), "exp_avg": f.get_tensor(f"{name}.exp_avg").to(p.device),
                            "exp_avg_sq": f.get_tensor(f"{name}.exp_avg_sq").to(p.device)}


@torch.no_grad()
def mean_loss(model, blocks: np.ndarray, batch_size: int = 64) -> float:
    """Mean next-token NLL (nats) over all predicted positions of the blocks."""
    model.eval()
    total, count = 0.0, 0
    batch_size = rows_per_pass(model, blocks.shape[1], batch_size)
    for i in range(0, len(blocks), batch_size):
        x = torch.from_numpy(blocks[i:i + batch_size].astype(np.int64)).to(model.device)
        logits = model(input_ids=x).logits[:, :-1].float()
        nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1),
                                                reduction="sum")
        total += nll.item()
        count += x[:, 1:].numel()
    return total / max(count, 1)


@torch.no_grad()
def bits_per_byte(model, tokenizer, texts: list[str], seq_len: int, batch_size: int = 32) -> float:
    """Held-out bits per UTF-8 byte: comparable across tokenizers, unlike loss per token."""
    blocks = pack_documents(tokenize_texts(tokenizer, texts), tokenizer.eos_token_id, seq_len)
    nats_per_token = mean_loss(model, blocks, batch_size)
    n_tokens = blocks.shape[0] * (blocks.shape[1] - 1)
    # bytes covered by the predicted tokens, measured on their decoded text
    n_bytes = sum(len(tokenizer.decode(b[1:].tolist()).encode("utf-8")) for b in blocks)
    return nats_per_token * n_tokens / n_bytes / math.log(2)


@torch.no_grad()
def document_bits(model, tokenizer, texts: list[str], seq_len: int, batch_size: int = 32):
    """Per document: total bits of its tokens under the model (each document from its own start token, in
    windows of `seq_len`) and its UTF-8 byte count. Bits per byte then compare models with any tokenizer,
    and a bootstrap over documents gives the noise of a difference."""
    import numpy as np
    eos = tokenizer.eos_token_id if tokenizer.bos_token_id is None else tokenizer.bos_token_id
    rows, owner = [], []
    for i, ids in enumerate(tokenize_texts(tokenizer, texts)):
        ids = [eos] + ids
        for s in range(0, len(ids) - 1, seq_len - 1):
            rows.append(ids[s:s + seq_len])
            owner.append(i)
    bits = np.zeros(len(texts))
    model.eval()
    batch_size = rows_per_pass(model, seq_len, batch_size)
    order = np.argsort([len(r) for r in rows], kind="stable")
    for b in range(0, len(order), batch_size):
        chunk = [rows[j] for j in order[b:b + batch_size]]
        width = max(len(r) for r in chunk)
        x = torch.full((len(chunk), width), eos, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.bool)
        for k, r in enumerate(chunk):
            x[k, :len(r)] = torch.tensor(r)
            mask[k, :len(r)] = True
        logits = model(input_ids=x.to(model.device)).logits[:, :-1].float().cpu()
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), x[:, 1:], reduction="none")
        nll = (nll * mask[:, 1:]).sum(1) / math.log(2)
        for k, j in enumerate(order[b:b + batch_size]):
            bits[owner[j]] += float(nll[k])
    n_bytes = np.array([len(t.encode("utf-8")) for t in texts], dtype=float)
    return bits, n_bytes
