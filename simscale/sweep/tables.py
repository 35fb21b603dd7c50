"""Tables: the dry run, the end-of-sweep summary and `status`."""
from __future__ import annotations

import pathlib
import time

from simscale.humanize import duration, human
from simscale.model.counting import device_peak_flops
from simscale.sweep import store
from simscale.sweep.estimate import ASSUMED_MFU, DEVICE_CLASSES


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def dry_run_table(records: list[dict], estimated: bool = True, check: dict | None = None) -> str:
    """One row per run and totals; `estimated=False` (--estimate none) leaves the time column empty;
    `check` (estimate.batch_check) adds a line saying how good the reduced-batch estimate was; records
    with `est_device_s` (--device) get a column per device class."""
    est = [r["est_time_s"] for r in records]
    rows = [[r["run_id"], r["width"], r["depth"], r["variant"], f"{r['params_total']:,}",
             f"{r['params_nonembedding']:,}", human(r["tokens"]) + ("" if r["tokens_exact"] else " (epoch)"),
             human(r["flops"]), duration(t) if estimated else "-", r.get("est_method") or "-", _role(r)]
            for r, t in zip(records, est)]
    rows.append(["total", "", "", f"{len(records)} runs", f"{sum(r['params_total'] for r in records):,}",
                 f"{sum(r['params_nonembedding'] for r in records):,}",
                 human(sum(r["tokens"] for r in records)), human(sum(r["flops"] for r in records)),
                 _total_time(est, estimated), "", ""])
    header = ["run", "width", "depth", "variant", "params", "non-embedding", "tokens",
              f"FLOPs ({records[0]['flops_convention']})" if records else "FLOPs", "est. time", "estimate",
              "wsd branch"]
    classes = list(records[0].get("est_device_s", {})) if records else []
    for row, r in zip(rows, records):
        row.extend(duration(r["est_device_s"][d]) for d in classes)
    rows[-1].extend(duration(sum(r["est_device_s"][d] for r in records)) for d in classes)
    header.extend(f"at {d}" for d in classes)
    lines = [table(header, rows)]
    if classes:
        lines.append(device_line())
    if any(r.get("branch_of") for r in records):
        lines.append(branching_line(records, estimated))
    if check:
        lines.append(batch_check_line(check))
    return "\n\n".join(lines)


def _role(record: dict) -> str:
    if record.get("branch_points"):
        return f"trunk (points {', '.join(map(str, record['branch_points']))})"
    return f"from step {record['branch_step']}" if record.get("branch_of") else ""


def _total_time(times: list, estimated: bool) -> str:
    return "-" if not estimated else duration(sum(times)) if None not in times else "?"


def branching_line(records: list[dict], estimated: bool = True) -> str:
    """What the wsd branches save: FLOPs and estimated time trained with them against from scratch."""
    flops, trained = (sum(r[k] for r in records) for k in ("flops", "trained_flops"))
    branches = sum(bool(r.get("branch_of")) for r in records)
    trunks = sum(bool(r.get("branch_points")) for r in records)
    times = (_total_time([r.get(k) for r in records], estimated) for k in ("est_trained_s", "est_time_s"))
    return (f"with wsd branches ({branches} run(s) off {trunks} trunk(s), sweep.branch=True): "
            f"{human(trained)} FLOPs, est. {next(times)}; from scratch (sweep.branch=False): "
            f"{human(flops)} FLOPs, est. {next(times)} ({trained / flops:.2f}x the FLOPs)")


def device_line() -> str:
    """What the `at DEVICE` columns assume."""
    peaks = ", ".join(f"{d} {n * device_peak_flops(kind) / 1e12:g}"
                      for d, (kind, n) in DEVICE_CLASSES.items())
    return (f"'at DEVICE' columns: PaLM FLOPs over the device's dense peak (TFLOP/s: {peaks}) at an "
            f"assumed MFU of {ASSUMED_MFU:.0%}, not measured; training only (no data preparation, "
            "compilation or evaluation); the smallest shapes run below that MFU")


