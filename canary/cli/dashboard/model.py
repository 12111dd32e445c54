"""What the dashboard shows of a Canary, as plain JSON data: the list page's card (`summary`)
and the Canary's page (`detail`: the card plus the `explain` timeline, drawn).

Everything here is data, never markup: strings (every one of them possibly hostile) go to the
browser as JSON and into the page only through `textContent`; the charts are numbers (SVG
coordinates) the page's script turns into SVG elements. The text is read through the CLI's
own views (canary.cli.views, live, explain, plot), so the page and `canary get --watch` /
`canary explain` cannot disagree."""

from __future__ import annotations

from typing import Any, Sequence

from canary.cli.explain import EXPLAIN_ENTRIES, _entry_line, _why, deciding_index
from canary.cli.live import GATES, ICONS, _step
from canary.cli.plot import PHASE_COLOURS, Series, from_ledger
from canary.cli.store import Store
from canary.cli.views import View, cut, format_check, hhmmss, last_checks, note, num
from canary.text import printable
from canary.types import Phase

TEXT_MAX = 300  # characters of one message on the page
DECISIONS = 5  # the last decisions on a card
SPARK_POINTS = 40  # values of a check's sparkline
SPARK_W, SPARK_H = 120.0, 26.0
CHART_W, WEIGHT_H, METRIC_H = 760.0, 120.0, 70.0
TIMELINE_METRICS = 8  # metric panels on a Canary's page


def text(value: Any, limit: int = TEXT_MAX) -> str:
    """A string for the page: printable, bounded."""
    return cut(printable("" if value is None else str(value)), limit)


def _scale(values: Sequence[float | None], extra: Sequence[float | None]) -> tuple[float, float]:
    present = [float(v) for v in [*values, *extra] if v is not None]
    if not present:
        return 0.0, 1.0
    lo, hi = min(present), max(present)
    if hi - lo < 1e-9:
        lo, hi = lo - 1.0, hi + 1.0
    return lo, hi


def _y(value: float, lo: float, hi: float, top: float, height: float) -> float:
    return round(top + height - (min(max(value, lo), hi) - lo) / (hi - lo) * height, 2)


def _x(t: float, t0: float, t1: float, width: float) -> float:
    return round((t - t0) / (t1 - t0) * width, 2) if t1 > t0 else 0.0


def _segments(points: list[tuple[float, float] | None]) -> list[str]:
    """SVG `points` attributes: one per run of values without a gap."""
    out: list[str] = []
    run: list[str] = []
    for p in points:
        if p is None:
            if run:
                out.append(" ".join(run))
            run = []
        else:
            run.append(f"{p[0]:g},{p[1]:g}")
    if run:
        out.append(" ".join(run))
    return out


def spark(values: Sequence[float | None], ok: Sequence[bool], low: float | None, high: float | None,
          width: float = SPARK_W, height: float = SPARK_H, xs: Sequence[float] | None = None) -> dict[str, Any]:
    """A small chart of a check: its values as lines, its bounds as lines, failing points marked
    (numbers only: the geometry of an inline SVG)."""
    values = list(values)
    ok = list(ok) + [True] * (len(values) - len(ok))
    lo, hi = _scale(values, [low, high])
    pad = 2.0
    inner = height - 2 * pad
    if xs is None:  # evenly spaced
        xs = [round(i * width / max(1, len(values) - 1), 2) for i in range(len(values))]
    points: list[tuple[float, float] | None] = [
        None if v is None else (xs[i], _y(float(v), lo, hi, pad, inner)) for i, v in enumerate(values)]
    return {
        "w": width, "h": height,
        "lines": _segments(points),
        "bounds": [_y(b, lo, hi, pad, inner) for b in (low, high) if b is not None],
        "fail": [[p[0], p[1]] for p, good in zip(points, ok) if p is not None and not good],
        "gaps": [xs[i] for i, v in enumerate(values) if v is None],
    }


def _pods(store: Store, namespace: str, deployment: str) -> dict[str, Any]:
    pods = store.pods_of(namespace, deployment)
    if pods is None:
        return {"deployment": text(deployment), "image": "", "pods": "not seen", "problem": False}
    return {"deployment": text(deployment), "image": text(pods.image or "-"), "pods": text(pods.text()),
            "problem": bool(pods.problems)}


def _checks(view: View) -> list[dict[str, Any]]:
    history: dict[str, list[tuple[float | None, bool]]] = {}
    for entry in view.status.ledger or []:
        for c in entry.checks or []:
            history.setdefault(c.name, []).append((c.value, c.ok))
    out = []
    for c in last_checks(view.status):
        series = history.get(c.name, [])[-SPARK_POINTS:]
        out.append({
            "name": text(c.name, 100), "value": c.value, "shown": num(c.value) if c.value is not None else "no data",
            "min": c.min, "max": c.max, "ok": c.ok, "text": text(format_check(c)),
            "spark": spark([v for v, _ in series], [k for _, k in series], c.min, c.max),
        })
    return out


def _gates(view: View) -> list[dict[str, Any]]:
    seen: dict[str, bool] = {}
    for entry in view.status.ledger or []:
        for h in entry.webhooks or []:
            seen[h.name] = h.ok
    return [{"name": text(w.name, 100), "type": text(w.type_value, 40), "open": bool(seen.get(w.name))}
            for w in view.analysis.webhooks or [] if w.type_value in GATES]


