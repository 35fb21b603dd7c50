"""BIG-bench tasks read straight from the `bigbench==1.0.0` source archive.

The sdist (358 MB, Apache-2.0) holds every task's `task.json`; it was fetched
once from PyPI into the cache (`archive_path`), which no longer serves it: a
copy kept from earlier or put in the cache by hand is read
(`archive_local`). Members are read from the tar.gz; since a
gzip stream cannot seek, the first read of a task also saves the small task
files beside the archive, so later reads are instant.

Pre-training text comes from `PRETRAINING_TASKS` (large English dialogue
corpora); evaluation must use other tasks (`list_tasks()` minus these).
"""
from __future__ import annotations

import json
import os
import pathlib
import re
import tarfile
import urllib.request
from typing import Iterator

from simscale.data import download
from simscale.data.cache import cache_dir

VERSION = "1.0.0"
ARCHIVE = f"bigbench-{VERSION}.tar.gz"
SHA256 = "1bb398a5512c6d798cdebe0dfa0ac03f67f6033fa6b39c6ef71df978c7cbc5c2"
INDEX_URL = "https://pypi.org/simple/bigbench/"
PRETRAINING_TASKS = ("topical_chat", "movie_dialog_same_or_different", "play_dialog_same_or_different")
_PREFIX = "/bigbench/benchmark_tasks/"
_SMALL = 4_000_000  # task files up to this size are saved on the first pass


def archive_path(folder=None) -> pathlib.Path:
    """The archive's path in `folder` (default: the cache's bigbench/), downloading it once (with
    progress)."""
    folder = pathlib.Path(folder) if folder else cache_dir() / "bigbench"
    path = folder / ARCHIVE
    if not path.is_file():
        _download(path)
    return path


def archive_local() -> pathlib.Path | None:
    """The archive when it is in the cache, without going online."""
    path = cache_dir() / "bigbench" / ARCHIVE
    return path if path.is_file() else None


def list_tasks(archive=None) -> list[str]:
    """Names of all tasks ('topical_chat', 'abstract_narrative_understanding/4_distractors', ...)."""
    index = _tasks_dir(archive) / "index.json"
    if not index.is_file():
        _scan(_archive(archive), wanted=())
    return json.loads(index.read_text())


def read_task(name: str, archive=None) -> dict:
    """The parsed task.json of task `name`."""
    path = _tasks_dir(archive) / name / "task.json"
    if not path.is_file():
        _scan(_archive(archive), wanted=(name,))
        if not path.is_file():
            raise ValueError(f"BIG-bench has no task {name!r}; see simscale.data.bigbench.list_tasks()")
    return json.loads(path.read_text(encoding="utf-8"))


def documents(name: str, archive=None) -> Iterator[str]:
    """Plain text of a task's examples, for pre-training, without the task's framing.

    topical_chat holds each conversation many times, growing a turn per example: only its longest
    version is kept, one turn a line without the `agent_A: "..."` wrapping. In the *_same_or_different
    tasks the question after the dialogue is cut off. Other tasks: input and string target.
    """
    examples = read_task(name, archive)["examples"]
    if name == "topical_chat":
        longest: dict[str, dict] = {}
        for ex in examples:
            if len(ex["input"]) >= len(longest.get(ex["comment"], {"input": ""})["input"]):
                longest[ex["comment"]] = ex
        for ex in longest.values():
            turns = _TURN.findall(ex["input"]) + [ex["target"].strip().strip('"')]
            yield "\n".join(t.strip() for t in turns if t.strip())
        return
    for ex in examples:
        text = ex.get("input", "")
        if name.endswith("_same_or_different"):
            text = re.split(r" ----- |\n", text, maxsplit=1)[0]
        elif isinstance(ex.get("target"), str):
            text += "\n" + ex["target"]
        if text.strip():
            yield text


_TURN = re.compile(r'agent_[AB]: "(.*?)"(?= agent_[AB]: |$)', re.S)


def _archive(archive) -> pathlib.Path:
    return pathlib.Path(archive) if archive else archive_path()


def _tasks_dir(archive) -> pathlib.Path:
    a = _archive(archive)
    return a.with_name(a.name.removesuffix(".tar.gz") + ".tasks")


def _scan(archive: pathlib.Path, wanted) -> None:
    """One pass over the archive: write the task index and save wanted and small task files."""
    out = _tasks_dir(archive)
    names = []
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                if not (member.isfile() and member.name.endswith("/task.json") and _PREFIX in member.name):
                    continue
                name = member.name.split(_PREFIX, 1)[1].removesuffix("/task.json")
                names.append(name)
                target = out / name / "task.json"
                if (name in wanted or member.size <= _SMALL) and not target.is_file():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    tmp = target.with_suffix(f".part{os.getpid()}")
                    tmp.write_bytes(tar.extractfile(member).read())
                    tmp.replace(target)
    except (tarfile.TarError, EOFError, OSError) as e:
        raise ValueError(f"BIG-bench archive {archive} is unreadable ({e}): delete it and it will be "
                         "downloaded again") from None
    if not names:
        raise ValueError(f"{archive} holds no BIG-bench tasks: delete it and it will be downloaded again")
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f"index.json.part{os.getpid()}"
    tmp.write_text(json.dumps(sorted(names)))
    tmp.replace(out / "index.json")


def _download(path: pathlib.Path) -> None:
    """Fetch the sdist named by PyPI's simple index (PEP 691 JSON), checked against SHA256.

    PyPI no longer lists bigbench 1.0.0 (only 0.0.1, 2026-12): a copy kept from earlier, or one
    placed at `path` by hand, is still read; without one, data.source=auto reads sources.FALLBACK.
    """
    offline = (f"Put a copy of {ARCHIVE} (sha256 {SHA256[:12]}...) at {path}, or use another data.source "
               "(data.source=auto picks one that is at hand)")
    try:
        req = urllib.request.Request(INDEX_URL, headers={"Accept": "application/vnd.pypi.simple.v1+json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            url = next((f["url"] for f in json.load(r)["files"] if f["filename"] == ARCHIVE), None)
    except (OSError, ValueError) as e:
        raise FileNotFoundError(f"cannot read PyPI's index of bigbench ({e!r}). {offline}") from None
    if url is None:
        raise FileNotFoundError(f"PyPI no longer serves {ARCHIVE}. {offline}")
    download.fetch(url, path, sha256=SHA256, what=ARCHIVE, offline=offline)
