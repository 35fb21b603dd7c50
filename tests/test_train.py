"""Training loop on real (tiny) computation: learning, resume, fallback, non-finite guard,
gradient accumulation, sharded layouts on fake CPU devices, and the CLI."""
import itertools
import json
import re
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from simscale.config import ConfigError, run_config, to_dict
from simscale.data import loader
from simscale.model import loss as loss_lib
from simscale.train import NonFiniteLoss, load_params, train
from simscale.train import mesh as mesh_lib
from simscale.train import optim
from simscale.train import step as step_lib
from simscale.train.loop import _fetch, read_ahead

REPO = Path(__file__).resolve().parents[1]
RESULT_KEYS = {"status", "params_total", "params_nonembedding", "tokens", "steps", "flops",
               "flops_convention", "eval_loss", "eval_loss_stderr", "eval_bpb", "final_loss", "wall_time_s",
               "variant", "hidden", "layers"}
METRIC_KEYS = {"step", "loss", "lr", "grad_norm", "tokens", "tokens_per_s", "flops_per_s", "mfu"}


def tiny_config():
    cfg = run_config()
    cfg.model.update(dict(vocab_size=64, hidden=32, layers=2, heads=4, max_len=16))
    cfg.train.update(dict(batch_size=8, seq_len=16, steps=20, lr=1e-2, warmup_steps=2, log_every=1,
                          eval_every=10, checkpoint_every=5, eval_batches=2, keep_checkpoints=2))
    return cfg


def losses(run_dir):
    return [json.loads(line)["loss"] for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def assert_trees_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """20 steps in one go: the reference for resume, fallback and sharding."""
    run_dir = tmp_path_factory.mktemp("straight")
    return run_dir, train(tiny_config(), run_dir)


def test_learns_and_writes_contract(straight):
    run_dir, result = straight
    assert set(result) >= RESULT_KEYS and result["status"] == "done" and result["steps"] == 20
    assert result["tokens"] == 20 * 8 * 16
    start = math.log(64)  # uniform prediction over the vocabulary
    assert losses(run_dir)[0] == pytest.approx(start, abs=0.1)
    assert result["eval_loss"] < start - 1.2 and result["final_loss"] < start - 1.0
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 21))
    assert all(set(r) >= METRIC_KEYS for r in records)
    assert {"eval_loss", "eval_loss_stderr", "eval_bpb"} <= set(records[9]) and "eval_loss" not in records[8]
    assert json.loads((run_dir / "status.json").read_text())["status"] == "done"
    assert json.loads((run_dir / "config.json").read_text()) == to_dict(tiny_config())
    assert list(run_dir.glob("events.out.tfevents.*"))
    assert sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir()) == [15, 20]
    assert train(tiny_config(), run_dir) == result  # a finished run is not trained again


def test_resume_after_restart_is_exact(straight, tmp_path):
    ref_dir, _ = straight
    assert train(tiny_config(), tmp_path, stop_at=10) == {"status": "running", "step": 10}
    step_lib.clear_cache()  # a restart: nothing compiled or cached survives
    jax.clear_caches()
    train(tiny_config(), tmp_path)
    assert losses(tmp_path) == losses(ref_dir)
    assert_trees_equal(load_params(tmp_path)[0], load_params(ref_dir)[0])


def _drop_saved_key(run_dir, section, key):
    path = run_dir / "config.json"
    saved = json.loads(path.read_text())
    del saved[section][key]
    path.write_text(json.dumps(saved))


def test_a_config_json_from_before_model_kernels_resumes(straight, tmp_path):
    """A run directory written before model.kernels existed resumes with its default (the same
    computation), saying so in one warning; the loss sequence is the uninterrupted run's."""
    ref_dir, _ = straight
    train(tiny_config(), tmp_path, stop_at=10)
    _drop_saved_key(tmp_path, "model", "kernels")
    with pytest.warns(UserWarning, match=r"predates model\.kernels: resuming with the default "
                                         r"\(model\.kernels='auto'\)"):
        train(tiny_config(), tmp_path)
    assert losses(tmp_path) == losses(ref_dir)
    assert json.loads((tmp_path / "config.json").read_text()) == to_dict(tiny_config())  # written whole again
    assert load_params(tmp_path)[1].model.kernels == "auto"


