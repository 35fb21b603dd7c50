"""Training throughput benchmark that explains itself: the machine's matmul peak, simscale's step, two peers.

    python -m simscale.step_bench [--shapes 64x2,128x4,256x4] [--steps N] [--repeats R] [--json FILE]
                             [--no-peer] [--profile DIR]

One run measures, on the same machine in one sitting:

- the physical reference: jax float32 matmul GFLOP/s at 512/1024/2048 cubed (best of several
  calls each); the largest is the peak that step speeds are quoted against;
- simscale's compiled train step per shape: median step time, tokens/s, model GFLOP/s (PaLM's
  count, the matmuls the step executes, as MFU is defined) and that as a fraction of the matmul peak;
- two peers on the same shapes: Hugging Face LlamaForCausalLM + torch AdamW ('torch', glibc's
  default heap) and the same with simscale's heap settings ('torch+heap',
  cpu_runtime.keep_freed_memory()), each in its own long-lived child process (XLA's and torch's
  thread pools slow each other down in one process) with OMP_WAIT_POLICY=PASSIVE unless the
  environment sets it (spinning OpenMP workers collapse torch's speed when other processes share
  the cores). For each of R repeats simscale, torch and torch+heap are timed in turn (A B C A B C
  ...), and each peer's ratio is the MIN over repeats of peer step time / simscale step time in
  that repeat: a slow moment on the machine cannot flatter simscale.

Shapes are HIDDENxLAYERS with vocabulary 5000, sequence 128, batch 32, 8 heads, intermediate
4 x hidden, float32, one AdamW update with global-norm clipping per step; a step time is the
median of `--steps` timed steps after two warm-up steps. `--profile DIR` instead traces a few
steps per shape with jax.profiler and splits the step's wall time by model part (attention,
output head + loss, optimizer update, ...) and by kind of op (matmul, elementwise, copies, idle).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import traceback

import numpy as np

VOCAB, SEQ_LEN, BATCH, HEADS = 5000, 128, 32, 8
MATMUL_SIZES = (512, 1024, 2048)
PEERS = {"torch": False, "torch+heap": True}  # peer name -> runs with cpu_runtime.keep_freed_memory()
# Model FLOPs are counted as PaLM counts them for MFU: the matmuls a step executes. Chinchilla's count
# (the sweeps' default) adds the input-embedding lookup, 1.67x / 1.35x / 1.22x PaLM's at 64x2 / 128x4 / 256x4.
BENCH_FLOPS = "palm"


def parse_shapes(text: str) -> list[tuple[int, int]]:
    try:
        shapes = [tuple(int(x) for x in part.split("x")) for part in text.split(",") if part.strip()]
    except ValueError:
        shapes = []
    if not shapes or any(len(s) != 2 or min(s) < 1 for s in shapes):
        raise ValueError(f"--shapes {text!r}: expected HIDDENxLAYERS[,HIDDENxLAYERS...], e.g. 64x2,128x4")
    return shapes


def parse_sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise ValueError(f"--matmul-sizes {text!r}: expected N[,N...], e.g. 512,1024,2048")
    return sizes


# --- the machine

def cpu_info(path: str = "/proc/cpuinfo") -> dict:
    """Vendor, family/model, name and vector extensions of the first CPU; the cores this process may use."""
    fields = {}
    try:
        with open(path) as f:
            for line in f:
                if not line.strip():
                    break  # the first processor's block is enough
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass  # not Linux: report what os knows
    flags = set(fields.get("flags", "").split())
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"model_name": fields.get("model name", "unknown"), "vendor": fields.get("vendor_id"),
            "family": fields.get("cpu family"), "model": fields.get("model"), "cores": cores,
            "vector": [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile") if f in flags]}


def describe_cpu(cpu: dict) -> str:
    vector = "+".join(cpu["vector"]) or "no AVX2/AVX-512"
    return (f"{cpu['model_name']} (family {cpu['family']}, model {cpu['model']}, {vector}), "
            f"{cpu['cores']} cores")


def matmul_gflops(n: int, min_time_s: float = 0.25, min_calls: int = 3) -> float:
    """Best GFLOP/s of a jitted float32 [n, n] @ [n, n] over calls filling `min_time_s` (>= `min_calls`)."""
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    a, b = (jax.device_put(rng.standard_normal((n, n), dtype=np.float32)) for _ in range(2))
    matmul = jax.jit(jnp.matmul)
    jax.block_until_ready(matmul(a, b))  # compile and warm up
    best, spent, calls = float("inf"), 0.0, 0
    while calls < min_calls or spent < min_time_s:
        t = _timed(lambda: jax.block_until_ready(matmul(a, b)))
        best, spent, calls = min(best, t), spent + t, calls + 1
    return 2 * n**3 / best / 1e9


def matmul_reference(sizes=MATMUL_SIZES) -> dict:
    """{'gflops': {n: GFLOP/s}, 'peak_gflops': the best of them}: what this machine's cores do at best."""
    gflops = {n: matmul_gflops(n) for n in sizes}
    return {"gflops": gflops, "peak_gflops": max(gflops.values())}


