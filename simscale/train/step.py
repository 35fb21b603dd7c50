"""The compiled train and eval steps of one run shape, cached per process.

A train state is a dict {'step', 'params', 'opt_state'} sharded by the mesh
rules. `program(cfg, total_steps, mesh)` builds (once per distinct shape and
optimiser setting, whatever the budget: a run's step arguments, optim.step_args (its lr,
weight decay and its budget's schedule numbers), are an argument of the compiled step that
`prog.train` binds) functions compiled ahead of time on first use:

    state = prog.init(seed)
    state, metrics = prog.train(state, tokens_BT1)    # state donated
    losses_B = prog.eval(state['params'], tokens_BT1) # mean nats/token per sequence
"""
from __future__ import annotations

import dataclasses
import functools
import json
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from simscale.config import program_key
from simscale.model import llama
from simscale.model import loss as loss_lib
from simscale.train import mesh as mesh_lib
from simscale.train import optim


def _micro_batches(tokens_BT1, accum: int, mesh):
    """[B, T+1] -> [accum, B/accum, T+1]; micro-batch a holds rows a, a+accum, ... so each stays sharded
    over `mesh` (None: left where the rows are)."""
    B, T1 = tokens_BT1.shape
    micro = tokens_BT1.reshape(B // accum, accum, T1).swapaxes(0, 1)
    if mesh is None:
        return micro
    return jax.lax.with_sharding_constraint(micro, NamedSharding(mesh, P(None, mesh_lib.RULES["batch"])))


class Compiled:
    """A jitted function compiled ahead of time for fixed abstract arguments, on first use."""

    def __init__(self, jitted, *abstract_args):
        self._jitted, self._args, self._compiled = jitted, abstract_args, None
        self.compile_time_s: float | None = None

    def compile(self):
        if self._compiled is None:
            t0 = time.perf_counter()
            self._compiled = self._jitted.lower(*self._args).compile()
            self.compile_time_s = time.perf_counter() - t0
        return self._compiled

    def __call__(self, *args):
        return self.compile()(*args)


class BoundTrain:
    """A compiled train step (state, tokens, step_args) with one run's optim.step_args bound."""

    def __init__(self, compiled: Compiled, args: dict[str, jax.Array]):
        self.compiled, self.args = compiled, args

    def compile(self):
        return self.compiled.compile()

    @property
    def compile_time_s(self) -> float | None:
        return self.compiled.compile_time_s

    def __call__(self, state, tokens_BT1):
        return self.compiled(state, tokens_BT1, self.args)


@dataclasses.dataclass
class Program:
    init_state: Compiled  # rng key -> state
    train: Compiled | BoundTrain  # (state, tokens_BT1) -> (state, metrics); state donated
    eval: Compiled  # (params, tokens_BT1) -> per-sequence mean losses [B]
    abstract_state: Any  # ShapeDtypeStructs carrying their shardings
    batch_sharding: NamedSharding
    global_batch_shape: tuple[int, int]

    def init(self, seed: int) -> dict:
        return self.init_state(jax.random.key(seed))


def _init_fn(cfg, tx):
    def init_fn(rng):
        params = llama.init(rng, cfg.model)
        return {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(params)}
    return init_fn


def _state_shardings(cfg, tx, mesh):
    """(abstract state as ShapeDtypeStructs with shardings, tree of NamedShardings)."""
    abstract = jax.eval_shape(_init_fn(cfg, tx), jax.random.key(0))
    param_sh = mesh_lib.shardings(llama.logical_axes(cfg.model), abstract["params"], mesh)
    rep = mesh_lib.replicated(mesh)
    opt_sh = optax.tree_map_params(tx, lambda _, s: s, abstract["opt_state"], param_sh,
                                   transform_non_params=lambda _: rep)
    state_sh = {"step": rep, "params": param_sh, "opt_state": opt_sh}
    abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract,
                            state_sh)
    return abstract, state_sh


def abstract_state(cfg, mesh, total_steps: int = 1):
    """The train state's structure, shapes and shardings, e.g. to restore a checkpoint into."""
    tx = optim.optimizer(cfg.train, total_steps, llama.logical_axes(cfg.model))
    return _state_shardings(cfg, tx, mesh)[0]