def test_a_config_json_with_the_flat_source_keys_resumes_and_loads(straight, tmp_path):
    """Run directories written before each data source had its own section (data.files, data.hf_name,
    data.text_field, ...) resume and load: the old keys move to their new places."""
    ref_dir, _ = straight
    cfg = tiny_config()
    cfg.data.hf.update(name="someone/corpus", split="validation", text_field="body")
    train(cfg, tmp_path, stop_at=10)
    saved = json.loads((tmp_path / "config.json").read_text())
    data = saved["data"]
    for source in ("bigbench", "files", "tfds", "hf"):
        data.pop(source)
    data.update(bigbench_tasks=cfg.data.bigbench.tasks, files="", format="auto", lines_per_document=1,
                text_field="body", tfds_name="", tfds_split="train", tfds_data_dir="",
                hf_name="someone/corpus", hf_config="", hf_split="validation")
    cfg.data.files.text_field = cfg.data.tfds.text_field = "body"  # the one old key served all three
    (tmp_path / "config.json").write_text(json.dumps(saved))
    assert load_params(tmp_path)[1].data.hf.name == "someone/corpus"
    train(cfg, tmp_path)
    assert losses(tmp_path) == losses(ref_dir)
    assert json.loads((tmp_path / "config.json").read_text())["data"]["hf"]["split"] == "validation"


def test_a_config_json_lacking_a_key_that_changes_the_run_is_refused(tmp_path):
    train(tiny_config(), tmp_path, stop_at=5)
    # its default (256) is not what a run without it computed
    _drop_saved_key(tmp_path, "train", "loss_chunk")
    with pytest.raises(ConfigError, match=r"different config.json \(train\.loss_chunk\)"):
        train(tiny_config(), tmp_path)


def test_unreadable_checkpoint_falls_back_to_previous(straight, tmp_path):
    ref_dir, _ = straight
    train(tiny_config(), tmp_path, stop_at=10)
    for f in (tmp_path / "checkpoints" / "10").rglob("*"):
        if f.is_file():
            f.write_bytes(b"corrupt")
    with pytest.warns(UserWarning, match="checkpoints/10 is unreadable"):
        params, cfg = load_params(tmp_path)
    assert cfg.model.hidden == 32
    with pytest.warns(UserWarning, match="unreadable"):
        train(tiny_config(), tmp_path)  # resumes from step 5, retrains 6..20
    assert losses(tmp_path) == losses(ref_dir)
    assert_trees_equal(load_params(tmp_path)[0], load_params(ref_dir)[0])


def test_a_checkpoint_whose_arrays_were_swapped_is_refused(straight, tmp_path):
    """orbax reads another step's (valid) array files without complaint: the saved checksum notices."""
    ref_dir, _ = straight
    train(tiny_config(), tmp_path, stop_at=10)
    ckpts = tmp_path / "checkpoints"
    shutil.rmtree(ckpts / "10" / "state")
    shutil.copytree(ckpts / "5" / "state", ckpts / "10" / "state")
    with pytest.warns(UserWarning, match=r"checkpoints/10 is unreadable \(ValueError: its arrays do not "
                                         r"match the checksum saved with them\)"):
        train(tiny_config(), tmp_path)  # resumes from step 5, retrains 6..20
    assert losses(tmp_path) == losses(ref_dir)
    assert_trees_equal(load_params(tmp_path)[0], load_params(ref_dir)[0])


def test_a_discarded_checkpoint_step_is_saved_again(tmp_path):
    cfg = tiny_config()
    cfg.train.keep_checkpoints = 10
    train(cfg, tmp_path, stop_at=15)
    for f in (tmp_path / "checkpoints" / "15").rglob("*"):
        if f.is_file():
            f.write_bytes(b"corrupt")
    with pytest.warns(UserWarning, match="checkpoints/15 is unreadable"):
        train(cfg, tmp_path)  # falls back to step 10, removes 15, trains 11..20
    saved = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert saved == [5, 10, 15, 20]
    from simscale.train.checkpoint import Checkpoints

    ckpt = Checkpoints(tmp_path / "checkpoints", read_only=True)
    try:
        assert ckpt.manager.restore(15, args=ocp_meta())["meta"]["step"] == 15  # step 15 is readable again
    finally:
        ckpt.close()


def ocp_meta():
    import orbax.checkpoint as ocp

    return ocp.args.Composite(meta=ocp.args.JsonRestore())


