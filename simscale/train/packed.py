"""Packed groups: runs of one model shape trained together, in one jax.vmap-ed compiled step (#17).

    results = train_group([(cfg, run_dir), ...])  # result.json's dict (or the failure) of each run

The runs of a group may differ in seed, data (variant, source, ...), optim.PER_RUN (learning rate,
weight decay, warmup), model.vocab_size and step count (each replica's schedule gets its own; one that
ends early finishes its run and computes on, unread); all else that shapes the step or the loop must match
(config.group_key). Parameters and optimiser states are stacked on a leading replica axis R; the step
takes each replica's optim.step_args (lr, weight decay and its schedule's numbers: the traced inputs of
a lone run's step, stacked) (one compilation for any values) and its own batches, read as its lone run
reads them. A smaller vocabulary is padded with zero embedding rows and
output-head columns to the group's, its logits past its own size masked out of the softmax: the
padding gets no gradient and stays zero, and losses equal the unpadded model's.

Each run stays a run: its directory gets what simscale.train.train writes (config.json, status,
metrics.jsonl, checkpoints of its own unpadded state, result.json and its evaluation), result.json
adding `packed_with`, the other runs' directory names. A group resumes at the newest checkpoint step
all its runs hold. A run whose loss turns non-finite fails alone (status failed); the others go on,
its replica's slot computing unread. One host only (each replica's batches are read whole there).

Devices (`shard`, sweep.pack_shard): 'batch' splits each replica's batch over the run's mesh as its
lone run's, the replica axis unsharded; 'replicas' splits the replica axis over mesh.data instead,
each device training its share of the runs whole (no gradient all-reduce; the group padded with
copies of its last run, computing unread, to a multiple of the devices).
"""
from __future__ import annotations

import json
import time
import traceback

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from simscale.config import PACKABLE, ConfigError, group_key, run_config
from simscale.data import loader
from simscale.train import mesh as mesh_lib
from simscale.train import optim
from simscale.train import step as step_lib
from simscale.train.loop import NonFiniteLoss, _finish, _Run, fail, open_run, read_ahead
from simscale.validation import sweep_pack_shard


def _program_cfg(cfg):
    """`cfg` with PER_RUN at the defaults: the lone program that evaluates a packed run and shapes its
    state (neither depends on PER_RUN), shared by the group's runs of one vocabulary size."""
    out = cfg.copy_and_resolve_references()
    defaults = run_config().train
    for k in optim.PER_RUN:
        out.train[k] = defaults[k]
    return out


def resize_vocab(tree, n: int):
    """A state (or params) tree with every embedding ('embed', rows) and output head ('lm_head', columns)
    padded with zeros, or cut, to `n` vocabulary entries: Adam's moments as the parameters."""
    def resize(path, x):
        axis = {"embed": 0, "lm_head": 1}.get(getattr(path[-1], "key", None) if path else None)
        if axis is None or x.shape[axis] == n:
            return x
        if x.shape[axis] > n:
            return jax.lax.slice_in_dim(x, 0, n, axis=axis)
        pad = [(0, 0)] * x.ndim
        pad[axis] = (0, n - x.shape[axis])
        return jnp.pad(x, pad)

    return jax.tree_util.tree_map_with_path(resize, tree)


def stack(trees):
    """Trees of equal structure and shapes -> one tree whose leaves have a leading replica axis."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


_CACHE: dict[str, step_lib.Compiled] = {}


def packed_step(cfg, mesh, args, shard: str = "batch") -> step_lib.Compiled:
    """The lone train step (step.train_step_fn) vmapped over replicas, state donated, compiled once per
    group shape, replica count, mesh and `shard` for any step_args (args[2], stacked: `stacked_args`);
    the arguments' shardings say where each replica lives (`_Group`)."""
    key = json.dumps([group_key(cfg), cfg.model.vocab_size, args[3] is not None, shard,
                      [a.shape for a in jax.tree.leaves(args[1])], [d.id for d in mesh.devices.flat]])
    if key not in _CACHE:
        in_axes = (0, 0, 0, None if args[3] is None else 0)
        # a replica lives on one device: no constraint splits its micro-batches over the mesh
        fn = jax.vmap(step_lib.train_step_fn(cfg, None if shard == "replicas" else mesh), in_axes=in_axes)
        abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), args)
        _CACHE[key] = step_lib.Compiled(jax.jit(fn, donate_argnums=0), *abstract)
    return _CACHE[key]


def replica_sharding(mesh, shard: str) -> NamedSharding | None:
    """Where a group's stacked arrays [R, ...] live: with shard='replicas', the replica axis split over
    mesh.data; else None (as computed: each replica laid out as its lone run)."""
    return NamedSharding(mesh, P("data")) if shard == "replicas" else None


def padded(xs: list, mesh, shard: str) -> list:
    """A group's per-run values, with shard='replicas' followed by copies of the last one up to a
    multiple of mesh.data (slots that compute unread)."""
    return xs + xs[-1:] * (-len(xs) % mesh.shape["data"] if shard == "replicas" else 0)


