"""cpu_runtime.configure() stops XLA:CPU from page-faulting a step's temporaries in afresh each step."""
import subprocess
import sys

import pytest

FAULTS_PER_STEP = """
import resource, sys
from simscale import cpu_runtime
if sys.argv[1] == "configure":
    assert cpu_runtime.configure()
import jax, jax.numpy as jnp
step = jax.jit(jax.grad(lambda x, w: jnp.sum(jnp.tanh(x @ w) ** 2)))  # 64 MB temporaries
x, w = jnp.full((4096, 64), 0.01), jnp.full((64, 4096), 0.01)
for _ in range(3):  # the heap settles within two steps
    step(x, w).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step(x, w).block_until_ready()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5)
"""

def faults_per_step(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", FAULTS_PER_STEP, mode], capture_output=True, text=True, check=True)
    return float(out.stdout.split()[-1])

@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc (Linux) is what configure() tunes")
def test_configure_stops_refaulting_temporaries():
    assert faults_per_step("default") > 8_000  # 64 MB = 16,384 pages mapped in anew on every step
    assert faults_per_step("configure") < 100
