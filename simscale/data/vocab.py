"""Child-directed vocabularies: the AO-CHILDES word list, plain word lists, wordfreq top-N.

`load_vocabulary(spec)` accepts
  - a path: a CSV with a `word` column (like the AO-CHILDES file) or a plain
    list with one word a line;
  - 'aochildes': the paper's list, from $SIMSCALE_DATA/vocab/, else the cache,
    else downloaded once from the paper's repository;
  - 'wordfreq:N': the N most frequent English words of the `wordfreq` package.
Words are stripped and lower-cased (ASCII only, as the filter compares them).
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import os
import pathlib
import urllib.request

from simscale.data.cache import cache_dir
from simscale.data.download import reachable

AOCHILDES_FILE = "AOChildes_word_frequency.csv"
AOCHILDES_URL = ("https://raw.githubusercontent.com/text-machine-lab/mini_gpt/HEAD/data/"
                 + AOCHILDES_FILE)
AOCHILDES_MD5 = "ab925c47c3f66c3615c3ce232a43acff"  # the paper's file
# pandas (the paper's loader) reads these cells as missing values, so the paper's
# `if isinstance(w, str)` dropped them: the AO-CHILDES word `nan` is not in its set.
_MISSING = frozenset(["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND",
                      "1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan",
                      "null"])  # pandas' na_values
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    words: frozenset
    size: int
    source: str
    sha256: str

    def __contains__(self, word: str) -> bool:
        return word in self.words

    def write(self, path) -> None:
        """One word a line, sorted (loadable again with load_vocabulary(path))."""
        pathlib.Path(path).write_text("".join(w + "\n" for w in sorted(self.words)), encoding="utf-8")


def ascii_lower(text: str) -> str:
    """Lower-case A-Z only, as C's tolower does (accented letters stay as they are)."""
    return text.translate(_ASCII_LOWER)


def from_words(words, source: str) -> Vocabulary:
    clean = frozenset(ascii_lower(w.strip()) for w in words if w and w.strip())
    digest = hashlib.sha256("\n".join(sorted(clean)).encode()).hexdigest()
    return Vocabulary(words=clean, size=len(clean), source=source, sha256=digest)


def load_vocabulary(spec: str | os.PathLike) -> Vocabulary:
    """A Vocabulary from a path, 'aochildes' or 'wordfreq:N' (see the module docstring)."""
    spec_s = str(spec)
    if spec_s == "auto":
        raise ValueError("vocabulary 'auto' is this machine's choice: resolve it first "
                         "(simscale.at_hand.resolve)")
    if spec_s == "aochildes":
        return _load_file(_aochildes_path(), source="aochildes")
    if spec_s.startswith("wordfreq:"):
        return _wordfreq(spec_s)
    path = pathlib.Path(spec_s).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"vocabulary {spec_s!r}: no such file; pass a CSV with a 'word' column, a one-word-a-line "
            "list, 'aochildes' or 'wordfreq:N'")
    return _load_file(path, source=str(path))


def _load_file(path: pathlib.Path, source: str) -> Vocabulary:
    try:
        blob = path.read_bytes()
    except OSError as e:
        raise FileNotFoundError(f"vocabulary file {path}: cannot be read ({e.strerror})") from None
    where = f"a NUL byte at byte {blob.index(0)}" if 0 in blob else None
    try:
        text = blob.decode("utf-8")
    except UnicodeDecodeError as e:
        where = where or f"invalid UTF-8 at byte {e.start}"
    if where:
        raise ValueError(f"vocabulary file {path} is not a text file ({where}): give UTF-8 text, one word a "
                         "line, or a CSV with a 'word' column")
    words = _csv_words(text) if path.suffix.lower() == ".csv" else text.splitlines()
    vocab = from_words(words, source)
    if not vocab.size:
        raise ValueError(f"vocabulary file {path} has no usable words: give one word a line, "
                         "or a CSV with a 'word' column")
    return vocab


def _csv_words(text: str) -> list[str]:
    rows = list(csv.reader(io.StringIO(text, newline="")))
    if not rows:
        return []
    header = [c.strip().lower() for c in rows[0]]
    if "word" in header:
        col = header.index("word")
        rows = rows[1:]
    else:
        col = 1 if len(header) > 1 and rows[0][0].strip().isdigit() else 0  # index column, word, ...
    return [r[col] for r in rows if len(r) > col and r[col].strip() not in _MISSING]


def aochildes_local() -> pathlib.Path | None:
    """The paper's list in $SIMSCALE_DATA/vocab/ or the cache, without going online."""
    data = os.environ.get("SIMSCALE_DATA")
    candidates = ([pathlib.Path(data) / "vocab" / AOCHILDES_FILE] if data else []) + [
        cache_dir() / "vocab" / AOCHILDES_FILE]
    return next((p for p in candidates if p.is_file()), None)


def aochildes_downloadable() -> bool:
    """Whether the paper's list answers at AOCHILDES_URL within a few seconds."""
    return reachable(AOCHILDES_URL)


def _aochildes_path() -> pathlib.Path:
    local = aochildes_local()
    if local:
        return local
    cached = cache_dir() / "vocab" / AOCHILDES_FILE
    try:
        with urllib.request.urlopen(AOCHILDES_URL, timeout=30) as r:
            blob = r.read()
    except OSError as e:
        raise FileNotFoundError(
            f"vocabulary 'aochildes': not in $SIMSCALE_DATA/vocab/ nor {cached}, and downloading "
            f"{AOCHILDES_URL} failed ({e}). Offline, pass the CSV's path as the vocabulary "
            "(data.vocab=/path/to/AOChildes_word_frequency.csv) or use data.vocab='wordfreq:20000'"
        ) from None
    if hashlib.md5(blob).hexdigest() != AOCHILDES_MD5:
        raise ValueError(f"{AOCHILDES_URL} is not the paper's word list (md5 differs); pass a local copy "
                         "of AOChildes_word_frequency.csv as the vocabulary")
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(".part")
    tmp.write_bytes(blob)
    tmp.replace(cached)
    return cached


def _wordfreq(spec: str) -> Vocabulary:
    n = spec.split(":", 1)[1]
    if not n.isdigit() or int(n) <= 0:
        raise ValueError(f"vocabulary {spec!r}: write 'wordfreq:N' with a positive integer N")
    import wordfreq

    return from_words(wordfreq.top_n_list("en", int(n)), source=spec)