def placed(tree, mesh, shard: str):
    """A group's stacked arrays put where replica_sharding says (as they are when it says None)."""
    sharding = replica_sharding(mesh, shard)
    return tree if sharding is None else jax.device_put(tree, sharding)


def clear_cache() -> None:
    _CACHE.clear()


def stacked_args(args: list[dict]) -> dict:
    """Runs' optim.step_args -> the packed step's: each one's values on a leading replica axis."""
    return {k: jnp.asarray([a[k] for a in args], jnp.float32) for k in optim.STEP_ARGS}


def train_group(members, *, stop_at: int | None = None, shard: str = "batch") -> list[dict]:
    """Train (or resume) runs [(cfg, run_dir), ...] as one packed group, split over the devices by
    `shard` (validation.PACK_SHARDS); each run's result.json dict, in order: {"status": "running",
    "step": s} when stopped at `stop_at`, {"status": "failed", "error": ...} for a run that failed
    alone (a non-finite loss: the others go on). Runs done already are left as they are. An error of
    the whole group fails its unfinished runs and is raised."""
    sweep_pack_shard(shard, members[0][0].mesh)
    if jax.process_count() > 1:
        raise ConfigError("packed groups run on one host: set sweep.pack=0 for a multi-host sweep")
    if len({group_key(cfg) for cfg, _ in members}) > 1:  # model, train and mesh: nothing `auto` there
        raise ConfigError("the runs of a packed group differ in more than seed, data, step count and "
                          f"{', '.join(PACKABLE)}: pack only runs of one config.group_key")
    opened = [open_run(cfg, run_dir) for cfg, run_dir in members]
    results = [result for _, _, result in opened]
    todo = [i for i, (_, _, result) in enumerate(opened) if result is None]
    if not todo:
        return results
    try:
        runs = _start([opened[i][:2] for i in todo])
        group = _Group(runs, shard)
    except Exception as e:
        for i in todo:
            fail(opened[i][1], 0, e)
        raise
    try:
        steps = max(run.steps for run in runs)
        for i, result in zip(todo, group.train(steps if stop_at is None else min(stop_at, steps))):
            results[i] = result
    finally:
        for run in runs:
            run.close()
    return results


def _start(members) -> list[_Run]:
    """Each run started as a lone run would be, all at the newest step all of them have a checkpoint of."""
    main = jax.process_index() == 0
    while True:
        runs = [_Run.start(cfg, run_dir, main, program_cfg=_program_cfg(cfg)) for cfg, run_dir in members]
        common = min(run.step for run in runs)
        if all(run.step == common for run in runs):
            names = [run.run_dir.name for run in runs]
            for run in runs:
                run.packed_with = [n for n in names if n != run.run_dir.name]
            return runs
        for run in runs:  # a later checkpoint is trained again, to the same state
            run.ckpt.discard_after(common)
            run.close()


