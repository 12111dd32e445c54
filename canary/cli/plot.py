"""A release as a picture: the weight over time on bands of the phases, and one panel per metric
with its bounds (the failing side shaded) and the failing points marked.

Drawn by matplotlib (the optional extra `canary-operator[plot]`: axes, legends and PNG/SVG
output are what it does well, and the operator image does not need it). `.png` and `.svg`
are written by matplotlib; `.html` is one self-contained page with the SVG inline (no
script, no network). The same `Series` comes from `canary simulate` and from a live Canary's
ledger (`canary explain --plot`)."""

from __future__ import annotations

import html
import io
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from canary.cli.api import CliError

PHASE_COLOURS = {
    "Initializing": "#d9d9d9", "Initialized": "#eeeeee", "Waiting": "#fff2cc", "Progressing": "#dae8fc",
    "WaitingPromotion": "#ffe6cc", "Promoting": "#d5e8d4", "Finalising": "#d5e8d4", "Succeeded": "#b9e0a5",
    "Failed": "#f8cecc", "Terminating": "#e1d5e7", "Terminated": "#e1d5e7",
}


@dataclass
class MetricSeries:
    name: str
    times: list[float] = field(default_factory=list)
    values: list[float | None] = field(default_factory=list)
    ok: list[bool] = field(default_factory=list)
    min: float | None = None
    max: float | None = None


@dataclass
class Series:
    title: str
    times: list[float] = field(default_factory=list)
    phases: list[str] = field(default_factory=list)
    weights: list[int] = field(default_factory=list)
    max_weight: int = 100
    metrics: dict[str, MetricSeries] = field(default_factory=dict)
    xlabel: str = "seconds"

    def add(self, t: float, phase: str, weight: int, checks: list[Any]) -> None:
        self.times.append(t)
        self.phases.append(phase or "-")
        self.weights.append(weight)
        for c in checks:
            m = self.metrics.setdefault(c.name, MetricSeries(c.name))
            m.times.append(t)
            m.values.append(c.value)
            m.ok.append(bool(c.ok))
            m.min, m.max = c.min, c.max


def from_simulation(result: Any, title: str, max_weight: int) -> Series:
    s = Series(title=f"{title}: {result.outcome}", max_weight=max_weight, xlabel="virtual seconds since the release")
    for p in result.points:
        s.add(p.seconds, p.phase, p.weight, p.checks)
    return s


def from_ledger(view: Any) -> Series:
    """A live Canary's ledger; a merged entry (count > 1) contributes its first and last time."""
    entries = list(view.status.ledger or [])
    start: datetime | None = entries[0].time if entries else None
    s = Series(title=f"{view.namespace}/{view.name}: {view.status.phase.value or '-'}", max_weight=view.max_weight,
               xlabel=f"seconds since {start.strftime('%Y-%m-%d %H:%M:%S UTC') if start else '-'}")
    for e in entries:
        assert start is not None
        s.add((e.time - start).total_seconds(), e.phase.value, e.weight, e.checks or [])
        if (e.count or 1) > 1 and e.last_time is not None:
            s.add((e.last_time - start).total_seconds(), e.phase.value, e.weight, e.checks or [])
    return s


def _bands(ax: Any, s: Series) -> list[tuple[str, str]]:
    """Phase bands behind a panel; the phases seen, for the legend."""
    seen: list[tuple[str, str]] = []
    if not s.times:
        return seen
    end = s.times[-1] + max(1.0, (s.times[-1] - s.times[0]) * 0.02)
    for i, (t, phase) in enumerate(zip(s.times, s.phases)):
        nxt = s.times[i + 1] if i + 1 < len(s.times) else end
        colour = PHASE_COLOURS.get(phase, "#f5f5f5")
        ax.axvspan(t, nxt, color=colour, alpha=0.8, lw=0)
        if (phase, colour) not in seen:
            seen.append((phase, colour))
    return seen


