"""prepare(cfg): source -> (filter) -> text dataset -> BPE tokenizer -> packed token dataset, cached.

A prepared dataset lives in `<cache>/prepared/<variant>-<key>/` where the key
hashes everything that shapes it (source, vocabulary hash, filter parameters,
tokenizer parameters, seq_len, validation split). It is built in a temporary
folder and renamed into place when complete, so a half-written dataset never
looks prepared. The `unrestricted` control reads the same source unfiltered and
is cut to the simplified variant's number of training rows (prepared first).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import pathlib
import shutil
import sys
import time
from typing import Iterable, Iterator

import numpy as np

from simscale.config import ConfigError
from simscale.data import datasets, simplify, sources, tokenizer
from simscale.data.vocab import cache_dir as default_cache, load_vocabulary

FORMAT_VERSION = 3
VARIANTS = ("simplified", "unrestricted")
_META = "prepared.json"


@dataclasses.dataclass(frozen=True)
class PreparedData:
    dir: pathlib.Path
    vocab_size: int  # tokenizer entries
    tokenizer_path: pathlib.Path
    vocabulary_path: pathlib.Path | None  # child-directed word list used (simplified only)
    bytes_per_token: float | None  # UTF-8 bytes of the tokenized training text per token
    train_tokens: int  # training rows x seq_len (the tokens a model trains on per epoch)
    stats: dict


def cache_root(cfg) -> pathlib.Path:
    return pathlib.Path(cfg.data.cache_dir).expanduser() if cfg.data.cache_dir else default_cache()


def prepare(cfg, log=None) -> PreparedData:
    """Prepare cfg.data's variant (cached, idempotent); `log(str)` receives progress lines."""
    log = log or _log
    _check(cfg)
    final = cache_root(cfg) / "prepared" / f"{cfg.data.variant}-{cache_key(cfg)}"
    if final.exists():
        return _load(final)
    control = None
    if cfg.data.variant == "unrestricted":
        simplified = prepare(_with_variant(cfg, "simplified"), log)
        control = (simplified.stats["train_rows"], simplified.stats["bytes_in"])
    tmp = final.with_name(f".{final.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        _build(cfg, tmp, control, log)
        try:
            tmp.rename(final)
        except OSError:  # another process finished first: use theirs
            if not final.exists():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _load(final)


def cache_key(cfg) -> str:
    d = cfg.data
    parts = {"format": FORMAT_VERSION, "variant": d.variant, "source": sources.describe(d),
             "tokenizer": [cfg.model.vocab_size, d.tokenizer_min_frequency], "seq_len": cfg.train.seq_len,
             "validation": [d.validation_fraction, d.min_validation_documents]}
    if d.variant == "simplified":
        parts["vocab"] = load_vocabulary(d.vocab).sha256
        parts["filter"] = [d.min_span_len, d.max_oov_p, d.from_sentence_start]
    else:
        parts["simplified"] = cache_key(_with_variant(cfg, "simplified"))
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _with_variant(cfg, variant: str):
    c = cfg.copy_and_resolve_references()
    c.data.variant = variant
    return c


def _check(cfg) -> None:
    d = cfg.data
    if d.variant not in VARIANTS:
        raise ConfigError(f"data.variant={d.variant!r}: choose simplified or unrestricted")
    if d.source == "synthetic":
        raise ConfigError("data.source='synthetic' needs no preparation")
    if not 0 <= d.validation_fraction < 1:
        raise ConfigError(f"data.validation_fraction={d.validation_fraction}: give a fraction in [0, 1)")
    if d.min_span_len < 0 or d.max_oov_p < 0:
        raise ConfigError("data.min_span_len and data.max_oov_p must not be negative")
    if cfg.train.seq_len < 1 or cfg.model.vocab_size < 300:
        raise ConfigError("train.seq_len must be >= 1 and model.vocab_size >= 300 (byte-level BPE "
                          "needs 256 byte tokens plus the special tokens)")


def _load(path: pathlib.Path) -> PreparedData:
    try:
        meta = json.loads((path / _META).read_text())
        data = PreparedData(dir=path, vocab_size=meta["vocab_size"], tokenizer_path=path / "tokenizer.json",
                            vocabulary_path=path / "vocab.txt" if meta["has_vocabulary"] else None,
                            bytes_per_token=meta["bytes_per_token"], train_tokens=meta["train_tokens"],
                            stats=meta["stats"])
        if not data.tokenizer_path.is_file():
            raise FileNotFoundError(data.tokenizer_path)
        datasets.source("tokens", path, "train")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"the prepared dataset {path} is broken ({e!r}): delete that folder and "
                         "prepare again") from None
    return data


