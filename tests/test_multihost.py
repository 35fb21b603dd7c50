"""Two processes on localhost (CPU backend, gloo collectives, 2 fake devices each) train one run
together: the same losses as one process with 4 devices; killed and restarted, they resume."""
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from simscale import runlock
from simscale.config import run_config, to_dict

REPO = Path(__file__).resolve().parents[1]
STEPS = 60
CONFIG_FILE = """
from simscale.config import from_dict

def get_config(arg=None):
    return from_dict({cfg!r})
"""


def config_file(tmp_path):
    cfg = run_config()
    cfg.model.update(dict(vocab_size=64, hidden=32, layers=2, heads=4, max_len=16))
    cfg.train.update(dict(batch_size=8, seq_len=16, steps=STEPS, lr=1e-2, warmup_steps=2, log_every=1,
                          eval_every=30, checkpoint_every=10, eval_batches=2, keep_checkpoints=2))
    path = tmp_path / "config.py"
    path.write_text(CONFIG_FILE.format(cfg=to_dict(cfg)))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(config, run_dir, devices, process_id=None, port=None, n=2):
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
           "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
    args = [sys.executable, "-m", "simscale.train", f"--config={config}", f"--workdir={run_dir}"]
    if process_id is not None:
        env.update(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES=str(n),
                   JAX_PROCESS_ID=str(process_id), JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo")
        args.append("--distributed")
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            stdin=subprocess.DEVNULL)


def start_pair(config, run_dir):
    port = free_port()
    return [start(config, run_dir, 2, i, port) for i in range(2)]


def wait(procs, timeout=400):
    outs = [p.communicate(timeout=timeout)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out
    return outs


HOLD = """
import sys, time
from simscale.runlock import RunLock
lock = RunLock(sys.argv[1])
assert lock.acquire()
print("held", flush=True)
time.sleep(300)
"""


def losses(run_dir):
    return [json.loads(line)["loss"] for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("one_process")
    wait([start(config_file(tmp), tmp / "run", 4)])
    return tmp / "run"


def test_two_processes_match_one_process_with_four_devices(reference, tmp_path):
    run_dir = tmp_path / "run"
    outs = wait(start_pair(config_file(tmp_path), run_dir))
    assert "done:" in outs[0] and "done:" not in outs[1]  # only process 0 reports
    np.testing.assert_allclose(losses(run_dir), losses(reference), rtol=1e-5)
    result, ref = (json.loads((d / "result.json").read_text()) for d in (run_dir, reference))
    assert result["eval_loss"] == pytest.approx(ref["eval_loss"], rel=1e-5)
    assert len(losses(run_dir)) == STEPS  # one writer: no line twice


def test_two_processes_killed_and_restarted_resume_from_the_checkpoint(reference, tmp_path):
    run_dir, config = tmp_path / "run", config_file(tmp_path)
    procs = start_pair(config, run_dir)
    deadline = time.monotonic() + 400
    holders = set()
    while not (run_dir / "checkpoints" / "20").exists() and time.monotonic() < deadline:
        assert all(p.poll() is None for p in procs), "the pair ended before its step-20 checkpoint"
        holders.add((runlock.holder(run_dir) or {}).get("pid"))
        time.sleep(0.05)
    assert holders - {None} == {procs[0].pid}  # process 0 alone holds the run lock
    for p in procs:
        p.kill()
        p.wait()
    assert not (run_dir / "result.json").exists()
    saved = sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir())
    assert saved and max(saved) < STEPS
    # Lines up to the restored step stay as written; a run started again from step 0 would rewrite
    # them with new (timing-dependent) tokens_per_s.
    kept = (run_dir / "metrics.jsonl").read_text().splitlines()[:max(saved)]
    wait(start_pair(config, run_dir))
    assert (run_dir / "metrics.jsonl").read_text().splitlines()[:max(saved)] == kept
    np.testing.assert_allclose(losses(run_dir), losses(reference), rtol=1e-5)
    assert json.loads((run_dir / "status.json").read_text())["status"] == "done"


def test_a_held_run_directory_stops_every_process(tmp_path):
    """Only process 0 takes the run lock; when another trainer holds it, every process stops at once
    with its holder named (process 1 used to go on into training and fail 30 s later, a gloo timeout)."""
    run_dir = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline().strip() == "held"
        procs = start_pair(config_file(tmp_path), run_dir)
        try:
            outs = [p.communicate(timeout=120)[0] for p in procs]
        finally:
            for p in procs:
                p.kill()
    finally:
        holder.kill()
        holder.wait()
    for p, out in zip(procs, outs):
        assert p.returncode == 2, out
        assert f"error: {run_dir} is in use by pid {holder.pid}" in out
    assert sorted(p.name for p in run_dir.iterdir()) == ["lock"]
