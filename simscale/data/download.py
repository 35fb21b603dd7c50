"""Whether a file online answers, checked quickly and once per process (for `auto` choices)."""
from __future__ import annotations

import functools
import threading
import urllib.request

REACHABLE_TIMEOUT_S = 3.0


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
