"""Shared test fixtures: the reference data folder and small configs; `preset` (import it:
`from conftest import preset`) loads a preset of sweeps/grid.py as the CLIs do."""
import importlib.util
import os
import pathlib

import pytest

from simscale import cpu_runtime


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    """$SIMSCALE_DATA (../shared/data in CI); tests needing it skip without it."""
    path = os.environ.get("SIMSCALE_DATA")
    if not path or not pathlib.Path(path).is_dir():
        pytest.skip("reference data absent: set SIMSCALE_DATA to the shared/data folder")
    return pathlib.Path(path)


ROOT = pathlib.Path(__file__).resolve().parents[1]


def preset(name):
    spec = importlib.util.spec_from_file_location("sweeps_grid", ROOT / "sweeps" / "grid.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(f"preset={name}")


cpu_runtime.configure()  # as the entry points do, before any test computes
