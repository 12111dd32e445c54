import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from canary.duration import DURATION_PATTERN, format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("5s", 5.0),
        ("1m", 60.0),
        ("1m30s", 90.0),
        ("500ms", 0.5),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("2h45m10s", 9910.0),
        ("1.5h", 5400.0),
        ("0.5s", 0.5),
        ("1s500ms", 1.5),
        ("100us", 0.0001),
        ("100µs", 0.0001),
        ("10ns", 1e-8),
        ("0", 0.0),
        ("0s", 0.0),
        ("90s", 90.0),
    ],
)
def test_parse(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5", "s", "1 m", " 1m", "1m ", "-5s", "+5s", "1d", "5sec", "1m30", "m5", "1..5s", "abc"])
def test_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_parse_error_names_the_input() -> None:
    with pytest.raises(ValueError, match=r"'10 minutes'"):
        parse_duration("10 minutes")


def test_parse_rejects_non_strings() -> None:
    with pytest.raises(ValueError):
        parse_duration(60)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (60, "1m"),
        (5, "5s"),
        (90, "1m30s"),
        (3600, "1h"),
        (3661, "1h1m1s"),
        (0.5, "500ms"),
        (1.5, "1s500ms"),
        (0, "0s"),
        (0.0001, "0s"),
        (7200.25, "2h250ms"),
    ],
)
def test_format(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_format_rejects_negative() -> None:
    with pytest.raises(ValueError):
        format_duration(-1)


@given(st.integers(min_value=0, max_value=10**10))
def test_format_parse_round_trip(millis: int) -> None:
    text = format_duration(millis / 1000)
    assert re.fullmatch(DURATION_PATTERN, text)
    assert parse_duration(text) == pytest.approx(millis / 1000)


@given(st.from_regex(DURATION_PATTERN, fullmatch=True))
def test_everything_the_crd_accepts_parses(text: str) -> None:
    assert parse_duration(text) >= 0
