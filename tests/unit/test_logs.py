"""`canary operator --log-format json`: one JSON object per line, the Canary on every line
about one, tracebacks inside the object; the version from the package metadata."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from datetime import datetime
from importlib.metadata import version as dist_version

import pytest

from canary import logs
from canary.version import version


@pytest.fixture
def captured():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    logger = logging.getLogger("canary.test-logs")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)


def parsed(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_one_object_per_line_with_rfc3339_time(captured):
    logger, stream = captured
    logger.info("plain %s", "line\nwith a newline and \"quotes\"")
    (line,) = parsed(stream)
    assert set(line) == {"time", "level", "logger", "message"}
    assert line["level"] == "info" and line["logger"] == "canary.test-logs"
    assert line["message"] == "plain line\nwith a newline and \"quotes\""
    assert datetime.fromisoformat(line["time"]).utcoffset().total_seconds() == 0
    assert line["time"].endswith("+00:00")


def test_the_canary_from_the_tick_kopf_or_the_arguments(captured):
    logger, stream = captured

    async def tick(ns, name):
        logs.about(ns, name)
        await asyncio.sleep(0)
        logger.warning("could not write status: %s", "conflict")

    async def both():
        await asyncio.gather(tick("shop", "podinfo"), tick("pay", "api"))

    asyncio.run(both())
    logger.info("tick of %s/%s cut at its deadline of %.0fs", "ops", "web", 30.0)
    logger.info("handler", extra={"k8s_ref": {"namespace": "k", "name": "kopfed"}})
    logger.info("%d ticks and %s/%s", 3, "a", "b")
    logger.info("no canary here")
    lines = parsed(stream)
    assert [(x.get("namespace"), x.get("canary")) for x in lines] == [
        ("shop", "podinfo"), ("pay", "api"), ("ops", "web"), ("k", "kopfed"), ("a", "b"), (None, None)]


def test_tracebacks_stay_inside_the_object(captured):
    logger, stream = captured
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("tick crashed")
    (line,) = parsed(stream)
    assert line["level"] == "error" and line["message"] == "tick crashed"
    assert line["traceback"].startswith("Traceback") and "ValueError: boom" in line["traceback"]


def test_text_format_unchanged():
    assert logs.TEXT_FORMAT == "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def test_the_version_comes_from_the_package_metadata():
    assert version() == dist_version("canary-operator")
    source = open(logs.__file__.replace("logs.py", "operator.py")).read()
    assert '"0.1.0"' not in source and "/0.1.0" not in source
