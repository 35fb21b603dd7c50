"""Write the notebooks in this folder from their cell sources (stored without outputs).

Run `python notebooks/build_notebooks.py` after editing the cells below; the
.ipynb files are what users open and what tests/test_notebooks.py executes.
"""
import pathlib

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = pathlib.Path(__file__).parent

SETUP = '''\
import importlib.util
import os
import pathlib
import subprocess
import sys

# Where the project lives: this checkout when the notebook runs inside one, else a fresh clone.
REPO_URL = os.environ.get("SIMSCALE_REPO", "https://github.com/simscale/simscale.git")
here = pathlib.Path.cwd()
root = next((p for p in (here, *here.parents) if (p / "sweeps" / "grid.py").is_file()), None)
if root is None:
    subprocess.run(["git", "clone", "--depth", "1", REPO_URL, "simscale"], check=True)
    root = pathlib.Path("simscale").resolve()
if importlib.util.find_spec("simscale") is None:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", str(root)], check=True)
    sys.path.insert(0, str(root))
os.chdir(root)
print("simscale at", root)'''

RUN = '''\
def run(*args):
    """Run a simscale command in a subprocess, streaming its output (the notebook never holds the TPU)."""
    proc = subprocess.Popen([sys.executable, "-u", "-m", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        print(line, end="")
    if proc.wait():
        raise RuntimeError(f"{' '.join(args[:2])} exited with status {proc.returncode}")'''

colab = new_notebook(cells=[
    new_markdown_cell(
        "# simscale on a Colab TPU (or GPU, or CPU)\n\n"
        "Installs simscale, finds the accelerator, runs a preset sweep of LLaMA-style models on "
        "simplified and unrestricted text, then fits scaling laws and draws the figures.\n\n"
        "On Colab choose *Runtime > Change runtime type > TPU* (or a GPU). The `paper` preset trains "
        "36 models (1M-165M parameters); `cpu` is a small real grid; `smoke` takes seconds. "
        "Set `SIMSCALE_DATA` to a folder holding `vocab/AOChildes_word_frequency.csv` (and `blimp/`) "
        "to use the paper's vocabulary offline; the `paper` preset reads SlimPajama through "
        "Hugging Face `datasets` (`pip install simscale[hf]`)."),
    new_code_cell(SETUP),
    new_markdown_cell("## Devices\n\nEvery step that touches the accelerator runs in a subprocess, "
                      "so this notebook never locks the TPU."),
    new_code_cell(RUN + '''

run("simscale.devices")'''),
    new_markdown_cell("## Choose a preset and look at the grid first (no data needed)"),
    new_code_cell('''\
probe = subprocess.run([sys.executable, "-c", "import jax; print(jax.default_backend())"],
                       capture_output=True, text=True, check=True)
platform = probe.stdout.split()[-1]
PRESET = os.environ.get("SIMSCALE_PRESET") or ("paper" if platform in ("tpu", "gpu") else "smoke")
WORKDIR = os.environ.get("SIMSCALE_WORKDIR", f"workdir/{PRESET}")
CONFIG = f"sweeps/grid.py:preset={PRESET}"
print(f"platform {platform}: preset {PRESET}, workdir {WORKDIR}")
run("simscale.sweep", "--config", CONFIG, "--workdir", WORKDIR, "--dry_run", "--estimate", "none")'''),
    new_markdown_cell("## Run the sweep\n\nResumable: run the cell again after a disconnect and "
                      "finished runs are skipped, interrupted ones resume from their checkpoints."),
    new_code_cell('run("simscale.sweep", "--config", CONFIG, "--workdir", WORKDIR)'),
    new_markdown_cell("## Fit scaling laws and draw the figures"),
    new_code_cell('''\
from IPython.display import Image, Markdown, display
from simscale.analysis.report import report

out = pathlib.Path(WORKDIR) / "figures"
results = report([WORKDIR], out, bootstrap=int(os.environ.get("SIMSCALE_BOOTSTRAP", "200")))
display(Markdown((out / "summary.md").read_text()))
for png in sorted(out.glob("*.png")):
    display(Image(str(png)))'''),
])

laws = new_notebook(cells=[
    new_markdown_cell(
        "# Exploring scaling laws of a finished sweep\n\n"
        "Loads one or more sweep workdirs, shows the runs as a table, fits laws of your choice "
        "interactively and compares zero-shot scores of simplified- and unrestricted-data models."),
    new_code_cell(SETUP),
    new_code_cell(RUN + '''

WORKDIRS = os.environ.get("SIMSCALE_WORKDIRS", "workdir/cpu").split(",")  # comma-separated
if not any((pathlib.Path(w) / "runs").is_dir() for w in WORKDIRS):
    # Nothing trained there yet: make a small real sweep to explore (seconds on a CPU).
    WORKDIRS = WORKDIRS if "SIMSCALE_WORKDIRS" in os.environ else ["workdir/smoke"]
    run("simscale.sweep", "--config", "sweeps/grid.py:preset=smoke", "--workdir", WORKDIRS[0])'''),
    new_markdown_cell("## The runs"),
    new_code_cell('''\
from simscale.analysis.collect import collect, finished

runs, warnings = collect(WORKDIRS)
for w in warnings:
    print("warning:", w)
print(f"{'run':44s} {'variant':13s} {'N':>12s} {'D':>12s} {'C':>10s} {'loss':>7s}")
for r in runs:
    print(f"{r.run_id:44s} {str(r.variant):13s} {r.N:12,.0f} {r.D:12,.0f} {r.C():10.3g} {r.loss:7.4f}")'''),
    new_markdown_cell("## Fit a law\n\n`fit_law(law, x, loss)` with law `approach3` (inputs N, D) or "
                      "a one-variable law `power` (E + A X^-alpha) or `kaplan` ((X_c / X)^alpha) in N, D or "
                      "C; try other FLOPs conventions or subsets of runs."),
    new_code_cell('''\
from simscale.analysis.fit import fit_law

from simscale.analysis.points import curve_points

done = finished(runs)
p = curve_points(done)  # eval losses along every run's curve, past warmup and 10% of its tokens
try:  # L = E + A D^-alpha; the bootstrap resamples whole runs
    fit = fit_law("power", p["D"][:, None], p["loss"], inputs=("D",), bootstrap=100, groups=p["run"])
    print(fit.params, fit.ci)
except ValueError as e:  # too few points or runs for the law
    print(e)'''),
    new_markdown_cell("## Zero-shot: simplified vs unrestricted data"),
    new_code_cell('''\
from simscale.analysis.report import run_scores

for task_variant in ("standard", "simplified"):
    scores = run_scores(runs, task_variant)
    for r in runs:
        if r.run_id in scores:
            print(f"{task_variant:10s} {r.run_id:44s} {str(r.variant):13s} mean acc \
{scores[r.run_id]:.3f}")'''),
    new_markdown_cell("## All figures"),
    new_code_cell('''\
from IPython.display import Image, display
from simscale.analysis.report import report

out = pathlib.Path(WORKDIRS[0]) / "figures"
report(WORKDIRS, out, bootstrap=100, log=lambda *_: None)
for png in sorted(out.glob("*.png")):
    display(Image(str(png)))'''),
])

for name, nb in (("colab_tpu_sweep.ipynb", colab), ("scaling_laws.ipynb", laws)):
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, HERE / name)
    print("wrote", HERE / name)
