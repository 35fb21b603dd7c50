"""Training throughput benchmark: simscale's compiled step vs the paper's stack (HF LLaMA + torch AdamW).

    python -m simscale.bench [--shapes 64x2,128x4,256x4] [--json FILE] [--steps N] [--no-peer]

Shapes are HIDDENxLAYERS with vocabulary 5000, sequence 128, batch 32, 8 heads, intermediate
4 x hidden, float32, one AdamW update with clipping per step. Step times are medians over
`--steps` timed steps after compilation and warm-up. The peer runs when torch and transformers
import, on the same shapes in the same run, each shape right after ours, in a child process (in
one process XLA's and torch's thread pools slow each other down) with the same heap settings
as simscale (simscale.cpu_runtime).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

VOCAB, SEQ_LEN, BATCH, HEADS = 5000, 128, 32, 8


def parse_shapes(text: str) -> list[tuple[int, int]]:
    try:
        shapes = [tuple(int(x) for x in part.split("x")) for part in text.split(",") if part.strip()]
    except ValueError:
        shapes = []
    if not shapes or any(len(s) != 2 or min(s) < 1 for s in shapes):
        raise ValueError(f"--shapes {text!r}: expected HIDDENxLAYERS[,HIDDENxLAYERS...], e.g. 64x2,128x4")
    return shapes


def bench_config(hidden: int, layers: int):
    from simscale.config import run_config

    cfg = run_config()
    cfg.model.update(dict(vocab_size=VOCAB, hidden=hidden, layers=layers, heads=HEADS, max_len=SEQ_LEN,
                          compute_dtype="float32"))
    cfg.train.update(dict(batch_size=BATCH, seq_len=SEQ_LEN, steps=10_000, warmup_steps=100))
    return cfg


def _tokens(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, VOCAB, (BATCH, SEQ_LEN + 1), dtype=np.int32)


def _timed(step_fn) -> float:
    t0 = time.perf_counter()
    step_fn()
    return time.perf_counter() - t0


def simscale_step(hidden: int, layers: int):
    """(one blocking train step, record without timings) for simscale's compiled step."""
    import jax

    from simscale.model import counting
    from simscale.train import mesh as mesh_lib
    from simscale.train import step as step_lib

    cfg = bench_config(hidden, layers)
    prog = step_lib.build(cfg, cfg.train.steps, mesh_lib.make_mesh(cfg.mesh))
    prog.train.compile()
    tokens = jax.device_put(_tokens(), prog.batch_sharding)
    state = [prog.init(0)]

    def one_step():
        state[0], metrics = prog.train(state[0], tokens)
        jax.block_until_ready(metrics)

    record = {"name": f"{hidden}x{layers}", "hidden": hidden, "layers": layers, "vocab": VOCAB,
              "seq_len": SEQ_LEN, "batch": BATCH, "params": counting.params_total(cfg.model),
              "compile_time_s": prog.train.compile_time_s, "flops_convention": cfg.train.flops_convention,
              "flops_per_token": counting.flops_per_token(cfg.model, SEQ_LEN, cfg.train.flops_convention),
              "device": jax.devices()[0].device_kind, "n_devices": jax.device_count()}
    return one_step, record


def peer_available() -> bool:
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        return False
    return True


def peer_step(hidden: int, layers: int):
    """One training step of Hugging Face LlamaForCausalLM + torch.optim.AdamW, float32, same shape."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=hidden, intermediate_size=4 * hidden,
                         num_hidden_layers=layers, num_attention_heads=HEADS, max_position_embeddings=SEQ_LEN,
                         tie_word_embeddings=False, attn_implementation="sdpa")
    model = LlamaForCausalLM(config).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
    tokens = torch.from_numpy(_tokens().astype(np.int64))[:, :-1]  # HF shifts the labels itself

    def one_step():
        loss = model(input_ids=tokens, labels=tokens).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return one_step


def median_step_time(step_fn, steps: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        step_fn()
    return statistics.median(_timed(step_fn) for _ in range(steps))


def peer_step_time(hidden: int, layers: int, steps: int) -> float:
    """The peer's median step time, measured in a fresh process so XLA's and torch's thread pools never compete."""
    # The peer gets the heap settings simscale's processes run with (cpu_runtime: torch re-faults its
    # large blocks each step too), and passive OpenMP waiting (spinning workers collapse torch's
    # speed 5x when other processes share the cores): its best showing.
    code = ("from simscale import cpu_runtime; cpu_runtime.keep_freed_memory(); from simscale.bench import *; "
            f"print(median_step_time(peer_step({hidden}, {layers}), {steps}))")
    env = {"OMP_WAIT_POLICY": "PASSIVE", **os.environ}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    return float(out.stdout.strip().splitlines()[-1])


def bench_shape(hidden: int, layers: int, steps: int, peer: bool) -> dict:
    """Median step time of simscale (and of the peer right after it, on the same shape)."""
    from simscale.model import counting

    ours, record = simscale_step(hidden, layers)
    step_time = median_step_time(ours, steps)
    tok_s = BATCH * SEQ_LEN / step_time
    flops = record.pop("flops_per_token") * tok_s
    record.update(step_time_s=step_time, tokens_per_s=tok_s, model_flops_per_s=flops,
                  mfu=counting.mfu(flops, record["device"], record.pop("n_devices")))
    if peer:
        peer_time = peer_step_time(hidden, layers, steps)
        record.update(peer="transformers LlamaForCausalLM + torch AdamW", peer_step_time_s=peer_time,
                      peer_tokens_per_s=BATCH * SEQ_LEN / peer_time, speedup=peer_time / step_time)
    return record


def table(records: list[dict]) -> str:
    head = f"{'shape':>8} {'params':>11} {'compile s':>9} {'step ms':>8} {'tok/s':>9} {'GFLOP/s':>8}"
    has_peer = any("peer_tokens_per_s" in r for r in records)
    if has_peer:
        head += f" {'peer tok/s':>10} {'ratio':>6}"
    lines = [head]
    for r in records:
        line = (f"{r['name']:>8} {r['params']:>11,} {r['compile_time_s']:>9.1f} {1e3 * r['step_time_s']:>8.1f} "
                f"{r['tokens_per_s']:>9,.0f} {r['model_flops_per_s'] / 1e9:>8.1f}")
        if has_peer and "peer_tokens_per_s" in r:
            line += f" {r['peer_tokens_per_s']:>10,.0f} {r['speedup']:>5.2f}x"
        lines.append(line)
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simscale.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="64x2,128x4,256x4", help="HIDDENxLAYERS, comma separated")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per shape (median reported)")
    parser.add_argument("--json", help="write the records to this file")
    parser.add_argument("--no-peer", action="store_true", help="skip the torch/transformers comparison")
    args = parser.parse_args(argv)
    from simscale import cpu_runtime

    cpu_runtime.configure()
    try:
        shapes = parse_shapes(args.shapes)
        if args.steps < 1:
            raise ValueError(f"--steps {args.steps}: need at least 1")
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    peer = not args.no_peer and peer_available()
    if not args.no_peer and not peer:
        print("(torch/transformers not installed: no peer comparison)", file=sys.stderr)
    records = []
    for hidden, layers in shapes:
        record = bench_shape(hidden, layers, args.steps, peer)
        records.append(record)
        print(f"{record['name']}: {record['tokens_per_s']:,.0f} tok/s"
              + (f", peer {record['peer_tokens_per_s']:,.0f} tok/s" if peer else ""), file=sys.stderr, flush=True)
    print(table(records))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(records, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
