"""`python -m simscale.step_bench --profile DIR`: where a traced train step's wall time goes.

Traces a few steps with jax.profiler, maps each XLA instruction back to the simscale (or optax)
function that produced it through the HLO's stack frames, and splits the step's wall time by
model part (attention, output head + loss, projections, optimizer update, ...), by kind of op
(matmul, elementwise, copies, control) and by op.
"""
from __future__ import annotations

import os
import collections
import dataclasses
import glob
import gzip
import json
import re

from simscale.step_bench import _timed, bench_config, simscale_step
from simscale.model import counting


@dataclasses.dataclass(frozen=True)
class HloOp:
    """One instruction of the compiled step: what it computes (kind), for which part of the model (part)."""
    name: str
    shape: str
    kind: str  # 'matmul', 'elementwise/reduce', 'copy/transpose' or 'control'
    part: str


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, i


def _proto_fields(buf: bytes):
    """(field number, value) of a serialized protobuf message: ints for varints, bytes otherwise."""
    i = 0
    while i < len(buf):
        tag, i = _varint(buf, i)
        wire_type = tag & 7
        if wire_type == 0:
            value, i = _varint(buf, i)
        elif wire_type == 2:
            size, i = _varint(buf, i)
            value, i = buf[i:i + size], i + size
        elif wire_type in (1, 5):
            size = 8 if wire_type == 1 else 4
            value, i = buf[i:i + size], i + size
        else:
            raise ValueError(f"unsupported protobuf wire type {wire_type}")
        yield tag >> 3, value


def stack_frames(module_proto: bytes) -> dict[int, tuple[tuple[str, str], ...]]:
    """Stack frame id -> ((file, function), ...) innermost first, from an HloModuleProto's stack_frame_index.

    XLA's HLO text names only a stack_frame_id per instruction; the index (HloModuleProto field 17:
    file_names 1, function_names 2, file_locations 3, stack_frames 4; ids 1-based) resolves it.
    """
    index = collections.defaultdict(list)
    for number, value in _proto_fields(module_proto):
        if number == 17:
            for sub_number, sub_value in _proto_fields(value):
                index[sub_number].append(sub_value)
    files = [b.decode() for b in index[1]]
    functions = [b.decode() for b in index[2]]
    locations = [dict(_proto_fields(b)) for b in index[3]]
    frames = [dict(_proto_fields(b)) for b in index[4]]

    def chain(frame_id):
        out = []
        while frame_id:
            frame = frames[frame_id - 1]
            loc = locations[frame.get(1, 0) - 1]
            out.append((files[loc.get(1, 0) - 1], functions[loc.get(2, 0) - 1]))
            frame_id = frame.get(2, 0)
        return tuple(out)

    return {i: chain(i) for i in range(1, len(frames) + 1)}


_ATTENTION_FUNCTIONS = {"causal_attention", "_probs", "_attention", "_forward", "_backward", "attention"}
# counting.flops_palm_parts -> the model part whose ops execute those FLOPs
_FLOPS_PARTS = {"projections": "projections", "output head": "output head + loss",
                "attention": "attention (QK, softmax, PV)"}
_LLAMA_PARTS = {"rotary": "rotary embedding", "rotary_tables": "rotary embedding", "project": "projections",
                "rms_norm": "RMSNorm", "block": "SwiGLU + residuals", "hidden_states": "embedding",
                "apply": "output head + loss"}


def model_part(frames: tuple[tuple[str, str], ...]) -> str:
    """The part of the model an op belongs to, from its innermost frame in simscale or optax."""
    for file, function in frames:
        name = function.rsplit(".", 1)[-1]
        if "/optax/" in file or file.endswith("simscale/train/optim.py"):
            return "optimizer update"
        if file.endswith("simscale/train/step.py") and name == "train_fn":
            return "optimizer update"
        if file.endswith("simscale/model/loss.py"):
            return "output head + loss"
        if file.endswith(("simscale/model/cpu_kernels.py", "simscale/model/llama.py")):
            if name in _ATTENTION_FUNCTIONS:
                return "attention (QK, softmax, PV)"
            default = "projections" if file.endswith("cpu_kernels.py") else "model, other"
            return _LLAMA_PARTS.get(name, default)
    return "other"


