"""Dry-run estimates: tokens of one-epoch runs, and calibrations at a reduced batch within a budget
(train() replaced by a recorder: these tests check what is timed, not how long it takes)."""
import json
import pathlib

import pytest

from conftest import preset
from simscale.sweep import estimate, store

ROOT = pathlib.Path(__file__).resolve().parents[1]


def expand(cfg):
    from simscale.sweep import grid

    return grid.expand(cfg)


def paper_params(hidden, layers, vocab=15000):
    """Closed form for 8 heads, F = 4D, untied: 2VD + L(16D^2 + 2D) + D (as tests/test_model.py)."""
    return 2 * vocab * hidden + layers * (16 * hidden**2 + 2 * hidden) + hidden


def test_one_epoch_runs_are_capped_by_max_train_tokens():
    epoch = 2_100_000_000  # sweep.epoch_tokens: the data is not prepared
    cpu = expand(preset("cpu"))
    assert {estimate.sizes(r, epoch)["tokens"] for r in cpu} == {200_000}  # data.max_train_tokens=200_000
    assert not any(estimate.sizes(r, epoch)["tokens_exact"] for r in cpu)
    assert estimate.sizes(cpu[0], 150_000)["tokens"] == 150_000  # an epoch smaller than the cap
    uncapped = preset("cpu")
    uncapped.data.max_train_tokens = 0
    assert estimate.sizes(expand(uncapped)[0], epoch)["tokens"] == epoch


@pytest.fixture
def recorded_train(monkeypatch):
    """train() as a recorder: one metrics line per step at 1000 tokens/s."""
    calls = []

    def fake_train(cfg, run_dir):
        calls.append(dict(hidden=cfg.model.hidden, layers=cfg.model.layers, batch=cfg.train.batch_size,
                          steps=cfg.train.steps, source=cfg.data.source))
        lines = [json.dumps(dict(step=s + 1, tokens_per_s=1000.0)) for s in range(cfg.train.steps)]
        (pathlib.Path(run_dir) / "metrics.jsonl").write_text("\n".join(lines) + "\n")

    import simscale.train

    monkeypatch.setattr(simscale.train, "train", fake_train)
    return calls


def test_calibration_times_a_reduced_batch(recorded_train, tmp_path):
    runs = expand(preset("paper"))  # 18 shapes x 2 variants, 512 sequences per step
    speeds = estimate.throughputs(runs, tmp_path, calibrate_steps=3, batch=8)
    assert len(recorded_train) == 18  # each shape once, the variants share it
    assert all(c["batch"] == 8 and c["steps"] == 4 and c["source"] == "synthetic" for c in recorded_train)
    assert set(speeds.values()) == {(1000.0, "calibrated")}
    saved = store.read_json(tmp_path / "calibration.json")
    assert {json.dumps(v, sort_keys=True) for v in saved.values()} == \
        {json.dumps(dict(batch_size=8, timed_steps=3, tokens_per_s=1000.0), sort_keys=True)}
    again = estimate.throughputs(runs, tmp_path, calibrate_steps=3, batch=8)  # read back, not re-measured
    assert len(recorded_train) == 18 and again == speeds


def test_shapes_past_the_budget_are_scaled_by_flops(recorded_train, tmp_path):
    cfg = preset("paper")
    cfg.train.flops_convention = "6n"  # FLOPs per token = 6 N: a closed form to check against
    runs = expand(cfg)
    speeds = estimate.throughputs(runs, tmp_path, calibrate_steps=3, batch=8, budget_s=0)
    assert [(c["hidden"], c["layers"]) for c in recorded_train] == [(32, 2)]  # the cheapest shape only
    by_shape = {(r.cfg.model.hidden, r.cfg.model.layers): speeds[estimate.shape_key(r.cfg)] for r in runs}
    assert by_shape[32, 2] == (1000.0, "calibrated")
    speed, method = by_shape[1024, 8]
    assert method == "FLOPs, as w32d2"
    assert speed == pytest.approx(1000.0 * paper_params(32, 2) / paper_params(1024, 8))
    assert len({m for _, m in by_shape.values()}) == 2


def test_calibration_batch_is_rounded_to_the_devices_and_capped_by_the_run():
    run = expand(preset("paper"))[0]
    assert estimate.calibration_batch(run, 8, 1) == 8
    assert estimate.calibration_batch(run, 6, 4) == 8
    assert estimate.calibration_batch(run, 0, 1) == 512
    assert estimate.calibration_batch(run, 4096, 1) == 512
