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

from simscale.analysis import figures, ladder, optimal, points, zeroshot
from simscale.analysis.collect import RunResult, collect, collect_baselines, finished, write_points
from simscale.analysis.fit import extrapolation, fit_law
from simscale.analysis.optimal import group_budgets
from simscale.analysis.vpnls import fit_vpnls
from simscale.config import VARIANTS

MULTIPLIER_DRAWS = 1000  # parametric bootstrap draws for the size multiplier's interval


def _attempt(fn, *args, **kw) -> dict:
    try:
        return fn(*args, **kw)
    except ValueError as e:
        return {"error": str(e)}


def _approach3(runs, convention, bootstrap, seed, params) -> dict:
    f = points.finals(runs, convention)
    source = "final" if len(np.unique(f["D"])) >= 3 else "curves"
    p = f if source == "final" else points.curve_points(runs, convention)
    x = np.stack([p["N"], p["D"]], -1)
    fit = fit_law("approach3", x, p["loss"], ("N", "D"), bootstrap=bootstrap, seed=seed, groups=p["run"])
    out = dict(fit.to_json(), source=source, N_params=params)
    k = points.flops_per_param_token(runs, convention)
    out["allocation"] = _attempt(lambda: dict(optimal.allocation(fit.params), k=k))
    # Out of sample: refit on the smaller models only, from the full start grid.
    out["extrapolation"] = _attempt(extrapolation, "approach3", x, p["loss"], ("N", "D"), groups=p["run"])
    out["vpnls"] = _attempt(_vpnls, p["N"], p["D"], p["loss"], k)
    return out


def _vpnls(N, D, loss, k) -> dict:
    """The variable-projection least-squares cross-check of approach 3, with its allocation."""
    v = fit_vpnls(N, D, loss)
    return dict(v, allocation=_attempt(lambda: dict(optimal.allocation(v), k=k)))


def _fit_json(*args, **kw) -> dict:
    return fit_law(*args, **kw).to_json()


def _one_variable(runs, convention, bootstrap, seed, params) -> dict:
    """L(N) on final runs of the largest budget; L(D) and L(C) on the lower envelope (lowest loss per
    log-spaced bin) of every run's learning-curve points past its warmup and first 10% of tokens."""
    f, c = points.finals(runs, convention), points.curve_points(runs, convention)
    budget = group_budgets(f["D"])
    top = budget == budget.max()
    env_d, env_c = points.envelope_index(c["D"], c["loss"]), points.envelope_index(c["C"], c["loss"])
    data = dict(N=(f["N"][top], f["loss"][top], f["run"][top]),
                D=(c["D"][env_d], c["loss"][env_d], c["run"][env_d]),
                C=(c["C"][env_c], c["loss"][env_c], c["run"][env_c]))
    depths = sorted({runs[i].layers for i in f["run"][top] if runs[i].layers is not None})
    out = {}
    for var, (x, loss, run) in data.items():
        for form in ("power", "kaplan"):
            rec = _attempt(_fit_json, form, x[:, None], loss, (var,), bootstrap=bootstrap, seed=seed,
                           groups=run)
            if var == "N":
                rec.update(N_params=params, depths=depths, mixed_depths=len(depths) > 1)
            out[f"{var}_{form}"] = rec
    return out


def _approach2(runs, convention, a3: dict) -> dict:
    profiles, source = points.isoflop_profiles(runs, convention)
    out = optimal.isoflop(profiles, k=points.flops_per_param_token(runs, convention))
    out["vs_vpnls"] = _attempt(_approach2_vs, out, a3.get("vpnls", {}))
    return dict(out, source=source,
                profiles=[{k: np.asarray(v).tolist() for k, v in p.items()} for p in profiles])


def _approach2_vs(a2: dict, vp: dict) -> dict:
    """Approach 2's parabola minima against the vpnls fit's compute-optimal N at the same budgets."""
    if "error" in vp or "error" in vp.get("allocation", {"error": 1}):
        raise ValueError("no vpnls fit to compare with")
    k = vp["allocation"]["k"]
    ratios = [m["N_opt"] / float(optimal.optimal_nd(vp, m["C"], k)[0]) for m in a2["minima"]]
    out = dict(N_opt_ratio=ratios)
    if "a" in a2:
        out["a_minus_vpnls"] = a2["a"] - vp["allocation"]["a"]
    return out


def _task_score(e: dict, task_variant: str, metric: str) -> float | None:
    """A per-task record's value, or None for other variants/metrics, flagged records and suite averages."""
    value = e.get("value")
    if (e.get("variant") != task_variant or e.get("metric", metric) != metric or e.get("flagged")
            or "excluded" in e or not isinstance(value, (int, float)) or not math.isfinite(value)):
        return None
    return float(value)