def train_step_fn(cfg, mesh):
    """The train step as a function of (state, tokens_BT1, args, n_vocab) -> (state, metrics): `args`
    a run's optim.step_args as traced scalars (a lone run's bound by build(), each replica's in a packed
    group, simscale.train.packed) and `n_vocab` the vocabulary size to mask the logits to (None: all of
    them). `mesh` None: the batch's rows are not constrained to the mesh (a packed replica on one device)."""
    mc, tc = cfg.model, cfg.train
    axes = llama.logical_axes(mc)
    accum = tc.grad_accum

    def train_fn(state, tokens_BT1, args, n_vocab):
        tx = optim.optimizer(tc, args, axes)
        params = state["params"]
        grad_fn = jax.value_and_grad(functools.partial(loss_lib.mean_loss, model_cfg=mc,
                                                       loss_chunk=tc.loss_chunk, n_vocab=n_vocab))
        if accum == 1:
            loss, grads = grad_fn(params, tokens_BT1)
        else:
            def micro_step(grad_sum, toks):
                loss, grads = grad_fn(params, toks)
                return jax.tree.map(jnp.add, grad_sum, grads), loss

            zeros = jax.tree.map(jnp.zeros_like, params)
            grads, losses = jax.lax.scan(micro_step, zeros, _micro_batches(tokens_BT1, accum, mesh))
            grads, loss = jax.tree.map(lambda g: g / accum, grads), jnp.mean(losses)
        updates, opt_state = tx.update(grads, state["opt_state"], params)
        new = {"step": state["step"] + 1, "params": optax.apply_updates(params, updates),
               "opt_state": opt_state}
        lr = optim.learning_rate(tc, state["step"], args)
        return new, {"loss": loss, "grad_norm": optax.tree.norm(grads), "lr": lr}

    return train_fn


def build(cfg, total_steps: int, mesh) -> Program:
    """init/train/eval for this config's shapes and optimiser on `mesh`, each compiled on first use; the
    train step bound to the step_args of `total_steps` updates."""
    return _bind(_build(cfg, mesh), cfg, total_steps, mesh)


def _bind(core: Program, cfg, total_steps: int, mesh) -> Program:
    rep = mesh_lib.replicated(mesh)
    on_devices = {k: jax.make_array_from_callback((), rep, lambda index, v=v: np.asarray(v, np.float32))
                  for k, v in optim.step_args(cfg.train, total_steps).items()}
    return dataclasses.replace(core, train=BoundTrain(core.train, on_devices))


def _build(cfg, mesh) -> Program:
    """build() with a train step taking the step_args as its third argument."""
    mc, tc = cfg.model, cfg.train
    tx = optim.optimizer(tc, 1, llama.logical_axes(mc))  # its state's structure does not depend on the args
    init_fn = _init_fn(cfg, tx)
    abstract, state_sh = _state_shardings(cfg, tx, mesh)
    param_sh, rep = state_sh["params"], mesh_lib.replicated(mesh)
    batch_sh = mesh_lib.batch_sharding(mesh)
    shape = (tc.batch_size, tc.seq_len + 1)
    batch = jax.ShapeDtypeStruct(shape, jnp.int32, sharding=batch_sh)
    accum = tc.grad_accum
    step_fn = train_step_fn(cfg, mesh)
    train_fn = lambda state, tokens_BT1, args: step_fn(state, tokens_BT1, args, None)  # noqa: E731
    args = {k: jax.ShapeDtypeStruct((), jnp.float32, sharding=rep) for k in optim.STEP_ARGS}

    def eval_fn(params, tokens_BT1):
        per_seq = lambda toks: jnp.mean(loss_lib.token_losses(params, toks, mc), axis=-1)  # noqa: E731
        if accum == 1:
            return per_seq(tokens_BT1)
        losses_AB = jax.lax.map(per_seq, _micro_batches(tokens_BT1, accum, mesh))
        return losses_AB.swapaxes(0, 1).reshape(-1)  # back to the input's row order

    return Program(
        init_state=Compiled(jax.jit(init_fn, out_shardings=state_sh), jax.random.key(0)),
        train=Compiled(jax.jit(train_fn, in_shardings=(state_sh, batch_sh, rep),
                               out_shardings=(state_sh, rep), donate_argnums=0),
                       abstract, batch, args),
        eval=Compiled(jax.jit(eval_fn, in_shardings=(param_sh, batch_sh), out_shardings=rep),
                      abstract["params"], batch),
        abstract_state=abstract, batch_sharding=batch_sh, global_batch_shape=shape)


_CACHE: dict[str, Program] = {}  # compiled programs, by what the compiled code depends on
_BOUND: dict[str, Program] = {}  # and bound to a run's step_args


def program(cfg, total_steps: int, mesh) -> Program:
    """build() memoised on what the compiled code depends on, so a sweep compiles each shape once
    whatever its runs' budgets."""
    key = json.dumps([program_key(cfg), dict(mesh.shape), [d.id for d in mesh.devices.flat]])
    if key not in _CACHE:
        _CACHE[key] = _build(cfg, mesh)
    bound = json.dumps([key, optim.step_args(cfg.train, total_steps)])
    if bound not in _BOUND:
        _BOUND[bound] = _bind(_CACHE[key], cfg, total_steps, mesh)
    return _BOUND[bound]


def clear_cache() -> None:
    _CACHE.clear()
    _BOUND.clear()
