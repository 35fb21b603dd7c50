"""Byte-level BPE (Hugging Face `tokenizers`) with the paper's special tokens; decode round-trips."""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
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


def encode_documents(tok: Tokenizer, documents: Sequence[Sequence[str]]) -> list[list[int]]:
    """Token ids of each document, a list of content pieces (spans, or one whole text), each
    piece as <s> piece </s> with nothing else between: the markup is the two special tokens.

    Literal "<s>" in the text is encoded as text, not as the special token."""
    bos, eos = tok.token_to_id(BOS), tok.token_to_id(EOS)
    pieces = [p for doc in documents for p in doc]
    saved, tok.encode_special_tokens = tok.encode_special_tokens, True
    try:
        encoded = iter(tok.encode_batch(pieces))
    finally:
        tok.encode_special_tokens = saved
    return [[i for _ in doc for i in (bos, *next(encoded).ids, eos)] for doc in documents]


def content_bytes(tok: Tokenizer) -> np.ndarray:
    """int32 [vocab]: UTF-8 bytes of source text each token id stands for; 0 for special tokens.

    A byte-level BPE token is a string of characters of the ByteLevel alphabet, one a byte."""
    special = {tok.token_to_id(t) for t in SPECIAL_TOKENS}
    return np.array([0 if i in special else len(tok.id_to_token(i)) for i in range(tok.get_vocab_size())],
                    np.int32)