# --- simscale

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
    """(one blocking train step, record without timings, the compiled XLA executable) for simscale's step."""
    import jax

    from simscale.model import counting
    from simscale.train import mesh as mesh_lib
    from simscale.train import step as step_lib

    cfg = bench_config(hidden, layers)
    prog = step_lib.program(cfg, cfg.train.steps, mesh_lib.make_mesh(cfg.mesh))  # memoised per shape
    compiled = prog.train.compile()
    tokens = jax.device_put(_tokens(), prog.batch_sharding)
    state = [prog.init(0)]

    def one_step():
        state[0], metrics = prog.train(state[0], tokens)
        jax.block_until_ready(metrics)

    record = {"name": f"{hidden}x{layers}", "hidden": hidden, "layers": layers, "vocab": VOCAB,
              "seq_len": SEQ_LEN, "batch": BATCH, "params": counting.params_total(cfg.model),
              "compile_time_s": prog.train.compile_time_s, "flops_convention": BENCH_FLOPS,
              "flops_per_token": counting.flops_per_token(cfg.model, SEQ_LEN, BENCH_FLOPS),
              "device": jax.devices()[0].device_kind, "n_devices": jax.device_count()}
    return one_step, record, compiled


def median_step_time(step_fn, steps: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        step_fn()
    return statistics.median(_timed(step_fn) for _ in range(steps))


# --- peers

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


def serve_peer(heap: bool, stdin=None, stdout=None) -> None:
    """A peer process's loop: read {"hidden", "layers", "steps"} JSON lines, answer {"step_time_s"}/{"error"}.

    The peer for the latest shape is kept, so repeats on one shape time a warm model. With
    `heap`, malloc first gets simscale's settings (cpu_runtime.keep_freed_memory).
    """
    from simscale import cpu_runtime

    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    if heap:
        cpu_runtime.keep_freed_memory()
    shape, step_fn = None, None
    for line in stdin:
        try:
            request = json.loads(line)
            if (request["hidden"], request["layers"]) != shape:
                shape, step_fn = None, None  # free the previous shape's model first
                step_fn = peer_step(request["hidden"], request["layers"])
                shape = (request["hidden"], request["layers"])
            reply = {"step_time_s": median_step_time(step_fn, request["steps"])}
        except Exception:  # noqa: BLE001 - the parent reports it
            reply = {"error": traceback.format_exc()}
        stdout.write(json.dumps(reply) + "\n")
        stdout.flush()


class PeerProcess:
    """A long-lived child process timing one peer; XLA's and torch's thread pools never share a process."""

    def __init__(self, name: str, heap: bool):
        import tempfile

        import simscale

        self.name = name
        env = dict(os.environ)
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        package_root = os.path.dirname(os.path.dirname(os.path.abspath(simscale.__file__)))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        self.omp_wait_policy = env["OMP_WAIT_POLICY"]
        self._stderr = tempfile.TemporaryFile(mode="w+")
        code = f"from simscale.step_bench import serve_peer; serve_peer(heap={heap!r})"
        self._proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=self._stderr, text=True, env=env)

    def step_time(self, hidden: int, layers: int, steps: int) -> float:
        """The peer's median step time on this shape, seconds; RuntimeError with the child's error."""
        self._proc.stdin.write(json.dumps({"hidden": hidden, "layers": layers, "steps": steps}) + "\n")
        self._proc.stdin.flush()
        line = self._proc.stdout.readline()
        if not line:
            self._stderr.seek(0)
            status, tail = self._proc.wait(), self._stderr.read()[-3000:]
            raise RuntimeError(f"peer {self.name!r} exited (status {status}):\n{tail}")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"peer {self.name!r} failed on {hidden}x{layers}:\n{reply['error']}")
        return reply["step_time_s"]

    def close(self) -> None:
        self._proc.stdin.close()
        self._proc.wait(timeout=60)
        self._stderr.close()


