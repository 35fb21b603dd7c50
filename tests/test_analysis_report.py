"""Collecting sweep workdirs, the report (figures, fits.json, summary.md) and the CLIs, on synthetic runs."""
import json
import math
import zlib

import numpy as np
import pytest

from simscale.analysis.__main__ import main
from simscale.analysis.collect import collect, finished, read_points
from simscale.analysis.report import report

LAW = dict(E=2.0, A=400.0, B=410.0, alpha=0.34, beta=0.28)
SHAPES = [(32, 2), (64, 2), (128, 2), (128, 4), (256, 4), (512, 4)]
TOKENS = 2e8


def law_loss(n, d, shift=0.0):
    return LAW["E"] + shift + LAW["A"] / n ** LAW["alpha"] + LAW["B"] / d ** LAW["beta"]


def accuracy(n):
    return 0.5 + 0.04 * np.log(n / 1e5)


def write_run(runs_dir, run_id, hidden, layers, variant, status="done", loss_override=None, evals=True):
    """A run directory as simscale.train/evaluate write it (docs/contracts.md)."""
    d = runs_dir / run_id
    d.mkdir(parents=True)
    n = 12 * layers * hidden**2 + 2 * 2000 * hidden  # a plausible total parameter count
    shift = 0.3 if variant == "unrestricted" else 0.0
    rng = np.random.default_rng(zlib.crc32(run_id.encode()))
    tokens = np.linspace(TOKENS / 10, TOKENS, 10)
    with open(d / "metrics.jsonl", "w") as fh:
        for i, t in enumerate(tokens):
            row = dict(step=(i + 1) * 100, tokens=t, loss=law_loss(n, t, shift) * 1.02, lr=1e-3)
            row.update(eval_loss=law_loss(n, t, shift) * math.exp(rng.normal(0, 0.003)),
                       eval_loss_stderr=0.01)
            fh.write(json.dumps(row) + "\n")
        fh.write('{"step": 1001, "tok')  # a line cut short by an interrupted write
    (d / "status.json").write_text(json.dumps(dict(status=status, step=1000)))
    if status != "done":
        return
    loss = law_loss(n, TOKENS, shift) if loss_override is None else loss_override
    (d / "result.json").write_text(json.dumps(dict(
        status="done", params_total=n, params_nonembedding=12 * layers * hidden**2, tokens=TOKENS, steps=1000,
        flops={"chinchilla": 6.3 * n * TOKENS, "6n": 6 * n * TOKENS}, flops_convention="chinchilla",
        eval_loss=loss, eval_loss_stderr=0.01, eval_bpb=1.0, final_loss=loss, wall_time_s=10.0,
        variant=variant, hidden=hidden, layers=layers)))
    if evals:
        size = n * (6 if variant == "simplified" else 1)  # simplified data: worth a 6x larger model
        recs = [dict(task=t, variant=tv, metric="acc", value=float(accuracy(size) + off), stderr=0.01, n=100,
                     chance=0.5)
                for t, off in (("copa", 0.0), ("blimp_anaphor", 0.05)) for tv in ("standard", "simplified")]
        # other metric, flagged task, suite average: ignored
        recs += [dict(recs[0], metric="acc_norm", value=0.99),
                 dict(recs[0], task="rte", value=0.0, flagged=True),
                 dict(recs[0], task="suite", value=0.0, excluded=[])]
        (d / "eval.json").write_text(json.dumps(recs))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    w = tmp_path_factory.mktemp("sweep")
    runs = w / "runs"
    for variant in ("simplified", "unrestricted"):
        for h, layers in SHAPES:
            write_run(runs, f"{variant}-h{h}-l{layers}", h, layers, variant)
    write_run(runs, "failed-run", 64, 4, "simplified", status="failed")
    write_run(runs, "nan-run", 64, 8, "simplified", loss_override=float("nan"))
    (runs / "empty-dir").mkdir()
    (w / "sweep.json").write_text("{}")
    return w


@pytest.fixture(scope="module")
def reported(workdir, tmp_path_factory):
    out = tmp_path_factory.mktemp("figures")
    args = ["report", "--workdir", str(workdir), "--out", str(out), "--bootstrap", "10", "--params", "total"]
    assert main(args) == 0
    return out, json.loads((out / "fits.json").read_text())


