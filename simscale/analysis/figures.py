"""The report's figures (matplotlib Agg; each saved as PNG and PDF).

Every plotted evaluation loss and accuracy carries its 95% interval (1.96 standard
errors: eval.json's per-task stderr combined over tasks, metrics.jsonl's
eval_loss_stderr), drawn as error bars or a shaded band where it is known.
Every `fig_*` function takes the runs, the `analyse` results and the output
folder, and returns the paths it wrote or raises ValueError naming what the
figure lacks; `draw_all` draws what it can and lists what it could not.
"""
from __future__ import annotations

import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.ticker import FuncFormatter, NullFormatter

from simscale.analysis import optimal
from simscale.analysis.collect import RunResult, finished

COLORS = {"simplified": "tab:blue", "unrestricted": "tab:orange"}
BASELINE_MARKERS = ("s", "D", "^", "v", "P", "X")  # Hugging Face baselines in the zero-shot figure
Z95 = 1.96  # half-width of a 95% normal interval in standard errors
LOSS = "Eval loss (nats / token)"
TOKENS = "Training tokens D"


def _params_label(results) -> str:
    return f"Parameters N ({results.get('params', 'total')})"


def _compute_label(runs, convention) -> str:
    own = {r.flops_convention for r in runs if r.flops_convention}
    name = convention or (own.pop() if len(own) == 1 else "each run's convention")
    return f"Training compute C (FLOPs, {name})"


def _tidy(axis) -> None:
    """Log-axis labels: decades only over wide ranges, plain numbers over narrow ones."""
    lo, hi = sorted(axis.get_view_interval())
    if axis.get_scale() != "log" or lo <= 0:
        return
    if hi / lo >= 10:
        axis.set_minor_formatter(NullFormatter())
    else:
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
        axis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))


def _save(fig, out: pathlib.Path, name: str) -> list[str]:
    for ax in fig.axes:
        _tidy(ax.xaxis)
        _tidy(ax.yaxis)
    paths = [str(out / f"{name}.{ext}") for ext in ("png", "pdf")]
    for p in paths:
        fig.savefig(p, dpi=150)
    plt.close(fig)
    return paths


def _half_width(se) -> np.ndarray | None:
    """95% half-widths, or None where no standard error is known (nothing to draw)."""
    se = np.asarray(se, float)
    return np.where(np.isfinite(se), Z95 * se, 0.0) if np.isfinite(se).any() else None


def _points(ax, x, y, se, fmt="o", **kw):
    """Points with 95% error bars (when standard errors are known)."""
    ax.errorbar(x, y, yerr=_half_width(se), fmt=fmt, capsize=2, elinewidth=0.8, **kw)


def _band(ax, x, y, se, color, alpha=0.15):
    """A shaded 95% band around a curve (when standard errors are known)."""
    h = _half_width(se)
    if h is not None:
        ax.fill_between(x, np.asarray(y) - h, np.asarray(y) + h, color=color, alpha=alpha, lw=0)


def _panels(n: int, width: float = 5.0):
    fig, axes = plt.subplots(1, n, figsize=(width * n, 4.2), squeeze=False, layout="constrained")
    return fig, list(axes[0])


def _variants(runs: list[RunResult]) -> list[str]:
    return sorted({str(r.variant) for r in runs})


def _a3(results: dict, variant: str) -> dict | None:
    fit = results["variants"].get(variant, {}).get("approach3", {})
    return fit if "error" not in fit and fit else None


def _size_norm(runs: list[RunResult]):
    n = [r.N for r in runs if np.isfinite(r.N)]
    return LogNorm(min(n), max(n) * 1.0001) if n else None


def _colorbar(fig, axes, norm, label):
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap="viridis"), ax=axes, label=label)