def _task_records(r: RunResult, task_variant: str, metric: str = "acc") -> dict[str, dict]:
    """A run's usable per-task records of one task variant and metric, by task."""
    return {e["task"]: e for e in r.evals if _task_score(e, task_variant, metric) is not None}


def common_tasks(runs: list[RunResult], task_variant: str, metric: str = "acc") -> list[str]:
    """Tasks every run with scores of this task variant has (sorted)."""
    sets = [set(t) for r in runs if (t := _task_records(r, task_variant, metric))]
    return sorted(set.intersection(*sets)) if sets else []


def run_scores(runs: list[RunResult], task_variant: str, metric: str = "acc") -> dict[str, float]:
    """Mean zero-shot `metric` over the tasks every scored run has, per run id.

    Suite averages (records with `excluded`) and flagged records (too few examples) are left out.
    """
    tasks = common_tasks(runs, task_variant, metric)
    per_run = {r.run_id: _task_records(r, task_variant, metric) for r in runs}
    if not tasks:
        return {}
    return {k: float(np.mean([v[t]["value"] for t in tasks])) for k, v in per_run.items() if v}


def _task_means(recs: dict[str, dict], tasks: list[str]) -> tuple[np.ndarray, np.ndarray, float, float]:
    """(accuracy per task, examples per task, mean over the tasks, its standard error) of one model."""
    acc, n = np.array([recs[t]["value"] for t in tasks]), np.array([recs[t].get("n") or 0 for t in tasks])
    se = np.array([recs[t].get("stderr") or math.sqrt(a * (1 - a) / max(k, 1))
                   for t, a, k in zip(tasks, acc, n)])
    return acc, n, float(acc.mean()), float(math.sqrt((se**2).sum()) / len(tasks))


def _suite(runs: list[RunResult], task_variant: str, tasks: list[str], seed: int) -> dict:
    """Mean accuracy over `tasks` per run (with its standard error), chance, and the size multiplier."""
    by_var, arrays = {v: [] for v in VARIANTS}, {v: [] for v in VARIANTS}
    chance = []
    for r in runs:
        recs = _task_records(r, task_variant)
        if r.variant not in by_var or not recs:
            continue
        acc, n, mean, se = _task_means(recs, tasks)
        by_var[r.variant].append((r.N, mean, se))
        arrays[r.variant].append((r.N, acc, np.maximum(n, 1)))
        chance += [recs[t]["chance"] for t in tasks if isinstance(recs[t].get("chance"), (int, float))]
    entry = dict(tasks=tasks, n_tasks=len(tasks), chance=float(np.mean(chance)) if chance else None,
                 scores={v: sorted(pts) for v, pts in by_var.items()})
    ref, q = sorted(arrays["unrestricted"], key=lambda t: t[0]), arrays["simplified"]
    if q and len(ref) >= 2:
        m = zeroshot.size_multiplier([t[0] for t in ref], [t[1] for t in ref], [t[2] for t in ref],
                                     [t[0] for t in q], [t[1] for t in q], [t[2] for t in q],
                                     draws=MULTIPLIER_DRAWS, seed=seed)
        entry["size_multiplier"] = dict(m, text=zeroshot.describe(m))
    return entry


def _baseline_scores(baselines: list[RunResult], task_variant: str, tasks: list[str]) -> list[dict]:
    """Each baseline's mean accuracy over the grid's `tasks`, with its standard error (as a run's), or the
    tasks it lacks (not scored, or flagged) instead of a mean over fewer tasks."""
    out = []
    for b in baselines:
        recs = _task_records(b, task_variant)
        missing = [t for t in tasks if t not in recs]
        if missing:
            out.append(dict(model=b.run_id, N=b.N, missing=missing))
        else:
            _, _, mean, se = _task_means(recs, tasks)
            out.append(dict(model=b.run_id, N=b.N, score=mean, stderr=se))
    return out


def _zero_shot(runs: list[RunResult], seed: int = 0, params: str = "nonembedding",
               baselines: list[RunResult] = ()) -> dict:
    """Suite means per task variant, each naming the tasks it averages, with the baselines' means
    over the same tasks.

    `standard`: all standard tasks; `simplified` and `standard_shared`: the tasks both variants
    have, so that the standard-vs-simplified comparison averages the same tasks on both sides.
    """
    std, simp = common_tasks(runs, "standard"), common_tasks(runs, "simplified")
    shared = sorted(set(std) & set(simp))
    out = {}
    for name, task_variant, tasks in (("standard", "standard", std), ("standard_shared", "standard", shared),
                                      ("simplified", "simplified", shared or simp)):
        if tasks and not (name == "standard_shared" and not simp):
            entry = _suite(runs, task_variant, tasks, seed)
            out[name] = dict(entry, task_variant=task_variant, N_params=params,
                             baselines=_baseline_scores(list(baselines), task_variant, tasks))
    return out


