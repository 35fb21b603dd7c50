"""The paper's span filter: keep spans of text written in a child-directed vocabulary.

Exact semantics of the reference `filter_vocab` (C++, github.com/text-machine-lab/mini_gpt):

Tokens. Each character of ``DELIMITERS`` (space, newline, tab and ASCII
punctuation) is a token; the runs between them are word tokens, split again
where ASCII digits meet non-digits. One corner of the reference is kept on
purpose: right after a digit, a delimiter starts the next token, so in
``"3 cats"`` or ``"5.x"`` the tokens are ``3``, `` cats`` and ``5``, ``.x``:
the delimiter glued to the word makes an (out-of-vocabulary) word. Only ASCII
counts as delimiter, digit or upper case.

Spans. Walking the tokens with an open span, a word count and an OOV count:
while no span is open and the text is not at a sentence start, tokens are
skipped (a sentence start is the beginning of the text or just after a ``.``,
``?``, ``!`` or newline token); a space or newline does not open a span; each
word token adds one to the word count; delimiters, all-digit words and words
whose ASCII lower case is in the vocabulary join the span; any other word is
OOV: it joins while ``oov / max(words, min_span_len) <= max_oov_p`` (float32),
else the span closes without it. A closed span is kept when its word count
(which includes the OOV word that closed it) is greater than ``min_span_len``;
a span still open at the end of the text needs the same count of its own
words. Kept text is the span's text with trailing spaces/newlines removed.

The implementation is event driven: one regex pass tokenises the document,
one dict lookup per token classifies it into a byte string, and Python only
steps from one OOV word or sentence end to the next (counting words between
with bytes.count).
"""
from __future__ import annotations

import bisect
import dataclasses
import itertools
import multiprocessing
import os
import re
from typing import Iterable, Iterator

import numpy as np

DELIMITERS = " .,:;?!\n\t-()[]{}=<>\"'&^%$#@*+/|\\~"
_D = re.escape(DELIMITERS)
_TOKEN = re.compile(rf"[^0-9{_D}]+|(?<=[0-9])[{_D}][^0-9{_D}]+|[{_D}]|[0-9]+")
# Token classes, one byte each: other delimiter, vocabulary word, OOV word (or digits), space,
# newline (blank and sentence end), . ? ! (sentence end).
_DELIM, _WORD, _OOV, _SPACE, _NEWLINE, _STOP = range(6)
_CODES = {c: _DELIM for c in DELIMITERS}
_CODES.update({" ": _SPACE, "\n": _NEWLINE, ".": _STOP, "?": _STOP, "!": _STOP})
_BLANK = (_SPACE, _NEWLINE)
_DIGITS = frozenset("0123456789")


def _positions(pattern: bytes):
    rx = re.compile(pattern)
    return lambda codes: (mt.start() for mt in rx.finditer(codes))


_FIND_OOV = _positions(bytes([_OOV]))
_FIND_EOS = _positions(b"[" + bytes([_NEWLINE, _STOP]) + b"]")


def _words(codes: bytes, start: int, stop: int) -> int:
    """Word tokens among codes[start:stop]."""
    return codes.count(_WORD, start, stop) + codes.count(_OOV, start, stop)


@dataclasses.dataclass(frozen=True)
class FilterParams:
    min_span_len: int = 32
    max_oov_p: float = 0.01
    from_sentence_start: bool = True


@dataclasses.dataclass
class Stats:
    """Counts over a run of the filter (JSON-able via `as_dict`)."""

    documents_in: int = 0
    documents_out: int = 0
    words_in: int = 0
    words_kept: int = 0
    oov_kept: int = 0
    spans: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    replaced_bytes: int = 0  # invalid UTF-8 sequences replaced while reading

    def add(self, other: "Stats") -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["kept_fraction"] = self.words_kept / self.words_in if self.words_in else 0.0
        d["oov_rate"] = self.oov_kept / self.words_kept if self.words_kept else 0.0
        return d


def tokenize(text: str) -> list[str]:
    """The reference tokenizer (see the module docstring)."""
    return _TOKEN.findall(text)