def test_collect_keeps_bad_runs_out_with_warnings(workdir):
    runs, warnings = collect([workdir])
    assert len(runs) == 15
    assert len(finished(runs)) == 12
    text = "\n".join(warnings)
    assert "failed-run: no result.json (status failed)" in text
    assert "nan-run: non-finite" in text
    assert "empty-dir: no result.json (status missing)" in text
    run = next(r for r in runs if r.run_id == "simplified-h64-l2")
    assert len(run.eval_tokens_t) == 10 and run.C() == pytest.approx(6.3 * run.N * TOKENS)
    assert run.C("6n") == pytest.approx(6 * run.N * TOKENS)


def test_collect_combines_workdirs_and_names_a_missing_one(workdir, tmp_path):
    runs, _ = collect([workdir, workdir])
    assert len(runs) == 30
    with pytest.raises(FileNotFoundError, match="no runs/ folder in workdir"):
        collect([tmp_path / "nowhere"])


def test_report_writes_figures_fits_and_summary(reported):
    out, fits = reported
    for name in ("loss_vs_compute", "loss_vs_params", "loss_vs_tokens", "isoflop", "compute_optimal",
                 "zero_shot", "learning_curves"):
        assert (out / f"{name}.png").stat().st_size > 10_000, name
        assert (out / f"{name}.pdf").exists()
    assert fits["figures_skipped"] == {}
    a3 = fits["variants"]["simplified"]["approach3"]
    # every run's curve past its first 10% of tokens: 9 of the 10 eval points (no warmup recorded)
    assert a3["source"] == "curves" and a3["n_points"] == 6 * 9 and a3["n_runs"] == 6
    assert a3["N_params"] == "total" and a3["bootstrap_unit"] == "runs"
    assert a3["alpha"] == pytest.approx(LAW["alpha"], abs=0.05)
    assert a3["beta"] == pytest.approx(LAW["beta"], abs=0.05)
    assert set(a3["ci"]) == {"E", "A", "B", "alpha", "beta"}
    assert a3["allocation"]["k"] == pytest.approx(6.3)
    assert a3["extrapolation"]["mean_abs_rel_error"] < 0.02 and a3["extrapolation"]["n_starts"] == 4500
    for k in ("alpha", "beta"):
        assert a3["vpnls"][k] == pytest.approx(LAW[k], abs=0.05)
    assert fits["variants"]["unrestricted"]["approach3"]["r2"] > 0.99
    # one-epoch curves: most minima lie past the largest model
    a2 = fits["variants"]["simplified"]["approach2"]
    assert a2["source"] == "curves" and len(a2["parabolas"]) == len(a2["profiles"]) >= 3
    assert len(a2["minima"]) < 3 and "outside the sampled model sizes" in a2["error"]
    one = fits["variants"]["simplified"]["one_variable"]
    assert {"N_power", "N_kaplan", "D_power", "D_kaplan", "C_power", "C_kaplan"} <= set(one)
    assert one["N_power"]["depths"] == [2, 4] and one["N_power"]["mixed_depths"]
    assert one["N_power"]["n_runs"] == 6
    assert one["D_power"]["n_points"] >= 5 and one["D_power"]["n_runs"] >= 1
    zs = fits["zero_shot"]["standard"]
    assert zs["chance"] == 0.5 and zs["tasks"] == ["blimp_anaphor", "copa"] and zs["N_params"] == "total"
    # simplified data is worth a 6x larger model: exact for the 4 smallest; 6 x N of the 2 largest
    # is beyond the largest unrestricted model, so they count as lower bounds (> N_max / N)
    m = zs["size_multiplier"]
    assert m["median"] == pytest.approx(6.0, rel=1e-6) and m["n_above"] == 2 and m["n_below"] == 0
    assert m["ci"][0] <= 6.0 and (m["ci"][1] is None or m["ci"][1] >= 6.0)
    assert [p["bound"] for p in m["per_model"]].count(">") == 2
    lad = fits["variants"]["simplified"]["accuracy_ladder"]["standard"]
    assert set(lad["tasks"]) == {"blimp_anaphor", "copa"} and lad["tasks"]["copa"]["task_loss"] == "eval_loss"
    assert lad["N_params"] == "total"
    summary = (out / "summary.md").read_text()
    assert "| alpha |" in summary and "failed-run" in summary
    assert "for equal mean accuracy): 6.00x [" in summary
    assert "2 above the grid, counted as bounds" in summary
    assert "mean accuracy over 2 tasks (blimp_anaphor, copa)" in summary
    points = read_points(out / "points.csv", ("N", "D", "C", "loss"))
    assert len(points["N"]) == 12


