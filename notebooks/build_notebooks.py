"""Write the notebooks in this folder from their cell sources (stored without outputs).

Run `python notebooks/build_notebooks.py` after editing the cells below; the
.ipynb files are what users open and what tests/test_notebooks.py executes.
"""
import pathlib

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = pathlib.Path(__file__).parent

SOURCE = '''\
# ===== Settings: edit this cell, then Runtime > Run all =====================================
import os

# Where simscale comes from when this notebook is not opened inside a checkout of it: a folder, or a
# pip-style git URL, e.g. "git+https://github.com/OWNER/simscale.git@main". There is no default.
SIMSCALE_SOURCE = os.environ.get("SIMSCALE_SOURCE", "")'''

SETTINGS = SOURCE + '''
# Where runs, checkpoints and prepared data go. On Colab mount Google Drive and point this there, e.g.
#   from google.colab import drive; drive.mount("/content/drive")
#   SAVE_TO = "/content/drive/MyDrive/simscale"
# and after a disconnect run all cells again: finished runs are skipped, the interrupted one resumes.
SAVE_TO = os.environ.get("SIMSCALE_SAVE_TO", "workdir")
# The sweep preset of sweeps/grid.py, with its options: "" = colab on a TPU or GPU, smoke on a CPU;
# e.g. "colab,tokens=5000000" (a T4), "colab,text=slimpajama", "cpu", "paper".
PRESET = os.environ.get("SIMSCALE_PRESET", "")'''

SETUP = '''\
import glob
import importlib.util
import pathlib
import re
import shutil
import subprocess
import sys


def simscale_root() -> pathlib.Path:
    """The checkout this notebook runs in, else SIMSCALE_SOURCE (a folder, or a git URL cloned here)."""
    here = pathlib.Path.cwd()
    found = next((p for p in (here, *here.parents) if (p / "sweeps" / "grid.py").is_file()), None)
    if found:
        return found
    if not SIMSCALE_SOURCE:
        raise RuntimeError("This notebook is not inside a simscale checkout: set SIMSCALE_SOURCE in the "
                           "first cell to a simscale folder or a git URL (git+https://...), then run it "
                           "again.")
    url = re.fullmatch(r"git\\+(.+?)(?:@([^/@]+))?", SIMSCALE_SOURCE)
    if not url:
        folder = pathlib.Path(SIMSCALE_SOURCE).expanduser().resolve()
        if not (folder / "sweeps" / "grid.py").is_file():
            raise RuntimeError(f"SIMSCALE_SOURCE={SIMSCALE_SOURCE!r} is neither a simscale folder (with "
                               "sweeps/grid.py) nor a git+ URL: fix it in the first cell.")
        return folder
    clone = pathlib.Path("simscale").resolve()
    if not clone.is_dir():
        branch = ["--branch", url.group(2)] if url.group(2) else []
        subprocess.run(["git", "clone", "--depth", "1", *branch, url.group(1), str(clone)], check=True)
    return clone


def jax_extra() -> list[str]:
    """jax with this runtime's backend (TPU chips or NVIDIA GPUs), so that installing simscale's jax
    versions keeps the accelerator; looked up before jax is imported."""
    if glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*") or os.environ.get("COLAB_TPU_ADDR"):
        return ["jax[tpu]"]
    return ["jax[cuda12]"] if shutil.which("nvidia-smi") else []


root = simscale_root()
if importlib.util.find_spec("simscale") is None:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", f"{root}[hf]", *jax_extra()],
                   check=True)
sys.path.insert(0, str(root))  # this checkout's simscale, whatever else is installed
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
        "Installs simscale, finds the accelerator, estimates and runs a sweep of LLaMA-style models on "
        "simplified and unrestricted text, then fits scaling laws, draws the figures and compares the "
        "models zero-shot.\n\n"
        "On Colab choose *Runtime > Change runtime type > TPU* (or a GPU), set the first cell, then "
        "*Run all*. On a TPU or GPU the default is the `colab` preset: 30 models (hidden 32-512 x "
        "layers 2/4/8 x both data variants, 1M-49M parameters), each one epoch of 40M tokens of "
        "TinyStories streamed through Hugging Face `datasets` and simplified with the paper's "
        "AO-CHILDES vocabulary, for one runtime on a TPU v5e-1, a v2-8 or an A100 (the dry run below "
        "estimates it on yours; on a T4 set `colab,tokens=5000000`). On a CPU it is `smoke` "
        "(seconds)."),
    new_code_cell(SETTINGS),
    new_markdown_cell("## Install\n\nFrom the checkout this notebook was opened from, else from "
                      "`SIMSCALE_SOURCE`."),
    new_code_cell(SETUP),
    new_markdown_cell("## Devices\n\nEvery step that touches the accelerator runs in a subprocess, "
                      "so this notebook never locks the TPU."),
    new_code_cell("from simscale.sweep.estimate import device_class\n\n\n" + RUN + '''

run("simscale.devices")
probe = subprocess.run([sys.executable, "-c", "import jax; d = jax.devices(); "
                        "print(jax.default_backend(), len(d), d[0].device_kind, sep='|')"],
                       capture_output=True, text=True, check=True)
platform, n_devices, kind = probe.stdout.strip().splitlines()[-1].split("|")
DEVICE_CLASS = device_class(kind, int(n_devices))
print(f"platform {platform}: {n_devices} x {kind}", f"(class {DEVICE_CLASS})" if DEVICE_CLASS else "")'''),
    new_markdown_cell("## The grid and its cost on this device, before training\n\n"
                      "Sizes and FLOPs of every run, a time estimate measured here (a few timed steps "
                      "of the cheapest shapes, the rest scaled by FLOPs) and, on a known device class, "
                      "the estimate from FLOPs at an assumed MFU."),
    new_code_cell('''\
PRESET = PRESET or ("colab" if platform in ("tpu", "gpu") else "smoke")
SAVE_TO = str(pathlib.Path(SAVE_TO).expanduser().resolve())
os.environ.setdefault("SIMSCALE_CACHE", f"{SAVE_TO}/cache")  # prepared data survives a disconnect too
CONFIG = f"sweeps/grid.py:preset={PRESET}"
WORKDIR = f"{SAVE_TO}/{PRESET.replace(',', '-').replace('=', '')}"
print(f"preset {PRESET}, workdir {WORKDIR}")
run("simscale.sweep", "--config", CONFIG, "--workdir", WORKDIR, "--dry_run",
    *(["--device", DEVICE_CLASS] if DEVICE_CLASS else []))'''),
    new_markdown_cell("## Run the sweep\n\nResumable: after a disconnect run all cells again; finished "
                      "runs are skipped and an interrupted one resumes from its last checkpoint in "
                      "`SAVE_TO`."),
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
    new_markdown_cell("## Zero-shot: simplified- vs unrestricted-data models\n\n"
                      "Mean accuracy of each model with its 95% interval, on standard and simplified "
                      "tasks, and the size multiplier (how many times more parameters unrestricted-data "
                      "models need for the same accuracy)."),
    new_code_cell('''\
from simscale.analysis.report import zero_shot_table

print(zero_shot_table(results["zero_shot"]))'''),
])

laws = new_notebook(cells=[
    new_markdown_cell(
        "# Exploring scaling laws of a finished sweep\n\n"
        "Loads one or more sweep workdirs, shows the runs as a table, fits laws of your choice "
        "interactively and compares zero-shot scores of simplified- and unrestricted-data models."),
    new_code_cell(SOURCE),
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
