"""prepare(cfg), the TFDS datasets, the tokenizer, the grain pipeline and the CLI, on a small corpus."""
import itertools
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

from simscale.config import run_config
from simscale.data import datasets, loader, prepare, tokenizer

WORDS = "the cat sat on a mat and dog ran to big red ball she he saw it was happy sad".split()


def _corpus(path, n_docs=400, seed=0):
    rng = random.Random(seed)
    lines = []
    for _ in range(n_docs):
        sentences = []
        for _ in range(rng.randint(3, 8)):
            ws = [rng.choice(WORDS) for _ in range(rng.randint(5, 12))]
            if rng.random() < 0.3:
                ws[rng.randrange(len(ws))] = "zebra"  # out of vocabulary
            sentences.append(" ".join(ws).capitalize() + rng.choice([".", "!", "?"]))
        lines.append(" ".join(sentences))
    path.write_text("\n".join(lines) + "\n")
    return path


def _cfg(tmp, corpus, **data):
    (tmp / "vocab.txt").write_text("\n".join(WORDS))
    cfg = run_config()
    cfg.data.files.paths = str(corpus)
    cfg.data.update(dict(source="files", vocab=str(tmp / "vocab.txt"),
                         cache_dir=str(tmp / "cache"), min_span_len=8, workers=1,
                         min_validation_documents=10) | data)
    cfg.model.vocab_size = 300
    cfg.train.update(seq_len=16, batch_size=4, eval_batches=3)
    return cfg


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prep")
    cfg = _cfg(tmp, _corpus(tmp / "corpus.txt"))
    return cfg, prepare(cfg)


def test_prepare_writes_a_complete_simplified_dataset(prepared):
    cfg, p = prepared
    s = p.stats
    assert s["documents_in"] == 400 and 0 < s["documents"] <= 400 and 0 < s["kept_fraction"] < 1
    assert s["validation_documents"] == 10 and p.vocab_size <= 300
    assert p.train_tokens == s["train_rows"] * 16 and 1 < p.bytes_per_token < 10
    assert p.vocabulary_path.read_text().split() == sorted(WORDS)
    text = datasets.source("text", p.dir, "validation")
    assert len(text) == 10 and text[0]["text"].decode().startswith("<s> ")
    rows = datasets.source("tokens", p.dir, "train")
    assert len(rows) == s["train_rows"] and rows[0]["tokens"].shape == (17,)
    assert not [f for f in os.listdir(p.dir.parent) if ".tmp" in f]


def test_tokenizer_round_trips_and_marks_documents(prepared):
    _, p = prepared
    tok = tokenizer.load(p.tokenizer_path)
    for text in ["<s> The cat sat. </s> <s> a\tb  c\n d </s>", "Zebra’s café: 42 ünïcode — ok?"]:
        assert tokenizer.decode(tok, tok.encode(text).ids) == text
    rows = datasets.source("tokens", p.dir, "train")
    ids = np.concatenate([rows[i]["tokens"] for i in range(40)])
    assert tok.token_to_id("<s>") in ids and tok.token_to_id("</s>") in ids
    decoded = tokenizer.decode(tok, ids)  # spans packed as <s>span</s>: no markup spaces
    assert "</s><s>" in decoded and " </s>" not in decoded and "<s> " not in decoded


def test_second_prepare_does_no_work(prepared):
    cfg, p = prepared
    stamp = (p.dir / "prepared.json").stat().st_mtime_ns
    assert prepare(cfg) == p
    assert (p.dir / "prepared.json").stat().st_mtime_ns == stamp