@pytest.fixture
def data_ends_after_12_steps(monkeypatch):
    """A training stream that gives 12 batches (tiny_config plans 20 steps and logs every step)."""
    batches = loader.batches

    def finite(data, cfg, split, start_step=0):
        rows = batches(data, cfg, split, start_step)
        return itertools.islice(rows, max(0, 12 - start_step)) if split == "train" else rows

    monkeypatch.setattr(loader, "batches", finite)


def test_data_ending_after_a_log_step_ends_with_an_eval_and_a_checkpoint(tmp_path, data_ends_after_12_steps):
    with pytest.warns(UserWarning, match="the training data ended after 12 of 20 planned steps"):
        result = train(tiny_config(), tmp_path)
    assert result["status"] == "done" and result["steps"] == 12 and result["tokens"] == 12 * 8 * 16
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 13))
    assert [r["step"] for r in records if "eval_loss" in r] == [10, 12]
    assert records[-1]["eval_loss"] == result["eval_loss"]
    assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir()) == [10, 12]  # the final step's
    assert load_params(tmp_path)[0] is not None


def test_resumed_where_the_data_ended_the_run_finishes(tmp_path, data_ends_after_12_steps):
    assert train(tiny_config(), tmp_path, stop_at=12) == {"status": "running", "step": 12}
    with pytest.warns(UserWarning, match="the training data ended after 12 of 20 planned steps"):
        result = train(tiny_config(), tmp_path)
    assert result["status"] == "done" and result["steps"] == 12 and result["eval_loss"] > 0
    assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == \
        list(range(1, 13))


def test_non_finite_loss_fails_run_and_keeps_finite_checkpoints(tmp_path):
    cfg = tiny_config()
    cfg.train.update(dict(lr=1e30, checkpoint_every=1, log_every=5, warmup_steps=0))
    with pytest.raises(NonFiniteLoss, match=r"non-finite (loss|gradient norm) at step \d+") as err:
        train(cfg, tmp_path)
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["status"] == "failed" and status["error"] == str(err.value)
    assert not (tmp_path / "result.json").exists()
    saved = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir())
    assert saved and max(saved) < err.value.step
    params, _ = load_params(tmp_path)
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(params))


def test_first_non_finite_step_is_reported():
    window = [{"loss": 1.0, "grad_norm": 1.0}, {"loss": float("nan"), "grad_norm": 1.0},
              {"loss": float("inf"), "grad_norm": 1.0}]
    with pytest.raises(NonFiniteLoss, match="^non-finite loss at step 6$"):
        _fetch(window, 7)


def test_read_ahead_keeps_order_and_stays_depth_ahead():
    pulled = []

    def source():
        for i in range(5):
            pulled.append(i)
            yield i

    ahead = read_ahead(source(), depth=2)
    assert next(ahead) == 0
    deadline = time.monotonic() + 10
    while len(pulled) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)
    assert pulled == [0, 1, 2]  # the consumer holds 0; 1 and 2 are read, 3 is not
    assert list(ahead) == [1, 2, 3, 4]
    ahead = read_ahead(source(), depth=2)
    next(ahead)
    ahead.close()  # stopping early joins the thread
    assert not [t for t in threading.enumerate() if t.name.startswith("read-ahead")]


def test_fused_head_loss_matches_autodiff():
    h, head = jax.random.normal(jax.random.key(0), (128, 32)), jax.random.normal(jax.random.key(1), (32, 64))
    targets = jax.random.randint(jax.random.key(2), (128,), 0, 64)

    def plain(h, head):
        logits = h @ head
        return jnp.mean(jax.nn.logsumexp(logits, -1)
                        - jnp.take_along_axis(logits, targets[:, None], -1)[:, 0])

    fused = lambda h, head: loss_lib.fused_head_loss(h, head, targets, 4)  # noqa: E731 - 4 chunks of 32 rows
    (loss_a, grads_a), (loss_b, grads_b) = (jax.jit(jax.value_and_grad(f, argnums=(0, 1)))(h, head)
                                            for f in (plain, fused))
    np.testing.assert_allclose(loss_b, loss_a, rtol=1e-6)
    for a, b in zip(grads_a, grads_b):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7)


