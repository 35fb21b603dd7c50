"""Trackers (train.trackers): Weights & Biases beside TensorBoard, tested offline."""
import json
import struct
import sys

import pytest

from simscale.config import ConfigError, run_config
from simscale.sweep.grid import _run_id
from simscale.train import train
from simscale.validation import check


def tiny_config(trackers):
    cfg = run_config()
    cfg.model.update(dict(vocab_size=64, hidden=32, layers=2, heads=4, max_len=16))
    cfg.train.update(dict(batch_size=8, seq_len=16, steps=8, lr=1e-2, warmup_steps=2, log_every=2,
                          eval_every=4, checkpoint_every=4, eval_batches=2, trackers=trackers))
    return cfg


def wandb_records(path):
    """The protobuf records of a .wandb file, read by hand: W&B's leveldb-style log (a 7-byte ':W&B'
    header, then 32 KiB blocks of chunks, each with a 7-byte header: crc32, length, type
    1 full / 2 first / 3 middle / 4 last)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, chunks, records = 7, 32768, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if length == kind == 0:
            pos += left
            continue
        chunks, pos = chunks + data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunks)
            records.append(record)
            chunks = b""
    return records


def values(items):
    """{key: value} of W&B's history or config items (a key with '/' is stored as a nested key)."""
    return {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in items}


def test_a_resumed_run_continues_its_wandb_run_with_the_metrics_and_config(tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="wandb (the wandb extra) is not installed")
    for key, value in dict(WANDB_MODE="offline", WANDB_DIR=str(tmp_path / "wb"), WANDB_SILENT="true").items():
        monkeypatch.setenv(key, value)
    (tmp_path / "wb").mkdir()
    run_dir = tmp_path / "run"
    assert train(tiny_config("tensorboard,wandb"), run_dir, stop_at=4) == {"status": "running", "step": 4}
    run_id = json.loads((run_dir / "wandb.json").read_text())["id"]
    assert train(tiny_config("wandb"), run_dir)["status"] == "done"  # other trackers: the same run resumes
    files = sorted((tmp_path / "wb" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert [f.name for f in files] == [f"run-{run_id}.wandb"] * 2  # one W&B run, written by both attempts
    records = [r for f in files for r in wandb_records(f)]
    assert {r.run.run_id for r in records if r.HasField("run")} == {run_id}
    logged = {}
    for r in records:
        if r.HasField("history"):
            row = values(r.history.item)
            logged[row.pop("_step")] = row
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert sorted(logged) == [row["step"] for row in rows] == [2, 4, 6, 8]
    for row in rows:
        assert logged[row["step"]]["train/loss"] == row["loss"]
        assert logged[row["step"]].get("eval/eval_loss") == row.get("eval_loss")
    saved = values(next(r.run.config.update for r in records if r.HasField("run")))  # the first attempt's
    assert saved["model"]["hidden"] == 32 and saved["train"]["trackers"] == "tensorboard,wandb"
    assert list(run_dir.glob("events.out.tfevents.*"))  # TensorBoard, from the first attempt


def test_trackers_are_checked_and_change_no_run_id(monkeypatch):
    with pytest.raises(ConfigError, match="'mlflow' is not a tracker; give a comma list of tensorboard, wan"):
        check(tiny_config("tensorboard,mlflow"), 1)
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed: find_spec gives None
    with pytest.raises(ConfigError, match=r"wandb, which is not installed: pip install 'simscale\[wandb\]'"):
        check(tiny_config("wandb"), 1)
    check(tiny_config(""), 1)  # metrics.jsonl alone
    assert _run_id(tiny_config("tensorboard,wandb")) == _run_id(tiny_config("tensorboard"))
