"""Shared test fixtures: the reference data folder and small configs."""
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


cpu_runtime.configure()  # as the entry points do, before any test computes
