"""A literal, slow port of the paper's C++ `filter_vocab`: the oracle for simscale.data.span_filter."""
import numpy as np

DELIMITERS = set(" .,:;?!\n\t-()[]{}=<>\"'&^%$#@*+/|\\~")
END_OF_SENTENCE = {".", "?", "!", "\n"}


def _isdigit(c):
    return "0" <= c <= "9"


def tokenize(text):
    if not text:
        return []
    tokens, cur = [], ""
    last_numeric = _isdigit(text[0])
    for c in text:
        is_delim = c in DELIMITERS
        boundary = last_numeric != _isdigit(c)
        last_numeric = _isdigit(c)
        if not is_delim and not boundary:
            cur += c
            continue
        if cur:
            tokens.append(cur)
            cur = ""
        if boundary:
            cur += c
            continue
        tokens.append(c)
    if cur:
        tokens.append(cur)
    return tokens


def _lower(s):
    return "".join(chr(ord(c) + 32) if "A" <= c <= "Z" else c for c in s)


def filter_vocab(text, vocab, min_words=32, p_max_oov=0.01, from_sentence_start_only=True):
    chunks, chunk = [], ""
    words = oov = 0
    start = True
    for tok in tokenize(text):
        if from_sentence_start_only and not chunk and not start:
            start = tok in END_OF_SENTENCE
            continue
        if not chunk and tok in (" ", "\n"):
            continue
        is_delim = len(tok) == 1 and tok in DELIMITERS
        if not is_delim:
            words += 1
        if _lower(tok) in vocab or all(_isdigit(c) for c in tok) or is_delim:
            chunk += tok
        else:
            oov += 1
            if np.float32(oov) / np.float32(max(words, min_words)) <= np.float32(p_max_oov):
                chunk += tok
            else:
                chunk = chunk.rstrip(" \n")
                if words > min_words:
                    chunks.append((chunk, words, oov))
                chunk, words, oov = "", 0, 0
        start = tok in END_OF_SENTENCE
    if chunk and words > min_words:
        chunks.append((chunk.rstrip(" \n"), words, oov))
    return chunks
