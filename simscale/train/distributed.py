"""`--distributed`: jax.distributed.initialize() with the process layout from the environment.

jax reads JAX_COORDINATOR_ADDRESS itself, and discovers everything on Cloud TPU, SLURM and Open
MPI; elsewhere (e.g. several processes on one machine) JAX_NUM_PROCESSES and JAX_PROCESS_ID give
the count and this process's index, which jax.distributed.initialize does not read.
"""
from __future__ import annotations

import os
from typing import Callable


def initialize() -> None:
    import jax

    env = {k: int(os.environ[v]) for k, v in (("num_processes", "JAX_NUM_PROCESSES"),
                                               ("process_id", "JAX_PROCESS_ID")) if os.environ.get(v)}
    jax.distributed.initialize(**env)


def from_process_0(decide: Callable[[], bool]) -> bool:
    """`decide()` run on process 0 alone; its answer on every process (one broadcast when there are
    several), so that all of them take the same branch, e.g. stop when process 0 cannot take the run lock."""
    import jax
    import numpy as np

    answer = bool(decide()) if jax.process_index() == 0 else False
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        answer = bool(multihost_utils.broadcast_one_to_all(np.int32(answer)))
    return answer
