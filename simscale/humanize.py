"""Numbers for people: counts with a unit suffix and durations, in every table and progress line."""
from __future__ import annotations

import math


def human(x: float | None, unit: str = "") -> str:
    """3 significant digits with a k/M/G/T/P/E suffix: human(2.1e9, "B") == "2.1GB"; None or inf: "-"."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    for scale, suffix in ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{suffix}{unit}"
    return f"{x:.3g}{unit}"


def duration(seconds: float | None) -> str:
    """Hours and minutes ("1h05m") or minutes and seconds ("4m07s"); None or inf: "?"."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"