_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = (.*)$")
_COMPUTATION = re.compile(r"^(?:ENTRY )?%([\w.\-]+) .*\{$")
_CALLED = re.compile(r"\b(?:calls|to_apply)=%([\w.\-]+)")
_CONTROL = {"while", "call", "conditional", "tuple", "get-tuple-element", "parameter", "constant"}


def _shape_and_opcode(rest: str) -> tuple[str, str]:
    """'f32[2,3]{1,0} dot(%a, %b), ...' -> ('f32[2,3]{1,0}', 'dot'); tuple shapes '(s32[], ...)' too."""
    if rest.startswith("("):
        depth = 0
        for j, c in enumerate(rest):
            depth += {"(": 1, ")": -1}.get(c, 0)
            if depth == 0:
                break
        shape, remainder = rest[:j + 1], rest[j + 2:]
    else:
        shape, _, remainder = rest.partition(" ")
    return shape, remainder.split("(", 1)[0]


def _op_kind(opcode: str, called: list[str], has_dot: dict[str, bool], name: str) -> str:
    calls_dot = opcode in ("fusion", "custom-call") and any(map(has_dot.get, called))
    if opcode in ("dot", "convolution") or calls_dot:
        return "matmul"
    if opcode in _CONTROL:
        return "control"
    if opcode in ("copy", "transpose") or "transpose" in name or "copy" in name:
        return "copy/transpose"
    return "elementwise/reduce"


def hlo_ops(compiled) -> dict[str, HloOp]:
    """Every instruction of a compiled jax executable by name (the names the profiler's events carry)."""
    module = compiled.runtime_executable().hlo_modules()[0]
    frames = stack_frames(module.as_serialized_hlo_module_proto())
    parsed, has_dot, computation = [], collections.defaultdict(bool), None
    for line in compiled.as_text().splitlines():
        if m := _COMPUTATION.match(line):
            computation = m.group(1)
        elif m := _INSTRUCTION.match(line):
            shape, opcode = _shape_and_opcode(m.group(2))
            has_dot[computation] |= opcode in ("dot", "convolution")
            frame = re.search(r"stack_frame_id=(\d+)", m.group(2))
            parsed.append((m.group(1), shape, opcode, _CALLED.findall(m.group(2)),
                           frames.get(int(frame.group(1)), ()) if frame else ()))
    return {name: HloOp(name, shape, _op_kind(opcode, called, has_dot, name), model_part(stack))
            for name, shape, opcode, called, stack in parsed}


def trace_events(trace_dir: str, names) -> dict[int, list[tuple[float, float, str]]]:
    """Thread id -> [(start us, end us, op name)] of the newest jax.profiler trace under trace_dir."""
    pattern = os.path.join(trace_dir, "**", "*.trace.json.gz")
    paths = sorted(glob.glob(pattern, recursive=True), key=os.path.getmtime)
    if not paths:
        raise FileNotFoundError(f"no *.trace.json.gz under {trace_dir}: did jax.profiler write a trace?")
    with gzip.open(paths[-1]) as f:
        events = json.load(f)["traceEvents"]
    by_thread = collections.defaultdict(list)
    for e in events:
        if e.get("ph") == "X" and e.get("name") in names:
            by_thread[e["tid"]].append((e["ts"], e["ts"] + e["dur"], e["name"]))
    return by_thread


