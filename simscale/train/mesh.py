"""Device mesh ('data', 'fsdp', 'tensor') and the rules mapping logical axis names onto it.

Parameters carry logical names (simscale.model.logical_axes); `RULES` says which
mesh axis shards each name. A dimension that the mesh axis does not divide
evenly stays replicated, so any model runs on any mesh.
"""
from __future__ import annotations

import math

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from simscale.config import ConfigError

AXES = ("data", "fsdp", "tensor")

# Logical name -> mesh axis (or tuple of axes); names absent here are replicated.
RULES = {
    "batch": ("data", "fsdp"),
    "vocab": "tensor",
    "embed": "fsdp",
    "heads": "tensor",
    "kv_heads": "tensor",
    "mlp": "tensor",
}


def mesh_shape(mesh_cfg, n_devices: int) -> tuple[int, int, int]:
    """Sizes of ('data', 'fsdp', 'tensor'); one axis may be -1: the devices left over."""
    sizes = [int(mesh_cfg[a]) for a in AXES]
    if sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
        raise ConfigError(f"mesh sizes {dict(zip(AXES, sizes))}: use positive sizes and at most one -1")
    known = math.prod(s for s in sizes if s != -1)
    if n_devices % known:
        raise ConfigError(f"mesh {dict(zip(AXES, sizes))} does not divide the {n_devices} devices")
    sizes = [n_devices // known if s == -1 else s for s in sizes]
    if math.prod(sizes) != n_devices:
        raise ConfigError(f"mesh {dict(zip(AXES, sizes))} needs {math.prod(sizes)} devices, have {n_devices}")
    return tuple(sizes)


def make_mesh(mesh_cfg, devices=None) -> Mesh:
    """A Mesh over `devices` (default: all devices of all hosts), axes AXES."""
    devices = jax.devices() if devices is None else list(devices)
    shape = mesh_shape(mesh_cfg, len(devices))
    if devices == jax.devices():
        try:  # topology-aware device order on TPU/GPU slices
            from jax.experimental import mesh_utils

            return Mesh(mesh_utils.create_device_mesh(shape, devices), AXES)
        except Exception:  # noqa: BLE001 - fall back to the plain order (e.g. CPUs)
            pass
    return Mesh(np.asarray(devices).reshape(shape), AXES)


def spec(logical: tuple, shape: tuple, mesh: Mesh) -> P:
    """PartitionSpec for one array: each named dim goes to its rule's axes when they divide it."""
    out = []
    for name, size in zip(logical, shape):
        axes = RULES.get(name)
        n = math.prod(mesh.shape[a] for a in np.atleast_1d(axes)) if axes else 1
        out.append(axes if axes and n > 1 and size % n == 0 else None)
    return P(*out)


def shardings(logical_tree, shape_tree, mesh: Mesh):
    """NamedShardings for a tree of arrays (shape_tree: arrays or ShapeDtypeStructs)."""
    return jax.tree.map(
        lambda axes, x: NamedSharding(mesh, spec(axes, x.shape, mesh)),
        logical_tree, shape_tree, is_leaf=lambda x: isinstance(x, tuple))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Token batches [B, T]: rows split over the data and fsdp axes."""
    return NamedSharding(mesh, P(RULES["batch"]))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_divisor(mesh: Mesh) -> int:
    return math.prod(mesh.shape[a] for a in RULES["batch"])
