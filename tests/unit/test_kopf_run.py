"""The supervisor around kopf (canary/operator.py `run`, canary/kopf_run.py): kopf returns
normally when a watch fails (an API server restarting serves CRD-backed resources as 404 for a
few seconds: "Multidimensional multitasker has failed"), exactly as when a signal stopped it. Only
a signal may end the process; any other end of kopf starts a fresh operator."""

from __future__ import annotations

import asyncio
import os
import signal

import kopf
import pytest

from canary import operator as operator_module
from canary.options import Options


class FakeKopf:
    """kopf's spawn/run pair: each run plays one scripted end (stands in for the API server)."""

    def __init__(self, monkeypatch, script):
        self.script = list(script)
        self.runs = 0
        self.flags: list[object] = []
        self.settings: list[kopf.OperatorSettings] = []
        monkeypatch.setattr(kopf, "spawn_tasks", self.spawn_tasks)
        monkeypatch.setattr(kopf, "run_tasks", self.run_tasks)

        async def operator(**kwargs):  # the code before the fix called kopf.operator
            await self.run_tasks(await self.spawn_tasks(**kwargs))
        monkeypatch.setattr(kopf, "operator", operator)

    async def spawn_tasks(self, stop_flag=None, settings=None, **_):
        self.flags.append(stop_flag)
        self.settings.append(settings)
        if self.script and self.script[0] == "hangs":
            return [asyncio.create_task(asyncio.sleep(0.05), name="multitasker that fails")]
        return []

    async def run_tasks(self, tasks, ignored=()):
        self.runs += 1
        end = self.script.pop(0)
        if end == "returns":  # kopf after a failed watch
            return
        if end == "hangs":  # a root task ends, kopf's shutdown never returns
            await asyncio.Event().wait()
        if end == "raises":
            raise kopf.PermanentError("watch lost")
        if end == "signal":  # SIGTERM from the kubelet: kopf waits for its stop flag
            os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.wait_for(self.flags[-1].wait(), 5)
            return
        raise AssertionError(end)


def supervise(monkeypatch, script, sleep_signal: bool = False) -> FakeKopf:
    fake = FakeKopf(monkeypatch, script)

    async def main():
        if sleep_signal:  # SIGTERM while the supervisor waits to start kopf again
            real_abandon = operator_module.Operator.abandon

            async def abandon(self):
                await real_abandon(self)
                asyncio.get_running_loop().call_later(0.2, os.kill, os.getpid(), signal.SIGTERM)
            monkeypatch.setattr(operator_module.Operator, "abandon", abandon)
        await asyncio.wait_for(operator_module.run(Options()), 20)

    asyncio.run(main())
    return fake


def test_kopf_returning_after_a_failed_watch_starts_the_operator_again(monkeypatch):
    fake = supervise(monkeypatch, ["returns", "signal"])
    assert fake.runs == 2  # the code before the fix stopped for good after the first run


def test_kopf_raising_starts_the_operator_again_and_a_signal_ends_it(monkeypatch):
    fake = supervise(monkeypatch, ["raises", "returns", "signal"])
    assert fake.runs == 3


def test_a_signal_during_the_pause_before_a_restart_ends_the_process(monkeypatch):
    fake = supervise(monkeypatch, ["returns", "returns"], sleep_signal=True)
    assert fake.runs == 1


def test_kopf_never_schedules_its_delayed_sigkill_into_a_restarted_operator(monkeypatch):
    fake = supervise(monkeypatch, ["returns", "signal"])
    # kopf's ultimate termination kills the process 10 minutes after an unrequested stop
    assert [s.process.ultimate_exiting_timeout for s in fake.settings] == [None, None]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_the_stop_request_remembers_the_first_signal(sig):
    from canary.kopf_run import Stop

    async def main():
        stop = Stop()
        stop.received(sig)
        stop.received(signal.SIGINT)
        await stop.sleep(5)  # returns at once: a stop was requested
        return stop.signal

    assert asyncio.run(asyncio.wait_for(main(), 1)) is sig


def test_a_restarted_operator_serves_its_metrics_on_the_same_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def main():
        first = operator_module.Operator(Options(metrics_port=port))
        first.metrics.serve(port, addr="127.0.0.1")
        await first.abandon()
        second = operator_module.Operator(Options(metrics_port=port))
        second.metrics.serve(port, addr="127.0.0.1")  # before the fix: Address already in use
        second.metrics.close()

    asyncio.run(main())


def test_kopf_hanging_in_its_own_shutdown_is_cut_and_started_again(monkeypatch):
    from canary import kopf_run

    monkeypatch.setattr(kopf_run, "STOP_GRACE", 0.2)
    fake = supervise(monkeypatch, ["hangs", "signal"])
    assert fake.runs == 2  # the code before waited for ever (kopf's SIGKILL 10 min later)
