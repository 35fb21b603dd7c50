"""Dry-run estimates: tokens of one-epoch runs, and calibrations at a reduced batch within a budget
(train() replaced by a recorder: these tests check what is timed, not how long it takes)."""
import json
import pathlib

import pytest

from conftest import preset
from simscale.config import program_key
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


def record_train(monkeypatch, speed=lambda batch: 1000.0):
    """train() as a recorder: one metrics line per step at speed(batch) tokens/s."""
    calls = []

    def fake_train(cfg, run_dir):
        calls.append(dict(hidden=cfg.model.hidden, layers=cfg.model.layers, batch=cfg.train.batch_size,
                          steps=cfg.train.steps, source=cfg.data.source))
        lines = [json.dumps(dict(step=s + 1, tokens_per_s=speed(cfg.train.batch_size)))
                 for s in range(cfg.train.steps)]
        (pathlib.Path(run_dir) / "metrics.jsonl").write_text("\n".join(lines) + "\n")

    import simscale.train

    monkeypatch.setattr(simscale.train, "train", fake_train)
    return calls


@pytest.fixture
def recorded_train(monkeypatch):
    return record_train(monkeypatch)


def test_calibration_times_a_reduced_batch(recorded_train, tmp_path):
    runs = expand(preset("paper"))  # 18 shapes x 2 variants, 512 sequences per step
    speeds = estimate.throughputs(runs, tmp_path, calibrate_steps=3, batch=8)
    # each shape once (the variants share it); the first, w32d2, again at its full batch
    assert len(recorded_train) == 19 and recorded_train[1] == dict(hidden=32, layers=2, batch=512, steps=2,
                                                                   source="synthetic")
    reduced = recorded_train[:1] + recorded_train[2:]
    assert all(c["batch"] == 8 and c["steps"] == 4 and c["source"] == "synthetic" for c in reduced)
    assert len({(c["hidden"], c["layers"]) for c in reduced}) == 18
    assert sorted(set(speeds.values())) == [(1000.0, "calibrated"), (1000.0, "calibrated (full batch)")]
    saved = store.read_json(tmp_path / "calibration.json")
    assert {json.dumps({k: v for k, v in r.items() if k != "shape"}, sort_keys=True)
            for r in saved.values()} == {
        json.dumps(dict(batch_size=8, timed_steps=3, tokens_per_s=1000.0), sort_keys=True),
        json.dumps(dict(batch_size=8, timed_steps=3, tokens_per_s=1000.0,
                        full_batch=dict(batch_size=512, timed_steps=1, tokens_per_s=1000.0)), sort_keys=True)}
    again = estimate.throughputs(runs, tmp_path, calibrate_steps=3, batch=8)  # read back, not re-measured
    assert len(recorded_train) == 19 and again == speeds


def test_the_reduced_batch_estimate_is_checked_on_a_full_batch(monkeypatch, tmp_path):
    from simscale.sweep import tables

    calls = record_train(monkeypatch, speed=lambda batch: 1000.0 * batch / (batch + 8))
    cfg = preset("paper")
    cfg.sweep.axes.width, cfg.sweep.axes.depth = (32, 64), (2,)
    runs = expand(cfg)
    speeds = estimate.throughputs(runs, tmp_path, calibrate_steps=3, batch=8)
    assert [(c["hidden"], c["batch"]) for c in calls] == [(32, 8), (32, 512), (64, 8)]
    check = estimate.batch_check(tmp_path)
    full = 1000.0 * 512 / 520
    assert check["shape"] == "w32d2" and check["tokens_per_s"] == 500.0
    assert check["full_batch"]["tokens_per_s"] == pytest.approx(full)
    # 0.969: a time estimate about twice too long
    assert check["time_error"] == pytest.approx(full / 500.0 - 1)
    by_width = {r.cfg.model.hidden: speeds[program_key(r.cfg, speed_only=True)] for r in runs}
    assert (by_width[32] == (pytest.approx(full), "calibrated (full batch)")
            and by_width[64] == (500.0, "calibrated"))
    line = tables.dry_run_table([estimate.sizes(r, 10**9) | dict(est_time_s=1.0, est_method="x")
                                 for r in runs], check=check).splitlines()[-1]
    assert line == ("reduced-batch estimate checked on w32d2: 8 sequences ran 500 tokens/s and its full "
                    "batch of 512 ran 985: the reduced-batch time estimate was 97% too long (w32d2's rows "
                    "use the full-batch figure)")


def test_a_full_batch_check_that_would_overrun_the_budget_is_skipped(monkeypatch, tmp_path):
    calls = record_train(monkeypatch, speed=lambda batch: 1000.0)
    cfg = preset("paper")
    cfg.sweep.axes.width, cfg.sweep.axes.depth = (32,), (2,)
    speeds = estimate.throughputs(expand(cfg), tmp_path, calibrate_steps=3, batch=8, budget_s=100)
    assert [c["batch"] for c in calls] == [8]  # two full steps alone: 2 x 512 x 128 / 1000 = 131 s > 100 s
    assert set(speeds.values()) == {(1000.0, "calibrated")}
    skipped = estimate.batch_check(tmp_path)["full_batch"]["skipped"]
    assert skipped == "a full batch (512) would take ~131 s, more than sweep.calibration_budget_s=100"


def test_shapes_past_the_budget_are_scaled_by_flops(recorded_train, tmp_path):
    cfg = preset("paper")
    cfg.train.flops_convention = "6n"  # FLOPs per token = 6 N: a closed form to check against
    runs = expand(cfg)
    speeds = estimate.throughputs(runs, tmp_path, calibrate_steps=3, batch=8, budget_s=0)
    assert [(c["hidden"], c["layers"]) for c in recorded_train] == [(32, 2)]  # the cheapest shape only
    by_shape = {(r.cfg.model.hidden, r.cfg.model.layers): speeds[program_key(r.cfg, speed_only=True)]
                for r in runs}
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
