"""cpu_runtime.configure() stops XLA:CPU from page-faulting a step's temporaries in afresh each step.

The probe counts a step's minor page faults, less the pages malloc's heap grew by in that step:
what is left is memory the process held before and had to fault in again. Two things made the
raw count random, each now taken out:
- The heap still grows a few times during the first steps when configured (measured: 0-4
  growths of one 64 MB block in 15 steps): small allocations split a freed block, the next
  step's block no longer fits, and glibc extends the heap, faulting one block in once. Those
  faults are growth, not re-faulting, and are subtracted.
- Transparent huge pages: where the kernel's THP mode is `always` (some machines of this kind),
  the unconfigured 64 MB block is faulted in as 2 MiB pages, ~65 faults a step instead of
  16,384, and the unconfigured bound failed. The probe turns THP off for its own process
  (prctl PR_SET_THP_DISABLE) so faults count 4 KiB pages, and the test runs it with glibc's
  malloc asking for huge pages (GLIBC_TUNABLES=glibc.malloc.hugetlb=1), as THP `always` would,
  so that a machine in `madvise` mode checks the same thing.
"""
import os
import subprocess
import sys

import pytest

STEP_FAULTS = """
import ctypes, resource, sys
libc = ctypes.CDLL(None)
assert libc.prctl(41, 1, 0, 0, 0) == 0  # PR_SET_THP_DISABLE: fault 4 KiB pages, \
whatever the kernel's THP mode


class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]


libc.mallinfo2.restype = MallInfo2


def heap_pages():  # malloc's heaps, summed over its arenas; not its mmap'd blocks, which go back on free
    return libc.mallinfo2().arena // 4096


from simscale import cpu_runtime
if sys.argv[1] == "configure":
    assert cpu_runtime.configure()
import jax, jax.numpy as jnp
step = jax.jit(jax.grad(lambda x, w: jnp.sum(jnp.tanh(x @ w) ** 2)))  # 64 MB temporaries
x, w = jnp.full((4096, 64), 0.01), jnp.full((64, 4096), 0.01)
for _ in range(3):
    step(x, w).block_until_ready()
for _ in range(15):
    faults, pages = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, heap_pages()
    step(x, w).block_until_ready()
    grown = max(0, heap_pages() - pages)
    print(max(0, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults - grown))
"""


def median_step_refaults(mode: str) -> float:
    env = dict(os.environ, GLIBC_TUNABLES="glibc.malloc.hugetlb=1")
    out = subprocess.run([sys.executable, "-c", STEP_FAULTS, mode], capture_output=True, text=True,
                         check=True, env=env)
    faults = sorted(int(line) for line in out.stdout.split())
    assert len(faults) == 15, out.stdout
    return faults[len(faults) // 2]


@pytest.mark.skipif(not sys.platform.startswith("linux"),
                    reason="glibc's malloc (Linux) is what configure() tunes")
def test_configure_stops_refaulting_temporaries():
    assert median_step_refaults("default") > 8_000  # 64 MB = 16,384 pages mapped in anew on every step
    assert median_step_refaults("configure") < 100
