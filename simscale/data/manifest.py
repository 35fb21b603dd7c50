"""A prepared dataset's manifest: each array_record file's size and record count.

Written at the end of preparation (into prepared.json's `files`), checked each time the
dataset is opened (prepare, training): a stat per file plus the record count from the
file's footer, so a truncated, replaced or missing file is caught before Riegeli fails
mid-training.
"""
from __future__ import annotations

import pathlib


def _files(folder: pathlib.Path) -> list[pathlib.Path]:
    return sorted(p for p in folder.rglob("*.array_record-*") if p.is_file())


def _records(path: pathlib.Path) -> int:
    from array_record.python.array_record_module import ArrayRecordReader

    reader = ArrayRecordReader(str(path))
    try:
        return int(reader.num_records())
    finally:
        reader.close()


def build(folder: pathlib.Path) -> dict[str, dict]:
    """{relative path: {"bytes", "records"}} of every array_record file under `folder`."""
    folder = pathlib.Path(folder)
    return {str(p.relative_to(folder)): {"bytes": p.stat().st_size, "records": _records(p)}
            for p in _files(folder)}


def problems(folder: pathlib.Path, manifest: dict[str, dict]) -> list[str]:
    """What differs from `manifest` (empty when every file is as prepared)."""
    folder = pathlib.Path(folder)
    out = []
    for rel, want in sorted(manifest.items()):
        path = folder / rel
        if not path.is_file():
            out.append(f"{rel} is missing")
        elif path.stat().st_size != want["bytes"]:
            out.append(f"{rel} has {path.stat().st_size} bytes, prepared {want['bytes']}")
        else:
            try:
                n = _records(path)
            except Exception as e:  # noqa: BLE001 - an unreadable footer is a mismatch too
                out.append(f"{rel} is unreadable ({type(e).__name__})")
                continue
            if n != want["records"]:
                out.append(f"{rel} has {n} records, prepared {want['records']}")
    extra = sorted(set(str(p.relative_to(folder)) for p in _files(folder)) - set(manifest))
    out += [f"{rel} was not prepared" for rel in extra]
    return out
