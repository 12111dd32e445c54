"""`canary simulate --from-prometheus URL --start T --end T`: a past window of real metrics
replayed through the engine.

Every metric of the Canary (builtin, MetricTemplate or inline query) is rendered as the
operator renders it (canary.adapters.prometheus, canary.templating: the same PromQL, the same
`{{ interval }}`, the same scale to milliseconds), with URL in place of every provider address,
and evaluated at each analysis step of the window (start, start + interval, ... up to end): one
range query per metric (`/api/v1/query_range`, step = the analysis interval), which is what
instant queries at those times would answer. The values become the scenario of
`canary simulate`, one per step; webhooks, gates and readiness come from `--scenario` if given
(else they pass, as in a simulation), since Prometheus does not record them.

Compared metrics (`compare:`) get, per step, what the operator's judge would have fetched at that
time (canary/adapters/comparison.py): the query rendered for the target and for
`<target>-primary`, sampled over the metric's interval ending at the step (range queries over the
whole window, cut per step). The simulator spaces those samples one second apart, so a
`warmup:` counts samples rather than seconds there."""

from __future__ import annotations

import asyncio
import copy
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from canary.adapters.comparison import MIN_STEP, POINTS, with_target
from canary.adapters.metrics import MetricProvider, ProviderError, Samples
from canary.adapters.prometheus import ResolveError, resolve_check, aclose_shared_clients
from canary.cli.api import CliError
from canary.duration import parse_duration
from canary.models import Canary, MetricTemplate
from canary.templating import DEFAULT_INTERVAL

MAX_STEPS = 1000  # analysis steps of one window (a range query answers at most this many here)
CHUNK = 1000  # samples per range query (what one answer is read up to)
MAX_CHUNKS = 200  # range queries per side of a compared metric
QUERY_TIMEOUT = 20.0
_RELATIVE = re.compile(r"^-\s*(\S+)$")


def parse_time(text: str, now: datetime, what: str) -> datetime:
    """RFC 3339 (`2026-03-01T10:00:00Z`, with an offset, or a date and time without one: UTC),
    `now`, a relative time (`-30m`, `-1h30m`: before now) or Unix seconds."""
    raw = (text or "").strip()
    if raw == "now":
        return now
    relative = _RELATIVE.match(raw)
    if relative:
        try:
            return now - timedelta(seconds=parse_duration(relative.group(1)))
        except ValueError:
            pass
    else:
        try:
            return datetime.fromtimestamp(float(raw), tz=timezone.utc)
        except (ValueError, OverflowError, OSError):
            pass
        try:
            t = datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
            return t if t.tzinfo is not None else t.replace(tzinfo=timezone.utc)
        except ValueError:
            pass
    raise CliError(f"{what} {text!r} is not a time: give RFC 3339 (2026-03-01T10:00:00Z), a time before now "
                   "(-30m, -2h) or `now`")


@dataclass
class Replay:
    """What was read from Prometheus: the step times and each metric's value per step."""

    url: str
    start: datetime
    end: datetime
    step: float
    times: list[float] = field(default_factory=list)
    values: dict[str, list[float | None]] = field(default_factory=dict)
    queries: dict[str, str] = field(default_factory=dict)
    samples: dict[str, dict[str, list[list[float]]]] = field(default_factory=dict)
    """Compared metrics: per side ("canary", "primary"), the judge's samples at each step."""

    def as_dict(self) -> dict[str, Any]:
        return {"from": self.url, "start": _iso(self.start), "end": _iso(self.end), "step": self.step,
                "steps": len(self.times),
                "metrics": [{"name": n, "query": self.queries.get(n, ""), "values": v,
                             **({"samples": {side: [len(x) for x in per] for side, per in self.samples[n].items()}}
                                if n in self.samples else {})}
                            for n, v in self.values.items()]}

    def header(self) -> str:
        n = len(self.times)
        return (f"replayed {n} analysis step{'' if n == 1 else 's'} (every {self.step:g}s) from {_iso(self.start)} to "
                f"{_iso(self.end)} of {self.url}")


