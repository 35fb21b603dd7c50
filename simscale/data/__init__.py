"""Data: vocabulary, simplification, sources, tokenizer, datasets and batches.

`prepare(cfg) -> PreparedData` (see docs/contracts.md) is imported lazily so that
`import simscale.data` stays light.
"""


def prepare(cfg, log=None):
    from simscale.data.prepared import prepare as _prepare

    return _prepare(cfg, log)


def prepare_all(cfgs, log=None):
    from simscale.data.prepared import prepare_all as _prepare_all

    return _prepare_all(cfgs, log)


def __getattr__(name):
    if name == "PreparedData":
        from simscale.data.prepared import PreparedData

        return PreparedData
    raise AttributeError(f"module 'simscale.data' has no attribute {name!r}")
