"""Advisory mode (``analysis.advisory: true``) and the tally of advisory verdicts.

An advisory Canary runs the normal state machine on a *virtual* weight (``status.advisory.weight``):
every decision is computed, recorded and notified as usual, but a route that is not 100/0 is
never written. The routes stay 100 % primary, nothing is mirrored; the canary is scaled up and
analysed on whatever traffic reaches it directly. When the analysis would promote or roll back,
the verdict is recorded (``status.advisory.verdict``, an ``advise`` ledger entry, the ``Advisory``
condition, an event and an alert) and the run waits in WaitingPromotion for a person: ``promote``
promotes for real, ``abort`` (or a rollback webhook) rolls back, a new revision starts over.

During a tick of an advisory Canary ``status.canaryWeight`` holds the virtual weight (the phases
and strategies read it as they always do); ``finish()`` puts the routed weight back before the
status is written, so ``canaryWeight`` is always the routed weight (0).

The tally: at the real outcome of a run (a promotion decided, a rollback) each advisory verdict of
the run (the whole advisory Canary's, each dryRun metric's) is compared with it and counted as an
agreement or a disagreement in ``status.advisory.tallies`` (canary_advisory_disagreements_total).
"""

from __future__ import annotations

from typing import Literal

from canary.ledger import clip
from canary.models import (
    ADVISORY_CANARY,
    ADVISORY_TALLIES_MAX,
    AdvisoryStatus,
    AdvisoryTally,
    LedgerEntry,
    LedgerScore,
)
from canary.engine.tick import Tick
from canary.types import Phase, Routes

ADVISORY = "Advisory"
"""Condition type of an advisory Canary: reason Analysing, WouldPromote or WouldRollBack."""
_RUN = (Phase.WAITING, Phase.PROGRESSING, Phase.WAITING_PROMOTION)
_TRAFFIC_EVENTS = ("AdvanceWeight", "AdvanceIteration", "RouteToCanary", "AdvancePrimaryWeight")
_WOULD = {"Promote": "would promote", "Rollback": "would roll back"}