def test_figures_are_drawn_without_finished_runs(tmp_path):
    w = tmp_path / "w"
    write_run(w / "runs", "a", 32, 2, "simplified", status="failed")
    write_run(w / "runs", "b", 64, 2, "simplified", loss_override=float("nan"))
    out = tmp_path / "out"
    assert main(["report", "--workdir", str(w), "--out", str(out), "--bootstrap", "0"]) == 1
    fits = json.loads((out / "fits.json").read_text())
    assert fits["n_finished"] == 0 and fits["variants"] == {}
    assert fits["params"] == "nonembedding"  # Kaplan's convention unless --params total
    assert (out / "learning_curves.png").exists()
    assert fits["figures_skipped"]["loss_vs_compute"] == "no finished runs"
    assert "No finished runs" in (out / "summary.md").read_text()


def test_report_with_too_few_runs_records_why(tmp_path):
    w = tmp_path / "w"
    for h in (32, 64):
        write_run(w / "runs", f"r{h}", h, 2, "simplified", evals=False)
    results = report([w], tmp_path / "out", "6n", bootstrap=0, params="nonembedding", log=lambda s: None)
    assert results["params"] == "nonembedding" and results["convention"] == "6n"
    k_nonemb = np.median([6 * (24 * h * h + 4000 * h) / (24 * h * h) for h in (32, 64)])  # C = 6 N_total D
    assert results["variants"]["simplified"]["approach3"]["allocation"]["k"] == pytest.approx(k_nonemb)
    v = results["variants"]["simplified"]
    assert "too few points" not in v["approach3"].get("error", "")  # curves give 16 points
    assert "3 or more compute budgets, got 0" in v["approach2"]["error"]
    assert "too few points for the power law in N" in v["one_variable"]["N_power"]["error"]
    assert "zero_shot" in results["figures_skipped"]
    assert (tmp_path / "out" / "loss_vs_tokens.png").exists()


def test_report_names_an_unknown_flops_convention(workdir, tmp_path, capsys):
    assert main(["report", "--workdir", str(workdir), "--out", str(tmp_path), "--flops", "palm"]) == 2
    assert ("FLOPs convention 'palm' is in no run's result.json; the runs have ['6n', 'chinchilla']"
            in capsys.readouterr().err)


