"""Fault injection with the real command lines in subprocesses (smoke preset): every bad input
ends with one `error:` line and exit 2 before anything is written."""
import json
import os
import pathlib
import socket
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SMOKE = "--config=sweeps/grid.py:preset=smoke"


def cli(module, *args, timeout=120):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def error_line(proc) -> str:
    """The one `error:` line of a refused command (asserting exit 2 and no traceback)."""
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


@pytest.mark.parametrize("module,extra", [
    ("simscale.sweep", ["--workdir"]),
    ("simscale.train", ["--workdir"]),
    ("simscale.data", ["prepare", "--data_dir"]),
], ids=["sweep", "train", "prepare"])
def test_unknown_config_key_is_refused_before_anything_is_written(tmp_path, module, extra):
    out = tmp_path / "w"
    proc = cli(module, SMOKE, *extra, str(out), "--config.train.lr_flor=0.5")
    assert error_line(proc) == "error: unknown config key train.lr_flor (did you mean train.lr_floor?)"
    assert not out.exists()


def test_unknown_sweep_axis_is_refused(tmp_path):
    proc = cli("simscale.sweep", SMOKE, "--workdir", str(tmp_path / "w"), "--config.sweep.axes.widht=(16,)")
    assert error_line(proc) == "error: unknown config key sweep.axes.widht (did you mean sweep.axes.width?)"
    assert not (tmp_path / "w").exists()


HOLD = """
import sys, time
from simscale.runlock import RunLock
lock = RunLock(sys.argv[1])
assert lock.acquire()
print("held", flush=True)
time.sleep(120)
"""


def test_train_refuses_a_run_directory_another_process_holds(tmp_path):
    run_dir = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], cwd=ROOT, stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == "held"
        proc = cli("simscale.train", SMOKE, f"--workdir={run_dir}")
    finally:
        holder.kill()
        holder.wait()
    assert error_line(proc).startswith(f"error: {run_dir} is in use by pid {holder.pid} on host ")
    assert sorted(p.name for p in run_dir.iterdir()) == ["lock"]  # nothing trained, nothing written


@pytest.mark.parametrize("override,message", [
    ("--config.train.batch_size=0", "error: train.batch_size=0 must be positive"),
    ("--config.model.heads=0", "error: model.heads=0 must be positive"),
    ("--config.model.hidden=30", "error: model.hidden=30 / model.heads=2 gives an odd head dimension 15: "
                                 "rotary embeddings need an even one"),
    ("--config.model.hidden=33", "error: model.hidden=33 is not divisible by model.heads=2"),
])
def test_train_refuses_a_bad_value_before_writing_anything(tmp_path, override, message):
    proc = cli("simscale.train", SMOKE, f"--workdir={tmp_path / 'run'}", override)
    assert error_line(proc) == message
    assert not (tmp_path / "run").exists()  # so the fixed command can reuse --workdir


def test_only_trains_a_subset_but_sweep_json_lists_the_whole_grid(tmp_path):
    from simscale.sweep import grid
    from sweeps.grid import get_config

    whole = [r.run_id for r in grid.expand(get_config("smoke"))]
    proc = cli("simscale.sweep", SMOKE, "--workdir", str(tmp_path), "--only", "^w16-d1-simplified",
               "--estimate=none")
    assert proc.returncode == 0, proc.stderr
    listed = [r["run_id"] for r in json.loads((tmp_path / "sweep.json").read_text())["runs"]]
    assert listed == whole and len(whole) == 4
    assert [p.name for p in (tmp_path / "runs").iterdir()] == [whole[0]]  # only the selected run trained


@pytest.mark.parametrize("module,args,message", [
    ("simscale.train", ["--config=nosuch.py", "--workdir=W"],
     "error: --config: Failed loading config file config_config Attempted [Relative path]: nosuch.py "
     "[Errno 2] No such file or directory: 'nosuch.py'"),
    ("simscale.data", ["prepare", "--config=sweeps/grid.py:preset=huge"],
     "error: flag --config=sweeps/grid.py:preset=huge: Error whilst parsing config file: simscale.config."
     "ConfigError: unknown sweep preset 'huge' in --config sweeps/grid.py:preset=...; choose from "
     "('paper', 'cpu', 'smoke', 'isoflop', 'colab', 'isoflop_wsd', 'tokens_wsd')"),
    ("simscale.sweep", [SMOKE, "--workdir=W", "--config.train.lr=abc"],
     "error: flag --config.train.lr=abc: could not convert string to float: 'abc'"),
], ids=["missing_config", "bad_preset", "bad_value_type"])
def test_a_bad_config_flag_is_one_line(tmp_path, module, args, message):
    proc = cli(module, *[a.replace("W", str(tmp_path / "w")) if a.startswith("--workdir") else a
                         for a in args])
    assert error_line(proc) == message
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("module,flag", [("simscale.sweep", "--workdir"), ("simscale.train", "--workdir"),
                                         ("simscale.data", "--data_dir")], ids=["sweep", "train", "prepare"])