def _iso(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def window(canary: Canary, start: datetime, end: datetime) -> tuple[float, list[float]]:
    """(the analysis interval, the epoch seconds of every step in [start, end])."""
    analysis = canary.spec.analysis
    if analysis is None or not analysis.metrics:
        raise CliError("the Canary has no metrics (spec.analysis.metrics): nothing to replay")
    step = analysis.interval_seconds
    if end <= start:
        raise CliError(f"--end {_iso(end)} is not after --start {_iso(start)}")
    count = int((end - start).total_seconds() // step) + 1
    if count > MAX_STEPS:
        raise CliError(f"the window has {count} analysis steps of {step:g}s; at most {MAX_STEPS} are replayed "
                       "(a shorter window)")
    t0 = start.timestamp()
    return step, [round(t0 + i * step, 3) for i in range(count)]


async def _series(client: MetricProvider, query: str, start: float, end: float, step: float) -> Samples:
    """[start, end] at `step`, in range queries of at most CHUNK samples."""
    chunks = math.ceil((end - start) / (step * CHUNK)) or 1
    if chunks > MAX_CHUNKS:
        raise CliError(f"the window needs {chunks} range queries of {CHUNK} samples per side of a compared "
                       f"metric; at most {MAX_CHUNKS} (a shorter window)")
    out: dict[float, float] = {}
    at = start
    while at <= end:
        upto = min(end, at + step * (CHUNK - 1))
        for t, v in await client.query_range(query, at, upto, step):
            out[round(t, 3)] = v
        at = upto + step
    return tuple(sorted(out.items()))


async def _compared(obj: dict[str, Any], metric: dict[str, Any], url: str, get_template: Any,
                    options: dict[str, Any], mesh: str, times: list[float]) -> dict[str, list[list[float]]]:
    """The canary's and the primary's samples at each step, as the judge would have fetched them."""
    name = str(metric.get("name"))
    try:
        span = parse_duration(str(metric.get("interval") or DEFAULT_INTERVAL))
    except ValueError:
        span = parse_duration(DEFAULT_INTERVAL)
    every = max(MIN_STEP, span / POINTS)
    target = str(((obj.get("spec") or {}).get("targetRef") or {}).get("name") or "")
    out: dict[str, list[list[float]]] = {}
    for side, doc in (("canary", obj), ("primary", with_target(obj, f"{target}-primary"))):
        try:
            check = await resolve_check(doc, metric, url, get_template, None, options, mesh)
            series = await _series(check.client, check.query, times[0] - span, times[-1], every)
        except ResolveError as e:
            raise CliError(f"metric {name} ({side}): {e}") from None
        except ProviderError as e:
            raise CliError(f"metric {name}: the {side}'s range query failed: {e}") from None
        out[side] = [[v * check.scale for t, v in series if t_i - span < t <= t_i and not math.isnan(v)]
                     for t_i in times]
    return out


async def _fetch(canary: Canary, url: str, templates: dict[tuple[str, str], MetricTemplate],
                 times: list[float], step: float) -> tuple[dict[str, list[float | None]], dict[str, str],
                                                           dict[str, dict[str, list[list[float]]]]]:
    obj = canary.model_dump(by_alias=True, exclude_none=True, mode="json")
    obj["spec"].pop("metricsServer", None)  # the URL given instead

    def get_template(namespace: str, name: str) -> Any:
        found = templates.get((namespace, name))
        if found is None:
            return None
        raw = copy.deepcopy(found.dump())
        provider = (raw.get("spec") or {}).get("provider", {})
        provider.pop("address", None)  # the URL given instead
        provider.pop("secretRef", None)  # no cluster to read it from: credentials go in the URL
        return raw

    options = {"timeout": QUERY_TIMEOUT, "retries": 1, "backoff": 0.2, "http": None}
    mesh = canary.spec.provider or "istio"

    async def one(metric: dict[str, Any]) -> tuple[str, list[float | None], str]:
        name = str(metric.get("name"))
        try:
            check = await resolve_check(obj, metric, url, get_template, None, options, mesh)
        except ResolveError as e:
            raise CliError(f"metric {name}: {e}") from None
        try:
            samples = await check.client.query_range(check.query, times[0], times[-1], step)
        except ProviderError as e:
            raise CliError(f"metric {name}: query {check.query!r} failed: {e}") from None
        by_time = {round(t, 3): v for t, v in samples}
        values: list[float | None] = []
        for t in times:
            v = by_time.get(round(t, 3))
            values.append(None if v is None or math.isnan(v) else v * check.scale)
        return name, values, check.query

    metrics = obj["spec"]["analysis"]["metrics"]
    try:
        results = await asyncio.gather(*(one(m) for m in metrics))
        compared = [m for m in metrics if m.get("compare") is not None]
        sampled = await asyncio.gather(*(_compared(obj, m, url, get_template, options, mesh, times)
                                         for m in compared))
    finally:
        await aclose_shared_clients()
    samples = {str(m.get("name")): s for m, s in zip(compared, sampled)}
    return {n: v for n, v, _ in results}, {n: q for n, _, q in results}, samples


def replay(canary: Canary, url: str, start: datetime, end: datetime,
           templates: dict[tuple[str, str], MetricTemplate]) -> Replay:
    """Every metric of the Canary at every analysis step of [start, end], from Prometheus."""
    step, times = window(canary, start, end)
    out = Replay(url, start, end, step, times)
    out.values, out.queries, out.samples = asyncio.run(_fetch(canary, url, templates, times, step))
    return out


def templates_in(path: str, canary: Canary) -> dict[tuple[str, str], MetricTemplate]:
    """The MetricTemplates of the Canary's file (a template without a namespace is the Canary's)."""
    from pydantic import ValidationError

    from canary.cli.files import read_docs

    out: dict[tuple[str, str], MetricTemplate] = {}
    for doc in read_docs(path):
        if not isinstance(doc.data, dict) or doc.data.get("kind") != "MetricTemplate":
            continue
        data = copy.deepcopy(doc.data)
        data.setdefault("metadata", {}).setdefault("namespace", canary.namespace)
        try:
            template = MetricTemplate.model_validate(data)
        except ValidationError as e:
            first = e.errors()[0]
            raise CliError(f"{path}:{doc.line}: invalid MetricTemplate: {'.'.join(str(x) for x in first['loc'])}: "
                           f"{first['msg']}") from None
        meta = data.get("metadata") or {}
        out[(str(meta.get("namespace")), str(meta.get("name")))] = template
    return out


def scenario_of(data: Any, rec: Replay) -> dict[str, Any]:
    """The scenario for the simulator: the replayed values, plus what `--scenario` gives
    (webhooks, readiness, maxMinutes; not metrics, which come from Prometheus)."""
    scenario = dict(data) if isinstance(data, dict) else {}
    for key in ("metrics", "samples"):
        if scenario.get(key):
            raise CliError(f"--scenario: with --from-prometheus the metrics come from Prometheus; leave out {key}:")
    scenario["metrics"] = {name: values for name, values in rec.values.items()}
    if rec.samples:
        scenario["samples"] = {name: dict(sides) for name, sides in rec.samples.items()}
    return scenario


def notes(rec: Replay, used: int) -> list[str]:
    """What a person should know about this replay: metrics without data, a window too short."""
    out = []
    for name, sides in rec.samples.items():
        for side, per in sides.items():
            if not any(per):
                out.append(f"warning: metric {name}: no samples of the {side} in the window (the judge would say "
                           "NoData)")
    for name, values in rec.values.items():
        if all(v is None for v in values):
            out.append(f"warning: metric {name}: no data in the window (the operator would halt: "
                       f"\"no values found\"); query: {rec.queries.get(name, '')}")
    if used > len(rec.times):
        out.append(f"warning: the release ran {used} analyses, the window has {len(rec.times)}: the last "
                   "values were repeated (a longer window replays them all)")
    elif used < len(rec.times):
        out.append(f"note: the release was decided after {used} of the window's {len(rec.times)} analysis steps: "
                   "the later values were not needed")
    return out
