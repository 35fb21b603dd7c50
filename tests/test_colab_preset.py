"""The `colab` preset: the paper's recipe at widths up to 512, sized by a token target for one Colab
runtime; its dry run prints sizes, FLOPs and per-device time estimates, its target stops the stream."""
import json
import pathlib
import subprocess
import sys

import pytest

from conftest import preset
from simscale.config import ConfigError
from simscale.data import prepare
from test_data_prepare import WORDS, _corpus
from test_sweep_estimate import paper_params

ROOT = pathlib.Path(__file__).resolve().parents[1]


def sweep(*args):
    return subprocess.run([sys.executable, "-m", "simscale.sweep", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_colab_dry_run_sizes_30_runs_and_estimates_each_device_class_from_flops(tmp_path):
    out = sweep("--config", "sweeps/grid.py:preset=colab", "--workdir", str(tmp_path), "--dry_run", "--json",
                "--estimate", "none", "--device", "all")
    assert out.returncode == 0, out.stderr
    runs = json.loads(out.stdout)
    assert len(runs) == 30 and {(r["width"], r["depth"]) for r in runs} == {
        (w, d) for w in (32, 64, 128, 256, 512) for d in (2, 4, 8)}
    assert {r["variant"] for r in runs} == {"simplified", "unrestricted"}
    assert {r["tokens"] for r in runs} == {40_000_000}
    big = next(r for r in runs if (r["width"], r["depth"]) == (512, 8))
    assert big["params_total"] == paper_params(512, 8) == 48_923_136
    # PaLM appendix B by hand: 6 x (every parameter but the input embedding: 15000 x 512) + 12 L D T.
    palm = 6 * (48_923_136 - 15000 * 512) + 12 * 8 * 512 * 128
    peaks = {"tpu-v5e-1": 197e12, "tpu-v2-8": 8 * 22.5e12, "a100": 312e12, "t4": 8.1e12}  # vendor specs
    for device, peak in peaks.items():
        assert big["est_device_s"][device] == pytest.approx(40e6 * palm / (0.25 * peak), rel=1e-9)
    # Sized for one runtime: training all 30 runs fits in 40 minutes on a v5e-1, a v2-8 and an A100.
    for device in ("tpu-v5e-1", "tpu-v2-8", "a100"):
        assert sum(r["est_device_s"][device] for r in runs) < 40 * 60
    table = sweep("--config", "sweeps/grid.py:preset=colab", "--workdir", str(tmp_path), "--dry_run",
                  "--estimate", "none", "--device", "tpu-v5e-1")
    assert table.returncode == 0 and "at tpu-v5e-1" in table.stdout and "assumed MFU of 25%" in table.stdout


def test_colab_preset_is_the_paper_recipe_with_a_warmup_of_a_tenth_of_its_steps():
    paper, cfg = preset("paper"), preset("colab")
    assert cfg.model == paper.model
    cadence = ("warmup_steps", "eval_every", "checkpoint_every")
    assert {k: v for k, v in cfg.train.items() if k not in cadence} == {
        k: v for k, v in paper.train.items() if k not in cadence}
    assert 40_000_000 // (512 * 128) == 610 and cfg.train.warmup_steps == 61
    assert (cfg.data.source, cfg.data.hf.name, cfg.data.max_train_tokens) == (
        "hf", "roneneldan/TinyStories", 40_000_000)
    assert preset("colab,text=slimpajama,tokens=5000000").data.hf.name == "cerebras/SlimPajama-627B"


@pytest.mark.parametrize("option, message", [
    ("text=c4", "text='c4' is not one of tinystories, slimpajama"),
    ("tokens=4e7", "tokens='4e7' must be a positive whole number"),
])
def test_a_bad_colab_option_is_one_message(option, message):
    with pytest.raises(ConfigError, match=message):
        preset(f"colab,{option}")


def test_an_unknown_device_class_is_one_error_line(tmp_path):
    out = sweep("--config", "sweeps/grid.py:preset=colab", "--workdir", str(tmp_path), "--dry_run",
                "--device", "tpu-v9")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "error: flag --device=['tpu-v9']: --device: choose from tpu-v5e-1, tpu-v2-8, a100, t4 or all"]


def test_the_colab_token_target_stops_a_local_files_source_early(tmp_path):
    """preset=colab,tokens=4096 on a local file: both variants stop reading with 4,096 training tokens."""
    corpus = _corpus(tmp_path / "c.txt", n_docs=3000)
    (tmp_path / "vocab.txt").write_text("\n".join(WORDS))
    cfg = preset("colab,tokens=4096")
    cfg.data.update(source="files", vocab=str(tmp_path / "vocab.txt"), cache_dir=str(tmp_path / "cache"),
                    workers=1, validation_fraction=0.1)  # 32 rows: every 10th held out, not every 333rd
    cfg.data.files.paths = str(corpus)
    cfg.model.vocab_size = 300  # a small tokenizer for a small test
    for variant in ("simplified", "unrestricted"):
        cfg.data.variant = variant
        p = prepare(cfg)
        assert p.train_tokens == 4096 and p.stats["train_rows"] == 32, variant
        assert p.stats["documents_in"] < 3000 / 4, variant  # stopped early: most of the file was never read


def test_the_notebook_names_this_machines_device_class_from_jax_device_kinds():
    from simscale.sweep.estimate import device_class

    assert device_class("TPU v5 lite", 1) == "tpu-v5e-1" and device_class("TPU v2", 8) == "tpu-v2-8"
    assert device_class("NVIDIA A100-SXM4-40GB", 1) == "a100" and device_class("Tesla T4", 1) == "t4"
    assert device_class("TPU v2", 1) is None and device_class("cpu", 1) is None
