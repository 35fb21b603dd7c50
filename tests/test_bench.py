"""The benchmark CLI: argument errors and the JSON records (a tiny shape, no peer)."""
import json

import pytest

from simscale import bench

KEYS = {"name", "hidden", "layers", "vocab", "seq_len", "batch", "compile_time_s", "step_time_s", "tokens_per_s",
        "model_flops_per_s", "mfu"}


def test_parse_shapes():
    assert bench.parse_shapes("64x2,128x4") == [(64, 2), (128, 4)]
    for bad in ("64y2", "64x", "", "0x2"):
        with pytest.raises(ValueError, match="HIDDENxLAYERS"):
            bench.parse_shapes(bad)


def test_cli_writes_records(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert bench.main(["--shapes", "16x1", "--steps", "2", "--no-peer", "--json", str(out)]) == 0
    (record,) = json.loads(out.read_text())
    assert set(record) >= KEYS and record["name"] == "16x1" and record["vocab"] == 5000
    assert record["tokens_per_s"] == pytest.approx(32 * 128 / record["step_time_s"])
    assert "16x1" in capsys.readouterr().out
    assert bench.main(["--shapes", "16z1"]) == 1
