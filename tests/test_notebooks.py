"""Both notebooks run top to bottom on CPU with the smoke preset and are stored without outputs; the
Colab notebook installs from where it was opened, and its sweep cell, run again after its sweep was
killed, finishes every run exactly once."""
import os
import pathlib
import signal
import subprocess
import threading
import time

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from simscale import runlock
from simscale.sweep import store

NOTEBOOKS = pathlib.Path(__file__).parent.parent / "notebooks"
ROOT = NOTEBOOKS.parent


def read(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    assert all(not c.get("outputs") and not c.get("execution_count")
               for c in nb.cells if c.cell_type == "code")
    return nb


def client(nb, cwd=NOTEBOOKS):
    return NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(cwd)}})


def text_of(nb) -> str:
    return "\n".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))


@pytest.fixture
def smoke_env(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMSCALE_PRESET", "smoke")
    monkeypatch.setenv("SIMSCALE_SAVE_TO", str(tmp_path))
    monkeypatch.setenv("SIMSCALE_WORKDIRS", str(tmp_path / "smoke"))
    monkeypatch.setenv("SIMSCALE_BOOTSTRAP", "20")
    return tmp_path / "smoke"


def test_the_scaling_laws_notebook_runs_top_to_bottom(smoke_env):
    nb = read("scaling_laws.ipynb")
    client(nb).execute()
    text = text_of(nb)
    assert "w16-d1-simplified" in text and "w32-d1-unrestricted" in text  # the smoke grid's runs
    assert len(list((smoke_env / "runs").glob("*/result.json"))) == 4
    assert not [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]


def _setup_cells(nb):
    """The settings and install cells (the code cells before the one that defines run())."""
    code = [c for c in nb.cells if c.cell_type == "code"]
    return code[:next(i for i, c in enumerate(code) if "def run(" in c.source)]


def _execute(cells, cwd) -> str:
    nb = nbformat.v4.new_notebook(cells=cells)
    client(nb, cwd).execute()
    return text_of(nb)


def test_outside_a_checkout_without_a_source_the_notebook_says_what_to_set(tmp_path, monkeypatch):
    monkeypatch.delenv("SIMSCALE_SOURCE", raising=False)
    with pytest.raises(CellExecutionError, match="set SIMSCALE_SOURCE in the first cell"):
        _execute(_setup_cells(read("colab_tpu_sweep.ipynb")), tmp_path)


def test_outside_a_checkout_the_notebook_uses_a_folder_or_clones_a_git_url(tmp_path, monkeypatch):
    cells = _setup_cells(read("colab_tpu_sweep.ipynb"))
    monkeypatch.setenv("SIMSCALE_SOURCE", str(ROOT))
    assert f"simscale at {ROOT}" in _execute(cells, tmp_path)
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    branch = subprocess.run(["git", "-C", str(ROOT), "branch", "--show-current"], capture_output=True,
                            text=True, check=True).stdout.strip()
    monkeypatch.setenv("SIMSCALE_SOURCE", f"git+file://{ROOT}@{branch}")
    assert f"simscale at {tmp_path / 'simscale'}" in _execute(cells, tmp_path)
    cloned = subprocess.run(["git", "-C", str(tmp_path / "simscale"), "rev-parse", "HEAD"],
                            capture_output=True, text=True, check=True).stdout.strip()
    assert cloned == head and (tmp_path / "simscale" / "sweeps" / "grid.py").is_file()


def _kill_after_a_checkpoint(runs: pathlib.Path, killed: dict, deadline_s: float = 300) -> None:
    """SIGKILL the sweep (the lock holder of a run) once a run has a checkpoint and no result yet."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        for rdir in sorted(runs.glob("*")) if runs.is_dir() else []:
            ckpts = rdir / "checkpoints"
            saved = ckpts.is_dir() and any(p.name.isdigit() for p in ckpts.iterdir())
            holder = runlock.holder(rdir)
            if saved and holder and not (rdir / "result.json").exists():
                os.kill(holder["pid"], signal.SIGKILL)
                killed.update(run=rdir.name, pid=holder["pid"])
                return
        time.sleep(0.02)


def test_the_colab_notebook_runs_top_to_bottom_and_its_sweep_cell_resumes_a_killed_sweep(smoke_env):
    """Every cell in order, as on a CPU with the smoke preset; the sweep's subprocess is killed (as a
    disconnect does) once a run has a checkpoint, and the sweep cell is run again before the rest:
    every run is then done exactly once, the killed one resumed from its checkpoint."""
    nb = read("colab_tpu_sweep.ipynb")
    sweep = next(i for i, c in enumerate(nb.cells) if c.source.startswith('run("simscale.sweep", "--config", '
                                                                         'CONFIG, "--workdir", WORKDIR)'))
    nbc = client(nb)
    with nbc.setup_kernel():
        for i, cell in enumerate(nb.cells[:sweep]):
            nbc.execute_cell(cell, i)
        killed = {}
        killer = threading.Thread(target=_kill_after_a_checkpoint, args=(smoke_env / "runs", killed))
        killer.start()
        with pytest.raises(CellExecutionError, match="exited with status -9"):
            nbc.execute_cell(nb.cells[sweep], sweep)
        killer.join()
        assert killed, "the sweep finished before a checkpoint was seen: nothing was interrupted"
        for i, cell in enumerate(nb.cells[sweep:], sweep):  # the user runs the sweep cell again, and on
            nbc.execute_cell(cell, i)
    runs = sorted((smoke_env / "runs").glob("*"))
    assert len(runs) == 4 and all((r / "result.json").is_file() for r in runs)
    for rdir in runs:
        events = [(e["event"], e.get("step")) for e in store.attempts(rdir)]
        if rdir.name == killed["run"]:  # started, killed after a checkpoint, resumed from it, done
            assert [e for e, _ in events] == ["start", "start", "done"] and events[1][1] > 0, events
        else:  # done before the kill (and skipped after it), or started only after it
            assert [e for e, _ in events] == ["start", "done"], (rdir.name, events)
    text = text_of(nb)
    assert "w16-d1-simplified" in text and "w32-d1-unrestricted" in text  # the smoke grid's runs
    assert "backend cpu" in text and "preset smoke" in text
    assert "calibrated" in text  # the dry run's time estimate, measured on this machine
    assert "already done" in text and (smoke_env / "figures" / "summary.md").is_file()
    assert "no zero-shot scores" in text  # smoke runs have no tasks: said, not left blank
    assert not [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