def batch_check_line(check: dict) -> str:
    """The reduced-batch estimate against the full batch on one shape, in one line."""
    full = check["full_batch"]
    if "skipped" in full:
        return f"reduced-batch estimates not checked against a full batch: {full['skipped']}"
    error = check["time_error"]
    return (f"reduced-batch estimate checked on {check['shape']}: {check['batch_size']} sequences ran "
            f"{human(check['tokens_per_s'])} tokens/s and its full batch of {full['batch_size']} ran "
            f"{human(full['tokens_per_s'])}: the reduced-batch time estimate was {abs(error):.0%} "
            f"{'too long' if error >= 0 else 'too short'} ({check['shape']}'s rows use the full-batch "
            "figure)")


def run_state(rdir: pathlib.Path) -> str:
    """done | failed | running (a live lock holder) | interrupted (started, nobody on it) | pending."""
    status = store.run_status(rdir)
    if status.get("status") == "done" and (rdir / "result.json").exists():
        return "failed" if status.get("eval_error") else "done"
    if status.get("status") == "failed":
        return "failed"
    if store.holder(rdir):
        return "running"
    return "interrupted" if status else "pending"


def summary_table(workdir: pathlib.Path, run_ids: list[str]) -> str:
    rows = []
    for run_id in run_ids:
        rdir = store.run_dir(workdir, run_id)
        res = store.read_json(rdir / "result.json", {})
        status = store.run_status(rdir)
        state = run_state(rdir)
        flops = (res.get("flops") or {}).get(res.get("flops_convention"))
        note = (status.get("eval_error") or status.get("error") or "") if state == "failed" else ""
        rows.append([run_id, human(res.get("params_total")), human(res.get("tokens")), human(flops),
                     f"{res['eval_loss']:.4f}" if res.get("eval_loss") is not None else "-", state,
                     note[:80]])
    return table(["run", "params", "tokens", "FLOPs", "eval loss", "status", "error"], rows)


def _progress_speed(rdir: pathlib.Path, status: dict, cfg) -> float | None:
    """Wall-clock tokens/s of the current attempt: steps since its start over the time since."""
    starts = [a for a in store.attempts(rdir) if a["event"] == "start"]
    if not starts or not status.get("updated") or status.get("step", 0) <= starts[-1].get("step", 0):
        return None
    elapsed = status["updated"] - starts[-1]["time"]
    steps = status["step"] - starts[-1].get("step", 0)
    return steps * cfg.train.batch_size * cfg.train.seq_len / elapsed if elapsed > 0 else None


def status_table(workdir: pathlib.Path, runs: list[dict], speeds: dict[str, float]) -> str:
    """done/running/failed/pending per run, last loss and ETA (remaining tokens / measured tokens/s)."""
    from simscale.config import upgrade, from_dict, program_key

    rows, counts, eta_total = [], {}, 0.0
    for entry in runs:
        rdir = store.run_dir(workdir, entry["run_id"])
        cfg = from_dict(upgrade(entry["config"])[0])  # a sweep.json written before a key existed
        state = run_state(rdir)
        counts[state] = counts.get(state, 0) + 1
        last = store.last_metrics(rdir)
        status = store.run_status(rdir)
        total = entry["tokens"]
        start_tokens = entry.get("branch_step", 0) * cfg.train.batch_size * cfg.train.seq_len  # a wsd branch
        done_tokens = max(last.get("tokens", 0), start_tokens) if state != "done" else total
        speed = _progress_speed(rdir, status, cfg) or speeds.get(program_key(cfg, speed_only=True))
        eta = 0.0 if state in ("done", "failed") else ((total - done_tokens) / speed if speed else None)
        eta_total = None if eta is None or eta_total is None else eta_total + eta
        age = time.time() - status["updated"] if status.get("updated") else None
        rows.append([entry["run_id"], state, f"{status.get('step', 0)}", human(last.get("loss")),
                     duration(eta) if state not in ("done", "failed") else "",
                     f"{duration(age)} ago" if age is not None else ""])
    text = table(["run", "status", "step", "last loss", "ETA", "updated"], rows)
    tally = ", ".join(f"{counts.get(k, 0)} {k}"
                      for k in ("done", "running", "failed", "interrupted", "pending"))
    return f"{text}\n\n{tally}; remaining (sequential) {duration(eta_total)}"
