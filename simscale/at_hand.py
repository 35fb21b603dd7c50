"""What this machine has at hand: the one place where `auto` config values are resolved.

    notes = at_hand.resolve(cfg)   # in place; one line per value it chose, saying why

- `data.vocab=auto`: the paper's AO-CHILDES list when it is found without going online
  ($SIMSCALE_DATA/vocab/ or the cache), else the `wordfreq` top `WORDFREQ_WORDS` English words.
- `eval.tasks=auto`: BLiMP's paper-22 suite when $SIMSCALE_DATA/blimp exists, else BIG-bench
  multiple choice.

Presets stay pure (`sweeps/grid.py:preset=cpu` is the same config on every machine); entry points
resolve before run ids are made, so a run's id and its config.json name what it used. A value
other than `auto` is kept as given (`preset=cpu,vocab=wordfreq:21000` pins it).
"""
from __future__ import annotations

import os
import pathlib

WORDFREQ_WORDS = 21_000  # about the AO-CHILDES list's 21,036 usable words


def resolve(cfg) -> list[str]:
    """Replace `auto` in data.vocab and eval.tasks of `cfg` (a run or sweep config) by this machine's
    choice."""
    notes = []
    if cfg.data.vocab == "auto":
        cfg.data.vocab, why = vocabulary()
        notes.append(f"data.vocab=auto: {cfg.data.vocab} {why}")
    if cfg.eval.tasks == "auto":
        blimp = blimp_local()
        cfg.eval.tasks = "blimp_paper22" if blimp else "bigbench_mc"
        notes.append(f"eval.tasks=auto: {cfg.eval.tasks} " + (f"(found {blimp})" if blimp else
                     "(no $SIMSCALE_DATA/blimp folder)"))
    return notes


def vocabulary() -> tuple[str, str]:
    """(the vocabulary `auto` stands for here, why): aochildes when found locally, else wordfreq."""
    from simscale.data.vocab import aochildes_local

    local = aochildes_local()
    if local:
        return "aochildes", f"(found {local})"
    return f"wordfreq:{WORDFREQ_WORDS}", "(the AO-CHILDES list is not in $SIMSCALE_DATA/vocab/ nor the cache)"


def blimp_local() -> pathlib.Path | None:
    """$SIMSCALE_DATA/blimp when it is a folder."""
    data = os.environ.get("SIMSCALE_DATA")
    return pathlib.Path(data) / "blimp" if data and (pathlib.Path(data) / "blimp").is_dir() else None
