"""One run of kopf, and why it ended: a signal, or kopf stopping by itself.

`kopf.operator()` returns normally in both cases. When a watch fails (an API server that
restarts serves a CRD-backed resource as 404 for a few seconds), kopf logs "Multidimensional
multitasker has failed" and returns as if it had been told to stop: a supervisor that restarts
kopf only on exceptions then exits, and the cluster loses its operator. So the signals are ours:
kopf's tasks are spawned (which installs kopf's own SIGINT/SIGTERM handlers), ours replace them
and set kopf's stop flag, and the supervisor knows which of the two ended the run.

A stop by the stop flag is, for kopf, an intentional one: it schedules no SIGKILL of the process
(its `ultimate_exiting_timeout`), which it would for any other end, 10 minutes later, into the
operator that was restarted in the meantime; `run_once` turns it off for the other ends.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from typing import Any

import kopf

SIGNALS = (signal.SIGINT, signal.SIGTERM)
STOP_GRACE = 30.0
"""Seconds kopf may take to stop after it stopped by itself; then its tasks are cancelled."""

log = logging.getLogger("canary.operator")


class Stop:
    """The process's stop request: the first SIGINT or SIGTERM, for every run of kopf."""

    def __init__(self) -> None:
        self.flag = asyncio.Event()
        self.signal: signal.Signals | None = None

    def received(self, sig: signal.Signals) -> None:
        if self.signal is None:
            self.signal = sig
            log.info("%s received: the operator stops", sig.name)
        self.flag.set()

    def install(self) -> None:
        """Our handlers, in place of kopf's (a loop keeps one handler per signal)."""
        if threading.current_thread() is not threading.main_thread():
            return  # only the main thread receives signals (kopf ignores them there too)
        loop = asyncio.get_running_loop()
        for sig in SIGNALS:
            loop.add_signal_handler(sig, self.received, sig)

    async def sleep(self, seconds: float) -> None:
        """Sleep, cut short by a stop request."""
        try:
            await asyncio.wait_for(self.flag.wait(), seconds)
        except asyncio.TimeoutError:
            pass


async def run_once(stop: Stop, registry: kopf.OperatorRegistry, namespace: str | None = None,
                   liveness: str | None = None) -> None:
    """`kopf.operator()` (standalone; one namespace or cluster-wide) with the stop flag and the
    signal handlers of `stop`; returns when kopf stops, raises what kopf raises. `stop.signal`
    then tells whether it was asked to."""
    settings = kopf.OperatorSettings()
    settings.process.ultimate_exiting_timeout = None
    kwargs: dict[str, Any] = {"namespaces": [namespace]} if namespace else {"clusterwide": True}
    if liveness:
        kwargs["liveness_endpoint"] = liveness
    existing = asyncio.all_tasks()
    tasks = await kopf.spawn_tasks(registry=registry, settings=settings, standalone=True, stop_flag=stop.flag,
                                   **kwargs)
    stop.install()
    runner = asyncio.create_task(kopf.run_tasks(tasks, ignored=existing), name="kopf")
    await asyncio.wait([runner, *tasks], return_when=asyncio.FIRST_COMPLETED)
    if not runner.done() and stop.signal is None:
        # kopf stops by itself: its shutdown can hang (seen on the testbed: a watcher retrying
        # on a closed connector, an assertion in kopf's cancel callback, no return for minutes)
        done, _ = await asyncio.wait([runner], timeout=STOP_GRACE)
        if not done and stop.signal is None:
            log.error("kopf did not stop within %.0fs of stopping by itself: its tasks are cancelled", STOP_GRACE)
            runner.cancel()
            await asyncio.wait([runner], timeout=10.0)
            return
    await runner
