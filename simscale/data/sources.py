"""Streaming document readers: local files, BIG-bench, the State of the Union addresses, TFDS and Hugging
Face datasets.

`documents(cfg.data, counts)` yields one str per document, never holding the
corpus in memory, and stops at `max_documents` / `max_bytes`. Invalid UTF-8 is
replaced (U+FFFD) and counted in `counts['replaced_bytes']`.
"""
from __future__ import annotations

import glob
import itertools
import json
import os
import pathlib
from typing import Iterator

from simscale.config import ConfigError

# data.source besides synthetic and auto (simscale.validation checks)
SOURCES = ("bigbench", "sotu", "files", "tfds", "hf")
# data.source=auto (simscale.at_hand): the BIG-bench dialogue when its archive is at hand, else this.
FALLBACK = "sotu"
FORMATS = ("auto", "text", "jsonl", "parquet")  # data.files.format


def documents(data_cfg, counts: dict | None = None) -> Iterator[str]:
    """The configured source's documents, in a fixed order, within the configured limits."""
    return (text for _, text in labelled_documents(data_cfg, counts))


def labelled_documents(data_cfg, counts: dict | None = None) -> Iterator[tuple[str, str]]:
    """(part, text) per document; `part` names where in the source it comes from: the BIG-bench
    task, the input file, or the TFDS / Hugging Face dataset."""
    counts = {} if counts is None else counts
    counts.setdefault("replaced_bytes", 0)
    readers = {"bigbench": _bigbench, "sotu": _sotu, "files": _files, "tfds": _tfds, "hf": _hf}
    if data_cfg.source not in readers:
        raise ConfigError(f"data.source={data_cfg.source!r} reads no documents: choose one of {SOURCES}")
    max_docs, max_bytes, size = data_cfg.max_documents, data_cfg.max_bytes, 0
    for i, (part, text) in enumerate(readers[data_cfg.source](data_cfg.get(data_cfg.source), counts)):
        if max_docs and i >= max_docs:
            return
        yield part, text
        size += len(text.encode("utf-8", "surrogatepass"))
        if max_bytes and size >= max_bytes:
            return


def describe(data_cfg) -> dict:
    """The fields that identify this source's documents (part of the cache key)."""
    d = {k: data_cfg[k] for k in ("source", "max_documents", "max_bytes")}
    if data_cfg.source == "sotu":  # no settings: what its documents are made of
        from simscale.data import sotu

        d["sotu"] = {"version": sotu.VERSION, "passage_sentences": sotu.PASSAGE_SENTENCES}
    else:
        d[data_cfg.source] = data_cfg[data_cfg.source].to_dict()
    if data_cfg.source == "files":  # the files' identity: names, sizes, times
        d["stat"] = [(p, os.path.getsize(p), int(os.path.getmtime(p))) for p in file_paths(data_cfg.files)]
    return d


def decode(raw: bytes, counts: dict) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("utf-8", errors="replace")
        counts["replaced_bytes"] += text.count("\ufffd") - raw.count("\ufffd".encode())
        return text


def file_paths(files_cfg) -> list[str]:
    """The files of data.files.paths (globs expanded, in the order given), each checked readable."""
    specs = [s.strip() for s in str(files_cfg.paths).split(",") if s.strip()]
    if not specs:
        raise ConfigError("data.files.paths is empty: give corpus paths or globs (comma-separated) for "
                          "source=files")
    paths = []
    for spec in specs:
        found = sorted(glob.glob(os.path.expanduser(spec))) if glob.has_magic(spec) else [spec]
        if not found:
            raise FileNotFoundError(f"data.files.paths: {spec!r} matches no file; check the path or glob")
        for p in found:
            if not os.path.isfile(p):
                raise FileNotFoundError(f"corpus file {p} does not exist; fix data.files.paths")
            if not os.access(p, os.R_OK):
                raise PermissionError(f"corpus file {p} is not readable; fix its permissions or "
                                      "data.files.paths")
        paths += found
    return paths


