"""python -m simscale.analysis fit|report|bench: fit laws to a CSV, report on sweep workdirs, time the
fits."""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from simscale.analysis.collect import read_labels, read_points, valid_rows
from simscale.analysis.fit import fit_law
from simscale import cli
from simscale.validation import check_folder

# --law -> (law form, CSV input columns)
CSV_LAWS = {"approach3": ("approach3", ("N", "D")), "n": (None, ("N",)), "d": (None, ("D",)),
            "c": (None, ("C",))}


def _fit(args) -> int:
    form, inputs = CSV_LAWS[args.law]
    form = form or args.form
    cols = read_points(args.csv, inputs + ("loss",))
    ok = valid_rows(args.csv, cols, drop=args.drop_invalid)
    if not ok.all():
        print(f"warning: dropped {int((~ok).sum())} of {len(ok)} rows of {args.csv} with an empty, "
              "non-numeric, infinite, zero or negative value (--drop_invalid)", file=sys.stderr)
    x = np.stack([cols[c][ok] for c in inputs], -1)
    groups = read_labels(args.csv, args.runs)[ok] if args.runs else None
    fit = fit_law(form, x, cols["loss"][ok], inputs, bootstrap=args.bootstrap, seed=args.seed,
                  level=args.level, groups=groups)
    if args.json:
        print(json.dumps(fit.to_json(), indent=1))
        return 0
    of_runs = f" of {fit.n_runs} runs" if args.runs else ""
    print(f"{fit.law} law in {', '.join(inputs)}: {fit.n_points} points{of_runs}, {fit.n_starts} starts, "
          f"R^2 {fit.r2:.4f}, RMSE(log L) {fit.rmse_log:.4f}, {fit.fit_time_s:.2f} s")
    for k, v in fit.params.items():
        ci = fit.ci.get(k)
        interval = f"   [{ci[0]:.5g}, {ci[1]:.5g}] ({fit.level:.0%}, {fit.bootstrap} resamples of " \
                   f"{fit.to_json()['bootstrap_unit']})" if ci else ""
        print(f"  {k:>6} = {v:.5g}" + interval)
    if fit.ci_note:
        print(f"  ({fit.ci_note})")
    return 0


def _report(args) -> int:
    from simscale.analysis.report import report

    for workdir in args.workdir:
        check_folder(workdir, "--workdir", created=False)
    check_folder(args.out, "--out")
    results = report(args.workdir, args.out, args.flops, args.bootstrap, args.seed, args.params,
                     baselines=args.baselines)
    if results["n_finished"] == 0:
        print("error: no finished runs with a finite eval loss in " + ", ".join(args.workdir)
              + ": nothing to fit (figures that need no fits were still drawn)", file=sys.stderr)
        return 1
    return 0


def _bench(args) -> int:
    from simscale.analysis.fit_bench import bench

    bench(args.points, args.bootstrap, seed=args.seed)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m simscale.analysis", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fit", help="fit a law to a CSV of points")
    f.add_argument("--csv", required=True, help="columns N, D, loss (approach3), N|D|C and loss (n|d|c)")
    f.add_argument("--law", choices=sorted(CSV_LAWS), default="approach3")
    f.add_argument("--form", choices=("power", "kaplan"), default="power",
                   help="one-variable form: power E + A X^-alpha or kaplan (X_c/X)^alpha")
    f.add_argument("--json", action="store_true",
                   help="print the fit as JSON (keys E, A, B, alpha, beta, ...)")
    f.add_argument("--level", type=float, default=0.95, help="confidence level of the bootstrap intervals")
    f.add_argument("--drop_invalid", action="store_true",
                   help="leave out rows with an empty, non-numeric, infinite, zero or negative value "
                        "(default: refuse)")
    f.add_argument("--runs", default=None, metavar="COLUMN",
                   help="CSV column naming each point's run: the bootstrap resamples whole runs "
                        "(default: points)")
    r = sub.add_parser("report", help="figures, fits.json and summary.md for sweep workdirs")
    r.add_argument("--workdir", required=True, nargs="+", help="one or more sweep workdirs")
    r.add_argument("--out", default="figures")
    r.add_argument("--flops", default=None,
                   help="FLOPs convention for C, e.g. chinchilla or 6n (default: each run's own)")
    r.add_argument("--params", choices=("nonembedding", "total"), default="nonembedding",
                   help="parameter count used as N in every fit and figure (default: non-embedding, "
                        "as Kaplan et al.)")
    r.add_argument("--baselines", nargs="+", default=[], metavar="DIR",
                   help="Hugging Face baselines shown beside the grid in the zero-shot results: folders "
                        "written by `python -m simscale.evaluate --hf MODEL --out DIR`, or their parent")
    b = sub.add_parser("bench", help="time the fit command end to end, the 4,500-start grid and the "
                                     "run bootstrap")
    b.add_argument("--points", type=int, default=240)
    for p in (f, r, b):
        p.add_argument("--bootstrap", type=int, default=1000,
                       help="bootstrap resamples for intervals (0: none)")
        p.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    return cli.run(dict(fit=_fit, report=_report, bench=_bench)[args.cmd], args)


if __name__ == "__main__":
    sys.exit(main())
