"""The prepared GPU check: `python -m simscale.gpu_check --tiny` end to end on this CPU (every stage, the
JSON's structure and values), and the stage runner's failure handling."""
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from simscale.gpu_check import __main__ as gpu_check

REPO = Path(__file__).resolve().parents[1]
STAGES = ["train", "shapes", "attention", "agreement", "sweep"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    proc = subprocess.run([sys.executable, "-m", "simscale.gpu_check", "--tiny", "--out", str(out)],
                          env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                          timeout=600)
    return proc, json.loads((out / "gpu_check.json").read_text()), out


def test_every_stage_passes_and_the_table_is_printed_and_written(tiny):
    proc, results, out = tiny
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert results["mode"] == "tiny" and results["failed"] == [] and list(results["stages"]) == STAGES
    for name, rec in results["stages"].items():
        assert rec["status"] == "ok" and 0 < rec["time_s"] <= rec["budget_s"], name
    table = (out / "gpu_check.md").read_text()
    assert table in proc.stdout
    assert [line.split(" | ")[0].lstrip("| ") for line in table.splitlines()[6:11]] == STAGES


def chinchilla_w32d1() -> float:
    """Chinchilla appendix F by hand for the smoke preset's w32d1 (V 256, D 32, 1 layer, 2 heads of 16,
    F 128, T 32): embeddings 2TVD, q/k/v 2TD(H+2K)E, logits and values 2 x 2T^2HE, softmax 3HT^2,
    output 2THED, SwiGLU 2T3DF, head 2TDV; training = 3 x forward, per token."""
    T, V, D, H, E, F = 32, 256, 32, 2, 16, 128
    layer = (2 * T * D * (3 * H) * E + 2 * 2 * T * T * H * E + 3 * H * T * T + 2 * T * H * E * D
             + 2 * T * 3 * D * F)
    return 3 * (2 * T * V * D + layer + 2 * T * D * V) / T


def test_train_stage_reports_speed_from_the_flop_counter_and_omits_mfu_on_cpu(tiny):
    train = tiny[1]["stages"]["train"]
    assert (train["name"], train["batch"], train["seq_len"], train["compute_dtype"]) == ("32x1", 8, 32,
                                                                                         "float32")
    assert train["tokens_per_s"] > 0
    assert train["tokens_per_s"] == pytest.approx(8 * 32 / train["step_s"])
    assert train["flops_per_token"]["chinchilla"] == pytest.approx(chinchilla_w32d1())  # 209,472
    assert train["mfu"] is None
    assert train["mfu_note"].startswith("no dense bf16 peak known for device kind 'cpu'")
    assert train["first_loss"] == pytest.approx(math.log(256), abs=0.05) and math.isfinite(train["last_loss"])
    assert train["compiled_memory"]["temp"] > 0  # XLA's figures exist on every backend
    assert train["device_memory"] is None and "keeps no allocator statistics" in train["device_memory_note"]


def test_shapes_attention_agreement_and_sweep_stages(tiny):
    stages = tiny[1]["stages"]
    shapes = stages["shapes"]
    # cheapest first
    assert [s["name"] for s in shapes["shapes"]] == ["16x1", "32x1"] and shapes["skipped"] == []
    assert all(s["tokens_per_s"] > 0 and math.isfinite(s["last_loss"]) for s in shapes["shapes"])
    attention = stages["attention"]
    assert attention["xla"]["supported"] and attention["xla"]["step_s"] > 0
    assert attention["cudnn"] == {"supported": False,
                                  "reason": "model.attention=cudnn is not supported here: backend cpu; use "
                                            "auto or xla"}
    agreement = stages["agreement"]
    assert agreement["passed"] and [c["passed"] for c in agreement["comparisons"]] == [True, True]
    assert {k: len(v) for k, v in agreement["losses"].items()} == {"generic_bf16": 3, "generic_f32": 3,
                                                                   "cpu_kernels_f32": 3}
    assert all(math.isfinite(x) for v in agreement["losses"].values() for x in v)
    assert agreement["reference_loss_drop"] > 0.05  # the three steps moved the losses compared
    bf16, ref = agreement["numerics"]["generic_bf16"], agreement["numerics"]["cpu_kernels_f32"]
    assert (bf16["kernels"], bf16["compute_dtype"], ref["kernels"], ref["compute_dtype"]) == \
        ("generic", "bfloat16", "cpu", "float32")
    # bfloat16 rounds the matmul inputs: the losses differ, but by far less than the bound
    assert 0 < agreement["comparisons"][0]["max_rel_diff"] < agreement["comparisons"][0]["rtol"] == 2**-8
    sweep = stages["sweep"]
    assert sweep["returncode"] == 0 and len(sweep["runs"]) == 2
    assert all(r["status"] == "done" and r["steps"] == 6 and math.isfinite(r["final_loss"])
               for r in sweep["runs"])


def test_a_failing_or_overrunning_stage_is_recorded_and_the_check_goes_on(tmp_path, monkeypatch):
    def boom(plan, ctx):
        raise RuntimeError("no cuDNN today")

    def slow(plan, ctx):
        time.sleep(30)

    def fine(plan, ctx):
        return {"value": 1}

    rec = gpu_check.run_stage("slow", slow, None, gpu_check.stages.Context(device={}, out=tmp_path), 0.5)
    assert (rec["status"] == "failed" and rec["error"] == "stopped at its budget of 0.5 s"
            and rec["time_s"] < 5)
    monkeypatch.setattr(gpu_check.stages, "STAGES", {"train": boom, "shapes": fine})
    monkeypatch.setattr("simscale.compile_cache.enable", lambda out: None)
    code = gpu_check.main(["--tiny", "--out", str(tmp_path), "--stages", "train,shapes"])
    results = json.loads((tmp_path / "gpu_check.json").read_text())
    assert code == 1 and results["failed"] == ["train"]
    assert results["stages"]["train"]["error"] == "RuntimeError: no cuDNN today"
    assert results["stages"]["shapes"]["status"] == "ok" and results["stages"]["shapes"]["value"] == 1
    assert "| train | failed |" in (tmp_path / "gpu_check.md").read_text()
