"""`--distributed`: jax.distributed.initialize() with the process layout from the environment.

jax reads JAX_COORDINATOR_ADDRESS itself, and discovers everything on Cloud TPU, SLURM and Open
MPI; elsewhere (e.g. several processes on one machine) JAX_NUM_PROCESSES and JAX_PROCESS_ID give
the count and this process's index, which jax.distributed.initialize does not read.
"""
from __future__ import annotations

import os


def initialize() -> None:
    import jax

    env = {k: int(os.environ[v]) for k, v in (("num_processes", "JAX_NUM_PROCESSES"),
                                               ("process_id", "JAX_PROCESS_ID")) if os.environ.get(v)}
    jax.distributed.initialize(**env)