def _innermost(events: list[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
    """One thread's nested events -> non-overlapping segments, each given to its innermost open event."""
    segments, stack, cursor = [], [], 0.0

    def close_until(t):
        nonlocal cursor
        while stack and stack[-1][1] <= t:
            _, end, name = stack.pop()
            if end > cursor:
                segments.append((cursor, end, name))
            cursor = max(cursor, end)

    for start, end, name in sorted(events, key=lambda e: (e[0], -e[1])):
        close_until(start)
        if stack and start > cursor:
            segments.append((cursor, start, stack[-1][2]))
        stack.append((start, min(end, stack[-1][1]) if stack else end, name))
        cursor = start
    close_until(float("inf"))
    return segments


def op_wall_times(by_thread) -> tuple[dict[str, float], float]:
    """(op name -> us of wall time, us with any op running); ops running at once on several threads share."""
    edges = []
    for events in by_thread.values():
        for start, end, name in _innermost(events):
            edges += [(start, 1, name), (end, -1, name)]
    edges.sort(key=lambda e: (e[0], e[1]))
    times, active, busy, last = collections.defaultdict(float), collections.Counter(), 0.0, None
    for t, delta, name in edges:
        n_active = sum(active.values())
        if n_active and last is not None and t > last:
            for op, count in active.items():
                times[op] += (t - last) * count / n_active
            busy += t - last
        active[name] += delta
        if not active[name]:
            del active[name]
        last = t
    return dict(times), busy


def profile_shape(hidden: int, layers: int, steps: int, trace_dir: str, top: int = 12) -> dict:
    """Trace `steps` simscale steps and split their wall time by model part, by kind of op, and by op."""
    import jax

    ours, record, compiled = simscale_step(hidden, layers)
    for _ in range(3):
        ours()  # warm up outside the trace
    jax.profiler.start_trace(trace_dir)
    try:
        wall_us = 1e6 * sum(_timed(ours) for _ in range(steps))
    finally:
        jax.profiler.stop_trace()
    ops = hlo_ops(compiled)
    times, busy_us = op_wall_times(trace_events(trace_dir, ops))
    parts, kinds = collections.Counter(), collections.Counter()
    for name, us in times.items():
        parts[ops[name].part] += us / wall_us
        kinds[ops[name].kind] += us / wall_us
    idle = max(0.0, 1 - busy_us / wall_us)
    parts["idle: no op running (dispatch, waits)"] = kinds["idle: no op running (dispatch, waits)"] = idle
    top_ops = [{**dataclasses.asdict(ops[name]), "fraction": us / wall_us}
               for name, us in sorted(times.items(), key=lambda kv: -kv[1])[:top]]
    step_time_s = wall_us / 1e6 / steps
    tokens = record["batch"] * record["seq_len"]
    part_flops = {part: tokens * f for part, f in
                  counting.flops_palm_parts(bench_config(hidden, layers).model, record["seq_len"]).items()}
    part_gflops = {part: f / (parts[_FLOPS_PARTS[part]] * step_time_s) / 1e9
                   for part, f in part_flops.items() if parts[_FLOPS_PARTS[part]] > 0}
    return {"name": record["name"], "profiled_steps": steps, "step_time_s": step_time_s,
            "parts": dict(parts.most_common()), "kinds": dict(kinds.most_common()), "top_ops": top_ops,
            "part_flops_per_step": part_flops, "part_gflops": part_gflops}


def profile_table(profile: dict, peak_gflops: float) -> str:
    lines = [f"{profile['name']}: {1e3 * profile['step_time_s']:.1f} ms/step traced "
             f"({profile['profiled_steps']} steps, share of wall time)"]
    for title in ("parts", "kinds"):
        lines.append(f"  by {title[:-1]}: " + ", ".join(f"{k} {v:.1%}" for k, v in profile[title].items()))
    lines.append("  GFLOP/s by part (its PaLM FLOPs over its share of the time, all of its ops): "
                 + ", ".join(f"{part} {g:.0f} ({g / peak_gflops:.0%} of peak)"
                             for part, g in profile["part_gflops"].items()))
    lines.append("  top ops:")
    lines += [f"    {op['fraction']:6.1%}  {op['name']:<40} {op['kind']:<18} {op['part']:<28} {op['shape']}"
              for op in profile["top_ops"]]
    return "\n".join(lines)
