"""Vocabularies (simscale.data.vocab) and the BIG-bench archive reader (simscale.data.bigbench)."""
import io
import json
import tarfile

import pytest

from simscale.data import bigbench
from simscale.data.vocab import load_vocabulary


def test_aochildes_csv_gives_the_papers_21036_words(shared_data):
    v = load_vocabulary(shared_data / "vocab" / "AOChildes_word_frequency.csv")
    assert v.size == len(v.words) == 21036
    assert "true" in v and "false" in v and "nan" not in v  # pandas read `nan` as missing
    assert "whats" in v and "TRUE" not in v
    assert v.sha256 == load_vocabulary("aochildes").sha256  # found via $SIMSCALE_DATA


def test_csv_quirks_crlf_index_column_and_case(tmp_path):
    p = tmp_path / "v.csv"
    p.write_bytes(b",word,frequency\r\n0,Hello,3\r\n1,nan,2\r\n2,T\xef\xbf\xbdged,1\r\n3,TRUE,5\r\n")
    v = load_vocabulary(p)
    assert v.words == {"hello", "t\ufffdged", "true"} and v.source == str(p)


def test_plain_word_list_and_content_hash(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("Cat\ndog\n\n  mouse \n")
    b.write_text("mouse\ncat\ndog\n")
    va, vb = load_vocabulary(a), load_vocabulary(b)
    assert va.words == {"cat", "dog", "mouse"} and va.size == 3
    assert va.sha256 == vb.sha256
    va.write(tmp_path / "c.txt")
    assert load_vocabulary(tmp_path / "c.txt").words == va.words


def test_wordfreq_top_n():
    v = load_vocabulary("wordfreq:500")
    assert v.size == 500 and "the" in v and v.source == "wordfreq:500"


def test_bad_vocabularies_give_one_clear_message(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_vocabulary(tmp_path / "missing.csv")
    empty = tmp_path / "empty.csv"
    empty.write_text(",word,frequency\r\n0,,3\r\n")
    with pytest.raises(ValueError, match="no usable words"):
        load_vocabulary(empty)
    with pytest.raises(ValueError, match="wordfreq:N"):
        load_vocabulary("wordfreq:lots")


def test_aochildes_offline_message(monkeypatch, tmp_path):
    monkeypatch.delenv("SIMSCALE_DATA", raising=False)
    monkeypatch.setenv("SIMSCALE_CACHE", str(tmp_path))
    monkeypatch.setattr("simscale.data.vocab.AOCHILDES_URL", "http://127.0.0.1:9/none.csv")
    with pytest.raises(FileNotFoundError, match="pass the CSV's path"):
        load_vocabulary("aochildes")


def _fake_archive(path):
    """A tar.gz laid out like bigbench-1.0.0.tar.gz, with two tasks."""
    chat = [{"input": 'agent_A: "Hi there."', "target": '"Hello."', "comment": "c1"},
            {"input": 'agent_B: "Hi there." agent_A: "Hello."', "target": '"How are you?"', "comment": "c1"},
            {"input": 'agent_A: "Cats?"', "target": '"Dogs."', "comment": "c2"}]
    tasks = {"topical_chat": {"examples": chat},
             "copa_like/sub": {"examples": [{"input": "q", "target_scores": {"a": 1, "b": 0}}]},
             "play_dialog_same_or_different": {"examples": [
                 {"input": "Go apart. Now, sir!\nIn the preceding dialogue, were ...", "target_scores": {}}]}}
    with tarfile.open(path, "w:gz") as tar:
        for name, task in tasks.items():
            blob = json.dumps(task).encode()
            info = tarfile.TarInfo(f"bigbench-1.0.0/bigbench/benchmark_tasks/{name}/task.json")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
        readme = tarfile.TarInfo("bigbench-1.0.0/README.md")
        tar.addfile(readme, io.BytesIO(b""))
    return path


def test_bigbench_reads_tasks_from_the_archive(tmp_path):
    archive = _fake_archive(tmp_path / bigbench.ARCHIVE)
    assert bigbench.list_tasks(archive) == ["copa_like/sub", "play_dialog_same_or_different", "topical_chat"]
    assert bigbench.read_task("topical_chat", archive)["examples"][0]["target"] == '"Hello."'
    assert bigbench.read_task("copa_like/sub", archive)["examples"][0]["target_scores"]["a"] == 1
    with pytest.raises(ValueError, match="no task"):
        bigbench.read_task("nope", archive)
    assert bigbench.archive_path(tmp_path) == archive  # present: no download


def test_bigbench_pretraining_text_drops_repeats_and_framing(tmp_path):
    archive = _fake_archive(tmp_path / bigbench.ARCHIVE)
    assert list(bigbench.documents("topical_chat", archive)) == ["Hi there.\nHello.\nHow are you?",
                                                                 "Cats?\nDogs."]
    assert list(bigbench.documents("play_dialog_same_or_different", archive)) == ["Go apart. Now, sir!"]


def test_bigbench_broken_archive_says_delete_it(tmp_path):
    broken = tmp_path / bigbench.ARCHIVE
    broken.write_bytes(b"not a gzip file")
    with pytest.raises(ValueError, match="delete it"):
        bigbench.read_task("topical_chat", broken)


def test_aochildes_download_is_cached_and_checked(shared_data, monkeypatch, tmp_path):
    import urllib.request

    blob = (shared_data / "vocab" / "AOChildes_word_frequency.csv").read_bytes()
    monkeypatch.delenv("SIMSCALE_DATA")
    monkeypatch.setenv("SIMSCALE_CACHE", str(tmp_path))
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: io.BytesIO(blob))
    assert load_vocabulary("aochildes").size == 21036
    assert (tmp_path / "vocab" / "AOChildes_word_frequency.csv").read_bytes() == blob
    monkeypatch.setenv("SIMSCALE_CACHE", str(tmp_path / "other"))
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: io.BytesIO(blob + b"0,extra,1\r\n"))
    with pytest.raises(ValueError, match="not the paper's word list"):
        load_vocabulary("aochildes")