def _ladder(runs: list[RunResult], bootstrap: int, seed: int, params: str = "nonembedding") -> dict:
    """Each task's accuracy of the largest model predicted from the smaller ones (ladder.py)."""
    if len(runs) < 3:
        raise ValueError(f"the accuracy ladder needs 3 or more runs, got {len(runs)}")
    target = int(np.argmax([(r.N, r.D) for r in runs], axis=0)[0])
    N, D = np.array([r.N for r in runs]), np.array([r.D for r in runs])
    out = {}
    s1_eval = ladder.step1(N, D, [r.loss for r in runs], target, bootstrap, seed)
    for task_variant in ("standard", "simplified"):
        preds = {}
        for task in common_tasks(runs, task_variant):
            recs = [_task_records(r, task_variant)[task] for r in runs]
            own = [_task_records(r, task_variant, ladder.TASK_LOSS_METRIC).get(task) for r in runs]
            if all(own):
                loss, source = [e["value"] for e in own], ladder.TASK_LOSS_METRIC
                s1 = _attempt(ladder.step1, N, D, loss, target, bootstrap, seed)
            else:
                loss, source, s1 = [r.loss for r in runs], "eval_loss", s1_eval
            if "error" in s1:
                preds[task] = s1
                continue
            chance = recs[target].get("chance") or 0.0
            acc, n = [e["value"] for e in recs], [e.get("n") or 1 for e in recs]
            preds[task] = dict(ladder.step2(s1, loss, acc, n, chance, target), task_loss=source)
        if preds:
            errors = [p["acc_error"] for p in preds.values() if "acc_error" in p]
            out[task_variant] = dict(tasks=preds, N=float(N[target]), N_params=params,
                                     mean_abs_error=float(np.mean(np.abs(errors))) if errors else None)
    return out


def analyse(runs: list[RunResult], convention: str | None = None, bootstrap: int = 1000, seed: int = 0,
            log=lambda line: None, params: str = "nonembedding", baselines: list[RunResult] = ()) -> dict:
    """All fits per data variant, and zero-shot against scale (with `baselines`), as a JSON-able dict.

    params names the parameter count the runs' (and baselines') N holds (it labels every N-based record).
    """
    done = finished(runs)
    results = dict(convention=convention, n_runs=len(runs), n_finished=len(done), params=params, variants={})
    for variant in sorted({r.variant for r in done}, key=str):
        rs = [r for r in done if r.variant == variant]
        log(f"fitting {variant} data: {len(rs)} runs, {bootstrap} bootstrap resamples (over runs) per law")
        a3 = _attempt(_approach3, rs, convention, bootstrap, seed, params)
        results["variants"][str(variant)] = dict(
            n_runs=len(rs),
            approach3=a3,
            approach2=_approach2(rs, convention, a3),
            one_variable=_one_variable(rs, convention, bootstrap, seed, params),
            accuracy_ladder=_attempt(_ladder, rs, min(bootstrap, 200), seed, params),
        )
    results["zero_shot"] = _zero_shot(done, seed, params, baselines)
    return results


def _fmt(v, ci=None) -> str:
    s = f"{v:.4g}"
    return f"{s} [{ci[0]:.4g}, {ci[1]:.4g}]" if ci else s


