"""Automatic sharding across replicas (`--shards N`): one Lease per shard, claimed by the
replicas through canary/leader.py's LeaderElector.

* A Canary belongs to shard `shard_of(namespace, name, N)`: a stable hash (SHA-256 of
  "namespace/name"), the same in every replica and across restarts (never Python's hash()).
* A replica acts on a Canary only while it holds that shard's Lease (`holds(k)`); the operator's
  write guard asks the same question for every write of a tick, so a replica whose renewal of
  shard k is overdue stops writing for shard k's Canaries at once (the fencing of the safety
  issue, per shard). Two replicas never act on one Canary: the Lease rules of leader.py apply
  to each shard on its own.
* Balance: every replica renews its entry on a members Lease and counts the members renewed
  within the renew deadline; its fair share is ceil(N / members). It campaigns for every shard
  it lacks, and gives back (releases) shards beyond its share; it keeps watching a shard it gave
  back but claims it only after a hold-off (no ping-pong), or at once when the fair share rises.
  So a new replica gets shards within a few retry periods, and a dead replica's shards are taken
  within the lease duration of its death (a candidate's expiry counts from its first sighting of
  the last record).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import hashlib
import logging
import math
import time
from typing import Callable

from canary.adapters.kube import ApiError, Kube
from canary.leader import LEASE_DURATION, RETRY_PERIOD, LeaderElector

log = logging.getLogger("canary.shards")

MEMBER_PREFIX = "canary.dev/member-"  # an annotation per live replica on the members Lease
# literal, so that tests/unit/test_rbac_rules.py resolves these calls (get, create, update only)
API_VERSION = "coordination.k8s.io/v1"
PLURAL = "leases"
# the shard of the tick running in this task (None: not in a tick), read by the write guard
current_shard: contextvars.ContextVar[int | None] = contextvars.ContextVar("current_shard", default=None)


def shard_of(namespace: str, name: str, shards: int) -> int:
    digest = hashlib.sha256(f"{namespace}/{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % max(shards, 1)


class ShardManager:
    def __init__(self, kube: Kube, namespace: str, prefix: str, identity: str, shards: int, *,
                 on_acquired: Callable[[int], None] | None = None, on_lost: Callable[[int], None] | None = None,
                 lease_duration: float = LEASE_DURATION, renew_deadline: float | None = None,
                 retry_period: float = RETRY_PERIOD):
        if shards < 1:
            raise ValueError("shards must be >= 1")
        self.kube = kube
        self.namespace = namespace
        self.prefix = prefix
        self.identity = identity
        self.shards = shards
        self.on_acquired = on_acquired
        self.on_lost = on_lost
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline if renew_deadline is not None else lease_duration * 2 / 3
        self.retry_period = retry_period
        self._electors: dict[int, LeaderElector] = {}
        self._tasks: dict[int, asyncio.Task] = {}
        self._stopping = False
        self._last_share = math.ceil(shards)  # the fair share at the last balance (one member at first)
        self.members = 1
        self.member_key = MEMBER_PREFIX + hashlib.sha256(identity.encode()).hexdigest()[:16]

    # ---- state ----------------------------------------------------------------------

    def lease_name(self, shard: int) -> str:
        return f"{self.prefix}-{shard}"

    def holds(self, shard: int) -> bool:
        e = self._electors.get(shard)
        return e is not None and e.is_leader

    def held(self) -> list[int]:
        return [k for k in range(self.shards) if self.holds(k)]

    def shard(self, namespace: str, name: str) -> int:
        return shard_of(namespace, name, self.shards)

    def fair_share(self) -> int:
        return math.ceil(self.shards / max(self.members, 1))

    # ---- the loop -----------------------------------------------------------------------

    async def run(self) -> None:
        try:
            while not self._stopping:
                try:
                    self.members = await self._update_members(time.time())
                except Exception as e:  # noqa: BLE001 - balance is best effort; safety is in the Leases
                    log.warning("shards: membership not renewed: %s", e)
                await self._balance()
                await asyncio.sleep(self.retry_period)
        finally:
            for t in self._tasks.values():
                t.cancel()

    async def _balance(self) -> None:
        """Campaign for every shard not held (a candidate's elector watches the Lease all along,
        so a dead holder's shard is taken as soon as its Lease expires); give back the shards
        beyond the fair share, and do not claim those again for a while (no ping-pong), while
        still watching them."""
        held = self.held()
        share = self.fair_share()
        if share > self._last_share:
            # a replica is gone (the fair share rose): the shards given back to it must be taken
            # as soon as its Leases expire, not after the hold-off
            for e in self._electors.values():
                e.hold_off_until = float("-inf")
        self._last_share = share
        order = sorted(range(self.shards), key=lambda k: (k - shard_of("", self.identity, self.shards)) % self.shards)
        if len(held) > share:
            for k in sorted(held, key=order.index, reverse=True)[: len(held) - share]:
                log.info("shards: %s gives shard %d back (%d held, fair share %d)", self.identity, k, len(held), share)
                await self._give_up(k)
                if not self._stopping:
                    self._start(k, hold_off=2 * self.lease_duration)
        for k in order:
            running = k in self._tasks and not self._tasks[k].done()
            if not running and not self.holds(k):
                self._start(k)

    def _start(self, k: int, hold_off: float = 0.0) -> None:
        """A candidate for shard k. With a hold-off it watches the Lease from now on (a Lease's
        expiry counts from the candidate's first sighting of its last record: an elector started
        only after the hold-off would wait another whole lease duration when the holder is dead)
        but claims it only after the hold-off."""
        e = LeaderElector(self.kube, self.namespace, self.lease_name(k), self.identity,
                          lease_duration=self.lease_duration, renew_deadline=self.renew_deadline,
                          retry_period=self.retry_period,
                          on_started_leading=functools.partial(self._acquired, k),
                          on_stopped_leading=functools.partial(self._lost, k))
        if hold_off > 0:
            e.hold_off_until = time.monotonic() + hold_off
        self._electors[k] = e
        self._tasks[k] = asyncio.create_task(e.run(), name=f"shard-{k}")

    async def _give_up(self, k: int) -> None:
        e = self._electors.get(k)
        if e is not None:
            await e.release()  # on_stopped_leading runs first: the shard's ticks stop before the Lease is free

    def _acquired(self, k: int) -> None:
        log.info("shards: %s holds shard %d", self.identity, k)
        if self.on_acquired:
            self.on_acquired(k)

    def _lost(self, k: int) -> None:
        log.warning("shards: %s lost shard %d", self.identity, k)
        if self.on_lost:
            self.on_lost(k)

    # ---- membership ---------------------------------------------------------------------
    # One Lease "<prefix>-members" whose annotations hold each live replica's last renewal (unix
    # seconds): the same get/create/update rights as the shard Leases, one update per replica
    # and retry period. Only the balance depends on it (wall clocks of different nodes may
    # differ by a little); the safety is in the shard Leases alone.

    async def _update_members(self, mine: float | None) -> int:
        """Write our entry (None: remove it), drop stale ones; returns the live members."""
        name = f"{self.prefix}-members"
        for _ in range(3):
            lease = await self.kube.get(API_VERSION, PLURAL, self.namespace, name)
            now = time.time()
            annotations = dict(((lease or {}).get("metadata") or {}).get("annotations") or {})
            live = {}
            for key, value in annotations.items():
                if not key.startswith(MEMBER_PREFIX):
                    continue
                try:
                    if now - float(value) < self.lease_duration * 3:
                        live[key] = value
                except ValueError:
                    continue
            if mine is None:
                live.pop(self.member_key, None)
            else:
                live[self.member_key] = f"{mine:.3f}"
            meta: dict[str, object] = {"name": name, "namespace": self.namespace, "annotations": live}
            body = {"apiVersion": API_VERSION, "kind": "Lease", "metadata": meta,
                    "spec": {"leaseDurationSeconds": max(1, math.ceil(self.lease_duration))}}
            try:
                if lease is None:
                    await self.kube.create(API_VERSION, PLURAL, self.namespace, body)
                else:
                    meta["resourceVersion"] = (lease.get("metadata") or {}).get("resourceVersion")
                    await self.kube.replace(API_VERSION, PLURAL, self.namespace, name, body)
            except ApiError as e:
                if e.conflict:
                    continue  # another replica renewed meanwhile: read again
                raise
            # live: renewed within the renew deadline, the time after which a replica stops leading
            # its shards; shorter than a Lease's expiry, so that a dead replica has left the count
            # (the fair share rose) before its shards are taken, and they are not given back
            return max(1, sum(1 for k, v in live.items() if now - float(v) < self.renew_deadline))
        return self.members

    async def release(self) -> None:
        """Graceful stop: give every held shard back, and the membership."""
        self._stopping = True
        for k in list(self._electors):
            await self._give_up(k)
        try:
            await self._update_members(None)
        except Exception as e:  # noqa: BLE001 - the entry simply goes stale
            log.info("shards: membership not given up: %s", e)
