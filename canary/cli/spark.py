"""Sparklines: a series of numbers as one line of block characters (None: a gap)."""

from __future__ import annotations

from typing import Sequence

BARS = "▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[float | None], width: int = 40, low: float | None = None,
              high: float | None = None) -> str:
    """The last `width` values scaled between their min and max (or `low`/`high`)."""
    values = list(values)[-width:]
    present = [v for v in values if v is not None]
    if not present:
        return "·" * len(values)
    lo = min(present) if low is None else low
    hi = max(present) if high is None else high
    span = hi - lo
    out = []
    for v in values:
        if v is None:
            out.append("·")
        elif span <= 0:
            out.append(BARS[len(BARS) // 2])
        else:
            i = int(round((min(max(v, lo), hi) - lo) / span * (len(BARS) - 1)))
            out.append(BARS[i])
    return "".join(out)


def resample(values: Sequence[float | None], width: int) -> list[float | None]:
    """At most `width` values: each the last of its bucket (a long series fits one line)."""
    values = list(values)
    if len(values) <= width:
        return values
    step = len(values) / width
    return [values[min(len(values) - 1, int((i + 1) * step) - 1)] for i in range(width)]
