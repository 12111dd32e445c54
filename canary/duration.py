"""Go-style durations as Flagger uses them (`5s`, `1m`, `1m30s`, `500ms`, `1.5h`).

`parse_duration` follows Go's `time.ParseDuration` grammar: one or more `<number><unit>` terms,
where the number may have a fraction and the unit is one of ns, us (µs), ms, s, m, h. A bare
`0` is accepted, as in Go. Unlike Go, a sign is rejected: a negative interval or timeout is
never meaningful in a Canary.

`DURATION_PATTERN` is the stricter form the CRD enforces (units ms, s, m, h only).
"""

from __future__ import annotations

import re

#: What the CRD accepts for analysis.interval, metrics[].interval, webhooks[].timeout, service.timeout.
#: At most 7 digits per number (and DURATION_MAX_LENGTH characters): "9999999999999h" would
#: overflow a datetime. Each field also has a maximum value, checked by the models.
DURATION_PATTERN = r"^([0-9]{1,7}(\.[0-9]{1,7})?(ms|s|m|h))+$"
DURATION_MAX_LENGTH = 32

_UNIT_SECONDS: dict[str, float] = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,  # U+00B5 micro sign
    "μs": 1e-6,  # U+03BC Greek mu
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
# Longer units first so that "ms" is not read as "m" followed by garbage.
_TERM = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h)")


def parse_duration(text: str) -> float:
    """Parse a Go duration string into seconds.

    >>> parse_duration("1m30s")
    90.0
    >>> parse_duration("500ms")
    0.5

    Raises ValueError (naming the offending text) for anything else, including "", "5",
    "-5s", "1 m" and unknown units such as "1d".
    """
    if not isinstance(text, str):
        raise ValueError(f"duration must be a string such as '30s' or '1m', got {text!r}")
    if text == "0":
        return 0.0
    if text == "":
        raise ValueError("invalid duration '': expected e.g. '30s', '1m' or '1m30s'")
    if text[0] in "+-":
        raise ValueError(f"invalid duration {text!r}: a sign is not allowed")
    total = 0.0
    pos = 0
    while pos < len(text):
        term = _TERM.match(text, pos)
        if term is None:
            raise ValueError(
                f"invalid duration {text!r} at position {pos}: expected <number><unit> "
                "with unit one of ns, us, ms, s, m, h (e.g. '30s', '1m30s', '500ms')"
            )
        total += float(term.group(1)) * _UNIT_SECONDS[term.group(2)]
        pos = term.end()
    return total


def format_duration(seconds: float) -> str:
    """Format seconds as a compact duration that `parse_duration` and the CRD pattern accept.

    Zero components are left out and the value is rounded to the millisecond:
    60 -> "1m", 5 -> "5s", 90 -> "1m30s", 3600 -> "1h", 0.5 -> "500ms", 0 -> "0s".
    """
    if seconds < 0:
        raise ValueError(f"cannot format a negative duration: {seconds!r}")
    millis = round(seconds * 1000)
    if millis == 0:
        return "0s"
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    parts = [(hours, "h"), (minutes, "m"), (secs, "s"), (millis, "ms")]
    return "".join(f"{value}{unit}" for value, unit in parts if value)
