"""python -m simscale.evaluate --run RUNDIR --tasks blimp_paper22,bigbench_mc [--shots 0] [--out FILE]
python -m simscale.evaluate --hf MODEL --tasks blimp_paper22 --out DIR   (a Hugging Face baseline)
python -m simscale.evaluate counts --vocab PATH [--blimp DIR] [--tasks blimp_paper22]

Task names: blimp, blimp_paper22, blimp/<paradigm>, bigbench_mc, bigbench/<task>, jsonl:<path>,
copa, sst2, qqp, mrpc, rte, mnli, piqa, arc_easy, and paper (those eight + blimp_paper22)."""
from __future__ import annotations

import argparse
import logging
import sys
import warnings

from simscale import cli, cpu_runtime
from simscale.evaluate import tasks as tasks_lib

BLIMP_HELP = "BLiMP folder (default $SIMSCALE_DATA/blimp, else the cache's copy, downloaded once)"


def _vocabulary(spec) -> frozenset[str]:
    from simscale.data.vocab import load_vocabulary

    return load_vocabulary(spec).words


def counts(argv) -> None:
    """Print each task's example count, standard and simplified with the given vocabulary."""
    from simscale.evaluate.evaluator import MIN_EXAMPLES, variants

    p = argparse.ArgumentParser(prog="python -m simscale.evaluate counts")
    p.add_argument("--vocab", required=True,
                   help="vocabulary: a word list or CSV path, aochildes or wordfreq:N")
    p.add_argument("--tasks", default="blimp_paper22")
    p.add_argument("--blimp", default=None, help=BLIMP_HELP)
    args = p.parse_args(argv)
    vocab = _vocabulary(args.vocab)
    total = [0, 0]
    print(f"{'task':55s} {'standard':>8s} {'simplified':>10s}")
    for spec in args.tasks.split(","):
        for task in tasks_lib.resolve(spec.strip(), args.blimp):
            n = {k: len(v) for k, v in variants(task, vocab).items()}
            flag = "  (< %d: flagged)" % MIN_EXAMPLES if n["simplified"] < MIN_EXAMPLES else ""
            print(f"{task.name:55s} {n['standard']:8d} {n['simplified']:10d}{flag}")
            total = [total[0] + n["standard"], total[1] + n["simplified"]]
    print(f"{'total':55s} {total[0]:8d} {total[1]:10d}")


def evaluate(argv) -> None:
    from simscale import at_hand
    from simscale.evaluate.run import evaluate_hf, evaluate_run
    from simscale.validation import check_file, check_folder

    p = argparse.ArgumentParser(prog="python -m simscale.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    model = p.add_mutually_exclusive_group(required=True)
    model.add_argument("--run", help="run directory")
    model.add_argument("--hf", metavar="MODEL", help="a Hugging Face causal LM (hub name or local directory: "
                       "Pythia, OPT, ...) scored as a baseline, float32 on the CPU (the hf extra and torch)")
    p.add_argument("--tasks", default="blimp_paper22,bigbench_mc")
    p.add_argument("--shots", type=int, default=0)
    p.add_argument("--out", default=None, help="--run: records file (default RUNDIR/eval.json); --hf: the "
                   "folder to write eval.json and baseline.json to (required)")
    p.add_argument("--vocab", default=None, help="vocabulary for the simplified variants (default: the run's "
                   "vocab.txt; --hf: the runs' default data.vocab=auto, aochildes if found, else wordfreq)")
    p.add_argument("--blimp", default=None, help=BLIMP_HELP)
    p.add_argument("--max_examples", type=int, default=0,
                   help="score a fixed-seed subsample of at most this many examples per task (0: all)")
    p.add_argument("--allow_earlier_step", action="store_true",
                   help="score the newest readable checkpoint even when it is not the run's final step")
    args = p.parse_args(argv)
    if args.shots < 0:
        p.error("--shots must be >= 0")
    if args.hf:
        if not args.out:
            p.error("--hf needs --out DIR, the folder for the baseline's eval.json")
        if args.allow_earlier_step:
            p.error("--allow_earlier_step is about a run's checkpoints: --hf has none")
        check_folder(args.out, "--out")
        spec = args.vocab
        if spec is None:
            spec, why = at_hand.vocabulary()
            print(f"simplified variants: vocabulary {spec} ({why})", file=sys.stderr)
        records = evaluate_hf(args.hf, args.tasks, args.out, args.shots, vocab=_vocabulary(spec),
                              blimp=args.blimp, max_examples=args.max_examples)
    else:
        check_folder(args.run, "--run", created=False)
        check_file(args.out, "--out")
        vocab = _vocabulary(args.vocab) if args.vocab else None
        records = evaluate_run(args.run, args.tasks, args.shots, args.out, vocab=vocab, blimp=args.blimp,
                               max_examples=args.max_examples, allow_earlier_step=args.allow_earlier_step)
    for r in records:
        if r["shots"] == args.shots:
            print(_row(r))


def _row(r: dict) -> str:
    num = lambda x: "n/a" if x is None else f"{x:.3f}"  # noqa: E731
    return (f"{r['task']:45s} {r['variant']:10s} {r['metric']:8s} {num(r['value'])} ± {num(r['stderr'])}"
            f"  n={r['n']}  chance={num(r['chance'])}{'  flagged' if r['flagged'] else ''}")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cpu_runtime.configure()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    logging.getLogger("simscale.evaluate").setLevel(logging.INFO)
    warnings.formatwarning = lambda message, *_, **__: f"warning: {message}\n"  # one line each
    command, args = (counts, argv[1:]) if argv[:1] == ["counts"] else (evaluate, argv)
    return cli.run(command, args)


if __name__ == "__main__":
    sys.exit(main())
