"""Files online: fetch one into the cache, or check quickly whether one answers (for `auto` choices).

    download.fetch(url, path, sha256=..., what="datasets-sotu-0.2.3.tgz", offline="put it at ...")
    download.reachable(url)   # a HEAD request, at most REACHABLE_TIMEOUT_S, once per process

`fetch` streams with a progress bar, checks the bytes and renames into place: a download that is
killed leaves only a temporary (simscale.tmpfiles names it after its writer), never a partial file
under the final name.
"""
from __future__ import annotations

import functools
import hashlib
import pathlib
import sys
import threading
import urllib.request

from simscale import tmpfiles

REACHABLE_TIMEOUT_S = 3.0


def fetch(url: str, path, *, sha256: str | None, what: str, offline: str,
          timeout: float = 60) -> pathlib.Path:
    """Download `url` to `path`; FileNotFoundError saying `offline` (how to get it by hand) when the
    network fails, ValueError when the bytes do not have `sha256`."""
    from tqdm import tqdm

    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmpfiles.remove_stale(path.parent, path.name)  # a killed download's temporary
    tmp = tmpfiles.temp_path(path)
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r, open(tmp, "wb") as f:
            total = int(r.headers.get("Content-Length") or 0)
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {what}", disable=None,
                      file=sys.stderr) as bar:
                while chunk := r.read(1 << 20):
                    f.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise FileNotFoundError(f"cannot download {what} from {url} ({e}). {offline}") from None
    if sha256 and digest.hexdigest() != sha256:
        tmp.unlink(missing_ok=True)
        raise ValueError(f"downloaded {what} from {url} has sha256 {digest.hexdigest()}, not the expected "
                         f"{sha256}: try again, or {offline[0].lower() + offline[1:]}")
    tmp.replace(path)
    return path


@functools.lru_cache(maxsize=None)
def reachable(url: str, timeout: float = REACHABLE_TIMEOUT_S) -> bool:
    """True when a HEAD request for `url` succeeds within `timeout` seconds. The request runs in a
    daemon thread, so a name lookup that hangs (urllib's timeout does not cover it) cannot delay
    the answer either."""
    answer = []
    thread = threading.Thread(target=_head, args=(url, timeout, answer), daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(answer and answer[0])


def _head(url: str, timeout: float, answer: list) -> None:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            answer.append(True)
    except (OSError, ValueError):  # no network, refused, HTTP error, timeout; ValueError: a bad URL
        answer.append(False)
