"""python -m simscale.sweep --config sweeps/grid.py[:preset=NAME] --workdir W [--config.x=y ...]
   python -m simscale.sweep status --workdir W

Prepares the data once, expands and validates the grid, runs every run
(skipping finished ones, resuming interrupted ones), evaluates them and prints
a summary; exits 1 when a run failed. `--dry_run [--json]` only prints the runs.
"""
from __future__ import annotations

import json
import logging
import pathlib
import sys

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from simscale import at_hand, cli, compile_cache, cpu_runtime, tmpfiles
from simscale.config import ConfigError, program_key, to_dict
from simscale.sweep import estimate, executors, grid, packing, store, tables
from simscale.validation import check_folder, check_keys, sweep_pack_shard

FLAGS = flags.FLAGS
# New attributes are accepted here and refused by simscale.validation.check_keys, in one line.
config_flags.DEFINE_config_file("config", None, "sweep config, e.g. sweeps/grid.py:preset=cpu",
                                lock_config=False, accept_new_attributes=True)
flags.DEFINE_string("workdir", None, "sweep folder: W/sweep.json and W/runs/<run_id>/")
flags.DEFINE_enum("executor", "inline", executors.EXECUTORS, "where runs train")
flags.DEFINE_integer("workers", 0, "process executor: worker processes (0: one per GPU group, or 2 on CPU)")
flags.DEFINE_integer("devices_per_worker", 1, "GPUs (or TPU chips) per worker / Ray task")
flags.DEFINE_integer("devices", 0, "devices one run sees, for validation (0: jax.device_count() inline, "
                     "else --devices_per_worker)")
flags.DEFINE_string("ray_address", "",
                    "Ray cluster address ('auto' to join a running cluster; '': a local instance)")
flags.DEFINE_bool("dry_run", False, "print the runs (sizes, FLOPs, estimated time) and exit")
flags.DEFINE_bool("json", False, "with --dry_run: print a JSON list")
flags.DEFINE_list("device", [], "with --dry_run: also estimate each run's time on these device classes "
                  f"from its FLOPs at an assumed MFU ({', '.join(estimate.DEVICE_CLASSES)}, or all)")
flags.register_validator("device", lambda names: set(names) <= {*estimate.DEVICE_CLASSES, "all"},
                         f"--device: choose from {', '.join(estimate.DEVICE_CLASSES)} or all")
flags.DEFINE_enum("estimate", "auto", ["auto", "past", "none"],
                  "wall-time estimates: auto (past runs, else a short calibration), past (measured only), "
                  "none")
flags.DEFINE_bool("retry_failed", False, "train failed runs again")
flags.DEFINE_string("only", "", "run only runs whose id matches this regex")
flags.DEFINE_string("skip", "", "skip runs whose id matches this regex")

log = logging.getLogger("simscale.sweep")


def _devices() -> int:
    if FLAGS.devices:
        return FLAGS.devices
    if FLAGS.executor == "inline":
        import jax

        return jax.device_count()
    return FLAGS.devices_per_worker


def _records(runs, workdir: pathlib.Path, cfg) -> tuple[list[dict], dict | None]:
    """(dry-run records, the reduced-batch estimate's check on a shape timed at its full batch, or None)."""
    records = [estimate.sizes(r, cfg.sweep.epoch_tokens) for r in runs]
    speeds, check = {}, None
    if FLAGS.estimate != "none":
        steps = cfg.sweep.calibration_steps if FLAGS.estimate == "auto" else 0
        speeds = estimate.throughputs(runs, workdir, steps, cfg.sweep.get("calibration_batch", 0),
                                      cfg.sweep.get("calibration_budget_s", float("inf")))
        check = estimate.batch_check(workdir)
    for run, rec in zip(runs, records):
        key = program_key(run.cfg, speed_only=True)
        speed, method = speeds.get(key, (None, None))
        rec["est_time_s"], rec["est_method"] = (rec["tokens"] / speed if speed else None), method
        rec["est_trained_s"] = rec["trained_tokens"] / speed if speed else None
        if check and check["key"] == key:
            rec["est_check"] = {k: v for k, v in check.items() if k != "key"}
        if FLAGS.device:
            rec["est_device_s"] = {d: estimate.device_time_s(run, rec["tokens"], d)
                                   for d in _device_classes()}
    return records, check


def _device_classes() -> list[str]:
    return list(estimate.DEVICE_CLASSES) if "all" in FLAGS.device else FLAGS.device


