"""prepare(cfg): source -> (filter) -> shuffled text dataset -> BPE tokenizer -> packed token rows, cached.

A prepared dataset lives in `<cache>/prepared/<variant>-<key>/` where the key
hashes everything that shapes it (source, vocabulary hash, filter parameters,
tokenizer parameters, seq_len, validation split, token target). It is built in a
temporary folder and renamed into place when complete, so a half-written dataset
never looks prepared.

Both variants put their documents in one seeded random order before the
train/validation split and the packing, so any cut to a row target is a uniform
sample of what was read. Each document is packed as <s> piece </s> per content
piece (a kept span, or the whole text), with no markup but the two special tokens,
so the bytes a token stands for are source text (`tokenizer.content_bytes`). The
`unrestricted` control reads the same source unfiltered, spread over the text the
simplified variant read, and is cut to its number of training rows (prepared first).
`stats.json` gives each source part's share of the training tokens.
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import math
import pathlib
import shutil
import sys
import time
from typing import Iterable, Iterator

import numpy as np

from simscale import tmpfiles
from simscale.config import ConfigError
from simscale.validation import data_problems, raise_first
from simscale.data import datasets, manifest, sources, span_filter, tokenizer
from simscale.data.cache import cache_dir
from simscale.data.vocab import load_vocabulary

FORMAT_VERSION = 4
_META = "prepared.json"


@dataclasses.dataclass(frozen=True)
class PreparedData:
    dir: pathlib.Path
    vocab_size: int  # tokenizer entries
    tokenizer_path: pathlib.Path
    vocabulary_path: pathlib.Path | None  # child-directed word list used (simplified only)
    bytes_per_token: float | None  # source-text bytes per training token (markup excluded)
    train_tokens: int  # training rows x seq_len (the tokens a model trains on per epoch)
    stats: dict


def cache_root(cfg) -> pathlib.Path:
    return pathlib.Path(cfg.data.cache_dir).expanduser() if cfg.data.cache_dir else cache_dir()


def prepare(cfg, log=None) -> PreparedData:
    """Prepare cfg.data's variant (cached, idempotent); `log(str)` receives progress lines."""
    log = log or _log
    _check(cfg)
    final = cache_root(cfg) / "prepared" / f"{cfg.data.variant}-{cache_key(cfg)}"
    tmpfiles.remove_stale(final.parent, log=log)  # folders a killed prepare left
    if final.exists():
        return _load(final)
    control = None
    if cfg.data.variant == "unrestricted":
        control = prepare(_with_variant(cfg, "simplified"), log).stats
    tmp = tmpfiles.temp_path(final)
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


def prepare_all(cfgs, log=None) -> list[PreparedData]:
    """prepare() each distinct dataset of `cfgs` once; one PreparedData per config, in their order."""
    by_key = {}
    for cfg in cfgs:
        key = f"{cfg.data.variant}-{cache_key(cfg)}"
        if key not in by_key:
            by_key[key] = prepare(cfg, log)
    return [by_key[f"{c.data.variant}-{cache_key(c)}"] for c in cfgs]


def cache_key(cfg) -> str:
    d = cfg.data
    parts = {"format": FORMAT_VERSION, "variant": d.variant, "source": sources.describe(d),
             "tokenizer": [cfg.model.vocab_size, d.tokenizer_min_frequency], "seq_len": cfg.train.seq_len,
             "validation": [d.validation_unit, d.validation_fraction, d.min_validation_documents],
             "max_train_tokens": d.max_train_tokens, "shuffle_seed": SHUFFLE_SEED}
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
    if cfg.data.source == "synthetic":
        raise ConfigError("data.source='synthetic' needs no preparation")
    raise_first(data_problems(cfg))


def _load(path: pathlib.Path) -> PreparedData:
    try:
        meta = json.loads((path / _META).read_text())
        data = PreparedData(dir=path, vocab_size=meta["vocab_size"], tokenizer_path=path / "tokenizer.json",
                            vocabulary_path=path / "vocab.txt" if meta["has_vocabulary"] else None,
                            bytes_per_token=meta["bytes_per_token"], train_tokens=meta["train_tokens"],
                            stats=meta["stats"])
        if not data.tokenizer_path.is_file():
            raise FileNotFoundError(data.tokenizer_path)
        # else prepared before manifests
        wrong = manifest.problems(path, meta["files"]) if "files" in meta else []
        if wrong:
            raise ValueError("; ".join(wrong[:3]) + (f" and {len(wrong) - 3} more" if len(wrong) > 3 else ""))
        datasets.source("tokens", path, "train")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"the prepared dataset {path} is broken ({type(e).__name__}: {e}): delete that "
                         "folder and prepare again") from None
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