def test_cpu_attention_matches_jax_attention():
    from simscale.model.cpu_kernels import causal_attention

    # 4 query heads sharing 2 kv heads: covers the plain kernel and the grouped-query repeat
    q, k, v = (jax.random.normal(jax.random.key(i), (2, 16, n, 8)) for i, n in enumerate((4, 2, 2)))
    w = jax.random.normal(jax.random.key(9), (2, 16, 4, 8))
    ref = lambda q, k, v: jax.nn.dot_product_attention(q, k, v, is_causal=True)  # noqa: E731
    np.testing.assert_allclose(causal_attention(q, k, v), ref(q, k, v), atol=1e-5)
    grads = [jax.jit(jax.grad(lambda *a, f=f: jnp.sum(f(*a) * w), argnums=(0, 1, 2)))(q, k, v)
             for f in (causal_attention, ref)]
    for a, b in zip(*grads):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_cpu_projection_matches_tensordot():
    from simscale.model.cpu_kernels import project

    x, w = (jax.random.normal(jax.random.key(0), (2, 16, 4, 8)),
            jax.random.normal(jax.random.key(1), (4, 8, 32)))
    cot = jax.random.normal(jax.random.key(2), (2, 16, 32))
    results = [jax.jit(jax.value_and_grad(lambda x, w, f=f: jnp.sum(f(x, w, 2) * cot), argnums=(0, 1)))(x, w)
               for f in (project, jnp.tensordot)]
    for a, b in zip(jax.tree.leaves(results[0]), jax.tree.leaves(results[1])):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_grad_accumulation_matches_one_big_batch():
    cfg1, cfg2 = tiny_config(), tiny_config()
    cfg2.train.grad_accum = 2
    mesh = mesh_lib.make_mesh(cfg1.mesh)
    p1, p2 = step_lib.build(cfg1, 20, mesh), step_lib.build(cfg2, 20, mesh)
    tokens = jax.device_put(next(loader.batches(None, cfg1, "train")), p1.batch_sharding)
    s1, m1 = p1.train(p1.init(0), tokens)
    s2, m2 = p2.train(p1.init(0), tokens)  # same state shardings: p1's init serves both
    np.testing.assert_allclose(m1["loss"], m2["loss"], rtol=1e-6)
    np.testing.assert_allclose(m1["grad_norm"], m2["grad_norm"], rtol=1e-5)
    # Adam's first update is about lr * sign(grad): tiny gradient entries amplify float noise,
    # so parameters agree to 0.2% of the step size (lr = 5e-3 here) rather than to rtol.
    for a, b in zip(jax.tree.leaves(s1["params"]), jax.tree.leaves(s2["params"])):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(p1.eval(s1["params"], tokens), p2.eval(s1["params"], tokens), rtol=1e-6)


def test_every_train_setting_that_enters_the_program_gets_its_own_compiled_program():
    """The cache of compiled programs is keyed on the whole model and train sections less the keys
    that cannot change a program (cadences, budget): a cosine_cycles change (left out of the key
    before) must not reuse the other schedule's program."""
    step_lib.clear_cache()
    mesh = mesh_lib.make_mesh(tiny_config().mesh)
    half, quarter, cadence = tiny_config(), tiny_config(), tiny_config()
    quarter.train.cosine_cycles = 0.25
    cadence.train.update(dict(log_every=7, eval_every=3, checkpoint_every=9))
    p_half, p_quarter = step_lib.program(half, 20, mesh), step_lib.program(quarter, 20, mesh)
    assert p_quarter is not p_half
    assert step_lib.program(cadence, 20, mesh) is p_half
    tokens = jax.device_put(next(loader.batches(None, half, "train")), p_half.batch_sharding)
    state = p_half.init(0)
    state["step"] = jnp.asarray(11, jnp.int32)  # 9 of 18 decay steps: cosine progress 0.5
    # lr * (1 + cos(2 pi c p)) / 2 with lr_floor 0.1: c = 0.5 gives 0.55 lr, c = 0.25 gives 0.8182 lr
    assert float(p_half.train(jax.tree.map(jnp.copy, state), tokens)[1]["lr"]) == pytest.approx(0.01 * 0.55)
    quarter_lr = 0.01 * (0.1 + 0.9 * (1 + math.cos(math.pi * 0.5 * 9 / 18)) / 2)
    assert float(p_quarter.train(state, tokens)[1]["lr"]) == pytest.approx(quarter_lr)


def test_schedules():
    tc = tiny_config().train
    tc.update(dict(lr=1.0, warmup_steps=10, lr_floor=0.1, decay_fraction=0.2))
    lr = {k: optim.schedule(tc.copy_and_resolve_references() if False else _with(tc, schedule=k), 100)
          for k in optim.SCHEDULES}
    assert float(lr["cosine"](0)) == pytest.approx(0.1) and float(lr["cosine"](9)) == pytest.approx(1.0)
    assert float(lr["cosine"](99)) == pytest.approx(0.1, abs=1e-3)
    assert float(lr["cosine"](54)) == pytest.approx(0.55, abs=0.02)
    assert float(lr["wsd"](79)) == pytest.approx(1.0) and float(lr["wsd"](99)) == pytest.approx(0.1, abs=0.05)
    assert float(lr["constant"](99)) == 1.0