# --- measurement

def speed(step_time_s: float, flops_per_token: float, peak_gflops: float) -> dict:
    """step time -> tokens/s, model FLOP/s and the fraction of the matmul peak that is."""
    tok_s = BATCH * SEQ_LEN / step_time_s
    flops = flops_per_token * tok_s
    return {"step_time_s": step_time_s, "tokens_per_s": tok_s, "model_flops_per_s": flops,
            "fraction_of_peak": flops / (peak_gflops * 1e9)}


def bench_shape(hidden: int, layers: int, steps: int, repeats: int, peers: list[PeerProcess],
                peak_gflops: float) -> dict:
    """simscale and each peer timed in turn, `repeats` times; the best step times and the min ratios."""
    from simscale.model import counting

    ours, record, _ = simscale_step(hidden, layers)
    flops_per_token = record.pop("flops_per_token")
    rounds = []
    for _ in range(repeats):
        times = {"simscale": median_step_time(ours, steps)}
        times.update((p.name, p.step_time(hidden, layers, steps)) for p in peers)
        rounds.append(times)
    record["repeats"] = rounds
    record.update(speed(min(r["simscale"] for r in rounds), flops_per_token, peak_gflops))
    record["mfu"] = counting.mfu(record["tokens_per_s"], bench_config(hidden, layers).model, SEQ_LEN,
                                 record["device"], record.pop("n_devices"))
    record["peers"] = {}
    for p in peers:
        ratios = [r[p.name] / r["simscale"] for r in rounds]
        record["peers"][p.name] = {**speed(min(r[p.name] for r in rounds), flops_per_token, peak_gflops),
                                   "ratios": ratios, "min_ratio": min(ratios)}
    return record


def requote(records: list[dict], peak_gflops: float) -> None:
    """Fractions of peak against `peak_gflops`: the higher of the matmul figures before and after the run
    (measured on a quiet machine they differed by up to 1.45x; the lower would flatter every step)."""
    for r in [*records, *(p for r in records for p in r["peers"].values())]:
        r["fraction_of_peak"] = r["model_flops_per_s"] / (peak_gflops * 1e9)


def table(records: list[dict]) -> str:
    """A line per shape: simscale's speed and fraction of the matmul peak, then each peer's and min ratio."""
    peer_names = list(records[0]["peers"]) if records else []
    head = (f"{'shape':>6} {'params':>10} {'compile s':>9} {'step ms':>8} {'tok/s':>8} {'GFLOP/s':>7} "
            f"{'peak':>5}")
    for name in peer_names:
        head += f" | {name + ' tok/s':>16} {'peak':>5} {'ratio min (per repeat)':>24}"
    lines = [head]
    for r in records:
        line = (f"{r['name']:>6} {r['params']:>10,} {r['compile_time_s']:>9.1f} "
                f"{1e3 * r['step_time_s']:>8.1f} {r['tokens_per_s']:>8,.0f} "
                f"{r['model_flops_per_s'] / 1e9:>7.1f} {r['fraction_of_peak']:>5.0%}")
        for name in peer_names:
            p = r["peers"][name]
            each = "/".join(f"{x:.2f}" for x in p["ratios"])
            line += (f" | {p['tokens_per_s']:>16,.0f} {p['fraction_of_peak']:>5.0%} "
                     f"{p['min_ratio']:>5.2f}x ({each})")
        lines.append(line)
    return "\n".join(lines)