def _build(cfg, out: pathlib.Path, control: dict | None, log) -> None:
    """Build into `out`; `control` = the simplified variant's stats when building the unrestricted one."""
    d = cfg.data
    corpus = _Corpus(out / "corpus.jsonl")
    stats, read = _read(cfg, corpus, control, log)
    n_docs = len(corpus)
    if not stats.documents_in:
        raise ValueError(f"the corpus of data.source={d.source!r} is empty: {_where(d)} holds no documents")
    if not n_docs:
        raise ValueError(f"the filter kept nothing of {stats.documents_in} documents from {_where(d)}: "
                         "give more (or simpler) text, a larger data.vocab, or a smaller data.min_span_len "
                         "/ larger data.max_oov_p")
    if n_docs < 2:
        raise ValueError(f"only one document to split into train and validation from {_where(d)}: "
                         "give more text")
    # One seeded order for both variants: the train/validation split and the packing (and so the cut
    # to a row target) take a uniform sample of the documents, not the source's first parts.
    order = np.random.default_rng(SHUFFLE_SEED).permutation(n_docs)
    by_rows = d.validation_unit == "rows"
    n_val = 0 if by_rows else min(max(d.min_validation_documents, math.ceil(d.validation_fraction * n_docs)),
                                  n_docs // 2)
    train_docs, val_docs = order[n_val:], order[:n_val]

    log(f"{n_docs} documents ({n_val} for validation): writing the text dataset")
    text = span_filter.wrap if d.variant == "simplified" else "".join  # the filter's output; the raw text
    datasets.build("text", out, {split: lambda ids=ids: (text(corpus[i][1]) for i in ids)
                                 for split, ids in (("train", train_docs), ("validation", val_docs))
                                 if len(ids)})

    log(f"training a {cfg.model.vocab_size}-entry BPE tokenizer on {len(train_docs)} documents")
    tok = tokenizer.train((p for i in train_docs for p in corpus[i][1]), cfg.model.vocab_size,
                          d.tokenizer_min_frequency)
    tok.save(str(out / "tokenizer.json"))

    length = cfg.train.seq_len + 1
    target_rows = _target_rows(cfg, control)
    every = round(1 / d.validation_fraction) if by_rows and d.validation_fraction else 0
    log(f"tokenizing and packing rows of {length} tokens")
    train, valid = _Packer(length, tok), _Packer(length, tok)
    with open(out / "train.rows", "wb") as f_train, open(out / "validation.rows", "wb") as f_val:
        for part, row in _pack(tok, corpus, train_docs, length):
            if every and (train.n_rows + valid.n_rows) % every == every - 1:
                valid.add(f_val, row, part)
            elif not target_rows or train.n_rows < target_rows:
                train.add(f_train, row, part)
            else:
                break
        for part, row in _pack(tok, corpus, val_docs, length):
            valid.add(f_val, row, part)
    if not train.n_rows or not valid.n_rows:
        raise ValueError(f"too little text in {_where(d)} for one {length}-token row in each split "
                         f"(train {train.n_rows} rows, validation {valid.n_rows}): give more text")
    if target_rows and train.n_rows < target_rows:
        log(f"warning: {_where(d)} gives {train.n_rows} training rows, fewer than the {target_rows} "
            f"wanted ({'the simplified variant' if control else 'data.max_train_tokens'})")
    datasets.build("tokens", out, {s: p.reader(out / f"{s}.rows")
                                   for s, p in (("train", train), ("validation", valid))}, length=length)
    for split in ("train", "validation"):
        (out / f"{split}.rows").unlink()
    corpus.close()
    corpus.path.unlink()

    filtered = stats.as_dict() if d.variant == "simplified" else {
        k: getattr(stats, k) for k in ("documents_in", "bytes_in", "replaced_bytes")}
    all_stats = filtered | {
        "documents": n_docs, "validation_documents": n_val, "train_rows": train.n_rows,
        "validation_rows": valid.n_rows, "tokenizer_size": tok.get_vocab_size(), "seq_len": cfg.train.seq_len,
        "variant": d.variant, "source": d.source, "sources": train.parts(), "source_read": read,
        "train_content_bytes": train.bytes, "validation_content_bytes": valid.bytes}
    meta = {"vocab_size": tok.get_vocab_size(), "has_vocabulary": d.variant == "simplified",
            "bytes_per_token": train.bytes / (train.n_rows * length),
            "train_tokens": train.n_rows * cfg.train.seq_len, "stats": all_stats}
    meta["files"] = manifest.build(out)  # checked at every _load
    (out / "stats.json").write_text(json.dumps(all_stats, indent=1))
    (out / _META).write_text(json.dumps(meta, indent=1))
    log(f"prepared {d.variant}: {train.n_rows} train rows, {valid.n_rows} validation rows")


# The order documents are split and packed in: a permutation from this seed, for both variants.
SHUFFLE_SEED = 0
# Text is read up to this many bytes per training token wanted (byte-level BPE gives ~3-5 bytes per
# token on English); the surplus is cut at packing time, from the shuffled documents.
_READ_BYTES_PER_TOKEN = 6


def _target_rows(cfg, control: dict | None) -> int:
    """Training rows to stop at: the simplified variant's (for the control), else data.max_train_tokens'."""
    if control:
        return control["train_rows"]
    return cfg.data.max_train_tokens // cfg.train.seq_len if cfg.data.max_train_tokens else 0


def _read(cfg, corpus: "_Corpus", control: dict | None, log) -> tuple[span_filter.Stats, dict]:
    """Write the variant's documents (part, content pieces) to `corpus`; the reading's stats and
    {part: {"documents", "bytes"}} of the source text read.

    simplified: the filter's kept spans, until data.max_train_tokens is surely reached.
    unrestricted: a seeded random sample of whole documents from the text the simplified variant
    read, drawn per source part so that each part gives the share of the training tokens it has
    in the simplified variant: the two variants then differ in vocabulary, not in text domain."""
    d, counts, stats, read = cfg.data, {"replaced_bytes": 0}, span_filter.Stats(), {}
    docs = sources.labelled_documents(d, counts)

    def count(part: str, text: str) -> None:
        r = read.setdefault(part, {"documents": 0, "bytes": 0})
        r["documents"] += 1
        r["bytes"] += len(text.encode("utf-8", "surrogatepass"))

    if d.variant == "simplified":
        vocab = load_vocabulary(d.vocab)
        vocab.write(corpus.path.parent / "vocab.txt")
        log(f"filtering {d.source} with {vocab.source} ({vocab.size} words)")
        params = span_filter.FilterParams(d.min_span_len, d.max_oov_p, d.from_sentence_start)
        labelled = _Labelled(docs)
        enough = _READ_BYTES_PER_TOKEN * d.max_train_tokens
        kept = span_filter.simplify_documents(labelled.texts(), vocab.words, params, d.workers, as_spans=True)
        for (spans, s), (part, text) in zip(_progress(kept, "filtering"), labelled.read()):
            stats.add(s)
            count(part, text)
            if spans:
                corpus.append(part, spans)
            if enough and stats.bytes_out >= enough:
                log(f"{stats.bytes_out} bytes kept: enough for data.max_train_tokens={d.max_train_tokens}")
                break
        kept.close()  # stops the filter's worker processes when reading ends early
    else:
        needed = _READ_BYTES_PER_TOKEN * control["train_rows"] * (cfg.train.seq_len + 1)
        take = _control_rates(control, needed, log)
        rng = np.random.default_rng(SHUFFLE_SEED)
        log(f"reading {d.source} unfiltered: a sample of the {control['documents_in']} documents the "
            "simplified variant read")
        for _, (part, text) in zip(range(control["documents_in"]), _progress(docs, "reading")):
            if rng.random() < take.get(part, 0.0):
                count(part, text)
                stats.add(span_filter.Stats(documents_in=1, documents_out=1, bytes_in=len(text.encode())))
                corpus.append(part, [text])
    corpus.close()
    stats.replaced_bytes = counts["replaced_bytes"]
    return stats, read


def _control_rates(simplified: dict, needed_bytes: int, log) -> dict[str, float]:
    """Per source part, the fraction of its documents the control takes so that the part gives
    `needed_bytes` x its share of the simplified variant's training tokens."""
    rates = {}
    for part, r in simplified["source_read"].items():
        share = simplified["sources"].get(part, {}).get("token_share", 0.0)
        rates[part] = min(1.0, needed_bytes * share / max(r["bytes"], 1))
        if needed_bytes * share > r["bytes"]:
            log(f"warning: source part {part} has too little text to give the control its "
                f"{100 * share:.1f}% share of the simplified variant's tokens")
    return rates


class _Labelled:
    """Splits (part, text) pairs into a text stream for the (possibly parallel) filter and the
    pairs it consumed, in order."""

    def __init__(self, pairs: Iterator[tuple[str, str]]):
        self.pairs, self.queue = pairs, collections.deque()

    def texts(self) -> Iterator[str]:
        for part, text in self.pairs:
            self.queue.append((part, text))
            yield text

    def read(self) -> Iterator[tuple[str, str]]:
        """The (part, text) pairs the filter has taken, oldest first."""
        while True:
            yield self.queue.popleft()


class _Corpus:
    """The variant's documents as JSON lines [part, [piece, ...]], read back by index."""

    def __init__(self, path: pathlib.Path):
        self.path, self.offsets = path, []
        self._f = open(path, "w", encoding="utf-8")
        self._reader = None

    def append(self, part: str, pieces: list[str]) -> None:
        self.offsets.append(self._f.tell())
        self._f.write(json.dumps([part, pieces]) + "\n")

    def close(self) -> None:
        """Closes the writer (after reading the source) and any reader (when the build is done)."""
        self._f.close()
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, i) -> tuple[str, list[str]]:
        if self._reader is None:
            self._reader = open(self.path, encoding="utf-8")
        self._reader.seek(self.offsets[i])
        return tuple(json.loads(self._reader.readline()))


