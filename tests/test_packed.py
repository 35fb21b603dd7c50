"""Packed groups (simscale.train.packed) against the same runs trained alone, on real tiny runs."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from simscale.train import load_params, train
from simscale.train import step as step_lib
from simscale.train.packed import clear_cache, train_group
from test_train import tiny_config

# Each replica's batches and hyperparameters are its lone run's; a vmapped step only sums in another
# order, so values agree to float32 rounding: every logged loss to rtol 1e-5, each parameter array to
# a relative L2 distance of 1e-4. Measured after 12 AdamW steps (THREE[2]'s embedding): the lone run
# against itself with model.kernels=generic (the same maths summed in another order) 8.9e-6, packed
# against lone 2.2e-5 (largest entry difference 2.5e-5, where AdamW divides nearly cancelling gradients
# by their RMS); the other arrays and runs stay under 1e-5. A wrong batch, rate or padding moves ~1e-2.
RTOL, PARAM_RTOL = 1e-5, 1e-4


def configs(*settings):
    out = []
    for seed, lr, vocab in settings:
        cfg = tiny_config()
        cfg.seed, cfg.train.lr, cfg.model.vocab_size = seed, lr, vocab
        cfg.model.update(dict(layers=1, heads=2))
        cfg.train.update(dict(steps=12, log_every=3, eval_every=6, checkpoint_every=6))
        out.append(cfg)
    return out


THREE = configs((0, 1e-2, 64), (1, 3e-3, 64), (2, 5e-3, 64))


def records(run_dir):
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def assert_same_run(packed_dir, lone_dir):
    """Same losses (every logged step and evaluation) and final parameters as the lone run."""
    got, want = records(packed_dir), records(lone_dir)
    assert [r["step"] for r in got] == [r["step"] for r in want]
    for key in ("loss", "lr", "grad_norm", "eval_loss"):
        np.testing.assert_allclose([r.get(key, 0.0) for r in got], [r.get(key, 0.0) for r in want], rtol=RTOL)
    for x, y in zip(jax.tree.leaves(load_params(packed_dir)[0]), jax.tree.leaves(load_params(lone_dir)[0]),
                    strict=True):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        assert x.shape == y.shape
        assert np.linalg.norm(x - y) <= PARAM_RTOL * np.linalg.norm(y)


def files(run_dir):
    """The names in a run directory (TensorBoard event files, one per attempt, as one)."""
    return sorted({"events" if p.name.startswith("events.") else p.name for p in Path(run_dir).iterdir()})


@pytest.fixture(scope="module")
def alone(tmp_path_factory):
    """THREE trained one by one: the reference."""
    root = tmp_path_factory.mktemp("alone")
    return [(root / f"run{i}", train(cfg, root / f"run{i}")) for i, cfg in enumerate(THREE)]


def test_three_runs_packed_and_restarted_midway_match_the_three_trained_alone(alone, tmp_path):
    dirs = [tmp_path / f"run{i}" for i in range(3)]
    stopped = train_group(list(zip(THREE, dirs)), stop_at=9)
    assert stopped == [{"status": "running", "step": 9}] * 3
    shutil.rmtree(dirs[0] / "checkpoints" / "9")  # killed before run0 saved step 9: the group resumes at 6
    step_lib.clear_cache()  # a restart: nothing compiled or cached survives
    clear_cache()
    jax.clear_caches()
    results = train_group(list(zip(THREE, dirs)))
    for run_dir, result, (lone_dir, lone) in zip(dirs, results, alone):
        assert_same_run(run_dir, lone_dir)
        assert result["packed_with"] == [d.name for d in dirs if d != run_dir]
        assert set(result) - {"packed_with"} == set(lone)
        assert result["eval_loss"] == pytest.approx(lone["eval_loss"], rel=RTOL)
        assert files(run_dir) == files(lone_dir)
        assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["12", "6"]
        assert json.loads((run_dir / "status.json").read_text())["status"] == "done"
    assert train_group(list(zip(THREE, dirs))) == results  # finished runs are not trained again


def mixed():
    """THREE[0], a 9-step unrestricted run of vocabulary 40, and a run whose lr diverges."""
    group = configs((0, 1e-2, 64), (5, 3e-3, 40), (3, 1e30, 64))
    group[1].data.variant = "unrestricted"
    group[1].train.steps = 9  # its own schedule; it finishes (evaluated, checkpointed) at step 9
    group[2].train.warmup_steps = 0
    return group


@pytest.fixture(scope="module")
def alone_small(tmp_path_factory):
    """mixed()[1] trained alone."""
    run_dir = tmp_path_factory.mktemp("alone40") / "run"
    train(mixed()[1], run_dir)
    return run_dir


def assert_mixed_group(dirs, results, alone, alone_small):
    """mixed() packed: the diverging run fails alone; the others match their lone runs."""
    assert [r["status"] for r in results] == ["done", "done", "failed"]
    assert_same_run(dirs[0], alone[0][0])
    assert_same_run(dirs[1], alone_small)
    assert load_params(dirs[1])[0]["embed"].shape == (40, 32)  # saved unpadded, restorable alone
    assert results[1]["steps"] == 9
    assert sorted(p.name for p in (dirs[1] / "checkpoints").iterdir()) == ["6", "9"]
    assert results[2]["error"].startswith("non-finite")
    status = json.loads((dirs[2] / "status.json").read_text())
    assert status["status"] == "failed" and status["error"] == results[2]["error"]
    assert not (dirs[2] / "result.json").exists()


def test_two_vocabulary_sizes_and_step_counts_pack_and_match_their_lone_runs_and_a_diverging_run_fails_alone(
        alone, alone_small, tmp_path):
    dirs = [tmp_path / "simplified", tmp_path / "unrestricted", tmp_path / "diverging"]
    assert_mixed_group(dirs, train_group(list(zip(mixed(), dirs))), alone, alone_small)


REPLICAS_ON_TWO_DEVICES = """
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from simscale import cpu_runtime
cpu_runtime.configure()
import jax
from simscale.train import packed
from test_packed import THREE, mixed

