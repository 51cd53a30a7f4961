"""Run by tests/test_distributed.py under `accelerate launch` (and alone, as the reference).

Fine-tunes a tiny GPTNeoX through `collective_build` + `train_lm` and writes, from rank 0,
the trained weights into the cache; prints each rank's final weight checksum."""
import sys
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM, GPTNeoXConfig

from resurface.frame.cache import Cache
from resurface.compute.distributed import accelerator, collective_build, is_main
from resurface.lm.training import train_lm


def main(cache_dir: str, micro: int | None) -> None:
    torch.set_num_threads(1)
    cache = Cache(Path(cache_dir))
    blocks = np.random.default_rng(0).integers(3, 64, (64, 16)).astype(np.int32)

    def build(tmp: Path) -> dict:
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(GPTNeoXConfig(
            vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=16, bos_token_id=0, eos_token_id=0))
        r = train_lm(model, blocks, steps=6, batch_size=8, lr=3e-3, warmup_steps=1, micro_batch_size=micro)
        flat = torch.cat([p.detach().flatten() for p in model.parameters()])
        rank = accelerator().process_index if accelerator() else 0
        print(f"rank-checksum {rank} {flat.double().sum():.10f}", flush=True)
        print(f"rank-shape {rank} processes={r['processes']} local={r['local_batch']} micro={r['micro_batch']}",
              flush=True)
        if is_main():
            model.save_pretrained(str(tmp), safe_serialization=True)
        return {"final_loss": r["history"][-1][1]}

    art = collective_build(cache, "students", "ddp-test", {"micro": micro}, build)
    print(f"artifact {art.path} loss {art.meta['final_loss']:.6f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 and sys.argv[2] != "none" else None)
