"""Leader election on a coordination.k8s.io/v1 Lease, for running several replicas (HA).

One replica holds the Lease and acts; the others watch (their caches stay warm) and take over
when the holder stops renewing. The rules are client-go's:

* the holder renews every `retry_period` (2 s); if no renewal succeeded for `renew_deadline`
  (10 s) it stops leading *at once*, while the Lease is still valid for another
  `lease_duration - renew_deadline` (5 s): nobody else can have it yet, so two replicas never
  act at the same time;
* a candidate tries every `retry_period` and takes the Lease when it is free (released, no
  holder) or when its record has not changed for `leaseDurationSeconds` *as measured by the
  candidate's own clock* since it last saw it change (clocks of different nodes never compare);
* writes use the Lease's resourceVersion, so two candidates cannot both win a race (409);
* `release()` (graceful shutdown) empties holderIdentity, so a candidate takes over within
  one `retry_period` instead of waiting for expiry.

The operator wires `on_started_leading`/`on_stopped_leading` to the scheduler (resume/pause).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

from canary.adapters.kube import ApiError, Kube

log = logging.getLogger("canary.leader")

API_VERSION = "coordination.k8s.io/v1"
PLURAL = "leases"
DEFAULT_NAME = "canary-operator-leader"
LEASE_DURATION = 15.0
RENEW_DEADLINE = 10.0
RETRY_PERIOD = 2.0
SA_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def default_identity() -> str:
    """hostname (the pod name in a cluster) and pid: unique per process."""
    return f"{socket.gethostname()}_{os.getpid()}"


def default_namespace(path: str = SA_NAMESPACE_FILE) -> str:
    """The pod's own namespace in a cluster, else "default"."""
    try:
        with open(path) as f:
            return f.read().strip() or "default"
    except OSError:
        return "default"


def micro_time(dt: datetime) -> str:
    """A Kubernetes MicroTime: RFC 3339 with microseconds, UTC."""
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Record:
    """What identifies one version of the Lease's claim (a change means the holder is alive)."""

    holder: str
    renew_time: str
    transitions: int
    duration: float

    @classmethod
    def of(cls, lease: dict) -> "Record":
        spec = lease.get("spec") or {}
        return cls(
            holder=spec.get("holderIdentity") or "",
            renew_time=str(spec.get("renewTime") or ""),
            transitions=int(spec.get("leaseTransitions") or 0),
            duration=float(spec.get("leaseDurationSeconds") or LEASE_DURATION),
        )