def _approach3_lines(a3: dict) -> list[str]:
    if "error" in a3:
        return [f"- Approach 3: not fitted ({a3['error']})"]
    lines = ["| parameter | value [CI] |", "|---|---|"]
    lines += [f"| {k} | {_fmt(a3[k], a3['ci'].get(k))} |" for k in ("E", "A", "B", "alpha", "beta")]
    lines += ["", f"- Approach 3 (N: {a3['N_params']} parameters) on {a3['n_points']} {a3['source']} points "
                  f"of {a3['n_runs']} runs: R² {a3['r2']:.4f}, RMSE(log L) {a3['rmse_log']:.4f}, "
                  f"{a3['n_starts']} starts, {a3['bootstrap']} bootstrap resamples of "
                  f"{a3['bootstrap_unit']}, {a3['fit_time_s']:.1f} s."]
    al, ex, vp = a3["allocation"], a3["extrapolation"], a3["vpnls"]
    lines.append(f"- Compute-optimal (C = {al['k']:.3g} N D): N_opt ∝ C^{al['a']:.3f}, "
                 f"D_opt ∝ C^{al['b']:.3f}, G = {al['G']:.4g}." if "error" not in al
                 else f"- Allocation: {al['error']}")
    lines.append(f"- Extrapolation out of sample ({ex['held_out']} held out, {ex['n_test']} points, refit on "
                 f"{ex['n_train']} points from {ex['n_starts']} starts): mean |error| "
                 f"{ex['mean_abs_error']:.4f} nats ({ex['mean_abs_rel_error']:.2%} of the held-out loss, "
                 f"{ex['error_over_train_sd']:.2f} x the training losses' standard deviation), max "
                 f"{ex['max_abs_error']:.4f} nats."
                 if "error" not in ex else f"- Extrapolation: {ex['error']}")
    if "error" in vp:
        lines.append(f"- vpnls cross-check: {vp['error']}")
    else:
        exponent = f"; N_opt ∝ C^{vp['allocation']['a']:.3f}" if "error" not in vp["allocation"] else ""
        lines.append("- vpnls cross-check (least squares, grid over alpha and beta): "
                     + ", ".join(f"{k} {vp[k]:.4g}" for k in ("E", "A", "B", "alpha", "beta"))
                     + exponent + ".")
    return lines


def _approach2_line(a2: dict) -> str:
    if "error" in a2:
        return f"- Approach 2: {a2['error']}"
    line = (f"- Approach 2 ({a2['source']} profiles): N_opt ∝ C^{_fmt(a2['a'], a2['a_ci'])}, "
            f"D_opt ∝ C^{_fmt(a2['b'], a2['b_ci'])}.")
    vs = a2.get("vs_vpnls", {})
    if "N_opt_ratio" in vs:
        r = vs["N_opt_ratio"]
        line += (f" Parabola minima / vpnls optimum: {min(r):.2f}-{max(r):.2f}x (isoFLOP parabolas are "
                 f"biased when sizes are sampled off-centre or alpha ≠ beta).")
    return line


def _one_variable_line(name: str, fit: dict) -> str:
    var, form = name.split("_")
    label = f"L({var}) = E + A {var}^-alpha" if form == "power" else f"L({var}) = ({var}_c / {var})^alpha"
    if "error" in fit:
        return f"- {label}: {fit['error']}"
    shown = {k: fit[k] for k in ("E", "A", "X_c", "alpha") if k in fit}
    text = ", ".join(f"{k.replace('X', var)} {_fmt(val, fit['ci'].get(k))}" for k, val in shown.items())
    text += f"; R² {fit['r2']:.4f}; {fit['n_points']} points of {fit['n_runs']} runs"
    text += f" ({fit['ci_note']})" if fit.get("ci_note") else ""
    if var == "N":
        text += f"; N: {fit['N_params']} parameters"
        if fit.get("mixed_depths"):
            text += f"; mixes depths {', '.join(map(str, fit['depths']))} (one curve over several shapes)"
    return f"- {label}: {text}"


def _zero_shot_lines(zs: dict) -> list[str]:
    lines = []
    for name, z in zs.items():
        what = figures.ZERO_SHOT_PANELS.get(name, name)
        lines.append(f"- Zero-shot, {what}: mean accuracy over {z['n_tasks']} tasks "
                     f"({', '.join(z['tasks'])}).")
        m = z.get("size_multiplier")
        if m:
            bounds = f"; {m['n_below']} below and {m['n_above']} above the grid, counted as bounds" \
                if m["n_below"] or m["n_above"] else ""
            lines.append(f"  Size multiplier (the parameters unrestricted-data models need, as a multiple of "
                         f"simplified-data ones', for equal mean accuracy): {m['text']} (median over "
                         f"{m['n']} models, {m['ci_level']:.0%} interval from {m['draws']} parametric "
                         f"bootstrap draws{bounds}).")
        else:
            lines.append("  No size multiplier (a data variant is missing or has fewer than 2 models).")
        for b in z.get("baselines", ()):
            lines.append(f"  Baseline {b['model']} (N = {b['N']:.3g}): " + (
                f"{b['score']:.3f} ± {b['stderr']:.3f}" if "score" in b else
                f"no mean, it lacks {', '.join(b['missing'])} (not scored, or too few examples)"))
    return lines


