"""End-to-end sweeps of the smoke preset in subprocesses: kill -9 and resume, concurrent sweeps,
an invalid grid, and the process and Ray executors against the inline one."""
import json
import pathlib
import re
import signal
import subprocess
import sys
import time

import pytest

from simscale.sweep import store

ROOT = pathlib.Path(__file__).resolve().parents[1]
# The two runs of one shape (one compilation per process), 200 steps each so that a kill lands
# mid-run; checkpoints every 25 steps.
ARGS = ["--config", "sweeps/grid.py:preset=smoke", "--only", "^w16-", "--config.train.steps=200",
        "--config.train.checkpoint_every=25", "--config.train.log_every=10", "--config.train.eval_every=200"]


def sweep(workdir, *extra, **popen):
    cmd = [sys.executable, "-m", "simscale.sweep", *ARGS, "--workdir", str(workdir), *extra]
    popen.setdefault("stderr", subprocess.STDOUT)
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True, **popen)


def finish(proc, timeout=240):
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def results(workdir):
    """{run_id: final loss} of every finished run, and {run_id: attempt events}."""
    runs = store.read_json(pathlib.Path(workdir) / "sweep.json")["runs"]  # the whole grid
    losses, events = {}, {}
    for entry in (e for e in runs if e["run_id"].startswith("w16-")):  # what --only selects
        rdir = store.run_dir(workdir, entry["run_id"])
        losses[entry["run_id"]] = store.read_json(rdir / "result.json")["final_loss"]
        events[entry["run_id"]] = [a["event"] for a in store.attempts(rdir)]
    return losses, events


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory):
    """A sweep killed with SIGKILL in the middle of its first run, then started again."""
    workdir = tmp_path_factory.mktemp("killed")
    proc = sweep(workdir)
    first = None
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        started = sorted((workdir / "runs").glob("*/metrics.jsonl"))
        if started and store.last_metrics(started[0].parent).get("step", 0) >= 60:
            first = started[0].parent
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert first is not None and not (first / "result.json").exists(), "the sweep was not killed mid-run"
    assert "0 done, 0 running, 0 failed, 1 interrupted, 3 pending" in status(workdir)
    code, out = finish(sweep(workdir))
    assert code == 0, out
    resumed_steps = [int(m) for m in re.findall(rf"{first.name} step (\d+)/200", out)]
    assert resumed_steps[0] > 25, "the interrupted run restarted instead of resuming from its checkpoint"
    return workdir, first.name


def status(workdir):
    return subprocess.run([sys.executable, "-m", "simscale.sweep", "status", "--workdir", str(workdir)],
                          cwd=ROOT, capture_output=True, text=True, check=True).stdout


def test_a_killed_sweep_resumes_and_trains_every_run_exactly_once(killed_and_resumed):
    workdir, interrupted = killed_and_resumed
    _, events = results(workdir)
    assert len(events) == 2
    for run_id, ev in events.items():
        assert ev == (["start", "start", "done"] if run_id == interrupted else ["start", "done"]), run_id
    assert store.read_json(store.run_dir(workdir, interrupted) / "status.json")["status"] == "done"
    code, out = finish(sweep(workdir))  # a third start finds everything done
    assert code == 0 and "0 trained, 2 already done, 0 failed" in out
    assert "2 done, 0 running, 0 failed, 0 interrupted, 2 pending" in status(workdir)


def test_process_executor_matches_inline_including_the_resumed_run(killed_and_resumed, tmp_path):
    """Uninterrupted runs in worker processes give the same final losses as the killed-and-resumed inline
    sweep."""
    inline, _ = results(killed_and_resumed[0])
    code, out = finish(sweep(tmp_path, "--executor", "process", "--workers", "2"))
    assert code == 0, out
    assert results(tmp_path)[0] == inline


def test_two_concurrent_sweeps_never_train_one_run_twice(killed_and_resumed, tmp_path):
    a, b = sweep(tmp_path), sweep(tmp_path)
    (code_a, out_a), (code_b, out_b) = finish(a), finish(b)
    assert code_a == code_b == 0, out_a + out_b
    losses, events = results(tmp_path)
    assert len(events) == 2 and all(ev == ["start", "done"] for ev in events.values()), events
    assert losses == results(killed_and_resumed[0])[0]


def test_ray_executor_matches_inline(killed_and_resumed, tmp_path):
    pytest.importorskip("ray", reason="Ray is not installed: pip install 'simscale[ray]'")
    code, out = finish(sweep(tmp_path, "--executor", "ray"), timeout=300)
    assert code == 0, out
    assert results(tmp_path)[0] == results(killed_and_resumed[0])[0]


def test_a_grid_with_an_invalid_run_is_rejected_before_training(tmp_path):
    code, out = finish(sweep(tmp_path, "--config.sweep.axes.width=(16, 17)", "--only", "."))
    assert code == 2
    assert "2 invalid run(s)" in out and "w17-d1-simplified" in out and "w17-d1-unrestricted" in out
    assert "Traceback" not in out and not (tmp_path / "runs").exists()


def test_a_diverging_run_fails_with_its_traceback_and_the_sweep_exits_nonzero(tmp_path):
    code, out = finish(sweep(tmp_path, "--only", "^w16-d1-simplified", "--config.train.lr=1e12",
                             "--config.train.steps=30"))
    assert code == 1, out
    assert "0 trained, 0 already done, 1 failed" in out and "rerun with --retry_failed" in out
    (rdir,) = (tmp_path / "runs").iterdir()
    status = store.read_json(rdir / "status.json")
    assert (status["status"] == "failed" and "non-finite" in status["error"]
            and "Traceback" in status["traceback"])


def test_dry_run_calibrates_an_unmeasured_shape_with_a_few_timed_steps(tmp_path):
    proc = sweep(tmp_path, "--dry_run", "--json", stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err
    records = json.loads(out)  # progress goes to stderr, stdout is the JSON alone
    assert len(records) == 2 and all(r["est_time_s"] > 0 for r in records)
    assert len(store.read_json(tmp_path / "calibration.json")) == 1  # one shape, measured once
    assert not (tmp_path / "runs").exists()