class Advisory(Tick):
    virtual: bool = False
    """This tick decides on the virtual weight of an advisory Canary."""
    real_routes: Routes | None = None
    real_weight: int = 0
    moved: bool = False
    step_score: LedgerScore | None = None
    """The score over the compared checks of this tick's analysis step (canary.engine.judging)."""

    # -- the virtual weight ----------------------------------------------------------------

    def begin_advisory(self, phase: Phase) -> None:
        """Called once per tick after converge(): an advisory Canary's analysis continues on
        its virtual weight. Turning advisory on during a run takes the traffic off the canary
        at once (the analysis goes on from the weight it had)."""
        st = self.st
        if not self.analysis.advisory:
            if st.condition(ADVISORY) is not None:
                st.conditions = [c for c in st.conditions if c.type != ADVISORY]
            return
        adv = st.advisory or AdvisoryStatus()
        self.virtual = True
        self.real_routes = self.routes
        self.real_weight = st.canary_weight
        weight = st.canary_weight if adv.weight is None else adv.weight
        mirror = bool(self.routes and self.routes.mirrored) if adv.weight is None else bool(adv.mirror)
        routes = self.routes
        if phase in _RUN and routes is not None and (routes.primary, routes.canary, routes.mirrored) != (100, 0, False):
            Tick.route(self, 100, 0)
            self.real_routes, self.real_weight = self.routes, 0
        st.canary_weight = weight
        if self.routes is not None:
            self.routes = Routes(100 - weight, weight, mirror)
        if phase in _RUN and adv.verdict is None:
            self.set_condition(ADVISORY, "True", "Analysing",
                               f"advisory: the analysis is at weight {weight} (not routed); traffic stays on "
                               f"the primary")

    def finish(self) -> None:
        """End of step(): the virtual weight goes to status.advisory, the routed one back to
        status.canaryWeight."""
        if not self.virtual:
            return
        st = self.st
        adv = self.advisory_status()
        if self.obs.routes is not None or self.moved:
            adv.weight = st.canary_weight
            adv.mirror = True if self.routes is not None and self.routes.mirrored else None
        st.advisory = adv
        st.canary_weight = self.real_routes.canary if self.real_routes is not None else self.real_weight
        self.virtual = False

    def route(self, primary: int, canary: int, mirror: bool = False) -> None:
        if not self.virtual or (primary, canary, mirror) == (100, 0, False):
            super().route(primary, canary, mirror)
            if self.virtual:
                self.real_routes, self.real_weight, self.moved = self.routes, 0, True
            return
        # advisory: the decision moves the virtual weight; the routes stay on the primary
        real = self.real_routes
        if real is not None and (real.primary, real.canary, real.mirrored) != (100, 0, False):
            Tick.route(self, 100, 0)
            self.real_routes, self.real_weight = self.routes, 0
        self.routes = Routes(primary, canary, mirror)
        self.st.canary_weight = canary
        self.moved = True

    def advisory_status(self) -> AdvisoryStatus:
        """status.advisory of this tick's copy (created when missing)."""
        if self.st.advisory is None:
            self.st.advisory = AdvisoryStatus()
        return self.st.advisory

    # -- recording, marked advisory ----------------------------------------------------------

    def event(self, reason: str, message: str, type_: Literal["Normal", "Warning"] = "Normal") -> None:
        if self.virtual and reason in _TRAFFIC_EVENTS:
            message = f"Advisory (traffic not shifted): {message}"
        super().event(reason, message, type_)

    def alert(self, severity: Literal["info", "warn", "error"], message: str) -> None:
        if self.virtual and not message.startswith("Advisory"):
            message = f"Advisory (traffic not shifted): {message}"
        super().alert(severity, message)

    def ledger_entries(self) -> list[LedgerEntry]:
        entries = super().ledger_entries()
        adv = self.st.advisory
        advisory_weight = adv.weight if self.analysis.advisory and adv is not None else None
        score = self.step_score
        if advisory_weight is None and score is None:
            return entries
        out = []
        for entry in entries:
            update: dict[str, object] = {}
            if advisory_weight is not None:
                update["advisory_weight"] = advisory_weight
            if score is not None and entry.checks:
                update["score"] = score
            out.append(entry.model_copy(update=update) if update else entry)
        return out

    # -- the verdict and the wait for a person -----------------------------------------------

    def advise(self, verdict: Literal["Promote", "Rollback"], reason: str) -> None:
        """The analysis of an advisory Canary decided: record it, say it, wait for a person."""
        adv = self.advisory_status()
        if adv.verdict is not None:
            return
        adv.verdict, adv.reason, adv.time = verdict, clip(reason, 512), self.now
        self.st.waiting_since = None
        self.st.held_since = None
        would = _WOULD[verdict]
        self.await_person()
        self.record("advise", reason, action=f"advise: {would}")
        self.event("AdvisoryVerdict", f"Advisory analysis of {self.target} {would}: {reason}; traffic was not "
                   "shifted; waiting for promote or abort", "Warning" if verdict == "Rollback" else "Normal")
        self.alert("error" if verdict == "Rollback" else "info",
                   f"Advisory: the analysis of {self.target} {would}: {reason}. Traffic was not shifted; "
                   f"waiting for a person to promote or abort.")

    def await_person(self) -> None:
        adv = self.advisory_status()
        would = _WOULD[adv.verdict or "Promote"]
        message = (f"Advisory: the analysis {would}: {adv.reason}. Traffic stays on the primary; "
                   f"waiting for a person: canary promote or canary abort.")
        message = clip(message, 1024) or ""
        self.set_phase(Phase.WAITING_PROMOTION, message)
        reason = "WouldPromote" if adv.verdict == "Promote" else "WouldRollBack"
        self.set_condition(ADVISORY, "True", reason, message)
        self.wake_in(self.interval)

    def advised(self) -> bool:
        """An advisory Canary whose run has its verdict: only a person's decision moves it."""
        adv = self.st.advisory
        return self.virtual and adv is not None and adv.verdict is not None

    def reset_advisory(self) -> None:
        """A new run: the verdicts of the last one are forgotten (the tallies stay)."""
        adv = self.st.advisory
        if adv is None:
            return
        tallies = adv.tallies
        weight = 0 if self.analysis.advisory else None
        self.st.advisory = AdvisoryStatus(weight=weight, tallies=tallies) if (tallies or weight is not None) else None
        if self.virtual:
            self.st.canary_weight = 0
            if self.routes is not None:
                self.routes = Routes(100, 0, False)
            self.set_condition(ADVISORY, "True", "Analysing",
                               "advisory: a new run; traffic stays on the primary")

    def checks_said(self) -> str:
        """The last checks in a few words, for a verdict's reason."""
        said = []
        for m in self.obs.metrics or ():
            verdict = (m.judgement or {}).get("verdict")
            if m.dry_run:
                continue
            if verdict is not None:
                said.append(f"{m.name} {verdict}")
            elif m.value is not None:
                said.append(f"{m.name} {m.value:g}")
        return f"; last checks: {', '.join(said)}" if said else ""

    # -- the tally ---------------------------------------------------------------------------

    def note_dry_run(self, name: str, passed: bool) -> None:
        """A dryRun metric's verdict at one step: Fail once it failed in the run."""
        adv = self.advisory_status()
        verdicts = dict(adv.dry_run or {})
        if verdicts.get(name) == "Fail":
            return
        verdicts[name] = "Pass" if passed else "Fail"
        if len(verdicts) <= ADVISORY_TALLIES_MAX:
            adv.dry_run = verdicts

    def tally(self, promoted: bool, how: str) -> None:
        """The run's real outcome (a promotion decided, or a rollback): count where each advisory
        verdict of the run agreed with it. Once per run."""
        adv = self.st.advisory
        if self.analysis.advisory:
            would = _WOULD[adv.verdict] if adv is not None and adv.verdict else "had no verdict yet"
            self.set_condition(ADVISORY, "False", "Decided", clip(f"advisory: the analysis {would}; {how}", 1024) or "")
        if adv is None or adv.outcome is not None:
            return
        verdicts: list[tuple[str, bool, str]] = []
        if self.analysis.advisory and adv.verdict is not None:
            verdicts.append((ADVISORY_CANARY, adv.verdict == "Promote", f"{_WOULD[adv.verdict]} ({adv.reason})"))
        for name, verdict in sorted((adv.dry_run or {}).items()):
            verdicts.append((name, verdict == "Pass", f"dryRun {name} {'passed' if verdict == 'Pass' else 'failed'}"))
        if not verdicts:
            return
        adv.outcome = clip(how, 512)
        tallies = list(adv.tallies or [])
        for check, would_promote, said in verdicts:
            current = next((t for t in tallies if t.check == check), None)
            if current is None:
                if len(tallies) >= ADVISORY_TALLIES_MAX:
                    continue
                current = AdvisoryTally(check=check, agreed=0, disagreed=0)
                tallies.append(current)
            index = tallies.index(current)
            if would_promote == promoted:
                tallies[index] = current.model_copy(update={"agreed": (current.agreed or 0) + 1})
            else:
                tallies[index] = current.model_copy(update={
                    "disagreed": (current.disagreed or 0) + 1, "last_time": self.now,
                    "last": clip(f"{said}; {how}", 512)})
        adv.tallies = tallies
        adv.dry_run = None