def figure(s: Series) -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch
    except ImportError:
        raise CliError("--plot needs matplotlib: pip install 'canary-operator[plot]'") from None
    n = 1 + len(s.metrics)
    fig, axes = plt.subplots(n, 1, sharex=True, figsize=(10, 2.6 + 2.0 * n), squeeze=False)
    ax = axes[0][0]
    seen = _bands(ax, s)
    ax.step(s.times, s.weights, where="post", color="#1f4e79", lw=2, label="canary weight")
    ax.axhline(s.max_weight, color="#1f4e79", ls=":", lw=1, label=f"max weight {s.max_weight}")
    ax.set_ylim(-2, 105)
    ax.set_ylabel("weight %")
    ax.set_title(s.title)
    handles = [Patch(color=c, label=p) for p, c in seen]
    ax.legend(handles=ax.get_legend_handles_labels()[0] + handles, loc="upper left", fontsize=7, ncol=4,
              framealpha=0.9)
    for row, m in enumerate(s.metrics.values(), start=1):
        ax = axes[row][0]
        _bands(ax, s)
        xs = [t for t, v in zip(m.times, m.values) if v is not None]
        ys = [v for v in m.values if v is not None]
        ax.plot(xs, ys, color="#333333", marker="o", ms=3, lw=1.2, label=m.name)
        bad = [(t, v) for t, v, ok in zip(m.times, m.values, m.ok) if not ok and v is not None]
        if bad:
            ax.scatter([t for t, _ in bad], [v for _, v in bad], color="#c00000", marker="x", s=60, zorder=5,
                       label="failed")
        nodata = [t for t, v in zip(m.times, m.values) if v is None]
        if nodata:
            ax.scatter(nodata, [0 if not ys else min(ys)] * len(nodata), color="#c00000", marker="v", s=40,
                       zorder=5, label="no data")
        lo, hi = ax.get_ylim()
        if m.min is not None:
            ax.axhline(m.min, color="#c00000", ls="--", lw=1, label=f"min {m.min:g}")
            ax.axhspan(min(lo, m.min) - abs(m.min) * 0.5 - 1, m.min, color="#c00000", alpha=0.07)
        if m.max is not None:
            ax.axhline(m.max, color="#c00000", ls="--", lw=1, label=f"max {m.max:g}")
            ax.axhspan(m.max, max(hi, m.max) + abs(m.max) * 0.5 + 1, color="#c00000", alpha=0.07)
        values = ys + [b for b in (m.min, m.max) if b is not None]
        if values:
            pad = (max(values) - min(values)) * 0.15 or 1.0
            ax.set_ylim(min(values) - pad, max(values) + pad)
        ax.set_ylabel(m.name, fontsize=8)
        ax.legend(loc="best", fontsize=7)
    axes[-1][0].set_xlabel(s.xlabel)
    fig.tight_layout()
    return fig


def write(s: Series, path: str) -> str:
    """Draw `s` into `path` (.png, .svg or .html); the path written."""
    suffix = Path(path).suffix.lower()
    if suffix not in (".png", ".svg", ".html", ".htm"):
        raise CliError(f"--plot {path}: the file must end in .png, .svg or .html")
    fig = figure(s)
    import matplotlib.pyplot as plt

    try:
        if suffix in (".png", ".svg"):
            fig.savefig(path, dpi=110)
        else:
            buf = io.StringIO()
            fig.savefig(buf, format="svg")
            svg = buf.getvalue()
            svg = svg[svg.index("<svg"):]
            page = ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>" + html.escape(s.title)
                    + "</title><style>body{font-family:sans-serif;margin:1em}svg{max-width:100%;height:auto}"
                    "</style></head><body><h1>" + html.escape(s.title) + "</h1>\n" + svg + "\n</body></html>\n")
            Path(path).write_text(page, encoding="utf-8")
    except OSError as e:
        raise CliError(f"--plot {path}: cannot write it: {e}") from None
    finally:
        plt.close(fig)
    return path
