"""Both notebooks run top to bottom on CPU with the smoke preset, and are stored without outputs."""
import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = pathlib.Path(__file__).parent.parent / "notebooks"


@pytest.mark.parametrize("name", ["colab_tpu_sweep.ipynb", "scaling_laws.ipynb"])
def test_notebook_runs_top_to_bottom(name, tmp_path, monkeypatch):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    assert all(not c.get("outputs") and not c.get("execution_count")
               for c in nb.cells if c.cell_type == "code")
    workdir = tmp_path / "smoke"
    monkeypatch.setenv("SIMSCALE_PRESET", "smoke")
    monkeypatch.setenv("SIMSCALE_WORKDIR", str(workdir))
    monkeypatch.setenv("SIMSCALE_WORKDIRS", str(workdir))
    monkeypatch.setenv("SIMSCALE_BOOTSTRAP", "20")
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    text = "\n".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert "w16-d1-simplified" in text and "w32-d1-unrestricted" in text  # the smoke grid's runs
    assert len(list((workdir / "runs").glob("*/result.json"))) == 4
    if name == "colab_tpu_sweep.ipynb":
        assert "backend cpu" in text
        assert (workdir / "figures" / "summary.md").is_file()
    assert not [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