def _with(tc, **kw):
    out = tc.copy_and_resolve_references()
    out.update(kw)
    return out


def test_decay_mask_skips_norms():
    from simscale.model import logical_axes

    mask = optim.decay_mask(tiny_config().train, logical_axes(tiny_config().model))
    assert (mask["embed"] and mask["layers"]["wq"] and not mask["layers"]["attn_norm"]
            and not mask["final_norm"])


def test_partition_specs_follow_rules_and_divisibility():
    class FakeMesh:
        shape = {"data": 1, "fsdp": 2, "tensor": 4}

    assert mesh_lib.spec(("vocab", "embed"), (64, 32), FakeMesh) == \
        jax.sharding.PartitionSpec("tensor", "fsdp")
    assert mesh_lib.spec(("layers", "embed", "kv_heads", "head_dim"), (2, 32, 2, 8), FakeMesh) == \
        jax.sharding.PartitionSpec(None, "fsdp", None, None)  # 2 kv heads do not split 4 ways
    assert mesh_lib.mesh_shape({"data": -1, "fsdp": 2, "tensor": 1}, 8) == (4, 2, 1)


CONFIG_FILE = """
from ml_collections import ConfigDict
from simscale.config import from_dict

def get_config(arg=None):
    cfg = from_dict({cfg!r})
    cfg.sweep = ConfigDict(dict(preset="test"))  # a sweep section: the train CLI ignores it
    return cfg
"""


def run_cli(tmp_path, *overrides, devices=1):
    config = tmp_path / "config.py"
    config.write_text(CONFIG_FILE.format(cfg=to_dict(tiny_config())))
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
           "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "simscale.train", f"--config={config}",
                           f"--workdir={tmp_path / 'run'}", *overrides],
                          env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("layout", [("--config.mesh.data=2", "--config.mesh.fsdp=2"),
                                    ("--config.mesh.data=2", "--config.mesh.tensor=2"),
                                    ("--config.mesh.data=2", "--config.mesh.tensor=2",
                                     "--config.model.kernels=generic")],
                         ids=["data2_fsdp2", "data2_tensor2", "data2_tensor2_generic"])
def test_cli_on_sharded_layouts_matches_one_device(straight, tmp_path, layout):
    ref_dir, ref = straight
    proc = run_cli(tmp_path, *layout, devices=4)
    assert proc.returncode == 0, proc.stderr
    run_dir = tmp_path / "run"
    result = json.loads((run_dir / "result.json").read_text())
    assert set(result) >= RESULT_KEYS
    config = json.loads((run_dir / "config.json").read_text())
    assert "sweep" not in config and config["mesh"]["data"] == 2
    assert config["model"]["kernels"] == ("generic" if "--config.model.kernels=generic" in layout else "auto")
    np.testing.assert_allclose(losses(run_dir), losses(ref_dir), rtol=1e-5)
    assert result["eval_loss"] == pytest.approx(ref["eval_loss"], rel=1e-5)


def test_cli_reports_config_errors_in_one_line(tmp_path):
    proc = run_cli(tmp_path, "--config.train.schedule=bogus")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == \
        "error: train.schedule='bogus': choose one of ('cosine', 'wsd', 'constant')"
    assert "Traceback" not in proc.stderr


def test_cli_exit_codes_say_who_must_act(tmp_path):
    """One convention for every entry point (simscale.cli.run): a value to fix exits 2, a run that failed
    exits 1, each with one `error:` line and no traceback."""
    diverged = run_cli(tmp_path, "--config.train.lr=1e30", "--config.train.warmup_steps=0")
    assert diverged.returncode == 1
    assert re.fullmatch(r"error: non-finite (loss|gradient norm) at step \d+",
                        diverged.stderr.strip().splitlines()[-1])
    assert "Traceback" not in diverged.stderr
    taken = run_cli(tmp_path, "--config.model.hidden=33")
    assert taken.returncode == 2 and "Traceback" not in taken.stderr
    assert taken.stderr.strip().splitlines()[-1].startswith("error: model.hidden=33 is not divisible by "
                                                            "model.heads=4")
