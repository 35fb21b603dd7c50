"""Warmup-stable-decay branching on real (tiny) training: the 1-sqrt cooldown, the plan of a trunk and
branches, a branch equal bit for bit to its budget trained from scratch, the steps a branched sweep
trains, and kill -9 mid-trunk and mid-branch."""
import importlib.util
import math
import pathlib
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import preset

from simscale.config import ConfigError, run_config
from simscale.data import loader
from simscale.jsonio import read_json, read_jsonl
from simscale.humanize import duration, human
from simscale.sweep import branch_bench, estimate, executors, grid, store, tables
from simscale.train import load_params, optim

ROOT = pathlib.Path(__file__).resolve().parents[1]
# One shape, budgets of 200, 300 and 400 steps of 16 x 32 tokens; half of each budget decays (1-sqrt),
# so the 200- and 300-step runs branch off the 400-step trunk at steps 100 and 150.
SWEEP_PY = """
from ml_collections import ConfigDict
from simscale.config import run_config, sweep_config


def get_config(arg=None):
    cfg = run_config()
    cfg.model.update(vocab_size=64, hidden=32, layers=1, heads=4, max_len=32)
    cfg.train.update(batch_size=16, seq_len=32, lr=1e-2, warmup_steps=10, schedule="wsd",
                     decay_fraction=0.5, decay_shape="1-sqrt", log_every=1, eval_every=0,
                     checkpoint_every=25, eval_batches=1)
    cfg.data.source = "synthetic"
    cfg.sweep = sweep_config()
    cfg.sweep.axes = ConfigDict(dict(width=(32,), depth=(1,), variant=("simplified",),
                                     tokens=(200 * 512, 300 * 512, 400 * 512)))
    return cfg
"""
STEPS = {200: 100, 300: 150, 400: None}  # budget -> branch point (its decay start), by hand


