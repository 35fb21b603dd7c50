"""`report`: every fit a set of runs supports, the figures, fits.json and summary.md.

Each fit that the data cannot support records {"error": reason} instead of
stopping the report; figures that can be drawn still are.
"""
from __future__ import annotations

import dataclasses
import json
import math
import pathlib

import numpy as np

from simscale.analysis import figures, optimal, points, zeroshot
from simscale.analysis.collect import Run, collect, finished, write_points
from simscale.analysis.fit import extrapolation, fit_law
from simscale.analysis.optimal import group_budgets

VARIANTS = ("simplified", "unrestricted")


def _attempt(fn, *args, **kw) -> dict:
    try:
        return fn(*args, **kw)
    except ValueError as e:
        return {"error": str(e)}


def _approach3(runs, convention, bootstrap, seed) -> dict:
    f = points.finals(runs, convention)
    source = "final" if len(np.unique(f["D"])) >= 3 else "curves"
    p = f if source == "final" else points.curve_points(runs, convention)
    x = np.stack([p["N"], p["D"]], -1)
    fit = fit_law("approach3", x, p["loss"], ("N", "D"), bootstrap=bootstrap, seed=seed)
    out = dict(fit.to_json(), source=source)
    k = points.flops_per_param_token(runs, convention)
    out["allocation"] = _attempt(lambda: dict(optimal.allocation(fit.params), k=k))
    # Refit without the largest size, started from the full-data optimum (not the whole grid again).
    out["extrapolation"] = _attempt(extrapolation, "approach3", x, p["loss"], ("N", "D"), starts=fit.theta)
    return out


def _fit_json(*args, **kw) -> dict:
    return fit_law(*args, **kw).to_json()


def _one_variable(runs, convention, bootstrap, seed) -> dict:
    """L(N) on final runs of the largest budget, L(D) along the largest run, L(C) on the frontier."""
    f, c = points.finals(runs, convention), points.curve_points(runs, convention)
    budget = group_budgets(f["D"])
    top = budget == budget.max()
    largest = c["N"] == c["N"].max() if len(c["N"]) else np.zeros(0, bool)
    data = dict(N=(f["N"][top], f["loss"][top]), D=(c["D"][largest], c["loss"][largest]),
                C=points.envelope(c["C"], c["loss"]))
    return {f"{var}_{form}": _attempt(_fit_json, form, x[:, None], loss, (var,), bootstrap=bootstrap, seed=seed)
            for var, (x, loss) in data.items() for form in ("power", "kaplan")}


def _approach2(runs, convention) -> dict:
    profiles, source = points.isoflop_profiles(runs, convention)
    out = optimal.isoflop(profiles, k=points.flops_per_param_token(runs, convention))
    return dict(out, source=source, profiles=[{k: np.asarray(v).tolist() for k, v in p.items()} for p in profiles])


def _task_score(e: dict, task_variant: str, metric: str) -> float | None:
    """A per-task record's value, or None for other variants/metrics, flagged records and suite averages."""
    value = e.get("value")
    if (e.get("variant") != task_variant or e.get("metric", metric) != metric or e.get("flagged")
            or "excluded" in e or not isinstance(value, (int, float)) or not math.isfinite(value)):
        return None
    return float(value)


def run_scores(runs: list[Run], task_variant: str, metric: str = "acc") -> dict[str, float]:
    """Mean zero-shot `metric` over the tasks every scored run has, per run id.

    Suite averages (records with `excluded`) and flagged records (too few examples) are left out.
    """
    per_run = {}
    for r in runs:
        scores = {e["task"]: v for e in r.evals if (v := _task_score(e, task_variant, metric)) is not None}
        if scores:
            per_run[r.run_id] = scores
    common = set.intersection(*(set(v) for v in per_run.values())) if per_run else set()
    return {k: float(np.mean([v[t] for t in common])) for k, v in per_run.items()} if common else {}