def zero_shot_table(zero_shot: dict, z: float = 1.96) -> str:
    """analyse()'s zero_shot as text: per task variant, each model's mean accuracy with its `z` x s.e.
    interval (95% by default) by data variant, smallest N first, then the size multiplier."""
    if not zero_shot:
        return "no zero-shot scores: no finished run was evaluated (eval.tasks empty, or no tasks found)"
    blocks = []
    for name, entry in zero_shot.items():
        chance = f", chance {entry['chance']:.3f}" if entry.get("chance") is not None else ""
        lines = [f"{figures.ZERO_SHOT_PANELS.get(name, name)}: mean accuracy over {entry['n_tasks']} tasks "
                 f"+/- {z:g} s.e.{chance}"]
        for variant, scores in entry["scores"].items():
            lines += [f"  {variant:13s} N={n:>12,.0f}  {acc:.3f} [{acc - z * se:.3f}, {acc + z * se:.3f}]"
                      for n, acc, se in scores]
        m = entry.get("size_multiplier")
        lines.append(f"  size multiplier: {m['text']}" if m else "  size multiplier: none (a data variant "
                     "is missing or has fewer than 2 models)")
        blocks.append("\n".join(lines))
    return "\n".join(blocks)


def _ladder_lines(lad: dict) -> list[str]:
    if "error" in lad:
        return [f"- Accuracy ladder: {lad['error']}"]
    lines = []
    for task_variant, v in lad.items():
        ok = {t: p for t, p in v["tasks"].items() if "acc_error" in p}
        if not ok:
            continue
        src = sorted({p["task_loss"] for p in ok.values()})
        lines += [f"- Accuracy ladder ({task_variant} tasks, N = {v['N']:.3g} predicted from the smaller "
                  f"models via task loss = {'/'.join(src)}): mean |error| {v['mean_abs_error']:.3f}.", "",
                  "| task | predicted [CI] | measured ± se |", "|---|---|---|"]
        lines += [f"| {t} | {p['predicted']:.3f} [{p['ci'][0]:.3f}, {p['ci'][1]:.3f}] | "
                  f"{p['measured']:.3f} ± {p['measured_stderr']:.3f} |" for t, p in ok.items()]
        lines.append("")
    return lines


def summary_markdown(results: dict, warnings: list[str], figure_paths: list[str], figure_skips: dict) -> str:
    """A readable summary: fitted laws with intervals, allocation, goodness of fit, multipliers."""
    lines = ["# Scaling-law report", "",
             f"{results['n_finished']} finished runs of {results['n_runs']} (N: {results['params']} "
             f"parameters; FLOPs convention: {results['convention'] or 'each run’s own'}).", ""]
    if results["n_finished"] == 0:
        lines += ["**No finished runs with a finite eval loss: no fits.**", ""]
    for variant, v in results["variants"].items():
        lines += [f"## Data variant: {variant} ({v['n_runs']} runs)", ""]
        lines += _approach3_lines(v["approach3"])
        lines.append(_approach2_line(v["approach2"]))
        lines += [_one_variable_line(name, fit) for name, fit in v["one_variable"].items()]
        lines += [""] + _ladder_lines(v["accuracy_ladder"])
    lines += _zero_shot_lines(results["zero_shot"])
    lines += ["", "## Figures", ""] + [f"- {pathlib.Path(p).name}" for p in figure_paths]
    lines += [f"- {name}: not drawn ({why})" for name, why in figure_skips.items()]
    if warnings:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in warnings]
    return "\n".join(lines) + "\n"


def report(workdirs, out, convention: str | None = None, bootstrap: int = 1000, seed: int = 0,
           params: str = "nonembedding", log=print, baselines=()) -> dict:
    """Collect, fit, draw; write fits.json, summary.md, points.csv and figures under `out`.

    convention: FLOPs convention for C (default: each run's own); params: which parameter
    count is N in every fit and figure, "nonembedding" (Kaplan et al. 2020; default) or "total";
    baselines: folders of Hugging Face baselines (collect_baselines), shown in the zero-shot results.
    """
    if params not in ("total", "nonembedding"):
        raise ValueError(f"params must be 'total' or 'nonembedding', got {params!r}")
    runs, warnings = collect(workdirs)
    known = {c for r in runs for c in r.flops}
    if convention and known and convention not in known:
        raise ValueError(f"FLOPs convention {convention!r} is in no run's result.json; the runs have "
                         f"{sorted(known)}")
    others = collect_baselines(baselines)
    if params == "nonembedding":
        runs = [dataclasses.replace(r, N=r.N_nonemb) for r in runs]
        others = [dataclasses.replace(b, N=b.N_nonemb) for b in others]
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log(f"collected {len(runs)} runs ({len(finished(runs))} finished) from {workdirs}")
    results = analyse(runs, convention, bootstrap, seed, log, params, others)
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
