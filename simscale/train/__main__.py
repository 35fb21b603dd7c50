"""python -m simscale.train --config PATH[:args] --workdir RUNDIR [--config.x.y=v ...] [--distributed]

Trains one run into RUNDIR (resuming it when it holds checkpoints), holding RUNDIR/lock
(the sweep's run lock): a second trainer on the same RUNDIR exits at once (status 2). A sweep config's
`sweep` section is ignored: the run uses its model/train/data/mesh/eval sections.
"""
from __future__ import annotations

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from simscale import cli

# New attributes are accepted here and refused by simscale.validation in train(), in one line.
_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (get_config) with optional :args.",
                                          lock_config=False, accept_new_attributes=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory to train into (created; resumed if present).")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False,
                                 "Call jax.distributed.initialize() first (multi-host).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    from simscale import cpu_runtime

    cpu_runtime.configure()
    return cli.run(_train)


def _train() -> None:
    import jax

    from simscale import at_hand
    from simscale.config import ConfigError
    from simscale.runlock import RunLock, held_message
    from simscale.train import distributed, train
    from simscale.validation import check, check_folder

    if _DISTRIBUTED.value:
        distributed.initialize()
    check_folder(_WORKDIR.value, "--workdir")
    check(_CONFIG.value, jax.device_count())  # before the lock creates the run directory
    for note in at_hand.resolve(_CONFIG.value):
        print(note, file=sys.stderr)
    lock = RunLock(_WORKDIR.value)
    try:
        # The sweep's lock, one trainer per run: process 0 takes it, and every process stops if it could not.
        if not distributed.from_process_0(lock.acquire):
            raise ConfigError(held_message(_WORKDIR.value))
        result = train(_CONFIG.value, _WORKDIR.value)
    finally:
        lock.release()
    if jax.process_index() == 0:
        print(f"done: {result['steps']} steps, eval loss {result['eval_loss']:.4f} nats/token, "
              f"{result['wall_time_s']:.1f} s; results in {_WORKDIR.value}/result.json")


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