def test_a_folder_flag_naming_a_regular_file_is_one_line(tmp_path, module, flag):
    path = tmp_path / "a_file"
    path.write_text("not a folder")
    args = ["prepare"] if module == "simscale.data" else []
    proc = cli(module, *args, SMOKE, f"{flag}={path}")
    assert error_line(proc) == f"error: {flag} {path} is not a folder: give a folder (or a path that does " \
                               "not exist yet)"
    assert path.read_text() == "not a folder"


@pytest.mark.parametrize("module,args,flag,created", [
    ("simscale.sweep", ["status", "--workdir={F}"], "--workdir", False),
    ("simscale.evaluate", ["--run={F}", "--tasks=blimp_paper22"], "--run", False),
    ("simscale.analysis", ["report", "--workdir={F}", "--out={O}"], "--workdir", False),
    ("simscale.analysis", ["report", "--workdir={W}", "--out={F}"], "--out", True),
], ids=["status", "evaluate", "report_workdir", "report_out"])
def test_a_regular_file_for_a_folder_is_one_line_in_every_command(tmp_path, module, args, flag, created):
    path = tmp_path / "a_file"
    path.write_text("not a folder")
    (tmp_path / "w" / "runs").mkdir(parents=True)
    names = {"F": path, "W": tmp_path / "w", "O": tmp_path / "out"}
    proc = cli(module, *[a.format(**names) for a in args])
    assert error_line(proc) == f"error: {flag} {path} is not a folder: give a folder" + \
        (" (or a path that does not exist yet)" if created else "")
    assert path.read_text() == "not a folder" and not (tmp_path / "out").exists()


def test_evaluate_names_a_missing_run_and_a_folder_for_out(tmp_path):
    proc = cli("simscale.evaluate", f"--run={tmp_path / 'nosuch'}", "--tasks=blimp_paper22")
    assert error_line(proc) == f"error: run directory {tmp_path / 'nosuch'} does not exist: give a run's " \
                               "folder (a sweep's W/runs/<run_id>, or simscale.train's --workdir)"
    proc = cli("simscale.evaluate", f"--run={tmp_path}", "--tasks=blimp_paper22", f"--out={tmp_path}")
    assert error_line(proc) == f"error: --out {tmp_path} is a folder: give a file"


def test_fit_of_a_header_only_csv_is_one_line(tmp_path):
    (tmp_path / "p.csv").write_text("N,D,loss\n")
    proc = cli("simscale.analysis", "fit", f"--csv={tmp_path / 'p.csv'}")
    assert error_line(proc) == f"error: {tmp_path / 'p.csv'} has a header but no rows: give one point a row"


def simplify(tmp_path, *args):
    (tmp_path / "in.txt").write_text("the cat sat on the mat\n")
    return cli("simscale.data", "simplify", "--vocab=wordfreq:100", *args)


def test_simplify_names_a_folder_given_as_input_or_output(tmp_path):
    assert error_line(simplify(tmp_path, f"--input={tmp_path}", f"--output={tmp_path / 'o.jsonl'}")) == \
        f"error: --input {tmp_path} is a folder: give a file"
    assert error_line(simplify(tmp_path, f"--input={tmp_path / 'in.txt'}", f"--output={tmp_path}/")) == \
        f"error: --output {tmp_path}/ is a folder: give a file"
    assert error_line(simplify(tmp_path, f"--input={tmp_path / 'in.txt'}",
                               f"--output={tmp_path / 'no' / 'o'}")) == \
        f"error: --output {tmp_path / 'no' / 'o'}: its folder {tmp_path / 'no'} does not exist"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]


def test_simplify_jsonl_field_is_a_flag_and_the_error_names_it(tmp_path):
    (tmp_path / "in.jsonl").write_text(json.dumps({"body": "the cat sat on the mat"}) + "\n")
    args = [f"--input={tmp_path / 'in.jsonl'}", f"--output={tmp_path / 'o.jsonl'}", "--workers=1"]
    assert error_line(simplify(tmp_path, *args)) == f"error: corpus file {tmp_path / 'in.jsonl'} line 1: " \
        "not a JSON object with a 'text' string; fix the line or --text_field"
    proc = simplify(tmp_path, *args, "--text_field=body")  # read now; this vocabulary keeps nothing of it
    assert error_line(proc).startswith(f"error: the filter kept nothing of the 1 documents in "
                                       f"{tmp_path / 'in.jsonl'}")


