"""Run, sweep and evaluation files: atomic JSON, and JSON-lines logs that survive a kill mid-write."""
import json

import pytest

from simscale.jsonio import read_json, read_jsonl, write_json
from simscale.train.metrics import MetricsLog


def test_json_round_trip_default_and_malformed(tmp_path):
    write_json(tmp_path / "a" / "x.json", {"b": 1})
    assert read_json(tmp_path / "a" / "x.json") == {"b": 1}
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["x.json"]  # no temp file left
    assert read_json(tmp_path / "missing.json", {}) == {}
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="bad.json is not valid JSON"):
        read_json(tmp_path / "bad.json")


def test_jsonl_skips_a_line_cut_by_a_kill(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}\n{"step": 3}\n{"step": 4, "lo')
    assert read_jsonl(path) == [{"step": 1}, {"step": 2}, {"step": 3}]
    assert read_jsonl(tmp_path / "absent.jsonl") == []


def test_resumed_metrics_log_drops_later_and_cut_records(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2}\n{"step": 3}\n{"step": 4, "lo')
    log = MetricsLog(tmp_path, start_step=2, total_steps=10)
    log.close()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2]


def test_resumed_metrics_log_drops_damaged_lines(tmp_path):
    """A corrupted metrics.jsonl (bytes not UTF-8, JSON that is no record) made the resumed run fail."""
    (tmp_path / "metrics.jsonl").write_bytes(b'{"step": 1}\n{"st\xcc\xff": 2}\n[2]\n{"ste": 2}\n'
                                             b'{"step": 2}\n{"step": 3}\n')
    assert read_jsonl(tmp_path / "metrics.jsonl") == [{"step": 1}, {"ste": 2}, {"step": 2}, {"step": 3}]
    log = MetricsLog(tmp_path, start_step=2, total_steps=10)
    log.close()
    assert (tmp_path / "metrics.jsonl").read_text() == '{"step": 1}\n{"step": 2}\n'