def _decision(entry: Any) -> dict[str, Any]:
    return {"time": hhmmss(entry.time), "phase": text(entry.phase.value or "-", 40), "weight": entry.weight,
            "actor": text(entry.actor, 128), "text": text(_entry_line(entry))}


def summary(obj: dict[str, Any], store: Store, routed: int | None = None) -> dict[str, Any]:
    """The card of one Canary on the list page."""
    view = View.of(obj)
    st = view.status
    phase = st.phase or Phase.BLANK
    icon, colour = ICONS.get(phase, ("?", "white"))
    interval = view.analysis.interval_seconds
    next_at = None
    if phase in (Phase.PROGRESSING, Phase.WAITING_PROMOTION, Phase.WAITING) and st.paused is None \
            and st.last_step_time is not None:
        next_at = st.last_step_time.timestamp() + interval
    return {
        "key": f"{view.namespace}/{view.name}",
        "namespace": text(view.namespace, 253), "name": text(view.name, 253),
        "phase": phase.value or "Pending", "icon": icon, "colour": colour, "paused": st.paused is not None,
        "strategy": text(view.analysis.strategy, 40), "step": text(_step(view), 40),
        "weight": st.canary_weight, "routed": routed, "maxWeight": view.max_weight,
        "failed": st.failed_checks, "threshold": view.threshold,
        "canary": _pods(store, view.namespace, view.target),
        "primary": _pods(store, view.namespace, f"{view.target}-primary"),
        "checks": _checks(view), "gates": _gates(view),
        "decisions": [_decision(e) for e in (st.ledger or [])[-DECISIONS:]][::-1],
        "note": text(note(view)),
        "failure": text(st.last_failure.message) if phase is Phase.FAILED and st.last_failure else "",
        "nextAnalysisAt": next_at, "interval": interval,
    }


def timeline(series: Series) -> dict[str, Any]:
    """The ledger drawn: phase bands, the weight as a step line, and a panel per metric."""
    times = series.times
    t0 = times[0] if times else 0.0
    t1 = times[-1] if times else 1.0
    end = t1 + max(1.0, (t1 - t0) * 0.02)
    bands = []
    for i, (t, phase) in enumerate(zip(times, series.phases)):
        nxt = times[i + 1] if i + 1 < len(times) else end
        x = _x(t, t0, end, CHART_W)
        bands.append({"x": x, "w": max(0.5, round(_x(nxt, t0, end, CHART_W) - x, 2)), "phase": text(phase, 40),
                      "colour": PHASE_COLOURS.get(phase, "#f5f5f5")})
    steps: list[tuple[float, float] | None] = []
    top = max(100, series.max_weight)
    for i, (t, w) in enumerate(zip(times, series.weights)):
        x, y = _x(t, t0, end, CHART_W), _y(float(w), 0.0, float(top), 4.0, WEIGHT_H - 8.0)
        if i:
            prev = steps[-1]
            assert prev is not None
            steps.append((x, prev[1]))
        steps.append((x, y))
    metrics = []
    for m in list(series.metrics.values())[:TIMELINE_METRICS]:
        metrics.append({"name": text(m.name, 100),
                        "min": m.min, "max": m.max,
                        # the x axis of a panel is the weight panel's
                        "spark": spark(m.values, m.ok, m.min, m.max, CHART_W, METRIC_H,
                                       xs=[_x(t, t0, end, CHART_W) for t in m.times])})
    return {"w": CHART_W, "h": WEIGHT_H, "metricHeight": METRIC_H, "bands": bands,
            "weight": _segments(steps), "maxWeightY": _y(float(series.max_weight), 0.0, float(top), 4.0, WEIGHT_H - 8.0),
            "metrics": metrics, "xlabel": text(series.xlabel, 80), "seconds": round(end - t0, 1)}


def detail(obj: dict[str, Any], store: Store, routed: int | None = None) -> dict[str, Any]:
    """The Canary's page: the card, why it is where it is, and the ledger as explain shows it."""
    view = View.of(obj)
    out = summary(obj, store, routed)
    entries = list(view.status.ledger or [])
    index = deciding_index(view.status.phase, entries)
    deciding = entries[index] if index is not None else None
    rows = []
    for i, entry in enumerate(entries[-EXPLAIN_ENTRIES * 3:]):
        row = _decision(entry)
        row["decisive"] = entry is deciding
        row["checks"] = [{"text": text(format_check(c)), "ok": c.ok} for c in entry.checks or []]
        row["webhooks"] = [{"text": text(f"webhook {h.name} ({h.type}) "
                                         f"{'HTTP ' + str(h.status_code) if h.status_code is not None else 'no answer'}"
                                         f" {'ok' if h.ok else 'FAILED'}" + (f": {h.message}" if h.message else "")),
                            "ok": h.ok} for h in entry.webhooks or []]
        rows.append(row)
    out["why"] = text(_why(view, deciding), 600)
    out["entries"] = rows
    out["hidden"] = max(0, len(entries) - len(rows))
    out["timeline"] = timeline(from_ledger(view)) if entries else None
    out["annotations"] = [{"key": text(k, 253), "value": text(v)} for k, v in sorted(view.annotations.items())
                          if k.startswith("canary.dev/")]
    return out
