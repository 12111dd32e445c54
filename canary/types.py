"""Value types shared by the engine, the adapters and the operator.

The engine is a pure function of (spec, status, Observation). Adapters produce the
pieces of an Observation (workload readiness, routed weights, check results); the
operator turns the engine's Actions into I/O. Everything here is immutable and
free of I/O so that a release can be replayed offline with a virtual clock.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Mapping, Union


class Phase(str, enum.Enum):
    """Canary phases, spelled as Flagger spells them (status.phase)."""

    BLANK = ""
    INITIALIZING = "Initializing"
    INITIALIZED = "Initialized"
    WAITING = "Waiting"
    PROGRESSING = "Progressing"
    WAITING_PROMOTION = "WaitingPromotion"
    PROMOTING = "Promoting"
    FINALISING = "Finalising"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    TERMINATING = "Terminating"
    TERMINATED = "Terminated"


class Ready(str, enum.Enum):
    READY = "Ready"
    WAITING = "Waiting"  # retriable: rollout still in progress
    FAILED = "Failed"  # not retriable: deadline exceeded


@dataclass(frozen=True)
class Readiness:
    state: Ready
    message: str = ""

    @property
    def ready(self) -> bool:
        return self.state is Ready.READY


@dataclass(frozen=True)
class WorkloadState:
    """What a watch tells us about one Deployment (target or primary)."""

    name: str
    readiness: Readiness
    replicas: int = 0  # spec.replicas
    ready_replicas: int = 0


@dataclass(frozen=True)
class Routes:
    """Weights actually present in the routing object (the source of truth for status.canaryWeight)."""

    primary: int = 100
    canary: int = 0
    mirrored: bool = False


WebhookType = Literal[
    "confirm-rollout",
    "pre-rollout",
    "rollout",
    "confirm-traffic-increase",
    "confirm-promotion",
    "post-rollout",
    "rollback",
    "event",
]


@dataclass(frozen=True)
class MetricResult:
    """One metric check as executed. value is None when the query failed or returned no data."""

    name: str
    query: str
    value: float | None
    min: float | None = None
    max: float | None = None
    ok: bool = False
    message: str = ""
    # compared checks (spec.analysis.metrics[].compare): range-query samples of the canary
    # and of <target>-primary as (epoch seconds, value); None when not sampled
    canary_samples: tuple[tuple[float, float], ...] | None = None
    primary_samples: tuple[tuple[float, float], ...] | None = None
    error: bool = False  # the query could not run (as opposed to: it ran and found no data)
    # set by the engine: the judge's record of a compared check (verdict, statistic, pValue,
    # shift, shiftLow, shiftHigh, canarySamples, primarySamples) and whether it is a dry run
    judgement: Mapping[str, object] | None = None
    dry_run: bool = False


@dataclass(frozen=True)
class WebhookResult:
    name: str
    type: str
    ok: bool  # HTTP status <= 202
    status_code: int | None = None
    message: str = ""


@dataclass(frozen=True)
class CheckPlan:
    """What the engine needs measured before it can decide this tick.

    The operator runs exactly these (webhooks in spec order, per type) and passes the
    results back in Observation.webhooks / Observation.metrics.
    """

    webhooks: tuple[str, ...] = ()  # webhook types to call, in this order
    metrics: bool = False  # run spec.analysis.metrics


COMMAND_PREFIX = "canary.dev/"
COMMAND_NAMES = ("abort", "retry", "resume", "pause", "set-weight", "promote")
"""Commands read from annotations ``canary.dev/<name>``, in the order the engine decides them."""


@dataclass(frozen=True)
class Command:
    """A command annotation on the Canary (see canary.commands and docs/cli.md).

    ``id`` identifies the annotation's value: once the engine has decided a command it
    records the id in ``status.consumedCommands``, so the same value is never acted on twice.
    """

    name: str  # one of COMMAND_NAMES
    id: str
    by: str = ""  # who asked ("" when the value does not say)
    reason: str = ""
    at: str = ""  # when the client set it (as written by the client, informational)
    weight: int | None = None  # set-weight only
    error: str = ""  # the value could not be understood (the command is rejected)

    @property
    def annotation(self) -> str:
        return COMMAND_PREFIX + self.name

    @property
    def actor(self) -> str:
        return f"user:{self.by}" if self.by else "user"

    @property
    def who(self) -> str:
        return self.by or "an unnamed user"


@dataclass(frozen=True)
class Observation:
    """Everything the engine may look at for one tick. `now` is the only clock."""

    now: datetime  # timezone-aware UTC
    target: WorkloadState | None  # None: the target Deployment does not exist
    primary: WorkloadState | None  # None: <target>-primary does not exist yet
    revision: str = ""  # hash of the target pod template (+ tracked configs)
    tracked_configs: dict[str, str] = field(default_factory=dict)  # "configmap/x" -> checksum
    routes: Routes | None = None  # None: routing object missing
    metrics: tuple[MetricResult, ...] | None = None  # None: not run this tick
    webhooks: tuple[WebhookResult, ...] = ()
    error: str | None = None  # an input problem found while observing (reported, never acted on)
    commands: tuple[Command, ...] = ()  # command annotations present on the Canary
    primary_revision: str = ""  # the revision the primary runs (its canary.dev/revision); "" unknown
    rollback_poll: bool = True  # rollback webhooks may be polled this tick (at most once per interval)


# ---- actions: what the operator must do, in order ------------------------------------


@dataclass(frozen=True)
class Initialize:
    """Create or update <target>-primary (from the target), the Services and, with `routes`, the
    routing objects. Never changes weights of an existing route. Without `routes` (while the
    primary is not ready yet) no routing object is created or taken over, so live traffic is
    never sent to a primary that cannot serve it."""

    routes: bool = True


@dataclass(frozen=True)
class SetRoutes:
    primary: int
    canary: int
    mirror: bool = False


@dataclass(frozen=True)
class ScaleTarget:
    """Scale the target (canary) Deployment: `up` restores its replicas, otherwise to zero."""

    up: bool


@dataclass(frozen=True)
class Promote:
    """Copy the target's pod template (and tracked configs) into the primary."""

    revision: str


@dataclass(frozen=True)
class Event:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True)
class Alert:
    severity: Literal["info", "warn", "error"]
    message: str


@dataclass(frozen=True)
class CallWebhooks:
    """Fire-and-report webhooks whose answer does not change this tick (post-rollout)."""

    type: str
    phase: str


Action = Union[Initialize, SetRoutes, ScaleTarget, Promote, Event, Alert, CallWebhooks]
Effect = Union[Initialize, SetRoutes, ScaleTarget, Promote]
"""Actions that change the cluster. The status that decided them is written first (write-ahead
intent), and the engine re-emits any of them the observation shows as not done."""
EFFECTS = (Initialize, SetRoutes, ScaleTarget, Promote)