class SpanFilter:
    """The filter for one vocabulary and parameter set; `spans(text)` gives the kept spans."""

    def __init__(self, words: Iterable[str], params: FilterParams = FilterParams()):
        self.params = params
        self._codes = {w: _WORD for w in words}
        self._codes.update(_CODES)  # a delimiter is never a word, whatever the list says
        self._threshold = np.float32(params.max_oov_p)
        self._ok = {}  # (oov, denominator) -> float32 ratio <= threshold

    def _oov_ok(self, oov: int, denominator: int) -> bool:
        key = (oov, denominator)
        ok = self._ok.get(key)
        if ok is None:
            ok = self._ok[key] = bool(np.float32(oov) / np.float32(denominator) <= self._threshold)
        return ok

    def spans(self, text: str) -> list[tuple[str, int, int]]:
        """Kept spans of `text` as (text, words, oov words), in order."""
        return self._run(text)[0]

    def _run(self, text: str) -> tuple[list[tuple[str, int, int]], int]:
        low = text.encode("utf-8", "surrogatepass").lower().decode("utf-8", "surrogatepass")
        toks = _TOKEN.findall(low)
        n = len(toks)
        codes = bytes(map(self._codes.get, toks, itertools.repeat(_OOV)))  # one byte a token
        oovs = [k for k in _FIND_OOV(codes) if toks[k][0] not in _DIGITS]  # digits are never OOV
        eos = list(_FIND_EOS(codes))
        offset = _Offsets(toks)

        m = self.params.min_span_len
        from_start = self.params.from_sentence_start
        kept, i, j, at_start = [], 0, 0, True
        while i < n:
            if from_start and not at_start:  # skip to just after the next sentence end
                e = bisect.bisect_left(eos, i)
                if e == len(eos):
                    break
                i, at_start = eos[e] + 1, True
                continue
            while i < n and codes[i] in _BLANK:
                i += 1
            if i == n:
                break
            start, oov = i, 0
            j = bisect.bisect_left(oovs, start, j)
            while j < len(oovs):
                k = oovs[j]
                j += 1
                oov += 1
                words = _words(codes, start, k + 1)
                if not self._oov_ok(oov, max(words, m)):
                    if words > m:
                        span = text[offset(start):offset(k)].rstrip(" \n")
                        kept.append((span, words - 1, oov - 1))
                    i, at_start = k + 1, False
                    break
            else:
                words = _words(codes, start, n)
                if words > m:
                    kept.append((text[offset(start):].rstrip(" \n"), words, oov))
                break
        return kept, _words(codes, 0, n)

    def kept(self, text: str) -> tuple[list[str], Stats]:
        """A document's kept spans' text and its stats (bytes_out: the spans' bytes, markup excluded)."""
        kept, words_in = self._run(text)
        spans = [s for s, _, _ in kept]
        stats = Stats(documents_in=1, documents_out=int(bool(kept)), words_in=words_in,
                      words_kept=sum(w for _, w, _ in kept), oov_kept=sum(o for _, _, o in kept),
                      spans=len(kept), bytes_in=len(text.encode("utf-8", "surrogatepass")),
                      bytes_out=sum(len(s.encode("utf-8", "surrogatepass")) for s in spans))
        return spans, stats

    def document(self, text: str) -> tuple[str, Stats]:
        """A document's kept spans as '<s> span </s> <s> span </s>' ('' if none) and its stats."""
        spans, stats = self.kept(text)
        return wrap(spans), stats


def wrap(spans: list[str]) -> str:
    """The reference filter's output: each span as '<s> span </s>', joined by spaces."""
    return " ".join(f"<s> {s} </s>" for s in spans)


class _Offsets:
    """Character offset of token i for increasing i, computed lazily (only kept spans need it)."""

    def __init__(self, toks: list[str]):
        self.toks, self.i, self.pos = toks, 0, 0

    def __call__(self, i: int) -> int:
        self.pos += sum(map(len, self.toks[self.i:i]))
        self.i = i
        return self.pos


_worker_filter: SpanFilter | None = None


def _init_worker(words, params):
    global _worker_filter
    _worker_filter = SpanFilter(words, params)


def _work(job: tuple[list[str], bool]) -> list[tuple]:
    texts, as_spans = job
    return [(_worker_filter.kept if as_spans else _worker_filter.document)(t) for t in texts]


def simplify_documents(texts: Iterable[str], words: Iterable[str], params: FilterParams = FilterParams(),
                       workers: int = 1, chunk: int = 256, as_spans: bool = False) -> Iterator[tuple]:
    """(kept text, stats) per document, in input order, or (list of kept spans, stats) `as_spans`;
    `workers` > 1 filters in processes."""
    workers = workers or os.cpu_count() or 1
    if workers == 1:
        f = SpanFilter(words, params)
        yield from map(f.kept if as_spans else f.document, texts)
        return
    ctx = multiprocessing.get_context("spawn")
    jobs = ((batch, as_spans) for batch in _chunks(texts, chunk))
    with ctx.Pool(workers, _init_worker, (frozenset(words), params)) as pool:
        for results in pool.imap(_work, jobs):
            yield from results


def _chunks(it: Iterable, n: int) -> Iterator[list]:
    it = iter(it)
    while batch := list(itertools.islice(it, n)):
        yield batch