def fig_loss_vs_compute(runs, results, out, convention=None):
    done = finished(runs)
    if not done:
        raise ValueError("no finished runs")
    fig, (ax,) = _panels(1, 6.5)
    for v in _variants(done):
        rs = [r for r in done if str(r.variant) == v]
        color = COLORS.get(v, "gray")
        for r in rs:
            c_t = r.eval_tokens_t * r.C(convention) / r.D
            ax.plot(c_t, r.eval_loss_t, color=color, alpha=0.25, lw=0.8)
            _band(ax, c_t, r.eval_loss_t, r.eval_stderr_t, color, alpha=0.1)
        _points(ax, [r.C(convention) for r in rs], [r.loss for r in rs], [r.loss_stderr for r in rs],
                color=color, label=f"{v}: final (95% CI)", zorder=3)
        c = np.geomspace(min(r.C(convention) for r in rs) / 3, max(r.C(convention) for r in rs) * 10, 100)
        fit = _a3(results, v)
        if fit and "error" not in fit["allocation"]:
            ax.plot(c, optimal.frontier_loss(fit, c, fit["allocation"]["k"]), color=color, ls="--",
                    label=f"{v}: approach-3 frontier")
        env = results["variants"][v]["one_variable"]["C_power"]
        if "error" not in env:
            ax.plot(c, env["E"] + env["A"] * c ** -env["alpha"], color=color, ls=":",
                    label=f"{v}: E + A C^-{env['alpha']:.3f} (envelope fit)")
    ax.set(xscale="log", yscale="log", xlabel=_compute_label(runs, convention), ylabel=LOSS,
           title="Loss vs compute (thin lines: learning curves)")
    ax.legend(fontsize=8)
    return _save(fig, out, "loss_vs_compute")


def _budgets(rs: list[RunResult]) -> np.ndarray:
    """Token budgets to compare sizes at: distinct final budgets, else levels along the curves."""
    finals = np.unique(np.round([r.D for r in rs], -3))
    if len(finals) >= 2:
        return finals[-4:]
    hi = min(r.D for r in rs)
    lo = max([r.eval_tokens_t[0] for r in rs if len(r.eval_tokens_t)] + [hi / 8])
    return np.geomspace(lo, hi, 4)


def fig_loss_vs_params(runs, results, out, convention=None):
    done = finished(runs)
    if len({r.N for r in done}) < 2:
        raise ValueError("fewer than 2 finished model sizes")
    vs = _variants(done)
    fig, axes = _panels(len(vs))
    for ax, v in zip(axes, vs):
        rs = [r for r in done if str(r.variant) == v]
        budgets = _budgets(rs)
        colors = plt.cm.plasma(np.linspace(0.1, 0.85, len(budgets)))
        for d, color in zip(budgets, colors):
            pts = sorted((r.N, np.interp(np.log(d), np.log(r.eval_tokens_t), r.eval_loss_t),
                          np.interp(np.log(d), np.log(r.eval_tokens_t), r.eval_stderr_t)) for r in rs
                         if len(r.eval_tokens_t)
                         and r.eval_tokens_t[0] * 0.99 <= d <= r.eval_tokens_t[-1] * 1.01)
            if not pts:
                continue
            _points(ax, *zip(*pts), fmt="o-", lw=0.8, color=color, label=f"D = {d:.3g}")
            fit = _a3(results, v)
            if fit:
                n = np.geomspace(pts[0][0] / 2, pts[-1][0] * 4, 60)
                ax.plot(n, fit["E"] + fit["A"] / n ** fit["alpha"] + fit["B"] / d ** fit["beta"], color=color,
                        ls="--")
        note = " (dashed: approach 3)" if _a3(results, v) else ""
        ax.set(xscale="log", yscale="log", xlabel=_params_label(results), ylabel=LOSS,
               title=f"{v} data{note}")
        ax.legend(fontsize=8)
    return _save(fig, out, "loss_vs_params")


