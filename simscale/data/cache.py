"""simscale's download and preparation cache: $SIMSCALE_CACHE, else ~/.cache/simscale.

Holds the BIG-bench archive (bigbench/), the paper's vocabulary once downloaded (vocab/) and
prepared datasets (prepared/, unless data.cache_dir names another folder).
"""
from __future__ import annotations

import os
import pathlib


def cache_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get("SIMSCALE_CACHE") or pathlib.Path.home() / ".cache" / "simscale")
