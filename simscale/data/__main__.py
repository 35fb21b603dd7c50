"""python -m simscale.data COMMAND ...

  simplify --vocab VOCAB --input FILE --output FILE [--text_field text] [--workers N]
      FILE: text (one document a line) or jsonl with a `text` field (--text_field). Writes jsonl
      {"text": kept} per input document, in order ('' when nothing is kept),
      and the filter's stats to OUTPUT.stats.json.
  prepare --config sweeps/grid.py:preset=NAME [--data_dir DIR] [--config.data.x=v ...]
      Prepares every data variant of the config (its sweep's variants, else
      data.variant) and prints a table.
  inspect (--config ... [--variant V] | --prepared DIR) [--n 3]
      Prints a prepared dataset's stats and decoded training rows.
  bench
      Span-filter MB/s, single process and parallel, and the batch loader's tokens/s.
"""
from __future__ import annotations

import json
import pathlib
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from simscale import at_hand, cli

from simscale.config import ConfigError
from simscale.validation import check_file, check_folder, check_keys

FLAGS = flags.FLAGS
# unknown keys: refused by check_keys, in one line
config_flags.DEFINE_config_file("config", None, "config file, e.g. sweeps/grid.py:preset=cpu",
                                lock_config=False, accept_new_attributes=True)
flags.DEFINE_string("data_dir", None, "cache folder for prepared data (sets data.cache_dir)")
flags.DEFINE_string("vocab", "aochildes", "simplify: vocabulary (path, aochildes or wordfreq:N)")
flags.DEFINE_string("input", None, "simplify: input file (text or jsonl)")
flags.DEFINE_string("output", None, "simplify: output jsonl")
flags.DEFINE_string("text_field", "text",
                    "simplify: the jsonl (or parquet) field holding each document's text")
flags.DEFINE_integer("workers", 0, "simplify: filter processes (0: all cores)")
flags.DEFINE_string("variant", None, "inspect: simplified or unrestricted (default data.variant)")
flags.DEFINE_string("prepared", None, "inspect: a prepared dataset folder")
flags.DEFINE_integer("n", 3, "inspect: rows to print")


def simplify_file() -> None:
    from simscale import tmpfiles
    from simscale.data import sources, span_filter
    from simscale.data.vocab import load_vocabulary

    if not FLAGS.input or not FLAGS.output:
        raise ConfigError("simplify needs --input FILE and --output FILE")
    check_file(FLAGS.input, "--input", must_exist=True)
    check_file(FLAGS.output, "--output")
    src = FLAGS.input
    vocab = load_vocabulary(FLAGS.vocab)
    out = pathlib.Path(FLAGS.output)
    tmpfiles.remove_stale(out.parent, out.name)  # a killed simplify's partial output
    tmp = tmpfiles.temp_path(out)
    counts, stats = {"replaced_bytes": 0}, span_filter.Stats()
    docs = sources.read_file(src, sources.file_format(src), FLAGS.text_field, counts, fix="--text_field")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            for text, s in span_filter.simplify_documents(docs, vocab.words, workers=FLAGS.workers):
                stats.add(s)
                f.write(json.dumps({"text": text}) + "\n")
        stats.replaced_bytes = counts["replaced_bytes"]
        if not stats.documents_in:
            raise ValueError(f"input {src} holds no documents: give text, one document a line, or jsonl")
        if not stats.documents_out:
            raise ValueError(f"the filter kept nothing of the {stats.documents_in} documents in {src} "
                             f"with vocabulary {vocab.source} ({vocab.size} words): give simpler or longer "
                             "text")
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    d = stats.as_dict() | {"vocab": vocab.source, "vocab_sha256": vocab.sha256, "input": src}
    out.with_name(out.name + ".stats.json").write_text(json.dumps(d, indent=1))
    print(json.dumps(d))


def _config():
    cfg = FLAGS.config
    if cfg is None:
        raise ConfigError("--config is required, e.g. --config sweeps/grid.py:preset=cpu")
    check_keys(cfg)
    check_folder(FLAGS.data_dir, "--data_dir")
    for note in at_hand.resolve(cfg):
        print(note, file=sys.stderr)
    if FLAGS.data_dir:
        cfg.data.cache_dir = FLAGS.data_dir
    return cfg


def prepare_command() -> None:
    from simscale.data import prepare_all

    cfg = _config()
    variants = (list(cfg.sweep.axes.variant) if "sweep" in cfg and "variant" in cfg.sweep.axes
                else [cfg.data.variant])
    cfgs = []
    for variant in variants:
        cfgs.append(cfg.copy_and_resolve_references())
        cfgs[-1].data.variant = variant
    rows = []
    for variant, p in zip(variants, prepare_all(cfgs)):
        s = p.stats
        kept = f"{100 * s['kept_fraction']:.1f}%" if "kept_fraction" in s else "-"
        rows.append((variant, s["documents_in"], s["documents"], kept, p.train_tokens, p.vocab_size,
                     f"{p.bytes_per_token:.2f}", str(p.dir)))
    head = ("variant", "docs in", "docs", "words kept", "train tokens", "tokenizer", "bytes/tok", "dir")
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    for r in [head, *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(r, widths)))


def inspect() -> None:
    from simscale.data import datasets, prepare, tokenizer

    if FLAGS.prepared:
        folder = pathlib.Path(FLAGS.prepared)
        if not (folder / "prepared.json").is_file():
            raise FileNotFoundError(f"{folder} is not a prepared dataset (no prepared.json)")
    else:
        cfg = _config()
        if FLAGS.variant:
            cfg.data.variant = FLAGS.variant
        folder = prepare(cfg).dir
    print(json.dumps(json.loads((folder / "prepared.json").read_text()), indent=1))
    tok = tokenizer.load(folder / "tokenizer.json")
    rows = datasets.source("tokens", folder, "train")
    for i in range(min(FLAGS.n, len(rows))):
        print(f"--- train row {i}\n{tokenizer.decode(tok, rows[i]['tokens'])}")


def bench() -> None:
    from simscale.data.throughput import bench_filter, bench_loader_on_text

    print(json.dumps(bench_filter()))
    for record in bench_loader_on_text():
        print(json.dumps({"loader": record}))


COMMANDS = {"simplify": simplify_file, "prepare": prepare_command, "inspect": inspect, "bench": bench}


def main(argv) -> int:
    logging.set_verbosity(logging.WARNING)  # TFDS logs every dataset it opens at INFO
    if len(argv) != 2 or argv[1] not in COMMANDS:
        print(__doc__, file=sys.stderr)
        return 2
    return cli.run(COMMANDS[argv[1]])


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
