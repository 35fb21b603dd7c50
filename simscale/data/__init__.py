"""Data: vocabulary, simplification, sources, tokenizer, datasets and batches.

`prepare(cfg) -> PreparedData` (see docs/contracts.md) is imported lazily so that
`import simscale.data` stays light.
"""


def prepare(cfg, log=None):
    from simscale.data.prepared import prepare as _prepare

    return _prepare(cfg, log)


def bench_filter(mb: float = 8.0, workers: int = 0) -> dict:
    """Span-filter throughput in MB/s (single process and parallel); see simscale.data.bench."""
    from simscale.data.bench import bench_filter as _bench

    return _bench(mb, workers)


def __getattr__(name):
    if name == "PreparedData":
        from simscale.data.prepared import PreparedData

        return PreparedData
    raise AttributeError(f"module 'simscale.data' has no attribute {name!r}")
