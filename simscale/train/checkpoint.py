"""Orbax checkpoints of the train state plus JSON metadata; fallback past unreadable ones.

Layout: RUN_DIR/checkpoints/<step>/{state,meta}; meta holds the state's `checksum`, checked at
restore. Saves are asynchronous; the manager keeps the last `train.keep_checkpoints` plus every
`train.keep_period`-th.
"""
from __future__ import annotations

import contextlib
import json
import logging
import shutil
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from simscale.config import upgrade, from_dict, mesh_config
from simscale.jsonio import read_json


@contextlib.contextmanager
def _quiet():
    """orbax (absl) and asyncio log each failed read with a traceback; the fallback warning says it once."""
    loggers = [logging.getLogger(n) for n in ("absl", "asyncio")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def checksum(state) -> int:
    """32 bits of every array of `state`: position-weighted sums of their bits, computed where the arrays
    live. orbax reads damaged or mixed-up array files without noticing; a restored state whose checksum
    differs from the one saved with it is refused (a checkpoint saved without one is not checked)."""
    total = 0
    for s in _bit_sums(jax.tree.leaves(state)):
        total = (total * 1_000_003 + int(np.asarray(s.addressable_data(0)))) % 2**32
    return total


@jax.jit
def _bit_sums(leaves):
    sums = []
    for x in leaves:
        bits = (jax.lax.bitcast_convert_type(x, jnp.uint32) if x.dtype.itemsize >= 4 else
                jax.lax.bitcast_convert_type(x, jnp.uint16) if x.dtype.itemsize == 2 else
                x).astype(jnp.uint32)
        bits = bits.ravel()
        weights = jnp.arange(bits.size, dtype=jnp.uint32) * jnp.uint32(2654435761) + jnp.uint32(1)
        sums.append(jnp.sum(bits * weights, dtype=jnp.uint32))
    return sums


class Checkpoints:
    def __init__(self, directory, train_cfg=None, read_only: bool = False):
        self.directory = Path(directory).absolute()
        keep = train_cfg.keep_checkpoints if train_cfg is not None else None
        period = train_cfg.keep_period if train_cfg is not None else 0
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep or None, keep_period=period or None, create=not read_only,
            read_only=read_only, enable_async_checkpointing=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def save(self, step: int, state, meta: dict) -> None:
        """Start an asynchronous save of `state` and `meta` as checkpoint `step`."""
        meta = dict(meta, checksum=checksum(state))
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))

    def restore(self, abstract_state, discard_unreadable: bool = False, step: int | None = None):
        """(state, meta) from the newest readable checkpoint (or checkpoint `step` alone), or None when
        there is none.

        An unreadable (partial, corrupt) checkpoint is skipped with a warning; with
        `discard_unreadable` it is also deleted so that training can save that step again.
        """
        self.manager.reload()
        restored, discarded = None, False
        for step in [step] if step is not None else sorted(self.manager.all_steps(), reverse=True):
            try:
                with _quiet():
                    out = self.manager.restore(step, args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
                saved = out["meta"].get("checksum")
                if saved is not None and checksum(out["state"]) != saved:
                    raise ValueError("its arrays do not match the checksum saved with them")
                restored = out["state"], dict(out["meta"])
                break
            except Exception as e:  # noqa: BLE001 - any failure to read means: try the previous one
                reason = " ".join(f"{type(e).__name__}: {e}".split())[:200]  # one line
                warnings.warn(f"checkpoint {self.directory / str(step)} is unreadable ({reason}); "
                              "falling back to the previous one", stacklevel=2)
                if discard_unreadable and jax.process_index() == 0:
                    shutil.rmtree(self.directory / str(step), ignore_errors=True)
                discarded = discard_unreadable
        if discarded:  # the manager still lists the removed steps and would skip saving them again
            self.manager.reload()
        return restored

    def discard_after(self, step: int) -> None:
        """Delete the checkpoints newer than `step` (a packed group resuming at a step all its runs hold)."""
        self.manager.wait_until_finished()
        if jax.process_index() == 0:
            for s in self.manager.all_steps():
                if s > step:
                    shutil.rmtree(self.directory / str(s), ignore_errors=True)
        self.manager.reload()

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def load_params(run_dir):
    """(params, cfg) from the newest readable checkpoint of a run directory, for evaluation.

    Parameters are replicated over all local devices.
    """
    params, cfg, _ = load_checkpoint(run_dir)
    return params, cfg


def final_step(run_dir) -> int | None:
    """The step a run finished at (result.json `steps`), None while it is unfinished."""
    return (read_json(Path(run_dir) / "result.json") or {}).get("steps")


def load_final_checkpoint(run_dir, allow_earlier_step: bool = False):
    """load_checkpoint, refusing a newest readable checkpoint other than the run's final step (the final
    one unreadable, or the run unfinished) unless `allow_earlier_step`."""
    params, cfg, step = load_checkpoint(run_dir)
    final = final_step(run_dir)
    if step != final and not allow_earlier_step:
        raise ValueError(f"{run_dir}: the newest readable checkpoint is step {step}, not the run's final "
                         f"step {final}; finish or repair the run, or pass --allow_earlier_step to use step "
                         f"{step}")
    return params, cfg, step


def load_checkpoint(run_dir):
    """(params, cfg, step) from the newest readable checkpoint of a run directory."""
    from simscale.train import mesh as mesh_lib
    from simscale.train import step as step_lib

    run_dir = Path(run_dir)
    config_path = run_dir / "config.json"
    if not config_path.exists():
        raise FileNotFoundError(f"{config_path} not found: is {run_dir} a training run directory?")
    cfg = from_dict(upgrade(json.loads(config_path.read_text()))[0])
    mesh = mesh_lib.make_mesh(mesh_config())  # every local device, data parallel
    abstract = step_lib.abstract_state(cfg, mesh)
    ckpt = Checkpoints(run_dir / "checkpoints", read_only=True)
    try:
        restored = ckpt.restore(abstract)
    finally:
        ckpt.close()
    if restored is None:
        raise FileNotFoundError(f"no readable checkpoint in {run_dir / 'checkpoints'}")
    return restored[0]["params"], cfg, int(restored[1]["step"])
