"""cpu_runtime.configure() stops XLA:CPU from page-faulting a step's temporaries in afresh each step.

What the settings promise is a steady state, so the test reads the median step. Configured, the
heap still grows a few times during the first steps (measured: 1-5 growths in 40 steps, the last
at step 20): small allocations split the freed 64 MB block, the next step's block no longer fits,
and glibc extends the heap, faulting one block in once. A mean over a few steps counted such a
one-off growth as 3,300 faults per step and failed at random; the median does not, while an
unconfigured process faults the whole block in on every step.
"""
import subprocess
import sys

import pytest

STEP_FAULTS = """
import resource, sys
from simscale import cpu_runtime
if sys.argv[1] == "configure":
    assert cpu_runtime.configure()
import jax, jax.numpy as jnp
step = jax.jit(jax.grad(lambda x, w: jnp.sum(jnp.tanh(x @ w) ** 2)))  # 64 MB temporaries
x, w = jnp.full((4096, 64), 0.01), jnp.full((64, 4096), 0.01)
for _ in range(3):
    step(x, w).block_until_ready()
for _ in range(15):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    step(x, w).block_until_ready()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def median_step_faults(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", STEP_FAULTS, mode], capture_output=True, text=True, check=True)
    faults = sorted(int(line) for line in out.stdout.split())
    assert len(faults) == 15, out.stdout
    return faults[len(faults) // 2]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc (Linux) is what configure() tunes")
def test_configure_stops_refaulting_temporaries():
    assert median_step_faults("default") > 8_000  # 64 MB = 16,384 pages mapped in anew on every step
    assert median_step_faults("configure") < 100