@pytest.mark.parametrize("blob,where", [(b"cat\ndog\x00\x01\n", "a NUL byte at byte 7"),
                                        (b"cat\n\xff\xfe\xfa\n", "invalid UTF-8 at byte 4")],
                         ids=["nul", "not_utf8"])
def test_a_binary_vocabulary_file_is_refused(tmp_path, blob, where):
    (tmp_path / "v.txt").write_bytes(blob)
    proc = simplify(tmp_path, f"--vocab={tmp_path / 'v.txt'}", f"--input={tmp_path / 'in.txt'}",
                    f"--output={tmp_path / 'o.jsonl'}")
    assert error_line(proc) == f"error: vocabulary file {tmp_path / 'v.txt'} is not a text file ({where}): " \
                               "give UTF-8 text, one word a line, or a CSV with a 'word' column"


def test_simplify_removes_the_partial_output_of_a_killed_simplify_only(tmp_path):
    host = socket.gethostname()
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True)
    stale = tmp_path / f".o.jsonl.tmp{int(done.stdout)}@{host}"  # its writer has exited
    alive = tmp_path / f".o.jsonl.tmp{os.getpid()}@{host}"  # its writer (this test) runs
    other = tmp_path / f".x.jsonl.tmp{int(done.stdout)}@{host}"  # another output's
    for path in (stale, alive, other):
        path.write_text('{"text": "half')
    (tmp_path / "v.txt").write_text("the\ncat\nsat\non\nmat\n")
    (tmp_path / "in.txt").write_text("The cat sat on the mat. " * 12 + "\n")
    proc = cli("simscale.data", "simplify", f"--vocab={tmp_path / 'v.txt'}", f"--input={tmp_path / 'in.txt'}",
               f"--output={tmp_path / 'o.jsonl'}", "--workers=1")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == [f"removed 1 temporary file(s) or folder(s) left by a process no "
                                        f"longer running: {stale}"]
    assert not stale.exists() and alive.exists() and other.exists()
    assert json.loads((tmp_path / "o.jsonl").read_text())["text"].startswith("<s> The cat sat")


KILLED_WRITE = """
import os, signal, sys
from simscale import jsonio
jsonio.os = type("KillingOs", (), {"__getattr__": lambda self, name: getattr(os, name),
                                   "replace": staticmethod(lambda src, dst: \
os.kill(os.getpid(), signal.SIGKILL))})()
jsonio.write_json(sys.argv[1], {"status": "done"})
"""


def test_the_next_claim_of_a_run_removes_what_a_killed_writer_left(tmp_path):
    from simscale.runlock import RunLock

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "status.json").write_text('{"status": "running"}')
    proc = subprocess.run([sys.executable, "-c", KILLED_WRITE, str(run_dir / "status.json")], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == -9  # killed between writing the temporary file and renaming it
    [left] = [p for p in run_dir.iterdir() if p.name != "status.json"]
    alive = run_dir / f".metrics.jsonl.tmp{os.getpid()}@{socket.gethostname()}"  # its writer (this test) runs
    alive.write_text("")
    lock = RunLock(run_dir)
    assert lock.acquire()
    lock.release()
    assert sorted(p.name for p in run_dir.iterdir()) == sorted([alive.name, "lock", "status.json"])
    assert (run_dir / "status.json").read_text() == '{"status": "running"}'
    assert left.name.startswith(".status.json.tmp")


KILLED_BEFORE_DONE = """
import os, signal, sys
from simscale.sweep import store
append = store.append_attempt
store.append_attempt = lambda rdir, event, **k: os.kill(os.getpid(), signal.SIGKILL) \
if event == "done" else \\
    append(rdir, event, **k)
sys.argv = ["simscale.sweep", *sys.argv[1:]]
from simscale.sweep.__main__ import main
main()
"""


def test_a_run_finished_by_an_attempt_killed_before_logging_it_is_done_once(tmp_path):
    args = [SMOKE, f"--workdir={tmp_path}", "--only=^w16-d1-simplified", "--estimate=none"]
    killed = subprocess.run([sys.executable, "-c", KILLED_BEFORE_DONE, *args], cwd=ROOT, capture_output=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert killed.returncode == -9, killed.stderr
    [run_dir] = (tmp_path / "runs").iterdir()
    assert json.loads((run_dir / "result.json").read_text())["status"] == "done"
    proc = cli("simscale.sweep", *args, timeout=300)
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in (run_dir / "attempts.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events] == ["start", "done"] and events[1]["late"]
    assert cli("simscale.sweep", *args, timeout=300).returncode == 0
    assert (run_dir / "attempts.jsonl").read_text().count('"done"') == 1
