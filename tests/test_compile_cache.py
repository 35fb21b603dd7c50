"""The sweep's compile cache: the second run of a shape, in a fresh worker process, loads every
program the first run compiled instead of compiling it again.

The workers cache every program (compile_cache.MIN_COMPILE_S = 0): JAX counts a cache miss only when
it writes an entry, and with the product's 0.2 s threshold a small program that compiled in 0.19 s in
one worker and 0.21 s in the other (a loaded machine) showed as one miss in the second run."""
import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
WORKER = """
import importlib.util, json, sys
from jax import monitoring
events = []
monitoring.register_event_listener(lambda name, **kw: events.append(name))
from simscale import compile_cache
from simscale.config import to_dict
from simscale.sweep import executors, grid
compile_cache.MIN_COMPILE_S = 0.0
spec = importlib.util.spec_from_file_location("sweeps_grid", "sweeps/grid.py")
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
run = [r for r in grid.expand(module.get_config("preset=smoke")) if r.cfg.model.hidden == 16]\
[int(sys.argv[2])]
outcome = executors.run_one(sys.argv[1], run.run_id, to_dict(run.cfg))["outcome"]
print(json.dumps(dict(outcome=outcome, hits=events.count("/jax/compilation_cache/cache_hits"),
                      misses=events.count("/jax/compilation_cache/cache_misses"))))
"""


def worker(workdir, index) -> dict:
    out = subprocess.run([sys.executable, "-c", WORKER, str(workdir), str(index)], cwd=ROOT,
                         capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_shapes_second_run_loads_its_programs_from_the_workdirs_cache(tmp_path):
    first = worker(tmp_path, 0)  # the simplified run of width 16
    assert first["outcome"] == "done" and first["hits"] == 0 and first["misses"] >= 3  # train, eval, init
    assert any((tmp_path / "compile_cache").iterdir())
    second = worker(tmp_path, 1)  # the unrestricted run: same shape, other data
    assert second == dict(outcome="done", hits=first["misses"], misses=0)
