"""Throughput of the data path: the span filter (MB/s of UTF-8 input, single process and parallel) and
the batch loader (training tokens/s)."""
from __future__ import annotations

import itertools
import os
import pathlib
import time

from simscale.data import span_filter
from simscale.data.cache import cache_dir
from simscale.data.vocab import load_vocabulary


def bench_texts(mb: float) -> tuple[str, list[str]]:
    """(description, documents): BIG-bench dialogue when its archive is cached, else reference text."""
    from simscale.data import bigbench

    archive = cache_dir() / "bigbench" / bigbench.ARCHIVE
    if archive.is_file():
        docs = [d for task in bigbench.PRETRAINING_TASKS for d in bigbench.documents(task, archive)]
        name = "BIG-bench dialogue (" + ", ".join(bigbench.PRETRAINING_TASKS) + ")"
    else:
        data = pathlib.Path(os.environ.get("SIMSCALE_DATA", "/nonexistent"))
        lines = (data / "aochildes" / "child_directed_utterances.txt").read_text().splitlines()
        docs = ["\n".join(lines[i:i + 20]) for i in range(0, len(lines), 20)]
        name = "AO-CHILDES utterances (BIG-bench archive not cached)"
    out, size = [], 0
    for d in itertools.cycle(docs):
        out.append(d)
        size += len(d.encode())
        if size >= mb * 1e6:
            return name, out


def _cpu_seconds() -> float:
    """CPU time of this process and its finished child processes."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _vocabulary():
    try:
        return load_vocabulary("aochildes")
    except FileNotFoundError:
        return load_vocabulary("wordfreq:20000")


def bench_filter(mb: float = 8.0, workers: int = 0) -> dict:
    """MB/s of the filter with the AO-CHILDES vocabulary (else wordfreq:20000) on English text."""
    vocab = _vocabulary()
    text, docs = bench_texts(mb)
    size = sum(len(d.encode()) for d in docs) / 1e6
    result = {"text": text, "vocab": vocab.source, "mb": round(size, 1)}
    workers = workers or os.cpu_count() or 1
    for label, n in (("single", 1), ("parallel", workers)):
        start, cpu, stats = time.perf_counter(), _cpu_seconds(), span_filter.Stats()
        for _, s in span_filter.simplify_documents(docs, vocab.words, workers=n):
            stats.add(s)
        result[f"{label}_mb_s"] = round(size / (time.perf_counter() - start), 2)
        # per CPU second (all processes): what the cores do, however busy the machine is
        result[f"{label}_mb_per_cpu_s"] = round(size / (_cpu_seconds() - cpu), 2)
    result["workers"] = workers
    result["kept_fraction"] = round(stats.as_dict()["kept_fraction"], 4)
    return result


def bench_loader(cfg, steps: int = 50) -> dict:
    """Training tokens/s that loader.batches delivers for cfg (prepares the data if needed)."""
    from simscale.data import loader, prepare

    it = loader.batches(prepare(cfg), cfg, "train", 0)
    next(it)  # opening the data source is not throughput
    start, cpu, tokens = time.perf_counter(), time.process_time(), 0
    for batch in itertools.islice(it, steps):
        tokens += batch[:, 1:].size
    return {"tokens_per_s": round(tokens / (time.perf_counter() - start)),
            "tokens_per_cpu_s": round(tokens / (time.process_time() - cpu)), "batch": list(batch.shape)}


def bench_loader_on_text(mb: float = 4.0, batch_sizes=(16, 512)) -> list[dict]:
    """bench_loader at each batch size on `mb` of bench_texts, prepared (filtered) in a temporary cache with
    rows of 65 tokens, as the cpu preset has them."""
    import json
    import tempfile

    from simscale.config import run_config

    _, docs = bench_texts(mb)
    out = []
    with tempfile.TemporaryDirectory(prefix="simscale-bench-") as tmp:
        corpus = pathlib.Path(tmp) / "corpus.jsonl"
        corpus.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
        cfg = run_config()
        cfg.model.update(vocab_size=2000, max_len=64)
        cfg.data.update(source="files", vocab=_vocabulary().source, cache_dir=tmp)
        cfg.data.files.paths = str(corpus)
        for batch in batch_sizes:
            cfg.train.update(batch_size=batch, seq_len=64)
            out.append(bench_loader(cfg))
    return out
