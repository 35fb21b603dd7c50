"""Fault injection with the real command lines in subprocesses (smoke preset): every bad input
ends with one `error:` line and exit 2 before anything is written."""
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SMOKE = "--config=sweeps/grid.py:preset=smoke"


def cli(module, *args, timeout=120):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def error_line(proc) -> str:
    """The one `error:` line of a refused command (asserting exit 2 and no traceback)."""
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


@pytest.mark.parametrize("module,extra", [
    ("simscale.sweep", ["--workdir"]),
    ("simscale.train", ["--workdir"]),
    ("simscale.data", ["prepare", "--data_dir"]),
], ids=["sweep", "train", "prepare"])
def test_unknown_config_key_is_refused_before_anything_is_written(tmp_path, module, extra):
    out = tmp_path / "w"
    proc = cli(module, SMOKE, *extra, str(out), "--config.train.lr_flor=0.5")
    assert error_line(proc) == "error: unknown config key train.lr_flor (did you mean train.lr_floor?)"
    assert not out.exists()


def test_unknown_sweep_axis_is_refused(tmp_path):
    proc = cli("simscale.sweep", SMOKE, "--workdir", str(tmp_path / "w"), "--config.sweep.axes.widht=(16,)")
    assert error_line(proc) == "error: unknown config key sweep.axes.widht (did you mean sweep.axes.width?)"
    assert not (tmp_path / "w").exists()