def test_fit_cli_json_and_text(tmp_path, capsys):
    rng = np.random.default_rng(0)
    n = np.exp(rng.uniform(np.log(1e6), np.log(1e9), 60))
    d = np.exp(rng.uniform(np.log(1e8), np.log(1e11), 60))
    csv = tmp_path / "points.csv"
    csv.write_text("N,D,loss\n" + "".join(f"{a},{b},{law_loss(a, b)}\n" for a, b in zip(n, d)))
    assert main(["fit", "--csv", str(csv), "--law", "approach3", "--bootstrap", "5", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for k in ("E", "A", "B", "alpha", "beta"):
        assert out[k] == pytest.approx(LAW[k], rel=0.02), k
    assert out["n_starts"] == 4500 and len(out["ci"]["alpha"]) == 2
    assert main(["fit", "--csv", str(csv), "--law", "n", "--form", "kaplan", "--bootstrap", "0"]) == 0
    assert "alpha" in capsys.readouterr().out


def test_fit_cli_errors_are_one_line(tmp_path, capsys):
    csv = tmp_path / "p.csv"
    csv.write_text("N,loss\n1e6,3.0\n")
    assert main(["fit", "--csv", str(csv), "--law", "approach3"]) == 2
    assert "lacks column(s) ['D']" in capsys.readouterr().err
    assert main(["fit", "--csv", str(csv), "--law", "n"]) == 2
    assert "too few points for the power law in N" in capsys.readouterr().err
    assert main(["fit", "--csv", str(tmp_path / "missing.csv")]) == 2
    assert "CSV file not found" in capsys.readouterr().err


def test_fit_cli_refuses_invalid_rows_unless_told_to_drop_them(tmp_path, capsys):
    n, d = np.geomspace(1e6, 1e9, 12), np.geomspace(1e8, 1e11, 12)[::-1]
    rows = [f"{a},{b},{law_loss(a, b)}" for a, b in zip(n, d)]
    rows[2], rows[4], rows[5], rows[7], rows[9] = ("1e6,1e8,nan", "1e6,inf,3.0", "0,1e8,3.0", "1e6,1e8,-2",
                                                   "x,1e8,3")
    csv = tmp_path / "p.csv"
    csv.write_text("N,D,loss\n" + "\n".join(rows) + "\n")
    assert main(["fit", "--csv", str(csv), "--law", "approach3", "--bootstrap", "0", "--json"]) == 2
    assert capsys.readouterr().err == f"error: {csv}: row(s) 4, 6, 7, 9, 11 (the header is row 1) have an " \
        "empty, non-numeric, infinite, zero or negative value in N, D, loss: fix them, or pass " \
        "--drop_invalid\n"
    assert main(["fit", "--csv", str(csv), "--law", "approach3", "--bootstrap", "0", "--json",
                 "--drop_invalid"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["n_points"] == 7
    assert err == f"warning: dropped 5 of 12 rows of {csv} with an empty, non-numeric, infinite, zero or " \
                  "negative value (--drop_invalid)\n"


def write_evals(run_dir, records):
    (run_dir / "eval.json").write_text(json.dumps(records))


def rec(task, task_variant, value, n=200, flagged=False):
    return dict(task=task, variant=task_variant, metric="acc", value=value, stderr=0.03, n=n, chance=0.5,
                flagged=flagged)


def test_standard_vs_simplified_means_average_the_same_tasks(tmp_path):
    """blimp_b has too few simplified pairs (flagged): the simplified mean covers blimp_a only, so the
    standard side of the comparison must too; the full standard mean is given separately."""
    from simscale.analysis.report import _zero_shot, summary_markdown

    w = tmp_path / "w"
    for h in (32, 64, 128):
        for variant in ("simplified", "unrestricted"):
            write_run(w / "runs", f"{variant}{h}", h, 2, variant, evals=False)
            write_evals(w / "runs" / f"{variant}{h}", [
                rec("blimp_a", "standard", 0.6), rec("blimp_b", "standard", 0.8),
                rec("blimp_a", "simplified", 0.7), rec("blimp_b", "simplified", 0.9, n=12, flagged=True)])
    zs = _zero_shot(finished(collect([w])[0]))
    assert zs["standard"]["tasks"] == ["blimp_a", "blimp_b"]
    assert zs["standard_shared"]["tasks"] == zs["simplified"]["tasks"] == ["blimp_a"]
    scores = lambda name: [s for v in zs[name]["scores"].values() for _, s, _ in v]  # noqa: E731
    assert scores("standard") == pytest.approx([0.7] * 6)  # (0.6 + 0.8) / 2
    assert scores("standard_shared") == pytest.approx([0.6] * 6)
    assert scores("simplified") == pytest.approx([0.7] * 6)
    text = summary_markdown(dict(n_finished=6, n_runs=6, params="total", convention=None, variants={},
                                 zero_shot=zs), [], [], {})
    assert "standard tasks (all): mean accuracy over 2 tasks (blimp_a, blimp_b)" in text
    assert "standard tasks shared with simplified: mean accuracy over 1 tasks (blimp_a)" in text


def test_near_chance_zero_shot_figure_has_error_bars_and_no_multiplier(tmp_path, monkeypatch):
    """Every model within noise of chance (as BIG-bench multiple choice on a fresh clone): the title
    must not state a multiplier, and every plotted accuracy carries an interval."""
    from matplotlib.container import ErrorbarContainer

    from simscale.analysis import figures
    from simscale.analysis.report import _zero_shot

    w = tmp_path / "w"
    rng = np.random.default_rng(0)
    for h, layers in SHAPES:
        for variant in ("simplified", "unrestricted"):
            write_run(w / "runs", f"{variant}{h}{layers}", h, layers, variant, evals=False)
            write_evals(w / "runs" / f"{variant}{h}{layers}",
                        [rec(t, "standard", rng.binomial(200, 0.5) / 200) for t in ("bb_a", "bb_b", "bb_c")])
    runs = finished(collect([w])[0])
    results = dict(zero_shot=_zero_shot(runs), params="nonembedding")
    assert results["zero_shot"]["standard"]["size_multiplier"]["text"].startswith("not determined")
    captured = []
    monkeypatch.setattr(figures, "_save", lambda fig, out, name: captured.append(fig) or [])
    figures.fig_zero_shot(runs, results, tmp_path)
    (ax,) = captured[0].axes
    assert "not determined" in ax.get_title() and "x N" not in ax.get_title()
    bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 2 and all(c.has_yerr for c in bars)


def test_report_extrapolation_does_not_see_the_held_out_model(tmp_path):
    """Changing the largest model's losses leaves the out-of-sample refit unchanged (the old check
    started it from the optimum fitted with those very points)."""
    from simscale.analysis.report import _approach3

    params = []
    for shift in (1.0, 1.05):
        w = tmp_path / f"w{shift}"
        for h, layers in SHAPES:
            write_run(w / "runs", f"r{h}{layers}", h, layers, "simplified", evals=False)
        biggest = w / "runs" / "r5124" / "metrics.jsonl"
        rows = [json.loads(line) for line in biggest.read_text().splitlines()[:-1]]
        rows = [dict(r, eval_loss=r["eval_loss"] * shift) for r in rows]
        biggest.write_text("".join(json.dumps(r) + "\n" for r in rows))
        a3 = _approach3(finished(collect([w])[0]), None, 0, 0, "nonembedding")
        params.append(a3["extrapolation"]["params"])
        assert a3["extrapolation"]["n_starts"] == 4500 and a3["n_runs"] == 6
    assert params[0] == params[1]


def test_fit_cli_resamples_runs_named_by_a_column(tmp_path, capsys):
    rng = np.random.default_rng(1)
    n = np.repeat(np.geomspace(1e6, 1e8, 6), 4)
    d = np.tile(np.geomspace(1e8, 1e10, 4), 6)
    run = np.repeat([f"run{i}" for i in range(6)], 4)
    loss = law_loss(n, d) * np.exp(np.repeat(rng.normal(0, 0.01, 6), 4))
    csv = tmp_path / "curves.csv"
    csv.write_text("run,N,D,loss\n" + "".join(f"{r},{a},{b},{c}\n" for r, a, b, c in zip(run, n, d, loss)))
    assert main(["fit", "--csv", str(csv), "--law", "d", "--runs", "run", "--bootstrap", "5", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_points"] == 24 and out["n_runs"] == 6 and out["bootstrap_unit"] == "runs"
    assert main(["fit", "--csv", str(csv), "--law", "d", "--runs", "nope"]) == 2
    assert "lacks column(s) ['nope']" in capsys.readouterr().err


def test_the_zero_shot_table_gives_each_model_a_95_percent_interval(tmp_path):
    """Two tasks at s.e. 0.03 each: the mean's s.e. is sqrt(2 x 0.03^2) / 2 = 0.0212, so 0.7 +/- 1.96 x
    0.0212 = [0.658, 0.742] on standard tasks; one shared task: 0.6 +/- 0.0588 = [0.541, 0.659]."""
    from simscale.analysis.report import _zero_shot, zero_shot_table

    w = tmp_path / "w"
    for h in (32, 64):
        for variant in ("simplified", "unrestricted"):
            write_run(w / "runs", f"{variant}{h}", h, 2, variant, evals=False)
            write_evals(w / "runs" / f"{variant}{h}", [
                rec("blimp_a", "standard", 0.6), rec("blimp_b", "standard", 0.8),
                rec("blimp_a", "simplified", 0.7)])
    lines = zero_shot_table(_zero_shot(finished(collect([w])[0]))).splitlines()
    assert lines[0] == "standard tasks (all): mean accuracy over 2 tasks +/- 1.96 s.e., chance 0.500"
    assert [line.split(maxsplit=1)[0] for line in lines[1:5]] == ["simplified"] * 2 + ["unrestricted"] * 2
    assert all(line.endswith("0.700 [0.658, 0.742]") for line in lines[1:5])
    shared = lines.index("standard tasks shared with simplified: mean accuracy over 1 tasks +/- 1.96 s.e., "
                         "chance 0.500")
    assert all(line.endswith("0.600 [0.541, 0.659]") for line in lines[shared + 1:shared + 5])
    assert lines[5].startswith("  size multiplier: ")
    assert zero_shot_table({}).startswith("no zero-shot scores")


def write_baseline(folder, model, total, nonembedding, records):
    """A folder as `python -m simscale.evaluate --hf MODEL --out FOLDER` writes it."""
    folder.mkdir(parents=True)
    (folder / "baseline.json").write_text(json.dumps(dict(model=model, params_total=total,
                                                          params_nonembedding=nonembedding, max_len=2048)))
    write_evals(folder, [dict(r, model=model) for r in records])


def test_report_shows_hugging_face_baselines_beside_the_grid(tmp_path, monkeypatch, capsys):
    """Each baseline's mean over the grid's tasks, with its standard error, at its non-embedding N, in
    fits.json, summary.md and the zero-shot figure; a baseline lacking one of the tasks gets no mean."""
    from matplotlib.container import ErrorbarContainer

    from simscale.analysis import figures

    w = tmp_path / "w"
    for h in (32, 64, 128):
        for variant in ("simplified", "unrestricted"):
            write_run(w / "runs", f"{variant}{h}", h, 2, variant, evals=False)
            write_evals(w / "runs" / f"{variant}{h}", [rec(t, tv, 0.6) for t in ("copa", "blimp_a")
                                                      for tv in ("standard", "simplified")])
    base = tmp_path / "baselines"
    write_baseline(base / "pythia", "EleutherAI/pythia-tiny", 7.0e7, 1.9e7, [
        dict(rec("copa", "standard", 0.62), stderr=0.02), rec("blimp_a", "standard", 0.80),
        dict(rec("blimp_a", "standard", 0.1), task="blimp", excluded=[])])  # a suite average: not a task
    write_baseline(base / "opt", "facebook/opt-tiny", 1.25e8, 8.5e7, [rec("copa", "standard", 0.55)])
    captured = {}
    monkeypatch.setattr(figures, "_save", lambda fig, out, name: captured.update({name: fig}) or [])
    assert main(["report", "--workdir", str(w), "--out", str(tmp_path / "out"), "--baselines", str(base),
                 "--bootstrap", "0"]) == 0
    zs = json.loads((tmp_path / "out" / "fits.json").read_text())["zero_shot"]
    opt, pythia = zs["standard"]["baselines"]
    assert pythia == dict(model="EleutherAI/pythia-tiny", N=1.9e7, score=pytest.approx((0.62 + 0.80) / 2),
                          stderr=pytest.approx(math.sqrt(0.02**2 + 0.03**2) / 2))
    assert opt == dict(model="facebook/opt-tiny", N=8.5e7, missing=["blimp_a"])
    assert [b["missing"] for b in zs["simplified"]["baselines"]] == [["blimp_a", "copa"]] * 2
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "Baseline EleutherAI/pythia-tiny (N = 1.9e+07): 0.710 ± 0.018" in summary
    assert "Baseline facebook/opt-tiny (N = 8.5e+07): no mean, it lacks blimp_a" in summary
    bars = {c.get_label(): c for c in captured["zero_shot"].axes[0].containers
            if isinstance(c, ErrorbarContainer)}
    point = bars["EleutherAI/pythia-tiny (baseline, 95% CI)"]
    np.testing.assert_allclose(point.lines[0].get_xydata(), [[1.9e7, 0.71]])
    assert not any("opt-tiny" in label for label in bars)
    assert main(["report", "--workdir", str(w), "--out", str(tmp_path / "o2"), "--baselines",
                 str(tmp_path / "w")]) == 2
    assert capsys.readouterr().err.startswith(f"error: --baselines {tmp_path / 'w'}: no baseline.json")
