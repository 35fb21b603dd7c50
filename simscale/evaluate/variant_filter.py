"""The paper's filter for simplified task variants: keep examples whose words are all in a vocabulary.

Per text (a context or one choice): ASCII punctuation and digits are deleted
(so "didn't" becomes "didnt", as the AO-CHILDES word list spells it), the rest
is split on whitespace, capitalised words other than the first are names and
skipped, words are lower-cased, the contraction fragments of pre-tokenised text
("does n't" -> "nt", "it 's" -> "s", ...) are dropped, and every remaining word
must be in the vocabulary: zero out-of-vocabulary words are allowed.
"""
from __future__ import annotations

import string
from typing import AbstractSet, Iterable

CONTRACTION_FRAGMENTS = frozenset({"nt", "s", "re", "t", "d", "ll"})
_DELETE = str.maketrans("", "", string.punctuation + string.digits + "\u2018\u2019\u201c\u201d")


def content_words(text: str) -> list[str]:
    """The lower-cased words of `text` that must be in the vocabulary."""
    words = text.translate(_DELETE).split()
    return [w.lower() for i, w in enumerate(words)
            if (i == 0 or not w[0].isupper()) and w.lower() not in CONTRACTION_FRAGMENTS]


def in_vocabulary(texts: Iterable[str], vocab: AbstractSet[str]) -> bool:
    """True when every content word of every text is in `vocab`."""
    return all(w in vocab for text in texts for w in content_words(text))
