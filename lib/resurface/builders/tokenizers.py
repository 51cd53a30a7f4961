"""Byte-level BPE tokenizers trained locally, saved as Hugging Face tokenizers.

Like Pythia's, id 0 is `<|endoftext|>`, which serves as BOS and EOS; id 1 is a
padding token. They reload with `AutoTokenizer.from_pretrained(dir)`.
"""
from __future__ import annotations

from pathlib import Path

from resurface.builders.corpora import load_corpus
from resurface.frame.cache import Artifact, Cache

EOT = "<|endoftext|>"
PAD = "<|padding|>"


def train_tokenizer(texts, vocab_size: int, model_max_length: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT, PAD], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOT, eos_token=EOT, unk_token=EOT,
                                   pad_token=PAD, model_max_length=model_max_length)


def build_tokenizer(cache: Cache, name: str, corpora: list[Artifact], vocab_size: int,
                    model_max_length: int) -> Artifact:

    def build(tmp: Path) -> dict:
        texts = [t for c in corpora for t in load_corpus(c)["train"]["text"]]  # never the held-out split
        hf = train_tokenizer(texts, vocab_size, model_max_length)
        hf.save_pretrained(str(tmp))
        sample = texts[0][:2000]
        n_tok = len(hf(sample)["input_ids"])
        return {"vocab_size": len(hf), "chars_per_token": round(len(sample) / max(n_tok, 1), 3)}

    return cache.get_or_build("tokenizers", name, {"vocab_size": vocab_size, "max_len": model_max_length},
                              build, inputs=corpora, stage="tokenizers")


def load_tokenizer(path):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(str(path))