def _zero_shot(runs: list[Run]) -> dict:
    out = {}
    for task_variant in ("standard", "simplified"):
        scores = run_scores(runs, task_variant, "acc")
        if not scores:
            continue
        by_var = {v: [(r.N, scores[r.run_id]) for r in runs if r.variant == v and r.run_id in scores] for v in VARIANTS}
        chance = [e["chance"] for r in runs for e in r.evals if _task_score(e, task_variant, "acc") is not None
                  and isinstance(e.get("chance"), (int, float)) and math.isfinite(e["chance"])]
        entry = dict(chance=float(np.mean(chance)) if chance else None,
                     scores={v: sorted(pts) for v, pts in by_var.items()})
        if by_var["simplified"] and len(by_var["unrestricted"]) >= 2:
            ref = np.array(by_var["unrestricted"])
            q = np.array(by_var["simplified"])
            mult = zeroshot.size_multipliers(ref[:, 0], ref[:, 1], q[:, 0], q[:, 1])
            entry["size_multiplier"] = dict(zeroshot.summarise_multipliers(mult), per_model=[
                dict(N=float(n), score=float(s), multiplier=None if not np.isfinite(m) else float(m))
                for (n, s), m in zip(q, mult)])
        out[task_variant] = entry
    return out


def analyse(runs: list[Run], convention: str | None = None, bootstrap: int = 1000, seed: int = 0,
            log=lambda line: None) -> dict:
    """All fits per data variant, and zero-shot against scale, as a JSON-able dict."""
    done = finished(runs)
    results = dict(convention=convention, n_runs=len(runs), n_finished=len(done), variants={})
    for variant in sorted({r.variant for r in done}, key=str):
        rs = [r for r in done if r.variant == variant]
        log(f"fitting {variant} data: {len(rs)} runs, {bootstrap} bootstrap resamples per law")
        results["variants"][str(variant)] = dict(
            n_runs=len(rs),
            approach3=_attempt(_approach3, rs, convention, bootstrap, seed),
            approach2=_approach2(rs, convention),
            one_variable=_one_variable(rs, convention, bootstrap, seed),
        )
    results["zero_shot"] = _zero_shot(done)
    return results


def _fmt(v, ci=None) -> str:
    s = f"{v:.4g}"
    return f"{s} [{ci[0]:.4g}, {ci[1]:.4g}]" if ci else s