class _Group:
    """The stacked state of a group's runs and each replica's progress: live (training), its last step
    (`ends`: its planned steps or the group's stop, or where its data ended) and its result once it
    has one. With shard='replicas' the stacked arrays hold `pad` more slots, copies of the last run's."""

    def __init__(self, runs: list[_Run], shard: str = "batch"):
        self.runs, self.cfg, self.shard = runs, runs[0].cfg, shard
        self.mesh = mesh_lib.make_mesh(self.cfg.mesh)
        self.vocabs = [run.cfg.model.vocab_size for run in runs]
        V = max(self.vocabs)
        self.pad = len(padded(runs, self.mesh, shard)) - len(runs)
        pad = lambda xs: padded(xs, self.mesh, shard)  # noqa: E731
        place = lambda tree: placed(tree, self.mesh, shard)  # noqa: E731
        self.state = place(stack(pad([resize_vocab(run.state, V) for run in runs])))
        for run in runs:
            run.state = None  # the stacked state holds it; a replica's own is made when it is needed
        self.args = place(stacked_args(pad([optim.step_args(run.cfg.train, run.steps) for run in runs])))
        self.n_vocab = place(jnp.asarray(pad(self.vocabs), jnp.int32)) if len(set(self.vocabs)) > 1 else None
        self.group_cfg = self.cfg.copy_and_resolve_references()
        self.group_cfg.model.vocab_size = V
        self.live = [True] * len(runs)
        self.ends: list[int] = []
        self.results: list[dict | None] = [None] * len(runs)
        self.pending: list = []  # device metrics [R] of the steps not yet logged

    def batches(self, start: int):
        """(device tokens [R, B, T+1], which replicas' data ended) of steps start + 1, ...: each
        replica's rows as its lone run reads them (zeros once its data has ended)."""
        tc = self.cfg.train
        sources = [loader.batches(run.data, run.cfg, "train", start) for run in self.runs]
        sharding = (replica_sharding(self.mesh, self.shard)
                    or NamedSharding(self.mesh, P(None, mesh_lib.RULES["batch"])))
        zeros = np.zeros((tc.batch_size, tc.seq_len + 1), np.int32)
        while True:
            rows = [next(src, None) for src in sources]
            ended = [r is None for r in rows]
            rows = [zeros if r is None else r for r in rows] + [zeros] * self.pad
            yield jax.device_put(np.stack(rows), sharding), ended

    def replica(self, i: int) -> dict:
        """Replica i's own (unpadded) state, laid out as its lone run's."""
        layout = jax.tree.map(lambda a: a.sharding, self.runs[i].prog.abstract_state)
        return jax.device_put(resize_vocab(jax.tree.map(lambda x: x[i], self.state), self.vocabs[i]), layout)

    def train(self, end: int) -> list[dict]:
        """Steps up to `end`, each run logging, evaluating, checkpointing and finishing on its lone run's
        cadences; train_group's results."""
        step = self.runs[0].step
        self.ends = [min(end, run.steps) for run in self.runs]
        data = read_ahead(self.batches(step))
        try:
            batch, ended = next(data)
            train_step = packed_step(self.group_cfg, self.mesh, (self.state, batch, self.args, self.n_vocab),
                                     self.shard)
            train_step.compile()
            for run in self.runs:  # the clocks start after compiling, as a lone run's
                run.clock_start = run.window_start = time.perf_counter()
            self.data_ends(step, ended)
            for i, run in enumerate(self.runs):  # resumed at the step where its data ended
                if self.live[i] and self.ends[i] == step == run.steps:
                    self.finish(i)
            while any(live and step < e for live, e in zip(self.live, self.ends)):
                self.state, metrics = train_step(self.state, batch, self.args, self.n_vocab)
                self.pending.append(metrics)
                step += 1
                batch, ended = next(data) if step < end else (None, [False] * len(self.runs))
                for i, run in enumerate(self.runs):
                    run.step = run.step + 1 if self.live[i] else run.step
                self.data_ends(step, ended)
                self.report(step)
            for run in self.runs:
                run.ckpt.wait()
        except Exception as e:
            for i, run in enumerate(self.runs):
                if self.live[i]:
                    fail(run.run_dir, run.step, e)
            raise
        finally:
            data.close()  # joins the read-ahead thread
        return [r if r is not None else {"status": "running", "step": run.step}
                for r, run in zip(self.results, self.runs)]

    def data_ends(self, s: int, ended: list[bool]) -> None:
        """Live replicas whose data gave no batch after step `s` end there (fail at step 0)."""
        for i, run in enumerate(self.runs):
            if self.live[i] and ended[i] and s < self.ends[i]:
                if s == 0:
                    self.retire(i, ValueError("the training data gave no batch for step 1"))
                else:
                    self.ends[i] = run.data_ended(s)

    def retire(self, i: int, error: Exception) -> None:
        """Run i failed alone: status failed; its replica's slot computes on, unread."""
        self.live[i] = False
        fail(self.runs[i].run_dir, self.runs[i].step, error)
        self.results[i] = {"status": "failed", "error": str(error), "traceback": traceback.format_exc()}

    def finish(self, i: int) -> None:
        run = self.runs[i]
        if run.state is None:
            run.state = self.replica(i)
        self.live[i] = False
        self.results[i] = _finish(run)
        run.state = None

    def report(self, s: int) -> None:
        """After step `s`: each live run's metrics record, evaluation, checkpoint and end, on its cadences
        (a non-finite loss retires its replica)."""
        tc = self.cfg.train
        every = lambda n: n > 0 and s % n == 0  # noqa: E731
        due = {}
        for i, run in enumerate(self.runs):
            if self.live[i]:
                evaluate_now = s == run.steps or every(tc.eval_every)
                checkpoint_now = s == self.ends[i] or every(tc.checkpoint_every)
                if evaluate_now or checkpoint_now or every(max(tc.log_every, 1)):
                    due[i] = evaluate_now, checkpoint_now
        if not due:
            return
        window = jax.device_get(self.pending)  # the only host-device sync of the loop
        self.pending = []
        for i, run in enumerate(self.runs):
            if self.live[i]:
                run.pending += [{k: v[i] for k, v in m.items()} for m in window]
        for i, (evaluate_now, checkpoint_now) in due.items():
            run = self.runs[i]
            try:
                record = run.metrics()
            except NonFiniteLoss as e:
                self.retire(i, e)
                continue
            if evaluate_now or checkpoint_now:
                run.state = self.replica(i)
            if evaluate_now:
                record.update(run.evaluate())
            run.write(record)
            if checkpoint_now:
                run.checkpoint()
            if s == self.ends[i]:
                if s == run.steps:
                    self.finish(i)
                else:
                    self.live[i] = False  # stopped at train_group's stop_at
            run.state = None
        for i in due:
            self.runs[i].window_start = time.perf_counter()  # the next record's tokens/s leaves out this work