def file_format(path: str, fmt: str = "auto") -> str:
    if fmt != "auto":
        return fmt
    suffix = pathlib.Path(path).suffix.lower()
    return {".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}.get(suffix, "text")


def read_file(path: str, fmt: str, field: str, counts: dict,
              fix: str = "data.files.text_field or data.files.format") -> Iterator[str]:
    """Documents of one file, empty ones included: text (one a line), jsonl or parquet; an error about
    `field` says to fix `fix` (the caller's name of the settings that chose it)."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            table = pq.ParquetFile(path)
            for batch in table.iter_batches(columns=[field], batch_size=1024):
                yield from (t or "" for t in batch.column(0).to_pylist())
        except (OSError, KeyError, ValueError) as e:
            raise ValueError(f"corpus file {path}: cannot read column {field!r} as parquet ({e}); "
                             f"fix {fix} or the file") from None
        return
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            line = decode(raw, counts).rstrip("\r\n")
            if fmt == "text":
                yield line
                continue
            if not line.strip():
                continue
            try:
                text = json.loads(line)[field]
            except (ValueError, KeyError, TypeError):
                raise ValueError(f"corpus file {path} line {n}: not a JSON object with a {field!r} string; "
                                 f"fix the line or {fix}") from None
            if not isinstance(text, str):
                raise ValueError(f"corpus file {path} line {n}: {field!r} is not a string; fix the line or "
                                 f"{fix}")
            yield text


def _files(files_cfg, counts) -> Iterator[str]:
    for path in file_paths(files_cfg):
        fmt = file_format(path, files_cfg.format)
        docs = read_file(path, fmt, files_cfg.text_field, counts)
        if fmt == "text" and files_cfg.lines_per_document > 1:  # e.g. utterances: one document per N
            lines, n = docs, files_cfg.lines_per_document
            docs = ("\n".join(group) for group in iter(lambda: list(itertools.islice(lines, n)), []))
        yield from ((path, t) for t in docs if t.strip())


def _bigbench(bigbench_cfg, counts) -> Iterator[tuple[str, str]]:
    """The chosen BIG-bench tasks' examples as plain text (bigbench.documents), the tasks interleaved
    in proportion to their sizes, so that reading stops at any point (max_documents, a token
    target) with every task in its share."""
    from simscale.data import bigbench

    archive = bigbench.archive_path()  # one copy in $SIMSCALE_CACHE, whatever data.cache_dir says
    names = [t.strip() for t in bigbench_cfg.tasks.split(",") if t.strip()]
    yield from interleave({name: list(bigbench.documents(name, archive)) for name in names})


def _sotu(_, counts) -> Iterator[tuple[str, str]]:
    """The State of the Union addresses in year order, as one part (simscale.data.sotu)."""
    from simscale.data import sotu

    yield from (("sotu", text) for _, text in sotu.documents())


def interleave(parts: dict[str, list[str]]) -> Iterator[tuple[str, str]]:
    """(part, item) for every item, each part's items spread evenly: item i of a part of n items
    comes at fraction (i + 1/2) / n of the stream (ties in the parts' order)."""
    keyed = sorted(((i + 0.5) / len(items), k, i) for k, items in enumerate(parts.values())
                   for i in range(len(items)))
    names, lists = list(parts), list(parts.values())
    for _, k, i in keyed:
        yield names[k], lists[k][i]


def _tfds(tfds_cfg, counts) -> Iterator[str]:
    import tensorflow_datasets as tfds

    if not tfds_cfg.name:
        raise ConfigError("data.tfds.name is empty: name a prepared TFDS dataset for source=tfds")
    try:
        src = tfds.data_source(tfds_cfg.name, split=tfds_cfg.split, data_dir=tfds_cfg.data_dir or None,
                               download=False)
    except Exception as e:  # noqa: BLE001 - tfds raises many types for a missing or unprepared dataset
        raise FileNotFoundError(f"TFDS dataset {tfds_cfg.name!r} split {tfds_cfg.split!r} cannot be "
                                f"opened ({e}); prepare it first or fix data.tfds.name/data_dir") from None
    for i in range(len(src)):
        value = src[i][tfds_cfg.text_field]
        yield tfds_cfg.name, decode(value, counts) if isinstance(value, bytes) else str(value)


def _hf(hf_cfg, counts) -> Iterator[str]:
    try:
        import datasets
    except ImportError:
        raise ConfigError("data.source=hf needs the `datasets` package: pip install datasets") from None
    if not hf_cfg.name:
        raise ConfigError("data.hf.name is empty: name a Hugging Face dataset for source=hf")
    try:
        ds = datasets.load_dataset(hf_cfg.name, hf_cfg.config or None, split=hf_cfg.split, streaming=True)
        for ex in ds:
            if ex.get(hf_cfg.text_field):
                yield hf_cfg.name, ex[hf_cfg.text_field]
    except (OSError, ValueError) as e:  # offline, unknown name, config or split
        raise FileNotFoundError(f"Hugging Face dataset {hf_cfg.name!r} cannot be read ({e}): check "
                                "data.hf.name/config/split and the network, or use data.source="
                                "bigbench or files") from None