def sweep(cfg, workdir: pathlib.Path) -> int:
    everything = grid.expand(cfg, _devices())
    runs = grid.select(everything, FLAGS.only, FLAGS.skip)  # what this invocation trains
    if not runs:
        raise ConfigError(f"no run matches --only={FLAGS.only!r} --skip={FLAGS.skip!r}")
    packing.max_replicas(cfg.sweep.pack, runs[0].cfg)  # refuses a bad sweep.pack before any work
    sweep_pack_shard(cfg.sweep.pack_shard, runs[0].cfg.mesh)  # and a bad sweep.pack_shard
    if FLAGS.dry_run:
        records, check = _records(runs, workdir, cfg)
        print(json.dumps(records, indent=1) if FLAGS.json else
              tables.dry_run_table(records, estimated=FLAGS.estimate != "none", check=check))
        return 0
    compile_cache.enable(workdir)  # before this process compiles anything (inline runs)
    tmpfiles.remove_stale(workdir)  # a killed sweep's sweep.json being written
    store.write_json(workdir / "sweep.json", dict(config=to_dict(cfg), runs=[  # the whole grid, --only or not
        dict(run_id=r.run_id, point=r.point, config=to_dict(r.cfg),
             tokens=estimate.run_tokens(r, cfg.sweep.epoch_tokens)[0], branch_of=r.branch_of,
             branch_step=r.branch_step) for r in everything]))
    _prepare_data(runs)
    log.info("sweep of %d run(s) in %s, executor %s", len(runs), workdir, FLAGS.executor)
    outcomes = executors.execute(runs, workdir, FLAGS.executor, workers=FLAGS.workers,
                                 devices_per_worker=FLAGS.devices_per_worker, ray_address=FLAGS.ray_address,
                                 retry_failed=FLAGS.retry_failed, pack=cfg.sweep.pack,
                                 pack_shard=cfg.sweep.pack_shard)
    print(tables.summary_table(workdir, [r.run_id for r in runs]))
    failed = [o for o in outcomes if o["outcome"] == "failed"]
    counts = {k: sum(o["outcome"] == k for o in outcomes) for k in ("done", "skipped", "failed")}
    print(f"\n{counts['done']} trained, {counts['skipped']} already done, {counts['failed']} failed")
    if failed:
        print("failed runs (see W/runs/<id>/status.json; rerun with --retry_failed):", file=sys.stderr)
        for o in failed:
            print(f"  {o['run_id']}: {o.get('error', '')}", file=sys.stderr)
    return 1 if failed else 0


def _prepare_data(runs) -> None:
    """Every dataset the runs train on, prepared once before training starts."""
    real = [r.cfg for r in runs if r.cfg.data.source != "synthetic"]
    if real:
        from simscale.data import prepare_all

        log.info("preparing data: %s", ", ".join(sorted({f"{c.data.source} {c.data.variant}" for c in real})))
        prepare_all(real)


def status(workdir: pathlib.Path) -> int:
    state = store.read_json(workdir / "sweep.json")
    if state is None:
        raise FileNotFoundError(f"{workdir / 'sweep.json'} not found: is --workdir a sweep folder?")
    print(tables.status_table(workdir, state["runs"], estimate.measured_throughput(workdir)))
    return 0


def _main(argv) -> int:
    cpu_runtime.configure()
    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every checkpoint step at INFO
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s sweep: %(message)s", "%H:%M:%S"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    if not FLAGS.workdir:
        raise ConfigError("--workdir is required")
    check_folder(FLAGS.workdir, "--workdir", created=argv[1:] != ["status"])
    workdir = pathlib.Path(FLAGS.workdir)
    if argv[1:] == ["status"]:
        return status(workdir)
    if argv[1:]:
        raise ConfigError(f"unexpected arguments {argv[1:]}; the only command is 'status'")
    if FLAGS.config is None:
        raise ConfigError("--config is required, e.g. --config sweeps/grid.py:preset=cpu")
    if "sweep" not in FLAGS.config:
        raise ConfigError(f"--config {flags.FLAGS['config'].config_filename} has no `sweep` section")
    check_keys(FLAGS.config)
    for note in at_hand.resolve(FLAGS.config):
        log.info(note)
    return sweep(FLAGS.config, workdir)


def main() -> None:
    app.run(lambda argv: cli.run(_main, argv), flags_parser=cli.parse_flags)


if __name__ == "__main__":
    main()
