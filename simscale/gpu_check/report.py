"""The GPU check's markdown: one table of stages with their headline results, one of the shapes."""
from __future__ import annotations

from simscale.humanize import human


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _mfu(rec: dict) -> str:
    if rec.get("mfu") is None:
        return "MFU omitted (no peak for this device)"
    return f"MFU {_pct(rec['mfu'])}"


def _memory(rec: dict) -> str:
    dev, xla = rec.get("device_memory"), rec.get("compiled_memory")
    parts = []
    if dev and dev.get("peak_bytes") is not None:
        parts.append(f"peak device memory {human(dev['peak_bytes'], 'B')}")
    if xla:
        parts.append(f"XLA temporaries {human(xla['temp'], 'B')}")
    return ", ".join(parts) or "memory not reported"


def _train(rec: dict) -> str:
    return (f"{rec['name']}, {rec['batch']} x {rec['seq_len']} tokens/step, {rec['compute_dtype']} matmuls, "
            f"attention {rec['attention']}: {human(rec['tokens_per_s'])} tokens/s, {_mfu(rec)}, "
            f"{_memory(rec)}")


def _shapes(rec: dict) -> str:
    text = f"{len(rec['shapes'])} shapes measured"
    return text + (f", {len(rec['skipped'])} skipped" if rec.get("skipped") else "")


def _attention(rec: dict) -> str:
    parts = []
    for impl in ("xla", "cudnn"):
        r = rec.get(impl, {})
        if "step_s" in r:
            parts.append(f"{impl} {1e3 * r['step_s']:.1f} ms/step")
        elif r.get("supported") is False:
            parts.append(f"{impl} unsupported: {r['reason']}")
    if "cudnn_speedup" in rec:
        parts.append(f"cuDNN {rec['cudnn_speedup']:.2f}x XLA")
    return "; ".join(parts)


def _agreement(rec: dict) -> str:
    return "; ".join(f"{c['compared']}: max rel diff {c['max_rel_diff']:.1e} (bound {c['rtol']:.1e})"
                     for c in rec.get("comparisons", [])) + f" over {rec['steps']} steps"


def _sweep(rec: dict) -> str:
    runs = rec.get("runs", [])
    losses = ", ".join(f"{r['final_loss']:.3f}" for r in runs if isinstance(r.get("final_loss"), float))
    done = f"{sum(r['status'] == 'done' for r in runs)}/{len(runs)} runs done"
    return done + (f", final losses {losses}" if losses else "")


HEADLINES = {"train": _train, "shapes": _shapes, "attention": _attention, "agreement": _agreement,
             "sweep": _sweep}


def _headline(name: str, rec: dict) -> str:
    try:
        text = HEADLINES[name](rec)
    except (KeyError, TypeError):  # a stage that failed before it had a result
        text = ""
    if rec["status"] == "failed":
        text += f" **failed**: {rec.get('error', '?')}"
    return text.strip()


def markdown(results: dict) -> str:
    d = results["device"]
    peak = (f"{d['peak_bf16_flops'] / 1e12:.0f} TFLOP/s dense bf16" if d.get("peak_bf16_flops")
            else "peak unknown")
    lines = [f"# simscale GPU check ({results['mode']})", "",
             f"{d['count']} x {d['kind']} ({d['backend']}, {peak}), jax {d['jax']}, {results['started']}, "
             f"{results['total_time_s']:.0f} s in all", "",
             "| stage | status | time s | budget s | result |", "|---|---|---|---|---|"]
    for name, rec in results["stages"].items():
        lines.append(f"| {name} | {rec['status']} | {rec.get('time_s', 0):.1f} | {rec['budget_s']:.0f} | "
                     f"{_headline(name, rec)} |")
    train = results["stages"].get("train", {})
    rows = [dict(train, name=f"{train['name']} (stage train)")] if "tokens_per_s" in train else []
    rows += results["stages"].get("shapes", {}).get("shapes", [])
    if rows:
        lines += ["", "| shape | params | batch x seq | step ms | tokens/s | MFU (PaLM FLOPs) | compile s |",
                  "|---|---|---|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {r['name']} | {human(r['params'])} | {r['batch']} x {r['seq_len']} | "
                         f"{1e3 * r['step_s']:.2f} | {human(r['tokens_per_s'])} | {_pct(r.get('mfu'))} | "
                         f"{r['compile_s']:.1f} |")
    notes = sorted({r["mfu_note"] for r in rows if r.get("mfu_note")})
    if notes:
        lines += [""] + [f"Note: {n}." for n in notes]
    return "\n".join(lines) + "\n"
