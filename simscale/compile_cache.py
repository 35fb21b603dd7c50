"""JAX's persistent compilation cache, kept per sweep workdir (`W/compile_cache`).

Every run of one shape compiles the same train, eval, init and scoring programs; with the
cache, only the first run of a shape in a workdir compiles them and the others (in any worker
process, and after a restart) load the executables. JAX decides once per process whether it
uses the cache, at its first compilation: enable() must come before that.
"""
from __future__ import annotations

import pathlib

MIN_COMPILE_S = 0.2  # cache programs that took longer than this to compile (JAX's default: 1 s)


def enable(workdir) -> pathlib.Path:
    """Cache compiled programs in `workdir`/compile_cache; returns that folder."""
    import jax

    directory = pathlib.Path(workdir) / "compile_cache"
    directory.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_S)
    return directory
