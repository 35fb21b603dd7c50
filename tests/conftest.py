"""Shared test fixtures: the reference data folder and small configs; `preset` (import it:
`from conftest import preset`) loads a preset of sweeps/grid.py as the CLIs do, and
`harness_task` writes a local lm-eval multiple-choice task; `serve` serves a folder on 127.0.0.1."""
import contextlib
import functools
import http.server
import importlib.util
import json
import os
import pathlib
import threading

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


@contextlib.contextmanager
def serve(folder):
    """An HTTP server on 127.0.0.1 serving `folder` (the download tests' stand-in for a registry or a
    dataset's host); yields (base URL ending in '/', the list of paths requested)."""
    requested = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            requested.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(Handler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/", requested
    finally:
        server.shutdown()
        server.server_close()


def preset(name):
    spec = importlib.util.spec_from_file_location("sweeps_grid", ROOT / "sweeps" / "grid.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(f"preset={name}")


HARNESS_TASK_YAML = """task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {path}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{context}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{gold}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
"""


def harness_task(folder: pathlib.Path, name: str, rows: list[dict]) -> pathlib.Path:
    """folder/NAME.jsonl with `rows` ({context, choices, gold}) and folder/NAME.yaml, an lm-eval task of
    that name on it (load it with TaskManager(include_path=folder)); returns the jsonl's path."""
    data = folder / f"{name}.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / f"{name}.yaml").write_text(HARNESS_TASK_YAML.format(name=name, path=data))
    return data


cpu_runtime.configure()  # as the entry points do, before any test computes
# Tests never download BLiMP: a test that wants the download serves the files itself (test_online_data.py).
os.environ.setdefault("SIMSCALE_BLIMP_URL", "http://127.0.0.1:9/")