def _log(msg: str) -> None:
    print(f"[simscale.data {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _progress(it: Iterable, desc: str, every_s: float = 30.0) -> Iterator:
    """A tqdm bar on a terminal, else a log line every `every_s` seconds."""
    if sys.stderr.isatty():
        from tqdm import tqdm

        yield from tqdm(it, desc=desc, unit="doc", file=sys.stderr, mininterval=1.0)
        return
    start = last = time.monotonic()
    for n, x in enumerate(it, 1):
        yield x
        if time.monotonic() - last > every_s:
            last = time.monotonic()
            _log(f"{desc}: {n} documents, {n / (last - start):.0f}/s")


def _build(cfg, out: pathlib.Path, control: tuple[int, int] | None, log) -> None:
    """Build into `out`; control = (train rows, source bytes) of the simplified variant when unrestricted."""
    d = cfg.data
    target_rows = control[0] if control else None
    counts = {"replaced_bytes": 0}
    stats = simplify.Stats()
    corpus = out / "corpus.jsonl"  # the documents as tokenized, one JSON string a line
    n_docs = 0
    with open(corpus, "w", encoding="utf-8") as f:
        docs = sources.documents(d, counts)
        if d.variant == "simplified":
            vocab = load_vocabulary(d.vocab)
            vocab.write(out / "vocab.txt")
            log(f"filtering {d.source} with {vocab.source} ({vocab.size} words)")
            params = simplify.FilterParams(d.min_span_len, d.max_oov_p, d.from_sentence_start)
            for text, s in _progress(simplify.simplify_documents(docs, vocab.words, params, d.workers),
                                     "filtering"):
                stats.add(s)
                if text:
                    f.write(json.dumps(text) + "\n")
                    n_docs += 1
        else:
            # Enough text for the simplified variant's rows, taken evenly across the whole source.
            needed = _UNRESTRICTED_BYTES * target_rows * (cfg.train.seq_len + 1)
            stride = max(1, control[1] // needed)
            log(f"reading {d.source} unfiltered (1 in {stride} documents)")
            for i, text in enumerate(_progress(docs, "reading")):
                if i % stride:
                    continue
                stats.add(simplify.Stats(documents_in=1, documents_out=1, bytes_in=len(text.encode())))
                f.write(json.dumps(f"{tokenizer.BOS} {text} {tokenizer.EOS}") + "\n")
                n_docs += 1
                if stats.bytes_in > needed:
                    break
    stats.replaced_bytes = counts["replaced_bytes"]
    if not stats.documents_in:
        raise ValueError(f"the corpus of data.source={d.source!r} is empty: {_where(d)} holds no documents")
    if not n_docs:
        raise ValueError(f"the filter kept nothing of {stats.documents_in} documents from {_where(d)}: "
                         "give more (or simpler) text, a larger data.vocab, or a smaller data.min_span_len "
                         "/ larger data.max_oov_p")
    if n_docs < 2:
        raise ValueError(f"only one document to split into train and validation from {_where(d)}: "
                         "give more text")

    n_val = min(max(d.min_validation_documents, math.ceil(d.validation_fraction * n_docs)), n_docs // 2)
    val = set(np.random.default_rng(0).choice(n_docs, n_val, replace=False).tolist())

    def split_of(split: str):
        return lambda: (t for i, t in enumerate(_corpus(corpus)) if (i in val) == (split == "validation"))

    log(f"{n_docs} documents ({n_val} for validation): writing the text dataset")
    datasets.build("text", out, {"train": split_of("train"), "validation": split_of("validation")})

    log(f"training a {cfg.model.vocab_size}-entry BPE tokenizer")
    tok = tokenizer.train(split_of("train")(), cfg.model.vocab_size, d.tokenizer_min_frequency)
    tok.save(str(out / "tokenizer.json"))

    length = cfg.train.seq_len + 1
    packed = {split: _Packer(tok, split_of(split), length, target_rows if split == "train" else None)
              for split in ("train", "validation")}
    log(f"tokenizing and packing rows of {length} tokens")
    datasets.build("tokens", out, {s: p.rows for s, p in packed.items()}, length=length)
    train, valid = packed["train"], packed["validation"]
    if not train.n_rows or not valid.n_rows:
        raise ValueError(f"too little text in {_where(d)} for one {length}-token row in each split "
                         f"(train {train.tokens} tokens, validation {valid.tokens}): give more text")
    if target_rows and train.n_rows < target_rows:
        log(f"warning: the unrestricted text gives {train.n_rows} training rows, fewer than the "
            f"simplified variant's {target_rows}")
    filtered = stats.as_dict() if d.variant == "simplified" else {
        k: getattr(stats, k) for k in ("documents_in", "bytes_in", "replaced_bytes")}
    all_stats = filtered | {
        "documents": n_docs, "validation_documents": n_val, "train_rows": train.n_rows,
        "validation_rows": valid.n_rows, "tokenizer_size": tok.get_vocab_size(), "seq_len": cfg.train.seq_len,
        "variant": d.variant, "source": d.source}
    meta = {"vocab_size": tok.get_vocab_size(), "has_vocabulary": d.variant == "simplified",
            "bytes_per_token": train.bytes / train.tokens, "train_tokens": train.n_rows * cfg.train.seq_len,
            "stats": all_stats}
    corpus.unlink()
    (out / "stats.json").write_text(json.dumps(all_stats, indent=1))
    (out / _META).write_text(json.dumps(meta, indent=1))
    log(f"prepared {d.variant}: {train.n_rows} train rows, {valid.n_rows} validation rows")


# Unrestricted text is read up to this many bytes per training token needed (BPE gives ~3-5 bytes
# per token on English; the surplus is cut at packing time).
_UNRESTRICTED_BYTES = 8


def _corpus(path) -> Iterator[str]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)


def _where(d) -> str:
    return {"files": f"data.files={d.files!r}", "bigbench": f"BIG-bench tasks {d.bigbench_tasks!r}",
            "tfds": f"TFDS {d.tfds_name!r}", "hf": f"Hugging Face {d.hf_name!r}"}.get(d.source, d.source)


class _Packer:
    """Concatenates the documents' token ids and cuts them into rows of `length`."""

    def __init__(self, tok, texts, length: int, max_rows: int | None):
        self.tok, self.texts, self.length, self.max_rows = tok, texts, length, max_rows
        self.n_rows = self.tokens = self.bytes = 0

    def rows(self) -> Iterator[np.ndarray]:
        buf: list[int] = []
        batch: list[str] = []
        for text in _progress(self.texts(), "packing"):
            batch.append(text)
            if len(batch) == 1000:
                yield from self._encode(batch, buf)
                batch = []
                if self.max_rows and self.n_rows >= self.max_rows:
                    return
        yield from self._encode(batch, buf)

    def _encode(self, batch: list[str], buf: list[int]) -> Iterator[np.ndarray]:
        for text, enc in zip(batch, self.tok.encode_batch(batch)):
            if self.max_rows and self.n_rows >= self.max_rows:
                return
            buf.extend(enc.ids)
            self.tokens += len(enc.ids)
            self.bytes += len(text.encode("utf-8", "surrogatepass"))
            while len(buf) >= self.length and not (self.max_rows and self.n_rows >= self.max_rows):
                yield np.asarray(buf[:self.length], np.int32)
                del buf[:self.length]
                self.n_rows += 1