def dead_pid() -> int:
    """The pid of a process that has exited (reused within the test only by a freak)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_prepare_removes_folders_a_killed_prepare_left_and_only_those(prepared):
    cfg, p = prepared
    host = socket.gethostname()
    stale = [p.dir.parent / f".{p.dir.name}.tmp{dead_pid()}",  # named before hosts were recorded
             p.dir.parent / f".unrestricted-0123.tmp{dead_pid()}@{host}"]
    kept = [p.dir.parent / f".{p.dir.name}.tmp{os.getpid()}@{host}",  # its writer runs
            p.dir.parent / f".{p.dir.name}.tmp{dead_pid()}@another-host"]  # it may run there
    for folder in stale + kept:
        (folder / "simscale_tokens").mkdir(parents=True)
    lines = []
    assert prepare(cfg, log=lines.append) == p
    assert [f.exists() for f in stale + kept] == [False, False, True, True]
    assert lines == [f"removed 2 temporary file(s) or folder(s) left by a process no longer running: "
                     f"{', '.join(map(str, sorted(stale)))}"]
    for folder in kept:
        shutil.rmtree(folder)


def test_unrestricted_is_cut_to_the_simplified_token_count(prepared):
    cfg, p = prepared
    cfg = cfg.copy_and_resolve_references()
    cfg.data.variant = "unrestricted"
    u = prepare(cfg)
    assert u.dir != p.dir and u.vocabulary_path is None
    assert u.stats["train_rows"] == p.stats["train_rows"] and u.train_tokens == p.train_tokens
    assert "kept_fraction" not in u.stats


def test_batches_are_deterministic_and_resumable(prepared):
    cfg, p = prepared
    first = list(itertools.islice(loader.batches(p, cfg, "train", 0), 6))
    again = list(itertools.islice(loader.batches(p, cfg, "train", 0), 6))
    resumed = list(itertools.islice(loader.batches(p, cfg, "train", 4), 2))
    assert all(b.shape == (4, 17) and b.dtype == np.int32 for b in first)
    assert all((a == b).all() for a, b in zip(first, again))
    assert all((a == b).all() for a, b in zip(first[4:], resumed))
    assert not (first[0] == first[1]).all()
    val = list(loader.batches(p, cfg, "validation"))
    assert len(val) == 3 and all((a == b).all() for a, b in zip(val, loader.batches(p, cfg, "validation")))


def test_epochs_reshuffle(prepared):
    cfg, p = prepared
    n = p.stats["train_rows"]
    steps_per_epoch = n // cfg.train.batch_size
    epoch = np.concatenate(list(itertools.islice(loader.batches(p, cfg, "train", 0), steps_per_epoch)))
    assert len({r.tobytes() for r in epoch}) == len(epoch)  # no row twice within an epoch
    nxt = next(loader.batches(p, cfg, "train", n))  # step n starts 4 epochs later
    assert nxt.shape == (4, 17)


def test_different_seed_different_order(prepared):
    cfg, p = prepared
    other = cfg.copy_and_resolve_references()
    other.seed = 1
    assert not (next(loader.batches(p, cfg, "train")) == next(loader.batches(p, other, "train"))).all()


def test_non_utf8_bytes_are_replaced_and_counted(tmp_path):
    corpus = _corpus(tmp_path / "c.txt", n_docs=60)
    corpus.write_bytes(corpus.read_bytes() + b"The cat sat \xff\xfe on the mat.\n")
    p = prepare(_cfg(tmp_path, corpus, min_validation_documents=2))
    assert p.stats["replaced_bytes"] == 2


@pytest.mark.parametrize("content,match", [(None, "does not exist"), ("", "is empty"),
                                           ("\n \n", "is empty"), ("zebra yak gnu.\n" * 50, "kept nothing")])
def test_bad_corpus_gives_one_message_and_no_partial_dataset(tmp_path, content, match):
    corpus = tmp_path / "bad.txt"
    if content is not None:
        corpus.write_text(content)
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        prepare(_cfg(tmp_path, corpus))
    assert not (tmp_path / "cache" / "prepared").exists() or not os.listdir(tmp_path / "cache" / "prepared")


def test_broken_cache_entry_names_the_folder(tmp_path):
    cfg = _cfg(tmp_path, _corpus(tmp_path / "c.txt", n_docs=60), min_validation_documents=2)
    p = prepare(cfg)
    (p.dir / "prepared.json").write_text("{ truncated")
    with pytest.raises(ValueError, match=f"{p.dir}.*delete that folder"):
        prepare(cfg)


@pytest.mark.parametrize("damage", ["truncate", "remove"])
def test_a_damaged_array_record_file_names_the_folder_to_delete(tmp_path, damage):
    cfg = _cfg(tmp_path, _corpus(tmp_path / "c.txt", n_docs=60), min_validation_documents=2)
    p = prepare(cfg)
    files = json.loads((p.dir / "prepared.json").read_text())["files"]
    rows = sorted(p.dir.rglob("simscale_tokens-train.array_record-*"))
    assert len(rows) == 1 and files[str(rows[0].relative_to(p.dir))]["records"] == p.stats["train_rows"]
    size = rows[0].stat().st_size
    if damage == "truncate":
        with open(rows[0], "r+b") as f:
            f.truncate(size // 2)
    else:
        rows[0].unlink()
    with pytest.raises(ValueError, match=f"prepared dataset {re.escape(str(p.dir))} is broken .*"
                                         f"simscale_tokens-train.array_record.*delete that folder"):
        prepare(cfg)


def test_a_dataset_prepared_before_manifests_still_loads(tmp_path):
    """A cache prepared by an older simscale has no `files` in prepared.json: it is not checked,
    not reported broken (every user's cache was, after the upgrade)."""
    cfg = _cfg(tmp_path, _corpus(tmp_path / "c.txt", n_docs=60), min_validation_documents=2)
    p = prepare(cfg)
    meta = json.loads((p.dir / "prepared.json").read_text())
    del meta["files"]
    (p.dir / "prepared.json").write_text(json.dumps(meta))
    assert prepare(cfg).stats["train_rows"] == p.stats["train_rows"]


def _cli(*args, cwd):
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    return subprocess.run([sys.executable, "-m", "simscale.data", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=120)


def test_cli_simplify_writes_kept_text_in_order_and_stats(tmp_path):
    (tmp_path / "v.txt").write_text("\n".join(WORDS))
    sentence = "the cat sat on a mat and the dog ran to the big red ball. "
    docs = [sentence * 4, "zebra " * 10, "", sentence * 3 + "zebra gnu yak"]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    r = _cli("simplify", "--vocab", "v.txt", "--input", "in.jsonl", "--output", "out.jsonl", "--workers", "1",
             cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = [json.loads(line)["text"] for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert out == [f"<s> {(sentence * 4).strip()} </s>", "", "", f"<s> {(sentence * 3).strip()} </s>"]
    stats = json.loads((tmp_path / "out.jsonl.stats.json").read_text())
    assert stats["documents_in"] == 4 and stats["documents_out"] == 2 and stats["spans"] == 2


def test_cli_errors_are_one_line_without_traceback(tmp_path):
    r = _cli("simplify", "--vocab", "wordfreq:100", "--input", "missing.txt", "--output", "o.jsonl",
             cwd=tmp_path)
    assert r.returncode == 2 and "missing.txt" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "v.csv").write_text(",word,frequency\n")
    (tmp_path / "in.txt").write_text("hello\n")
    r = _cli("simplify", "--vocab", "v.csv", "--input", "in.txt", "--output", "o.jsonl", cwd=tmp_path)
    assert r.returncode == 2 and "no usable words" in r.stderr and not (tmp_path / "o.jsonl").exists()


def test_cli_prepare_and_inspect(tmp_path):
    _corpus(tmp_path / "corpus.txt", n_docs=80)
    (tmp_path / "vocab.txt").write_text("\n".join(WORDS))
    (tmp_path / "cfg.py").write_text(
        "from simscale.config import run_config\n"
        "def get_config(arg=None):\n"
        "    cfg = run_config()\n"
        "    cfg.data.files.paths = 'corpus.txt'\n"
        "    cfg.data.update(source='files', vocab='vocab.txt', min_span_len=8, workers=1,\n"
        "                    min_validation_documents=2)\n"
        "    cfg.model.vocab_size = 300\n"
        "    cfg.train.seq_len = 16\n"
        "    return cfg\n")
    r = _cli("prepare", "--config", "cfg.py", "--data_dir", "data", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "simplified" in r.stdout and "train tokens" in r.stdout
    r = _cli("inspect", "--config", "cfg.py", "--data_dir", "data", "--n", "1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "--- train row 0\n<s>" in r.stdout and "Load dataset info" not in r.stderr


def test_file_formats_and_limits(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from simscale.data import sources

    pq.write_table(pa.table({"text": ["one doc", "", "two doc"]}), tmp_path / "a.parquet")
    (tmp_path / "b.jsonl").write_text('{"text": "three"}\n\n{"text": "four", "x": 1}\n')
    (tmp_path / "c.txt").write_text("five\n\nsix\n")
    cfg = run_config().data
    cfg.source = "files"
    cfg.files.paths = f"{tmp_path}/*.parquet,{tmp_path}/b.jsonl,{tmp_path}/c.txt"
    assert list(sources.documents(cfg)) == ["one doc", "two doc", "three", "four", "five", "six"]
    cfg.max_documents = 3
    assert list(sources.documents(cfg)) == ["one doc", "two doc", "three"]
    cfg.update(max_documents=0, max_bytes=10)
    assert list(sources.documents(cfg)) == ["one doc", "two doc"]
    cfg.max_bytes = 0
    cfg.files.update(paths=str(tmp_path / "c.txt"), lines_per_document=2)
    assert list(sources.documents(cfg)) == ["five\n", "six"]
    (tmp_path / "d.jsonl").write_text('{"text": "ok"}\n{"body": "no text"}\n')
    cfg.files.update(paths=str(tmp_path / "d.jsonl"), lines_per_document=1)
    with pytest.raises(ValueError, match="d.jsonl line 2"):
        list(sources.documents(cfg))


def test_tfds_source_reads_a_prepared_text_dataset(prepared):
    from simscale.data import sources

    cfg, p = prepared
    data = cfg.data.copy_and_resolve_references()
    data.source = "tfds"
    data.tfds.update(name="simscale_text", split="validation", data_dir=str(p.dir))
    docs = list(sources.documents(data))
    assert len(docs) == p.stats["validation_documents"] and docs[0].startswith("<s> ")
    data.tfds.name = "no_such_dataset"
    with pytest.raises(FileNotFoundError, match="no_such_dataset"):
        list(sources.documents(data))


def test_hosts_split_the_global_batch(prepared, monkeypatch):
    import jax

    cfg, p = prepared
    whole = next(loader.batches(p, cfg, "train", 5))
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    parts = []
    for host in (0, 1):
        monkeypatch.setattr(jax, "process_index", lambda host=host: host)
        parts.append(next(loader.batches(p, cfg, "train", 5)))
    assert parts[0].shape == (2, 17) and (np.concatenate(parts) == whole).all()


def test_hf_source_streams_and_explains_failures(monkeypatch):
    datasets_hf = pytest.importorskip("datasets")
    from simscale.data import sources

    cfg = run_config().data
    cfg.source = "hf"
    cfg.hf.name = "someone/corpus"
    monkeypatch.setattr(datasets_hf, "load_dataset",
                        lambda *a, **k: iter([{"text": "a"}, {"text": ""}, {"text": "b"}]))
    assert list(sources.documents(cfg)) == ["a", "b"]

    def offline(*a, **k):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets_hf, "load_dataset", offline)
    with pytest.raises(FileNotFoundError, match="someone/corpus.*no network"):
        list(sources.documents(cfg))


def test_loader_batches_are_those_of_the_prepared_rows(prepared):
    """Step s's batch holds rows [s B, (s+1) B) of grain's seeded shuffle of the training rows."""
    import grain

    from simscale.data import datasets

    cfg, p = prepared
    order = grain.MapDataset.source(datasets.source("tokens", p.dir, "train")).shuffle(seed=cfg.seed)
    B = cfg.train.batch_size
    expected = np.stack([order[2 * B + i]["tokens"] for i in range(B)])
    assert (next(loader.batches(p, cfg, "train", 2)) == expected).all()


def test_bench_pipeline_measures_tokens(prepared):
    from simscale.data.throughput import bench_loader

    cfg, _ = prepared
    r = bench_loader(cfg, steps=5)
    assert r["batch"] == [4, 17] and r["tokens_per_s"] > 0


def test_prepare_child_directed_utterances(shared_data, tmp_path):
    cfg = run_config()
    cfg.data.files.update(paths=str(shared_data / "aochildes" / "child_directed_utterances.txt"),
                          lines_per_document=100)
    cfg.data.update(source="files", max_documents=150, vocab="aochildes", workers=1,
                    min_validation_documents=5, cache_dir=str(tmp_path))
    cfg.model.vocab_size = 500
    cfg.train.seq_len = 32
    p = prepare(cfg)
    assert p.stats["documents_in"] == 150 and p.stats["kept_fraction"] > 0.4
    assert p.vocabulary_path.read_text().count("\n") == 21036


def test_content_bytes_count_source_text_and_not_markup():
    tok = tokenizer.train(["héllo wörld, the cat sat"] * 20, 300, 1)
    ids = tokenizer.encode_documents(tok, [["héllo wörld"], ["a", "b c"]])
    # h é(2) l l o ' ' w ö(2) r l d = 13 bytes; 'a' 1 and 'b c' 3; each piece adds <s> and </s>.
    table = tokenizer.content_bytes(tok)
    assert [int(table[d].sum()) for d in ids] == [13, 4]
    assert [d.count(tok.token_to_id("<s>")) for d in ids] == [1, 2]
    literal = tokenizer.encode_documents(tok, [["x <s> y"]])[0]  # source text that looks like markup
    assert literal.count(tok.token_to_id("<s>")) == 1 and int(table[literal].sum()) == 7


def _three_files(tmp):
    """Three files read in sequence, of 300, 200 and 100 documents of the same kind of text."""
    return [_corpus(tmp / f"{name}.txt", n_docs=n, seed=k) for k, (name, n) in enumerate(
        [("a", 300), ("b", 200), ("c", 100)])]


def test_both_variants_sample_every_source_part_in_its_share(tmp_path):
    """Read in sequence (A, then B, then C) and cut to a row target, each variant's training tokens
    must come from the three files in the source's proportions, not from the first files."""
    files = _three_files(tmp_path)
    cfg = _cfg(tmp_path, ",".join(map(str, files)), min_validation_documents=10)
    source_bytes = np.array([f.stat().st_size for f in files], float)
    expected = source_bytes / source_bytes.sum()  # the files' shares of the text: about 1/2, 1/3, 1/6
    shares = {}
    for variant in ("simplified", "unrestricted"):
        c = cfg.copy_and_resolve_references()
        c.data.variant = variant
        parts = prepare(c).stats["sources"]
        shares[variant] = np.array([parts[str(f)]["token_share"] for f in files])
        assert sum(parts[str(f)]["tokens"] for f in files) == prepare(c).stats["train_rows"] * 17
    for variant, share in shares.items():
        assert np.abs(share - expected).max() < 0.05, (variant, share, expected)
    assert np.abs(shares["simplified"] - shares["unrestricted"]).max() < 0.05


def test_token_target_stops_reading_and_both_variants_reach_it(tmp_path):
    corpus = _corpus(tmp_path / "c.txt", n_docs=400)
    cfg = _cfg(tmp_path, corpus, max_train_tokens=2000, min_validation_documents=5)
    p = prepare(cfg)
    # 2000 tokens of 16-token rows: 125 rows; reading stops after 6 bytes a token are kept (12 kB
    # of the ~57 kB the whole corpus keeps).
    assert p.train_tokens == 2000 and p.stats["train_rows"] == 125
    assert 12_000 <= p.stats["bytes_out"] < 14_000 and p.stats["documents_in"] < 150
    cfg.data.variant = "unrestricted"
    u = prepare(cfg)
    assert u.train_tokens == 2000 and u.stats["documents_in"] < 150


def test_validation_rows_are_every_kth_packed_row(tmp_path):
    cfg = _cfg(tmp_path, _corpus(tmp_path / "c.txt", n_docs=100), validation_unit="rows",
               validation_fraction=0.05)
    s = prepare(cfg).stats
    rows = s["train_rows"] + s["validation_rows"]
    assert s["validation_documents"] == 0 and s["validation_rows"] == rows // 20  # rows 19, 39, ...
    cfg.data.validation_fraction = 0.0
    with pytest.raises(ValueError, match="validation_unit='rows'.*fraction > 0"):
        prepare(cfg)


def test_a_run_prepares_its_data_once_and_reads_every_batch_from_it(prepared, tmp_path, monkeypatch):
    """The loop hands the PreparedData it holds to the loader: training and validation batches do not
    prepare (hash the vocabulary, check the manifest) again, as they did through the old stream module."""
    import simscale.data.prepared as prepared_lib
    from simscale.train import train

    cfg, _ = prepared
    cfg = cfg.copy_and_resolve_references()
    cfg.model.update(hidden=16, layers=1, heads=2, max_len=16)
    cfg.train.update(steps=3, log_every=1, eval_every=2, checkpoint_every=0, warmup_steps=1)
    calls = []
    real = prepared_lib.prepare
    monkeypatch.setattr(prepared_lib, "prepare",
                        lambda c, log=None: calls.append(c.data.variant) or real(c, log))
    assert train(cfg, tmp_path / "run")["steps"] == 3
    assert calls == ["simplified"]
