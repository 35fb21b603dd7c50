"""Packed against lone training: aggregate tokens/s of K replicas in one step vs K lone runs (#17).

    python -m simscale.packed_bench [--shapes 32x2,64x2,128x2] [--replicas 1,2,4,8]
                                    [--batch 16] [--seq_len 64] [--steps 20] [--repeats 3] [--json FILE]
                                    [--pack_shard batch|replicas] [--cpu_devices N]

For each shape (HIDDENxLAYERS, vocabulary 5000, 8 heads, float32, AdamW) and each K: the packed step
of simscale.train.packed over K replicas (different learning rates, as a sweep would pack), and K lone
runs' compiled steps taken in turn (what a sweep does without packing), each on its own device-resident
batches of `--batch` x `--seq_len` tokens a replica. Each side runs `--steps` timed steps after two
warm-up steps, the two sides alternating for `--repeats` rounds; the table gives the median of each
side's aggregate tokens/s (K x batch x seq_len x steps / seconds) and their ratio. Data loading is
left out of both sides alike. `head ms`: a replica's share of K output heads' work timed on its own
(`head_seconds`); `bound` = a lone step's time / that: the most any packing could gain were the
rest of the step free. Both sides use one mesh over all devices (`--cpu_devices N`: N host
devices on a CPU): lone runs split their batch over it, the packed group as `--pack_shard` says
(sweep.pack_shard; 'replicas' pads K to a multiple of the devices, the padding counted as no tokens).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from simscale.config import run_config
from simscale.train import mesh as mesh_lib
from simscale.train import optim, packed
from simscale.train import step as step_lib


def config(hidden: int, layers: int, batch: int, seq_len: int, lr: float = 1e-3):
    cfg = run_config()
    cfg.model.update(dict(vocab_size=5000, hidden=hidden, layers=layers, heads=8, max_len=seq_len,
                          compute_dtype="float32"))
    cfg.train.update(dict(batch_size=batch, seq_len=seq_len, steps=1000, lr=lr, warmup_steps=10))
    return cfg


def _timed(fn, steps: int) -> float:
    fn(2)
    t0 = time.perf_counter()
    fn(steps)
    return time.perf_counter() - t0


def head_seconds(hidden: int, k: int, tokens: int, steps: int, vocab: int = 5000) -> float:
    """Seconds a step of K replicas' output heads takes on its own, a replica: logits h @ W over
    `tokens` rows, their exp, and the gradients' matmuls h^T e and e W^T, batched over K as in a
    packed step. Any step of these shapes does this work, so lone step time / this bounds what
    packing could gain were all else free."""
    h_KND = jnp.full((k, tokens, hidden), 0.01)
    w_KDV = jnp.full((k, hidden, vocab), 0.01)

    @jax.jit
    def head(h_KND, w_KDV):
        e_KNV = jnp.exp(jnp.einsum("knd,kdv->knv", h_KND, w_KDV))
        return jnp.einsum("knd,knv->kdv", h_KND, e_KNV), jnp.einsum("knv,kdv->knd", e_KNV, w_KDV)

    def run(n):
        for _ in range(n):
            out = head(h_KND, w_KDV)
        jax.block_until_ready(out)

    return _timed(run, steps) / steps / k


def measure(hidden: int, layers: int, k: int, batch: int, seq_len: int, steps: int, repeats: int,
            shard: str = "batch") -> dict:
    """Median aggregate tokens/s of K packed replicas (split over the devices by `shard`) and of K lone
    runs, and their ratio."""
    cfgs = [config(hidden, layers, batch, seq_len, lr=1e-3 * (i + 1)) for i in range(k)]
    mesh = mesh_lib.make_mesh(cfgs[0].mesh)
    rng = np.random.default_rng(0)
    tokens = [jnp.asarray(rng.integers(0, 5000, (batch, seq_len + 1), dtype=np.int32)) for _ in range(k)]
    progs = [step_lib.program(c, 1000, mesh) for c in cfgs]
    lone = [p.init(i) for i, p in enumerate(progs)]
    pad = lambda xs: packed.padded(xs, mesh, shard)  # noqa: E731
    place = lambda tree: packed.placed(tree, mesh, shard)  # noqa: E731
    group = {"state": place(packed.stack(pad([p.init(i) for i, p in enumerate(progs)])))}
    args = place(packed.stacked_args(pad([optim.step_args(c.train, 1000) for c in cfgs])))
    batch_KBT1 = place(jnp.stack(pad(tokens)))
    step = packed.packed_step(cfgs[0], mesh, (group["state"], batch_KBT1, args, None), shard)

    def run_packed(n):
        for _ in range(n):
            group["state"], metrics = step(group["state"], batch_KBT1, args, None)
        jax.block_until_ready(metrics)

    def run_lone(n):
        for _ in range(n):
            for i, p in enumerate(progs):
                lone[i], metrics = p.train(lone[i], tokens[i])
        jax.block_until_ready(metrics)

    per_round = k * batch * seq_len * steps
    packed_tps, lone_tps = [], []
    for _ in range(repeats):
        packed_tps.append(per_round / _timed(run_packed, steps))
        lone_tps.append(per_round / _timed(run_lone, steps))
    p, lo = statistics.median(packed_tps), statistics.median(lone_tps)
    head_s = statistics.median(head_seconds(hidden, k, batch * seq_len, steps) for _ in range(repeats))
    return {"shape": f"{hidden}x{layers}", "replicas": k, "packed_tokens_per_s": p, "lone_tokens_per_s": lo,
            "speedup": p / lo, "head_s_per_replica": head_s, "speedup_bound": batch * seq_len / lo / head_s,
            "device": jax.devices()[0].device_kind, "devices": len(jax.devices()), "pack_shard": shard}


def table(rows: list[dict]) -> str:
    lines = [f"{'shape':>7} {'K':>2} {'packed tok/s':>13} {'K lone tok/s':>13} {'packed/lone':>11} "
             f"{'head ms':>8} {'bound':>6}"]
    lines += [f"{r['shape']:>7} {r['replicas']:>2} {r['packed_tokens_per_s']:>13,.0f} "
              f"{r['lone_tokens_per_s']:>13,.0f} {r['speedup']:>10.2f}x "
              f"{r['head_s_per_replica'] * 1e3:>8.1f} {r['speedup_bound']:>5.2f}x" for r in rows]
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="32x2,64x2,128x2")
    ap.add_argument("--replicas", default="1,2,4,8")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq_len", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default="")
    ap.add_argument("--pack_shard", default="batch", choices=("batch", "replicas"))
    ap.add_argument("--cpu_devices", type=int, default=0, help="host devices on a CPU (0: as configured)")
    args = ap.parse_args(argv)
    if args.cpu_devices:  # read when the CPU backend starts, at the first computation
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                                   + f" --xla_force_host_platform_device_count={args.cpu_devices}")
    rows = []
    for shape in args.shapes.split(","):
        hidden, layers = (int(x) for x in shape.split("x"))
        for k in (int(x) for x in args.replicas.split(",")):
            rows.append(measure(hidden, layers, k, args.batch, args.seq_len, args.steps, args.repeats,
                                args.pack_shard))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    print(f"\n{len(jax.devices())} x {jax.devices()[0].device_kind}, packed groups split by "
          f"{args.pack_shard}, {args.batch} x {args.seq_len} tokens a replica, vocabulary 5000, float32\n"
          + table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    from simscale import cpu_runtime

    cpu_runtime.configure()
    main()