def header(cpu: dict, matmul: dict) -> str:
    sizes = ", ".join(f"{n}^3 {g:.0f}" for n, g in matmul["gflops"].items())
    return (f"CPU: {describe_cpu(cpu)}\n"
            f"f32 jax matmul GFLOP/s: {sizes}; peak {matmul['peak_gflops']:.0f} "
            f"('peak' columns: model FLOP/s as a fraction of it)")


# --- CLI

def run_bench(shapes, steps: int, repeats: int, peer_names: list[str], peak_gflops: float) -> list[dict]:
    """bench_shape for every shape, with one child process per peer for the whole run."""
    peers = []
    try:
        peers = [PeerProcess(name, PEERS[name]) for name in peer_names]
        records = []
        for hidden, layers in shapes:
            record = bench_shape(hidden, layers, steps, repeats, peers, peak_gflops)
            records.append(record)
            summary = ", ".join(f"{n} min ratio {p['min_ratio']:.2f}x" for n, p in record["peers"].items())
            print(f"{record['name']}: {record['tokens_per_s']:,.0f} tok/s, "
                  f"{record['fraction_of_peak']:.0%} of the peak measured before"
                  + (f"; {summary}" if summary else ""),
                  file=sys.stderr, flush=True)
        return records
    finally:
        for p in peers:
            p.close()


def _parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m simscale.step_bench",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="64x2,128x4,256x4", help="HIDDENxLAYERS, comma separated")
    parser.add_argument("--steps", type=int, default=10, help="timed (or traced) steps per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="alternating simscale/peer rounds per shape")
    parser.add_argument("--matmul-sizes", default=",".join(map(str, MATMUL_SIZES)),
                        help="N of the N x N x N float32 matmuls measured as the reference peak")
    parser.add_argument("--json", help="write the machine, matmul reference and records to this file")
    parser.add_argument("--no-peer", action="store_true", help="skip the torch/transformers comparison")
    parser.add_argument("--profile", metavar="DIR", help="trace the steps into DIR and split their time")
    args = parser.parse_args(argv)
    shapes = parse_shapes(args.shapes)
    args.matmul_sizes = parse_sizes(args.matmul_sizes)
    for flag in ("steps", "repeats"):
        if getattr(args, flag) < 1:
            raise ValueError(f"--{flag} {getattr(args, flag)}: need at least 1")
    return args, shapes


def main(argv=None) -> int:
    from simscale import cli, cpu_runtime

    cpu_runtime.configure()
    return cli.run(_bench, argv)


def _bench(argv) -> int:
    args, shapes = _parse_args(argv)
    cpu, matmul = cpu_info(), matmul_reference(args.matmul_sizes)
    print(header(cpu, matmul), flush=True)
    out = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "cpu": cpu, "matmul": matmul}
    if args.profile:
        from simscale.profiling import profile_shape, profile_table

        out["profiles"] = [profile_shape(h, n, args.steps, os.path.join(args.profile, f"{h}x{n}"))
                           for h, n in shapes]
        print("\n".join(profile_table(p, matmul["peak_gflops"]) for p in out["profiles"]))
    else:
        peer = not args.no_peer and peer_available()
        if not args.no_peer and not peer:
            print("(torch/transformers not installed: no peer comparison)", file=sys.stderr)
        peer_names = list(PEERS) if peer else []
        out["omp_wait_policy"] = os.environ.get("OMP_WAIT_POLICY", "PASSIVE") if peer else None
        out["shapes"] = run_bench(shapes, args.steps, args.repeats, peer_names, matmul["peak_gflops"])
        out["matmul_after"] = matmul_reference(args.matmul_sizes)
        out["peak_gflops"] = max(matmul["peak_gflops"], out["matmul_after"]["peak_gflops"])
        requote(out["shapes"], out["peak_gflops"])
        print(f"f32 jax matmul peak after the run: {out['matmul_after']['peak_gflops']:.0f} GFLOP/s "
              f"(before: {matmul['peak_gflops']:.0f}); the table's 'peak' columns are fractions of the "
              f"higher, {out['peak_gflops']:.0f}")
        print(table(out["shapes"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
