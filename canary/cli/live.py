"""`canary get NAME --watch` on a terminal: a view redrawn in place, as `kubectl argo rollouts
get rollout --watch` draws one.

It is drawn by rich (a well-kept library that does redraw-in-place, colours, width and the
terminal's quirks better than hand-written escape codes) from what the watch has seen
(canary.cli.store): nothing in it asks the API server per redraw. The countdowns (next
analysis, progress deadline) are recomputed at every redraw from the clock. The routed weight
is read from the VirtualService or HTTPRoute when the Canary changes, not per redraw.

`lines(...)` is the view as (text, style) lines, so it is tested without a terminal."""

from __future__ import annotations

import os
import threading
from datetime import datetime
from typing import Any

from canary.cli.api import Ctx
from canary.cli.spark import sparkline
from canary.cli.store import Store
from canary.cli.views import View, ago, cut, hhmmss, num
from canary.text import printable
from canary.types import Phase

ICONS = {
    Phase.BLANK: ("○", "white"),
    Phase.SUCCEEDED: ("✔", "green"), Phase.FAILED: ("✖", "red"), Phase.PROGRESSING: ("◐", "yellow"),
    Phase.WAITING: ("◷", "cyan"), Phase.WAITING_PROMOTION: ("◷", "cyan"), Phase.PROMOTING: ("◑", "blue"),
    Phase.FINALISING: ("◑", "blue"), Phase.INITIALIZING: ("○", "white"), Phase.INITIALIZED: ("●", "green"),
    Phase.TERMINATING: ("◌", "magenta"), Phase.TERMINATED: ("◌", "magenta"),
}
GATES = ("confirm-rollout", "confirm-traffic-increase", "confirm-promotion")
SPARK = 24


def routed_weight(api: Any, view: View) -> int | None:
    """The weight the routing object sends to the canary now (None: unknown)."""
    raw = getattr(api, "raw_get", None)
    if raw is None:
        return None
    spec = view.raw.get("spec") or {}
    service = (spec.get("service") or {}).get("name") or view.target
    provider = spec.get("provider") or "istio"
    try:
        if provider.startswith("gatewayapi"):
            version = provider.split(":", 1)[1] if ":" in provider else "v1"
            route = raw(f"/apis/gateway.networking.k8s.io/{version}/namespaces/{view.namespace}/httproutes/{service}")
            refs = [b for rule in (route.get("spec") or {}).get("rules") or [] for b in rule.get("backendRefs") or []]
            return sum(int(b.get("weight", 0)) for b in refs if b.get("name") == f"{service}-canary")
        vs = raw(f"/apis/networking.istio.io/v1beta1/namespaces/{view.namespace}/virtualservices/{service}")
        http = (vs.get("spec") or {}).get("http") or []
        if not http:
            return None
        return sum(int(r.get("weight", 0)) for r in http[-1].get("route") or []
                   if (r.get("destination") or {}).get("host", "").split(".")[0] == f"{service}-canary")
    except Exception:  # a router we cannot read: the view shows only the set weight
        return None