class LeaderElector:
    def __init__(
        self,
        kube: Kube,
        namespace: str,
        name: str = DEFAULT_NAME,
        identity: str | None = None,
        *,
        lease_duration: float = LEASE_DURATION,
        renew_deadline: float = RENEW_DEADLINE,
        retry_period: float = RETRY_PERIOD,
        on_started_leading: Callable[[], None] | None = None,
        on_stopped_leading: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
    ):
        if not lease_duration > renew_deadline > retry_period > 0:
            raise ValueError("need lease_duration > renew_deadline > retry_period > 0")
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = identity or default_identity()
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.on_started_leading = on_started_leading
        self.on_stopped_leading = on_stopped_leading
        self._clock = clock
        self._wall = wall_clock
        self._leading = False
        self._renewed_at = float("-inf")  # our clock, last successful acquire/renew
        self._observed: Record | None = None  # the other holder's record as last seen
        self._observed_at = float("-inf")  # our clock, when that record last changed
        self._stopping = False
        self._wake = asyncio.Event()
        # our clock: before this, watch the Lease (so that its expiry is measured from the first
        # sighting, not from the end of the hold-off) but never write it (canary/shards.py)
        self.hold_off_until = float("-inf")

    # ---- state ----------------------------------------------------------------------

    @property
    def _duration_seconds(self) -> int:
        return max(1, math.ceil(self.lease_duration))  # the API field is whole seconds

    @property
    def is_leader(self) -> bool:
        """True only while we hold the Lease and renewed it within the renew deadline."""
        return self._leading and self._clock() - self._renewed_at < self.renew_deadline

    # ---- one attempt ------------------------------------------------------------------

    async def try_acquire_or_renew(self) -> bool:
        """One attempt to take or keep the Lease; True if we hold it afterwards."""
        now_wall = micro_time(self._wall())
        lease = await self.kube.get(API_VERSION, PLURAL, self.namespace, self.name)
        if lease is None:
            if self._clock() < self.hold_off_until:
                return False
            body = {
                "apiVersion": API_VERSION,
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": {
                    "holderIdentity": self.identity,
                    "leaseDurationSeconds": self._duration_seconds,
                    "acquireTime": now_wall,
                    "renewTime": now_wall,
                    "leaseTransitions": 0,
                },
            }
            try:
                await self.kube.create(API_VERSION, PLURAL, self.namespace, body)
            except ApiError as e:
                if e.conflict:  # another candidate created it first
                    return False
                raise
            return True

        record = Record.of(lease)
        now = self._clock()
        if record != self._observed:
            self._observed, self._observed_at = record, now
        if now < self.hold_off_until:
            return False  # holding off: observed, not claimed (not even renewed: let it expire)
        ours = record.holder == self.identity
        if record.holder and not ours and now - self._observed_at < record.duration:
            return False  # held by someone who renewed recently enough (by our clock)

        spec = dict(lease.get("spec") or {})
        if not ours:
            spec["acquireTime"] = now_wall
            spec["leaseTransitions"] = record.transitions + (1 if record.holder else 0)
        spec["holderIdentity"] = self.identity
        spec["leaseDurationSeconds"] = self._duration_seconds
        spec["renewTime"] = now_wall
        body = {**lease, "spec": spec}  # carries metadata.resourceVersion: a stale write gets 409
        try:
            updated = await self.kube.replace(API_VERSION, PLURAL, self.namespace, self.name, body)
        except ApiError as e:
            if e.conflict:
                return False
            raise
        self._observed, self._observed_at = Record.of(updated or body), now
        return True

    # ---- the loop -----------------------------------------------------------------------

    async def run(self) -> None:
        """Campaign, lead, and campaign again after a loss, until `stop()` or cancellation."""
        try:
            while not self._stopping:
                await self._campaign()
                if self._stopping:
                    break
                self._set_leading(True)
                await self._lead()
                self._set_leading(False)
        finally:
            if self._leading:
                self._set_leading(False)

    async def _campaign(self) -> None:
        while not self._stopping:
            started = self._clock()
            try:
                ok = await asyncio.wait_for(self.try_acquire_or_renew(), timeout=self.renew_deadline)
            except asyncio.TimeoutError:
                ok = False
                log.warning("leader election: acquiring lease %s/%s timed out", self.namespace, self.name)
            except Exception as e:  # noqa: BLE001 - an API or network error is just a failed try
                ok = False
                log.warning("leader election: cannot acquire lease %s/%s: %s", self.namespace, self.name, e)
            if ok:
                self._renewed_at = started
                return
            await self._sleep(self.retry_period)

    async def _lead(self) -> None:
        while not self._stopping:
            await self._sleep(self.retry_period)
            if self._stopping:
                return
            started = self._clock()
            remaining = self._renewed_at + self.renew_deadline - started
            ok = False
            if remaining > 0:
                try:
                    ok = await asyncio.wait_for(self.try_acquire_or_renew(), timeout=remaining)
                except asyncio.TimeoutError:
                    pass
                except Exception as e:  # noqa: BLE001
                    log.warning("leader election: renewing lease %s/%s failed: %s", self.namespace, self.name, e)
            if ok:
                self._renewed_at = started
            elif self._clock() - self._renewed_at >= self.renew_deadline:
                log.error("leader election: lease %s/%s not renewed for %.0fs: stopping to lead",
                          self.namespace, self.name, self.renew_deadline)
                return
            elif self._observed is not None and self._observed.holder not in ("", self.identity):
                log.error("leader election: lease %s/%s was taken by %s: stopping to lead",
                          self.namespace, self.name, self._observed.holder)
                return

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)
        except asyncio.TimeoutError:
            pass

    def _set_leading(self, leading: bool) -> None:
        if leading == self._leading:
            return
        self._leading = leading
        if leading:
            log.info("leader election: %s became the leader (lease %s/%s)", self.identity, self.namespace, self.name)
            if self.on_started_leading:
                self.on_started_leading()
        else:
            log.warning("leader election: %s is no longer the leader (lease %s/%s)",
                        self.identity, self.namespace, self.name)
            if self.on_stopped_leading:
                self.on_stopped_leading()

    # ---- shutdown -----------------------------------------------------------------------

    def stop(self) -> None:
        """Stop campaigning and renewing (the loop in `run()` returns soon)."""
        self._stopping = True
        self._wake.set()

    async def release(self) -> bool:
        """Give the Lease up if we hold it, so that another replica takes over at once."""
        was_leading = self._leading
        self.stop()
        self._set_leading(False)
        if not was_leading:
            return False
        try:
            lease = await self.kube.get(API_VERSION, PLURAL, self.namespace, self.name)
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return False
            now_wall = micro_time(self._wall())
            spec = dict(lease.get("spec") or {})
            spec.pop("holderIdentity", None)
            spec["leaseDurationSeconds"] = 1
            spec["renewTime"] = now_wall
            spec["acquireTime"] = now_wall
            await self.kube.replace(API_VERSION, PLURAL, self.namespace, self.name, {**lease, "spec": spec})
        except Exception as e:  # noqa: BLE001 - the lease will simply expire
            log.warning("leader election: could not release lease %s/%s: %s", self.namespace, self.name, e)
            return False
        log.info("leader election: %s released lease %s/%s", self.identity, self.namespace, self.name)
        return True