out, report = Path(sys.argv[1]), {"devices": len(jax.devices())}
for name, group in (("three", THREE), ("mixed", mixed())):
    dirs = [out / name / str(i) for i in range(3)]
    report[name] = packed.train_group(list(zip(group, dirs)), shard="replicas")
    (step,) = packed._CACHE.values()
    state, tokens = step.compile().input_shardings[0][:2]
    report[name + "_specs"] = sorted({repr(tuple(s.spec)) for s in jax.tree.leaves((state, tokens))})
    report[name + "_tokens_shape"] = list(step._args[1].shape)
    hlo = step.compile().as_text()
    report[name + "_collectives"] = [op for op in ("all-reduce", "all-gather", "all-to-all", "reduce-scatter",
                                                   "collective-permute") if op in hlo]
    packed.clear_cache()
print(json.dumps(report, default=str))
"""


def test_replicas_split_over_two_devices_each_training_whole_models_match_their_lone_runs(
        alone, alone_small, tmp_path):
    """sweep.pack_shard='replicas' on 2 devices: 3 runs padded to 4 slots, 2 whole replicas a device
    (the compiled step's state and batches split on the replica axis only, no collective); every run
    as alone."""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    proc = subprocess.run([sys.executable, "-c", REPLICAS_ON_TWO_DEVICES, str(tmp_path),
                           str(Path(__file__).parent)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.splitlines()[-1])
    assert report["devices"] == 2
    for name in ("three", "mixed"):
        assert report[name + "_specs"] == ["('data',)"]
        assert report[name + "_tokens_shape"][0] == 4
        assert report[name + "_collectives"] == []  # each device trains its replicas alone
    assert [r["status"] for r in report["three"]] == ["done"] * 3
    for i, (lone_dir, _) in enumerate(alone):
        assert_same_run(tmp_path / "three" / str(i), lone_dir)
    assert_mixed_group([tmp_path / "mixed" / str(i) for i in range(3)], report["mixed"], alone, alone_small)


def test_pack_shard_refuses_unknown_values_and_sharded_models(tmp_path):
    from simscale.config import ConfigError
    from simscale.validation import sweep_pack_shard

    cfg = configs((0, 1e-2, 64))[0]
    with pytest.raises(ConfigError, match=r"^sweep.pack_shard='model': choose one of \('batch', 'replica"):
        sweep_pack_shard("model", cfg.mesh)
    cfg.mesh.tensor = 2
    with pytest.raises(ConfigError, match="set mesh.fsdp=1 and mesh.tensor=1"):
        sweep_pack_shard("replicas", cfg.mesh)
    sweep_pack_shard("batch", cfg.mesh)
    proc = subprocess.run([sys.executable, "-m", "simscale.sweep", "--config", "sweeps/grid.py:preset=smoke",
                           f"--workdir={tmp_path}", "--config.sweep.pack_shard=replica", "--dry_run"],
                          capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == ("error: sweep.pack_shard='replica': choose one of "
                                                    "('batch', 'replicas')")


def smoke_runs(widths):
    import importlib.util

    from simscale.sweep import grid

    path = Path(__file__).parents[1] / "sweeps/grid.py"
    spec = importlib.util.spec_from_file_location("grid_presets", path)
    presets = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(presets)
    cfg = presets.get_config("preset=smoke")
    cfg.sweep.axes.width = widths
    return grid.expand(cfg)


def test_sweep_pack_groups_runs_of_one_shape_and_refuses_a_bad_value():
    from simscale.config import ConfigError
    from simscale.sweep import packing

    runs = smoke_runs((16, 32))  # two shapes x two variants
    ids = lambda units: [[r.run_id for r in u] for u in units]  # noqa: E731
    assert ids(packing.units(runs, "0")) == [[r.run_id] for r in runs]
    assert ids(packing.units(runs, "1")) == [[r.run_id] for r in runs]
    w16, w32 = [r.run_id for r in runs[:2]], [r.run_id for r in runs[2:]]
    assert ids(packing.units(runs, "4")) == [w16, w32]
    assert ids(packing.units(runs, "auto")) == ids(packing.units(runs, "4"))  # KBs a replica, GBs here
    with pytest.raises(ConfigError, match="^sweep.pack='some': use 0"):
        packing.units(runs, "some")


def test_a_sweep_with_pack_4_trains_each_run_once_and_writes_what_an_unpacked_sweep_writes(tmp_path):
    from simscale.sweep import executors, store

    runs = smoke_runs((16,))  # the smoke preset's w16 runs: simplified and unrestricted
    assert len(runs) == 2
    outcomes = {pack: executors.execute(runs, tmp_path / pack, pack=pack) for pack in ("0", "4")}
    assert [o["outcome"] for o in outcomes["4"]] == ["done", "done"] == [o["outcome"] for o in outcomes["0"]]
    for run in runs:
        lone, packed = (store.run_dir(tmp_path / pack, run.run_id) for pack in ("0", "4"))
        assert files(packed) == files(lone)
        assert [a["event"] for a in store.attempts(packed)] == ["start", "done"]  # trained once
        result = json.loads((packed / "result.json").read_text())
        assert result["packed_with"] == [r.run_id for r in runs if r is not run]
        lone_result = json.loads((lone / "result.json").read_text())
        assert result["eval_loss"] == pytest.approx(lone_result["eval_loss"], rel=RTOL)
    assert [o["outcome"] for o in executors.execute(runs, tmp_path / "4", pack="4")] == ["skipped"] * 2
    bogus = executors.execute(runs, tmp_path / "bogus", pack="4", pack_shard="model")  # reaches the group
    assert {o["error"] for o in bogus} == {"ConfigError: sweep.pack_shard='model': choose one of ('batch', "
                                           "'replicas')"}


def test_wsd_runs_of_two_budgets_pack_with_their_own_decay_starts_and_match_their_lone_runs(tmp_path):
    """Each replica's optim.step_args (lr, weight decay, warmup, decay start, total steps) are its lone
    run's: a 12-step and an 8-step wsd run decay from steps 6 and 4 in one packed step."""
    from simscale.train import optim

    group = configs((0, 1e-2, 64), (1, 3e-3, 64))
    group[0].train.update(dict(schedule="wsd", decay_fraction=0.5))
    group[1].train.update(dict(schedule="wsd", decay_fraction=0.5, steps=8, weight_decay=0.3))
    assert [optim.decay_start(c.train, c.train.steps) for c in group] == [6, 4]
    lone = [tmp_path / f"alone{i}" for i in range(2)]
    for cfg, run_dir in zip(group, lone):
        train(cfg, run_dir)
    dirs = [tmp_path / f"packed{i}" for i in range(2)]
    assert [r["status"] for r in train_group(list(zip(group, dirs)))] == ["done", "done"]
    for run_dir, lone_dir in zip(dirs, lone):
        assert_same_run(run_dir, lone_dir)


def test_wsd_trunks_and_branches_are_units_of_their_own():
    import dataclasses

    from simscale.sweep import packing

    runs = smoke_runs((16,))
    trunk, branch = (dataclasses.replace(runs[0], branch_points=(4,)),
                     dataclasses.replace(runs[1], branch_of=runs[0].run_id, branch_step=4))
    assert [len(u) for u in packing.units(runs, "4")] == [2]
    assert [[r.run_id for r in u] for u in packing.units([trunk, branch], "4")] == [[trunk.run_id],
                                                                                   [branch.run_id]]