def _step(view: View) -> str:
    a, st = view.analysis, view.status
    if view.analysis.strategy in ("ab", "bluegreen"):
        return f"ITER {st.iterations}/{a.iterations or 0}"
    if a.step_weights:
        done = sum(1 for w in a.step_weights if w <= st.canary_weight)
        return f"STEP {done}/{len(a.step_weights)}"
    if a.step_weight:
        total = -(-view.max_weight // a.step_weight)
        return f"STEP {min(total, -(-st.canary_weight // a.step_weight))}/{total}"
    return "-"


def lines(view: View, store: Store, now: datetime, routed: int | None = None) -> list[tuple[str, str]]:
    """The view, line by line, with a rich style per line."""
    st, a = view.status, view.analysis
    phase = st.phase or Phase.BLANK
    icon, colour = ICONS.get(phase, ("?", "white"))
    paused = " (paused)" if st.paused is not None else ""
    out: list[tuple[str, str]] = [
        (f"Canary {view.namespace}/{view.name}", "bold"),
        (f"  Status     {icon} {phase.value or 'Pending (not seen by the operator yet)'}{paused}", f"bold {colour}"),
        (f"  Strategy   {a.strategy}   {_step(view)}", ""),
    ]
    weight = f"  Weight     set {st.canary_weight}"
    weight += f", routed {routed}" if routed is not None else ""
    bar = int(round(20 * st.canary_weight / 100))
    out.append((f"{weight} / max {view.max_weight}   [{'█' * bar}{'░' * (20 - bar)}]", ""))
    failed_style = "red" if st.failed_checks else ""
    out.append((f"  Failed     {st.failed_checks}/{view.threshold} checks", failed_style))
    for label, deployment in (("Canary", view.target), ("Primary", f"{view.target}-primary")):
        pods = store.pods_of(view.namespace, deployment)
        if pods is None:
            out.append((f"  {label:<10} {deployment}: not seen yet", "dim"))
            continue
        style = "red" if pods.problems and not pods.ready else ("yellow" if pods.problems else "")
        out.append((f"  {label:<10} {pods.image or '-'}   {pods.text()}", style))
    history: dict[str, list[float | None]] = {}
    for entry in st.ledger or []:
        for c in entry.checks or []:
            history.setdefault(c.name, []).append(c.value)
    last = next((e.checks for e in reversed(st.ledger or []) if e.checks), None) or []
    if last:
        out.append(("  Checks", "bold"))
        width = max(len(c.name) for c in last)
        for c in last:
            bound = ", ".join(x for x in (f"min {num(c.min)}" if c.min is not None else "",
                                          f"max {num(c.max)}" if c.max is not None else "") if x) or "no bounds"
            value = num(c.value) if c.value is not None else "no data"
            verdict = "ok" if c.ok else "FAILED"
            out.append((f"    {c.name:<{width}}  {value:>8}  {bound:<10}  {sparkline(history.get(c.name, []), SPARK)}"
                        f"  {verdict}", "green" if c.ok else "bold red"))
    timing = []
    if phase in (Phase.PROGRESSING, Phase.WAITING_PROMOTION, Phase.WAITING) and st.paused is None:
        interval = a.interval_seconds
        if st.last_step_time is not None:
            left = int(round(interval - (now - st.last_step_time).total_seconds()))
            timing.append(f"next analysis in {max(0, left)}s (every {interval:g}s)")
        else:
            timing.append(f"analysis every {interval:g}s")
    deadline = (view.raw.get("spec") or {}).get("progressDeadlineSeconds") or 600
    if st.waiting_since is not None and phase not in (Phase.SUCCEEDED, Phase.FAILED):
        left = int(round(float(deadline) - (now - st.waiting_since).total_seconds()))
        timing.append(f"progress deadline in {max(0, left)}s (waiting for readiness since {ago(st.waiting_since, now)})")
    else:
        timing.append(f"progress deadline {deadline}s")
    out.append(("  Timing     " + "; ".join(timing), ""))
    gates = [w for w in a.webhooks or [] if w.type_value in GATES]
    if gates:
        seen: dict[str, bool] = {}
        for entry in st.ledger or []:
            for h in entry.webhooks or []:
                seen[h.name] = h.ok
        states = [f"{g.name} ({g.type_value}): {'open' if seen.get(g.name) else 'closed'}" for g in gates]
        out.append(("  Gates      " + "; ".join(states), "cyan"))
    if st.ledger:
        e = st.ledger[-1]
        count = f" x{e.count}" if (e.count or 1) > 1 else ""
        text = f"{hhmmss(e.time)} {e.action}{count}" + (f": {e.message}" if e.message else "")
        out.append((f"  Last       {cut(text, 150)}", ""))
    if st.paused is not None:
        out.append((f"  Paused     by {st.paused.by or '?'} since {hhmmss(st.paused.since)}: {st.paused.reason or ''}",
                    "yellow"))
    if phase is Phase.FAILED and st.last_failure is not None:
        out.append((f"  Failure    {cut(st.last_failure.message or '', 150)}", "red"))
    return [(printable(text), style) for text, style in out]


class LiveView:
    """The redrawn view of one Canary (or the table of all) on the terminal of `ctx.out`."""

    def __init__(self, ctx: Ctx, store: Store, namespace: str | None, name: str | None):
        self.ctx, self.store, self.namespace, self.name = ctx, store, namespace, name
        self._routed: int | None = None
        self._version = ""
        self.lock = threading.Lock()  # held while the store changes and while drawing
        self._live: Any = None

    def _renderable(self) -> Any:
        from rich.console import Group
        from rich.text import Text

        from canary.cli.views import STATUS_HEADER, status_row, table

        now = self.ctx.clock()
        with self.lock:
            if self.name is not None:
                obj = self.store.canaries.get((self.namespace or "", self.name))
                if obj is None:
                    return Text(f"canary {self.name}: gone (deleted?)", style="red")
                texts = [Text(t, style=s) for t, s in lines(View.of(obj), self.store, now, self._routed)]
            else:
                rows = [status_row(View.of(o), now) for o in self.store.canaries_sorted()]
                texts = [Text(line) for line in table(rows, STATUS_HEADER).splitlines()] if rows else [
                    Text("No canaries.")]
        texts.append(Text(f"{now.strftime('%H:%M:%S')}  watching (Ctrl-C to stop)", style="dim"))
        return Group(*texts)

    def __rich__(self) -> Any:
        return self._renderable()

    def start(self) -> None:
        from rich.console import Console
        from rich.live import Live

        width = None
        try:
            width = os.get_terminal_size(self.ctx.out.fileno()).columns
        except (OSError, ValueError, AttributeError):
            pass
        console = Console(file=self.ctx.out, no_color=self.ctx.color is False, highlight=False, width=width)
        self._live = Live(self, console=console, refresh_per_second=2, auto_refresh=True, transient=False)
        self._live.start()

    def update(self) -> None:
        """After a change: read the routed weight when the Canary itself changed."""
        if self.name is None or self.namespace is None:
            return
        obj = self.store.canaries.get((self.namespace, self.name))
        version = str(((obj or {}).get("metadata") or {}).get("resourceVersion", ""))
        if obj is not None and version != self._version:
            self._version = version
            routed = routed_weight(self.ctx.api, View.of(obj))
            with self.lock:
                self._routed = routed
        if self._live is not None:
            self._live.refresh()

    def stop(self) -> None:
        if self._live is not None:
            self._live.stop()
