"""Memory with large ConfigMaps (issue 10.5): the initial listings come in pages, and the C
allocator does not keep large watch events."""

from __future__ import annotations


async def test_the_operator_lists_in_pages(monkeypatch):
    """The initial listing of ConfigMaps and Secrets comes in pages, not in one response (a few
    hundred 1 MiB ConfigMaps in one response peaked past the pod's memory limit)."""
    import kopf

    from canary.adapters.kube import Kube
    from canary.operator import LIST_CHUNK, Operator, Options
    from tests.unit.fakeapi import FakeApiServer

    api = FakeApiServer()
    monkeypatch.setattr(Kube, "from_config", classmethod(lambda cls, kubeconfig=None, **kw: api.kube(**kw)))
    settings = kopf.OperatorSettings()
    assert settings.watching.chunk_size is None  # kopf's default: everything at once
    op = Operator(Options())
    (startup,) = [h for h in op.registry._activities.get_all_handlers() if str(h.activity.value) == "startup"]
    await startup.fn(settings=settings)
    assert settings.watching.chunk_size == LIST_CHUNK and 0 < LIST_CHUNK <= 100


def test_the_operator_pins_the_allocators_mmap_threshold(monkeypatch):
    """Issue 10.5: with glibc's dynamic mmap threshold, 300 ConfigMaps of 1 MiB passing through
    the watch left the operator at 252 MiB (347 MiB started with them there) instead of ~93;
    pinned, 110 and 111 (python -m bench.config_memory --configmaps 300 --kib 1000)."""
    import canary.operator as operator_module
    from canary.heap import pin_mmap_threshold

    calls: list[str] = []
    monkeypatch.setattr(operator_module, "pin_mmap_threshold", lambda: calls.append("pin") or True)

    def fake_run(coro):
        calls.append("run")
        coro.close()

    monkeypatch.setattr(operator_module.asyncio, "run", fake_run)
    operator_module.main(operator_module.Options())
    assert calls == ["pin", "run"]  # before the first watch event
    assert pin_mmap_threshold() is True  # glibc (Debian) takes it
