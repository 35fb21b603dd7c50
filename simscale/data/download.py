"""One way to fetch a file into the cache: streamed with a progress bar, checked, renamed into place.

    download.fetch(url, path, sha256=..., what="bigbench-1.0.0.tar.gz", offline="put it at ...")

A reader that is killed leaves only a temporary (simscale.tmpfiles names it after its writer), never a
partial file under the final name.
"""
from __future__ import annotations

import hashlib
import pathlib
import sys
import urllib.request

from simscale import tmpfiles


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