def fig_loss_vs_tokens(runs, results, out, convention=None):
    done = [r for r in finished(runs) if len(r.eval_tokens_t)]
    if not done:
        raise ValueError("no finished runs with eval-loss curves")
    vs, norm = _variants(done), _size_norm(done)
    fig, axes = _panels(len(vs))
    for ax, v in zip(axes, vs):
        fit = _a3(results, v)
        for r in sorted((r for r in done if str(r.variant) == v), key=lambda r: r.N):
            color = plt.cm.viridis(norm(r.N))
            _points(ax, r.eval_tokens_t, r.eval_loss_t, r.eval_stderr_t, fmt="o-", ms=3, color=color,
                    label=r.shape)
            if fit:
                d = np.geomspace(r.eval_tokens_t[0], r.eval_tokens_t[-1] * 4, 50)
                ax.plot(d, fit["E"] + fit["A"] / r.N ** fit["alpha"] + fit["B"] / d ** fit["beta"],
                        color=color, ls=":")
        note = " (dotted: approach 3)" if fit else ""
        ax.set(xscale="log", yscale="log", xlabel=TOKENS, ylabel=LOSS, title=f"{v} data, per shape{note}")
        ax.legend(fontsize=7, ncol=2)
    return _save(fig, out, "loss_vs_tokens")


def fig_isoflop(runs, results, out, convention=None):
    items = [(v, r["approach2"]) for v, r in results["variants"].items() if r["approach2"].get("profiles")]
    if not items:
        raise ValueError("no isoFLOP profiles (need 3 model sizes at a shared compute budget)")
    fig, axes = _panels(len(items))
    for ax, (v, a2) in zip(axes, items):
        cs = [p["C"] for p in a2["profiles"]]
        norm = LogNorm(min(cs), max(cs) * 1.0001)
        parabolas = {m["C"]: m for m in a2["parabolas"]}
        for p in a2["profiles"]:
            color = plt.cm.magma(0.15 + 0.7 * norm(p["C"]))
            _points(ax, p["N"], p["loss"], p.get("stderr", np.full(len(p["N"]), np.nan)), color=color,
                    label=f"C = {p['C']:.2g}")
            m = parabolas.get(p["C"])
            if m:
                n = np.geomspace(min(p["N"]), max(p["N"]), 60)
                ax.plot(n, np.polyval(m["coeffs"], np.log(n)), color=color)
                if m["interior"]:
                    ax.plot(m["N_opt"], m["loss_min"], "*", ms=14, color=color, mec="k")
        ax.set(xscale="log", xlabel=_params_label(results), ylabel=LOSS,
               title=f"isoFLOPs, {v} data (from {a2['source']})")
        ax.legend(fontsize=7)
    return _save(fig, out, "isoflop")


def fig_compute_optimal(runs, results, out, convention=None):
    fig, axes = _panels(2)
    drew = False
    for v, r in results["variants"].items():
        color = COLORS.get(v, "gray")
        a2, fit = r["approach2"], _a3(results, v)
        cs = [m["C"] for m in a2.get("minima", [])]
        c = np.geomspace(min(cs) / 3, max(cs) * 3, 50) if cs else None
        for ax, key, name in ((axes[0], "N_opt", "a"), (axes[1], "D_opt", "b")):
            if cs:
                ax.plot(cs, [m[key] for m in a2["minima"]], "o", color=color, label=f"{v}: isoFLOP minima")
                if name in a2:
                    ax.plot(c, a2[f"{name}_coef"] * c ** a2[name], color=color,
                            label=f"{v}: approach 2, C^{a2[name]:.2f}")
                drew = True
            if fit and "error" not in fit["allocation"]:
                cc = c if c is not None else np.geomspace(*_c_range(runs, convention), 50)
                n_opt, d_opt = optimal.optimal_nd(fit, cc, fit["allocation"]["k"])
                ax.plot(cc, n_opt if key == "N_opt" else d_opt, color=color, ls="--",
                        label=f"{v}: approach 3, C^{fit['allocation'][name]:.2f}")
                drew = True
    if not drew:
        plt.close(fig)
        raise ValueError("neither approach 2 nor approach 3 could be fitted")
    axes[0].set(ylabel="Compute-optimal parameters N_opt")
    axes[1].set(ylabel="Compute-optimal tokens D_opt")
    for ax in axes:
        ax.set(xscale="log", yscale="log", xlabel=_compute_label(runs, convention))
        ax.legend(fontsize=7)
    return _save(fig, out, "compute_optimal")


