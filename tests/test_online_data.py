"""Online users get the paper's data: BLiMP and the AO-CHILDES list downloaded once from a URL (here a
local HTTP server on 127.0.0.1 serving the reference files), and `auto` choosing them when reachable."""
import pytest

from conftest import preset, serve
from simscale import at_hand
from simscale.data import vocab
from simscale.data.download import reachable
from simscale.evaluate import blimp_files, tasks

CLOSED = "http://127.0.0.1:9/"  # the discard port: nothing listens, a connection is refused at once


@pytest.fixture
def nothing_local(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMSCALE_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("SIMSCALE_CACHE", str(tmp_path / "cache"))
    reachable.cache_clear()
    return tmp_path / "cache"


def test_blimp_is_downloaded_once_into_the_cache_through_the_real_code_path(shared_data, nothing_local,
                                                                           monkeypatch):
    with serve(shared_data / "blimp") as (url, requested):
        monkeypatch.setenv("SIMSCALE_BLIMP_URL", url)
        paper22 = tasks.resolve("blimp_paper22")
    assert sorted(requested) == sorted(f"/{p}.jsonl" for p in blimp_files.PARADIGMS)  # 67, once each
    assert [len(t.examples) for t in paper22] == [1000] * 22
    cached, reference = nothing_local / "blimp", sorted((shared_data / "blimp").iterdir())
    assert sorted(p.name for p in cached.iterdir()) == [p.name for p in reference]
    assert all((cached / p.name).read_bytes() == p.read_bytes() for p in reference)
    monkeypatch.setenv("SIMSCALE_BLIMP_URL", CLOSED)  # the server is gone: read from the cache
    assert tasks.resolve("blimp/adjunct_island")[0].examples == tasks.blimp_paradigm(
        "adjunct_island", shared_data / "blimp").examples


def test_offline_blimp_is_one_message_saying_how_to_point_at_a_local_copy(nothing_local, monkeypatch):
    monkeypatch.setenv("SIMSCALE_BLIMP_URL", CLOSED)
    with pytest.raises(FileNotFoundError, match=r"BLiMP is not in \$SIMSCALE_DATA/blimp nor .*"
                                                r"pass it with --blimp DIR, or set SIMSCALE_DATA"):
        tasks.resolve("blimp_paper22")
    assert not nothing_local.exists() or not list(nothing_local.iterdir())  # no partial copy left


def test_auto_chooses_the_papers_data_when_its_urls_answer(shared_data, nothing_local, monkeypatch):
    with serve(shared_data) as (url, _):
        monkeypatch.setenv("SIMSCALE_BLIMP_URL", url + "blimp/")
        monkeypatch.setattr(vocab, "AOCHILDES_URL", url + "vocab/" + vocab.AOCHILDES_FILE)
        online = preset("cpu")
        notes = at_hand.resolve(online)
        assert (online.data.vocab, online.eval.tasks) == ("aochildes", "blimp_paper22")
        assert notes[1:] == [
            f"data.vocab=auto: aochildes (not local: downloaded once from {vocab.AOCHILDES_URL})",
            f"eval.tasks=auto: blimp_paper22 (not local: downloaded once from {url}blimp/)"]
        assert vocab.load_vocabulary(online.data.vocab).size == 21036  # through the download
    assert (nothing_local / "vocab" / vocab.AOCHILDES_FILE).is_file()
    monkeypatch.setenv("SIMSCALE_BLIMP_URL", CLOSED)
    monkeypatch.setattr(vocab, "AOCHILDES_URL", CLOSED + vocab.AOCHILDES_FILE)
    offline = preset("cpu")
    notes = at_hand.resolve(offline)
    assert (offline.data.vocab, offline.eval.tasks) == ("aochildes", "")  # the list is cached now
    assert notes[1].startswith("data.vocab=auto: aochildes (found ")
    assert "no BLiMP here nor at its URL" in notes[2]


def test_a_url_that_never_answers_is_unreachable_after_the_timeout():
    import socket
    import time

    with socket.socket() as silent:  # accepts connections (backlog) and never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        start = time.perf_counter()
        assert not reachable(f"http://127.0.0.1:{silent.getsockname()[1]}/x", timeout=0.3)
        assert time.perf_counter() - start < 1.0