def sweep_config(tmp_path, branch=True):
    path = tmp_path / "wsd_sweep.py"
    path.write_text(SWEEP_PY)
    spec = importlib.util.spec_from_file_location("wsd_sweep", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cfg = module.get_config()
    cfg.sweep.branch = branch
    return cfg


def by_steps(runs):
    return {r.cfg.train.steps: r for r in runs}


@pytest.fixture(scope="module")
def branched(tmp_path_factory):
    """The three budgets as one trunk and two branches, uninterrupted, inline."""
    workdir = tmp_path_factory.mktemp("branched")
    runs = grid.expand(sweep_config(workdir))
    outcomes = executors.execute(runs, workdir)
    assert [o["outcome"] for o in outcomes] == ["done"] * 3, outcomes
    return workdir, by_steps(runs)


def test_the_1_sqrt_cooldown_follows_its_formula_and_the_stable_phase_ignores_the_budget():
    tc = run_config().train
    tc.update(dict(lr=1.0, warmup_steps=10, lr_floor=0.1, decay_fraction=0.2, schedule="wsd",
                   decay_shape="1-sqrt"))
    lr = optim.schedule(tc, 100)  # decay from step 80 over 20 steps
    assert optim.decay_start(tc, 100) == 80
    assert float(lr(89)) == pytest.approx(0.1 + 0.9 * (1 - math.sqrt(9 / 20)), rel=1e-6)
    assert float(lr(99)) == pytest.approx(0.1 + 0.9 * (1 - math.sqrt(19 / 20)), rel=1e-6)
    tc.decay_shape = "linear"
    assert float(optim.schedule(tc, 100)(89)) == pytest.approx(0.1 + 0.9 * 11 / 20, rel=1e-6)
    for total in (20, 50, 100):  # before its decay, every budget's LR is the longest one's, bit for bit
        short = optim.schedule(tc, total)
        assert all(float(short(s)) == float(lr(s)) for s in range(optim.decay_start(tc, total)))


def test_budgets_of_one_shape_are_planned_as_a_trunk_and_branches_at_their_decay_starts(tmp_path):
    runs = by_steps(grid.expand(sweep_config(tmp_path)))
    trunk = runs[400]
    assert trunk.branch_points == (100, 150) and not trunk.branch_of
    assert [(runs[n].branch_of, runs[n].branch_step) for n in (200, 300)] == [(trunk.run_id, 100),
                                                                               (trunk.run_id, 150)]
    assert not any(r.branch_of or r.branch_points for r in grid.expand(sweep_config(tmp_path, branch=False)))


def test_a_warmup_longer_than_a_branch_is_refused_with_the_fix(tmp_path):
    cfg = sweep_config(tmp_path)
    cfg.train.warmup_steps = 250
    with pytest.raises(ConfigError, match=r"train\.warmup_steps=250 exceeds its 200 steps, so its warmup "
                                          r"differs from its trunk's: lower train\.warmup_steps or set "
                                          r"sweep\.branch=False"):
        grid.expand(cfg)


def test_a_branched_run_equals_its_budget_trained_from_scratch(branched, tmp_path):
    """f32 on CPU: every step's loss, LR and gradient norm, the evaluation and the parameters are
    identical to the same wsd run trained from step 0."""
    workdir, runs = branched
    shorter = [runs[200], runs[300]]
    outcomes = executors.execute(grid.expand(sweep_config(tmp_path, branch=False))[:2], tmp_path)
    assert [o["run_id"] for o in outcomes] == [r.run_id for r in shorter]
    for run in shorter:
        got, ref = store.run_dir(workdir, run.run_id), store.run_dir(tmp_path, run.run_id)
        keys = ("step", "loss", "lr", "grad_norm")
        rows = [[r[k] for k in keys] for r in read_jsonl(got / "metrics.jsonl")]
        assert rows == [[r[k] for k in keys] for r in read_jsonl(ref / "metrics.jsonl")]
        assert [r[0] for r in rows] == list(range(1, run.cfg.train.steps + 1))
        result, scratch = read_json(got / "result.json"), read_json(ref / "result.json")
        assert (result["branch_of"], result["branch_step"]) == (runs[400].run_id, STEPS[run.cfg.train.steps])
        assert result["eval_loss"] == scratch["eval_loss"] and result["final_loss"] == scratch["final_loss"]
        for a, b in zip(*(_leaves(load_params(d)[0]) for d in (got, ref)), strict=True):
            np.testing.assert_array_equal(a, b)


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def trained_steps(workdir, run_ids):
    """Steps trained, from each run's attempts log: its done step less the step its attempt started at."""
    total = 0
    for run_id in run_ids:
        events = store.attempts(store.run_dir(workdir, run_id))
        assert [e["event"] for e in events] == ["start", "done"], events
        total += events[1]["step"] - events[0]["step"]
    return total


def test_three_budgets_train_the_longest_and_the_two_shorter_decays(branched):
    workdir, runs = branched
    # 400 steps of trunk, then the 200-step budget's last 100 and the 300-step budget's last 150
    assert trained_steps(workdir, [r.run_id for r in runs.values()]) == 400 + 100 + 150


def sweep_cli(config, workdir):
    cmd = [sys.executable, "-m", "simscale.sweep", "--config", str(config), "--workdir", str(workdir)]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def kill_when(proc, rdir, step, timeout=180):
    """SIGKILL the sweep once the run in `rdir` has logged `step` (before it finishes)."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if store.last_metrics(rdir).get("step", 0) >= step:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate()
    assert not (rdir / "result.json").exists() and store.last_metrics(rdir).get("step", 0) >= step, out


def test_kill_9_mid_trunk_and_mid_branch_then_restart_trains_each_run_once_to_the_same_results(
        branched, tmp_path):
    reference, runs = branched
    config = tmp_path / "wsd_sweep.py"
    config.write_text(SWEEP_PY)
    trunk, long_branch = (store.run_dir(tmp_path, runs[n].run_id) for n in (400, 300))
    kill_when(sweep_cli(config, tmp_path), trunk, 160)  # past both branch points
    assert sorted(p.name for p in (trunk / "branch_points").iterdir()) == ["100", "150"]
    kill_when(sweep_cli(config, tmp_path), long_branch, 190)  # the trunk done, the 300-step branch mid-decay
    proc = sweep_cli(config, tmp_path)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    for run in runs.values():
        rdir = store.run_dir(tmp_path, run.run_id)
        events = [e["event"] for e in store.attempts(rdir)]
        assert events.count("done") == 1 and events[-1] == "done", (run.run_id, events)
        assert read_json(rdir / "result.json")["final_loss"] == read_json(
            store.run_dir(reference, run.run_id) / "result.json")["final_loss"]
        for a, b in zip(_leaves(load_params(rdir)[0]),
                        _leaves(load_params(store.run_dir(reference, run.run_id))[0]), strict=True):
            np.testing.assert_array_equal(a, b)
    starts = [e["step"] for e in store.attempts(long_branch) if e["event"] == "start"]
    assert starts[0] == 150 and starts[-1] > 150  # started at its point, resumed from its own checkpoint


def test_the_dry_run_weighs_the_branched_sweep_against_training_every_budget_from_scratch(tmp_path):
    records = [estimate.sizes(r, 0) | dict(est_time_s=9.0 * r.cfg.train.steps, est_method="x")
               for r in grid.expand(sweep_config(tmp_path))]
    for r in records:  # 9 s a step, for the time columns
        r["est_trained_s"] = 9.0 * r["trained_tokens"] / 512
    per_token = records[0]["flops"] / records[0]["tokens"]
    line = tables.dry_run_table(records).splitlines()[-1]
    # from scratch 200 + 300 + 400 steps; branched 400 + 100 + 150 (of 512 tokens each)
    assert line == (f"with wsd branches (2 run(s) off 1 trunk(s), sweep.branch=True): "
                    f"{human(650 * 512 * per_token)} FLOPs, est. {duration(650 * 9)}; from scratch "
                    f"(sweep.branch=False): {human(900 * 512 * per_token)} FLOPs, est. {duration(900 * 9)} "
                    f"(0.72x the FLOPs)")


def test_the_wsd_presets_branch_every_shorter_budget_off_its_shapes_trunk():
    tokens = grid.expand(preset("tokens_wsd"))
    trunks = [r for r in tokens if r.branch_points]
    # 195 steps of 16 x 64 tokens per shape; 49, 98 and 146 steps decay from 49 - 10, 98 - 20, 146 - 29
    assert len(tokens) == 64 and len(trunks) == 16
    assert {(r.cfg.train.steps, r.branch_points) for r in trunks} == {(195, (39, 78, 117))}
    assert sorted({(r.cfg.train.steps, r.branch_step) for r in tokens if r.branch_of}) == [
        (49, 39), (98, 78), (146, 117)]
    iso = grid.expand(preset("isoflop_wsd"))  # 3 budgets x 6 shapes: a trunk and two branches each
    assert sum(bool(r.branch_points) for r in iso) == 6 and sum(bool(r.branch_of) for r in iso) == 12
    assert all(r.cfg.train.decay_shape == "1-sqrt" for r in iso + tokens)


def diverging_trunk(cfg, rdir, **branch):
    """Stands in for simscale.train.train: the trunk (it has branch points) diverges before them."""
    if not branch.get("branch_points"):
        raise AssertionError(f"{rdir.name} trained though its trunk failed ({branch})")
    raise FloatingPointError("non-finite loss at step 42")


def test_a_trunk_that_fails_before_the_points_fails_its_branches_with_its_error(tmp_path):
    runs = by_steps(grid.expand(sweep_config(tmp_path)))
    outcomes = {o["run_id"]: o for o in executors.execute(list(runs.values()), tmp_path,
                                                          train_fn=diverging_trunk)}
    trunk = runs[400].run_id
    assert outcomes[trunk]["error"] == "FloatingPointError: non-finite loss at step 42"
    for steps, point in ((200, 100), (300, 150)):
        error = f"its trunk {trunk} failed before step {point}: {outcomes[trunk]['error']}"
        rdir = store.run_dir(tmp_path, runs[steps].run_id)
        assert outcomes[runs[steps].run_id] == dict(run_id=runs[steps].run_id, outcome="failed", error=error)
        assert read_json(rdir / "status.json")["error"] == error
        assert [e["event"] for e in store.attempts(rdir)] == ["failed"]


def test_the_bench_counts_the_steps_and_flops_a_sweep_trained_from_its_attempts_logs(branched):
    workdir, runs = branched
    result = read_json(store.run_dir(workdir, runs[400].run_id) / "result.json")
    per_step = result["flops"][result["flops_convention"]] / 400
    measured = branch_bench.measure(workdir)
    assert (measured["runs"], measured["steps"]) == (3, 400 + 100 + 150)
    assert measured["flops"] == pytest.approx(650 * per_step, rel=1e-12)


def test_the_budgets_of_one_shape_share_one_compiled_train_step(tmp_path):
    """The schedule's numbers of a budget are an argument of the compiled step: a ladder of budgets
    compiles once (a branch and its trunk run the very same program)."""
    from simscale.train import mesh as mesh_lib
    from simscale.train import step as step_lib

    runs = by_steps(grid.expand(sweep_config(tmp_path)))
    mesh = mesh_lib.make_mesh(runs[200].cfg.mesh)
    short, long = (step_lib.program(runs[n].cfg, n, mesh) for n in (200, 400))
    assert short.train.compiled is long.train.compiled and short is not long
    state = short.init(0)
    state["step"] = state["step"] + 150  # the 200-step budget's 51st decay step of 100; the trunk's stable LR
    tokens = next(loader.batches(None, runs[200].cfg, "train"))
    lr_short = float(short.train(jax.tree.map(jnp.copy, state), tokens)[1]["lr"])
    assert lr_short == pytest.approx(1e-2 * (0.1 + 0.9 * (1 - math.sqrt(50 / 100))), rel=1e-6)  # lr_floor 0.1
    assert float(long.train(state, tokens)[1]["lr"]) == pytest.approx(1e-2, rel=1e-6)
