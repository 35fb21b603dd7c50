"""Whether a file online answers, checked quickly and once per process (for `auto` choices)."""
from __future__ import annotations

import functools
import urllib.request

REACHABLE_TIMEOUT_S = 3.0


@functools.lru_cache(maxsize=None)
def reachable(url: str, timeout: float = REACHABLE_TIMEOUT_S) -> bool:
    """True when a HEAD request for `url` succeeds within `timeout` seconds."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            return True
    except (OSError, ValueError):  # no network, refused, HTTP error, timeout; ValueError: a bad URL
        return False