def _pack(tok, corpus: _Corpus, doc_ids, length: int) -> Iterator[tuple[dict, np.ndarray]]:
    """Rows of `length` tokens from the documents in `doc_ids`, in that order, concatenated; each
    row with {part: [tokens of the row from that part, documents that start in the row]}."""
    buf: list[int] = []
    owners: collections.deque = collections.deque()  # [part, tokens left, started] per document in buf
    for start in range(0, len(doc_ids), 1000):
        docs = [corpus[i] for i in doc_ids[start:start + 1000]]
        for (part, _), ids in zip(docs, tokenizer.encode_documents(tok, [pieces for _, pieces in docs])):
            buf.extend(ids)
            owners.append([part, len(ids), False])
            while len(buf) >= length:
                row, parts, need = np.asarray(buf[:length], np.int32), {}, length
                del buf[:length]
                while need:
                    owner = owners[0]
                    take = min(need, owner[1])
                    counts = parts.setdefault(owner[0], [0, 0])
                    counts[0] += take
                    counts[1] += not owner[2]
                    owner[1] -= take
                    owner[2] = True
                    need -= take
                    if not owner[1]:
                        owners.popleft()
                yield parts, row


class _Packer:
    """One split's rows, written to a file as raw int32, with their content bytes and source parts."""

    def __init__(self, length: int, tok):
        self.length, self.content = length, tokenizer.content_bytes(tok)
        self.n_rows, self.bytes, self.by_part = 0, 0, {}

    def add(self, f, row: np.ndarray, parts: dict) -> None:
        f.write(row.tobytes())
        self.n_rows += 1
        self.bytes += int(self.content[row].sum())
        for part, (tokens, docs) in parts.items():
            counts = self.by_part.setdefault(part, [0, 0])
            counts[0] += tokens
            counts[1] += docs

    def parts(self) -> dict[str, dict]:
        """Per source part: the documents and tokens it gave this split, and its share of the tokens."""
        total = sum(t for t, _ in self.by_part.values())
        return {p: {"documents": docs, "tokens": t, "token_share": t / total}
                for p, (t, docs) in sorted(self.by_part.items())}

    def reader(self, path: pathlib.Path):
        return lambda: iter(np.fromfile(path, np.int32).reshape(-1, self.length))


def _where(d) -> str:
    return {"files": f"data.files.paths={d.files.paths!r}",
            "bigbench": f"BIG-bench tasks {d.bigbench.tasks!r}",
            "tfds": f"TFDS {d.tfds.name!r}", "hf": f"Hugging Face {d.hf.name!r}"}.get(d.source, d.source)