def summary_markdown(results: dict, warnings: list[str], figure_paths: list[str], figure_skips: dict) -> str:
    """A readable summary: fitted laws with intervals, allocation, goodness of fit, multipliers."""
    lines = ["# Scaling-law report", "",
             f"{results['n_finished']} finished runs of {results['n_runs']} (N: {results['params']} parameters; "
             f"FLOPs convention: {results['convention'] or 'each run’s own'}).", ""]
    if results["n_finished"] == 0:
        lines += ["**No finished runs with a finite eval loss: no fits.**", ""]
    for variant, v in results["variants"].items():
        lines += [f"## Data variant: {variant} ({v['n_runs']} runs)", ""]
        a3 = v["approach3"]
        if "error" in a3:
            lines += [f"- Approach 3: not fitted ({a3['error']})"]
        else:
            lines += ["| parameter | value [CI] |", "|---|---|"]
            lines += [f"| {k} | {_fmt(a3[k], a3['ci'].get(k))} |" for k in ("E", "A", "B", "alpha", "beta")]
            lines += ["", f"- Approach 3 on {a3['n_points']} {a3['source']} points: R² {a3['r2']:.4f}, "
                          f"RMSE(log L) {a3['rmse_log']:.4f}, {a3['n_starts']} starts, {a3['bootstrap']} bootstrap "
                          f"resamples, {a3['fit_time_s']:.1f} s."]
            al, ex = a3["allocation"], a3["extrapolation"]
            lines.append(f"- Compute-optimal (C = {al['k']:.3g} N D): N_opt ∝ C^{al['a']:.3f}, D_opt ∝ C^{al['b']:.3f}, "
                         f"G = {al['G']:.4g}." if "error" not in al else f"- Allocation: {al['error']}")
            lines.append(f"- Extrapolation ({ex['held_out']} held out, {ex['n_test']} points): mean |rel. error| "
                         f"{ex['mean_abs_rel_error']:.2%}, max {ex['max_abs_rel_error']:.2%}."
                         if "error" not in ex else f"- Extrapolation: {ex['error']}")
        a2 = v["approach2"]
        lines.append(f"- Approach 2 ({a2['source']} profiles): N_opt ∝ C^{_fmt(a2['a'], a2['a_ci'])}, "
                     f"D_opt ∝ C^{_fmt(a2['b'], a2['b_ci'])}." if "error" not in a2 else f"- Approach 2: {a2['error']}")
        for name, fit in v["one_variable"].items():
            var, form = name.split("_")
            name = f"{var}) = E + A {var}^-alpha" if form == "power" else f"{var}) = ({var}_c / {var})^alpha"
            if "error" in fit:
                lines.append(f"- L({name}: {fit['error']}")
            else:
                shown = {k: fit[k] for k in ("E", "A", "X_c", "alpha") if k in fit}
                lines.append(f"- L({name}: " + ", ".join(f"{k.replace('X', var)} {_fmt(val, fit['ci'].get(k))}"
                                                         for k, val in shown.items())
                             + f"; R² {fit['r2']:.4f}")
        lines.append("")
    for task_variant, z in results["zero_shot"].items():
        m = z.get("size_multiplier")
        if m and m["n"]:
            lines.append(f"- Zero-shot ({task_variant} tasks): unrestricted-data models need {m['geomean']:.2f}x the "
                         f"parameters of simplified-data ones for equal mean accuracy (range {m['min']:.2f}-{m['max']:.2f}, "
                         f"{m['n']} models).")
        else:
            lines.append(f"- Zero-shot ({task_variant} tasks): no size multiplier (scores of the simplified-data "
                         f"models fall outside the unrestricted curve, or a variant is missing).")
    lines += ["", "## Figures", ""] + [f"- {pathlib.Path(p).name}" for p in figure_paths]
    lines += [f"- {name}: not drawn ({why})" for name, why in figure_skips.items()]
    if warnings:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in warnings]
    return "\n".join(lines) + "\n"


def report(workdirs, out, convention: str | None = None, bootstrap: int = 1000, seed: int = 0,
           params: str = "total", log=print) -> dict:
    """Collect, fit, draw; write fits.json, summary.md, points.csv and figures under `out`.

    convention: FLOPs convention for C (default: each run's own); params: which parameter
    count is N in every fit and figure, "total" or "nonembedding".
    """
    if params not in ("total", "nonembedding"):
        raise ValueError(f"params must be 'total' or 'nonembedding', got {params!r}")
    runs, warnings = collect(workdirs)
    known = {c for r in runs for c in r.flops}
    if convention and known and convention not in known:
        raise ValueError(f"FLOPs convention {convention!r} is in no run's result.json; the runs have {sorted(known)}")
    if params == "nonembedding":
        runs = [dataclasses.replace(r, N=r.N_nonemb) for r in runs]
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log(f"collected {len(runs)} runs ({len(finished(runs))} finished) from {workdirs}")
    results = analyse(runs, convention, bootstrap, seed, log)
    results["params"] = params
    log(f"drawing figures into {out}")
    drawn, skipped = figures.draw_all(runs, results, out, convention)
    results["warnings"] = warnings
    results["figures"] = [pathlib.Path(p).name for p in drawn]
    results["figures_skipped"] = skipped
    (out / "fits.json").write_text(json.dumps(results, indent=1, default=float))
    (out / "summary.md").write_text(summary_markdown(results, warnings, drawn, skipped))
    write_points(runs, out / "points.csv", convention)
    for w in warnings:
        log(f"warning: {w}")
    for name, why in skipped.items():
        log(f"figure {name} not drawn: {why}")
    log(f"wrote {len(drawn)} figures, fits.json, summary.md and points.csv to {out}")
    return results
