"""The benchmark: argument errors, its JSON (tiny shape, real steps and peers), the profile's logic."""
import json

import pytest

from simscale import profiling, step_bench

KEYS = {"name", "hidden", "layers", "vocab", "seq_len", "batch", "compile_time_s", "step_time_s",
        "tokens_per_s", "model_flops_per_s", "fraction_of_peak", "mfu", "repeats", "peers"}
TINY = ["--shapes", "16x1", "--steps", "1", "--matmul-sizes", "64,128"]


def test_parse_shapes_and_sizes():
    assert step_bench.parse_shapes("64x2,128x4") == [(64, 2), (128, 4)]
    for bad in ("64y2", "64x", "", "0x2"):
        with pytest.raises(ValueError, match="HIDDENxLAYERS"):
            step_bench.parse_shapes(bad)
    assert step_bench.parse_sizes("512,2048") == [512, 2048]
    with pytest.raises(ValueError, match="matmul-sizes"):
        step_bench.parse_sizes("512,x")


def test_cpu_info_reads_the_first_processor(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("vendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n"
                       "model name\t: AMD EPYC 9B14\n"
                       "flags\t\t: fpu avx2 avx512f\n\nmodel name\t: second\n")
    cpu = step_bench.cpu_info(str(cpuinfo))
    assert (cpu["family"], cpu["model"], cpu["model_name"], cpu["vector"]) == ("25", "17", "AMD EPYC 9B14",
                                                                               ["avx2", "avx512f"])
    assert "family 25, model 17, avx2+avx512f" in step_bench.describe_cpu(cpu)


def test_cli_writes_records(tmp_path, capsys):
    out = tmp_path / "step_bench.json"
    assert step_bench.main([*TINY, "--repeats", "2", "--no-peer", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["matmul"]["peak_gflops"] == max(result["matmul"]["gflops"].values()) > 0
    peak = result["peak_gflops"]  # fractions are quoted against the higher of the figures before and after
    assert peak == max(result["matmul"]["peak_gflops"], result["matmul_after"]["peak_gflops"])
    assert set(result["matmul"]["gflops"]) == {"64", "128"}
    (record,) = result["shapes"]
    assert set(record) >= KEYS and record["name"] == "16x1" and record["vocab"] == 5000
    assert record["peers"] == {}
    assert record["tokens_per_s"] == pytest.approx(32 * 128 / record["step_time_s"])
    assert record["fraction_of_peak"] == pytest.approx(record["model_flops_per_s"] / (peak * 1e9))
    # model FLOPs are the executed matmuls, PaLM's count by hand for V 5000, D 16, L 1, F 64, T 128:
    # 6 x (16 x 16 x 4 + 3 x 16 x 64 + 3 norms x 16 + 16 x 5000) + 12 x 1 x 16 x 128 = 529,440 per token
    # (the input embedding is a lookup; PaLM counts the norm scales in N, as params_matmul does)
    assert record["flops_convention"] == "palm"
    assert record["model_flops_per_s"] == pytest.approx(529_440 * record["tokens_per_s"])
    assert len(record["repeats"]) == 2
    assert record["step_time_s"] == min(r["simscale"] for r in record["repeats"])
    printed = capsys.readouterr().out
    assert "16x1" in printed and "matmul" in printed and result["cpu"]["model_name"] in printed
    assert step_bench.main(["--shapes", "16z1"]) == 2  # a flag to fix (simscale.cli.run)
    assert step_bench.main(["--repeats", "0"]) == 2


@pytest.mark.skipif(not step_bench.peer_available(), reason="torch/transformers not installed")
def test_peer_alternates_with_simscale_and_reports_its_errors():
    peer = step_bench.PeerProcess("torch+heap", heap=True)  # one child: importing torch is most of the time
    try:
        record = step_bench.bench_shape(16, 1, steps=1, repeats=2, peers=[peer], peak_gflops=100.0)
        result = record["peers"]["torch+heap"]
        assert result["ratios"] == [r["torch+heap"] / r["simscale"] for r in record["repeats"]]
        assert result["min_ratio"] == min(result["ratios"]) > 0 and len(result["ratios"]) == 2
        best = min(r["torch+heap"] for r in record["repeats"])
        assert result["tokens_per_s"] == pytest.approx(32 * 128 / best)
        with pytest.raises(RuntimeError, match="peer 'torch\\+heap' failed on 16x1"):
            peer.step_time(16, 1, steps=0)  # no timed steps: the child's median fails
    finally:
        peer.close()


def test_innermost_and_wall_times():
    # thread 1: a while loop [0, 10) containing op a [2, 4); thread 2: op b [3, 5); nothing runs in [10, 12)
    events = {1: [(0.0, 10.0, "while"), (2.0, 4.0, "a")], 2: [(3.0, 5.0, "b")]}
    assert profiling._innermost(events[1]) == [(0.0, 2.0, "while"), (2.0, 4.0, "a"), (4.0, 10.0, "while")]
    times, busy = profiling.op_wall_times(events)
    assert busy == 10.0 and sum(times.values()) == pytest.approx(busy)
    assert times == pytest.approx({"while": 2.0 + 0.5 + 5.0, "a": 1.0 + 0.5, "b": 0.5 + 0.5})


def test_model_part_uses_the_innermost_simscale_frame():
    step, llama, loss = "/x/simscale/train/step.py", "/x/simscale/model/llama.py", "/x/simscale/model/loss.py"
    assert profiling.model_part(((llama, "rms_norm"), (llama, "block"), (loss, "mean_loss"))) == "RMSNorm"
    optax_frame = ("/y/optax/_src/transform.py", "update_fn")
    assert profiling.model_part((optax_frame, (step, "build.<locals>.train_fn"))) == "optimizer update"
    assert profiling.model_part(((loss, "_head_chunk_grads.<locals>.chunk"),)) == "output head + loss"
    assert profiling.model_part((("/x/simscale/model/cpu_kernels.py", "_backward"),)).startswith("attention")
    assert profiling.model_part(()) == "other"


def test_profile_splits_a_real_step(tmp_path, capsys):
    out = tmp_path / "profile.json"
    assert step_bench.main([*TINY, "--profile", str(tmp_path / "trace"), "--json", str(out)]) == 0
    (profile,) = json.loads(out.read_text())["profiles"]
    assert sum(profile["parts"].values()) == pytest.approx(1.0, abs=1e-6)
    assert sum(profile["kinds"].values()) == pytest.approx(1.0, abs=1e-6)
    assert profile["parts"]["output head + loss"] > 0 and profile["kinds"]["matmul"] > 0
    assert {"optimizer update", "projections"} <= set(profile["parts"])
    assert any(op["kind"] == "matmul" and op["shape"].startswith("f32[") for op in profile["top_ops"])
    # the parts' FLOPs add up to PaLM's count by hand (test_cli_writes_records): 529,440 per token x 32 x 128
    assert sum(profile["part_flops_per_step"].values()) == pytest.approx(529_440 * 32 * 128)
    assert profile["part_flops_per_step"]["output head"] == 6 * 5000 * 16 * 32 * 128
    head_s = profile["parts"]["output head + loss"] * profile["step_time_s"]
    assert profile["part_gflops"]["output head"] == pytest.approx(6 * 5000 * 16 * 32 * 128 / head_s / 1e9)
    assert "top ops" in capsys.readouterr().out


def test_packed_bench_splits_replicas_over_two_cpu_devices(tmp_path):
    """`--cpu_devices 2 --pack_shard replicas`: K=3 replicas (padded to 4 slots) on 2 host devices."""
    import subprocess
    import sys

    out = tmp_path / "packed.json"
    proc = subprocess.run([sys.executable, "-m", "simscale.packed_bench", "--shapes", "16x1",
                           "--replicas", "1,3", "--batch", "4", "--seq_len", "8", "--steps", "1",
                           "--repeats", "1", "--cpu_devices", "2", "--pack_shard", "replicas",
                           "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(out.read_text())
    assert [(r["shape"], r["replicas"], r["devices"], r["pack_shard"]) for r in rows] == [
        ("16x1", 1, 2, "replicas"), ("16x1", 3, 2, "replicas")]
    for r in rows:
        assert r["speedup"] == pytest.approx(r["packed_tokens_per_s"] / r["lone_tokens_per_s"])
        lone_step_s = 4 * 8 / r["lone_tokens_per_s"]  # a lone run's tokens a step / its tokens/s
        assert r["speedup_bound"] == pytest.approx(lone_step_s / r["head_s_per_replica"])
    assert "2 x cpu, packed groups split by replicas" in proc.stdout