def _c_range(runs, convention):
    c = [r.C(convention) for r in finished(runs) if np.isfinite(r.C(convention))]
    return (min(c) / 3, max(c) * 10) if c else (1e15, 1e20)


ZERO_SHOT_PANELS = {"standard": "standard tasks (all)",
                    "standard_shared": "standard tasks shared with simplified",
                    "simplified": "simplified tasks"}


def _multiplier_title(z: dict) -> str:
    """A panel title: which tasks, and the multiplier only with its interval (or 'not determined')."""
    title = f"{ZERO_SHOT_PANELS.get(z.get('name'), z.get('name'))} ({z['n_tasks']} tasks)"
    m = z.get("size_multiplier")
    if not m:
        return title
    if m["text"].startswith("not determined"):
        return title + "\nsize multiplier not determined"
    return title + f"\nunrestricted needs {m['text']} N"


def fig_zero_shot(runs, results, out, convention=None):
    zs = results["zero_shot"]
    if not zs:
        raise ValueError("no zero-shot scores (eval.json) in finished runs")
    fig, axes = _panels(len(zs))
    for ax, (name, z) in zip(axes, zs.items()):
        for v, pts in z["scores"].items():
            if pts:
                _points(ax, *zip(*pts), fmt="o-", color=COLORS.get(v, "gray"), label=f"{v} data (95% CI)")
        for i, b in enumerate(b for b in z.get("baselines", ()) if "score" in b):
            marker = BASELINE_MARKERS[i % len(BASELINE_MARKERS)]
            _points(ax, [b["N"]], [b["score"]], [b["stderr"]], fmt=marker, color="dimgray",
                    label=f"{b['model']} (baseline, 95% CI)")
        if z["chance"] is not None:
            ax.axhline(z["chance"], color="k", ls=":", label="chance")
        ax.set(xscale="log", xlabel=_params_label(results), ylabel="Mean zero-shot accuracy",
               title=_multiplier_title(dict(z, name=name)))
        ax.title.set_fontsize(9)
        ax.legend(fontsize=8)
    return _save(fig, out, "zero_shot")


def fig_learning_curves(runs, results, out, convention=None):
    rs = [r for r in runs if len(r.tokens_t) or len(r.eval_tokens_t)]
    if not rs:
        raise ValueError("no metrics.jsonl learning curves")
    vs, norm = _variants(rs), _size_norm(rs)
    fig, axes = _panels(len(vs))
    for ax, v in zip(axes, vs):
        for r in sorted((r for r in rs if str(r.variant) == v), key=lambda r: (np.nan_to_num(r.N), r.run_id)):
            color = plt.cm.viridis(norm(r.N)) if norm and np.isfinite(r.N) else "gray"
            ax.plot(r.tokens_t, r.train_loss_t, color=color, lw=0.9, alpha=0.7)
            _points(ax, r.eval_tokens_t, r.eval_loss_t, r.eval_stderr_t, ms=3, color=color)
        ax.set(xscale="log", yscale="log", xlabel=TOKENS, ylabel="Loss (nats / token)",
               title=f"{v} data (lines: train, dots: eval with 95% CI)")
    if norm:
        _colorbar(fig, axes, norm, _params_label(results))
    return _save(fig, out, "learning_curves")


FIGURES = {
    "loss_vs_compute": fig_loss_vs_compute,
    "loss_vs_params": fig_loss_vs_params,
    "loss_vs_tokens": fig_loss_vs_tokens,
    "isoflop": fig_isoflop,
    "compute_optimal": fig_compute_optimal,
    "zero_shot": fig_zero_shot,
    "learning_curves": fig_learning_curves,
}


def draw_all(runs, results, out, convention=None) -> tuple[list[str], dict[str, str]]:
    """Draw every figure the data allows: (paths written, {figure: why not drawn})."""
    out = pathlib.Path(out)
    drawn, skipped = [], {}
    for name, fn in FIGURES.items():
        try:
            drawn += fn(runs, results, out, convention)
        except ValueError as e:
            plt.close("all")
            skipped[name] = str(e)
    return drawn, skipped
