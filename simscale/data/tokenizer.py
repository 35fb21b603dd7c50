"""Byte-level BPE (Hugging Face `tokenizers`) with the paper's special tokens; decode round-trips."""
from __future__ import annotations

from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

SPECIAL_TOKENS = ["[UNK]", "[PAD]", "[MASK]", "<s>", "</s>"]
BOS, EOS = "<s>", "</s>"


def train(texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> Tokenizer:
    """BPE on `texts`; at most `vocab_size` entries (fewer when the corpus is small)."""
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                  special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def load(path) -> Tokenizer:
    return Tokenizer.from_file(str(path))


def decode(tok: Tokenizer, ids) -> str:
    """Text of `ids`, special tokens included, exactly as encoded."""
    return tok.decode(list(ids), skip_special_tokens=False)
