"""The metric checks of one analysis step, judged and classified (pure).

Each ``metrics[]`` entry with its result becomes pass, fail or hold:

* a result whose query could not run (``error``) follows ``onError``: fail (default) or hold;
* a fixed bound (thresholdRange/threshold, or any metric without ``compare``) holds the
  instant value as before; no value follows ``noData``: fail (default), pass or hold;
* a compared metric is judged by canary.judge on its two series: Fail fails, NoData follows
  ``noData``, Inconclusive holds (never a silent pass);
* a ``dryRun`` metric is classified and recorded like the others but never decides: its
  failures and holds are returned as advisory.

When several compared checks are judged together (or ``analysis.score`` is set) their verdicts
are also combined into a weighted score (canary.judge.score, Kayenta's classifier), recorded in
the ledger. With ``analysis.score`` the score decides instead of each compared verdict alone:
Fail fails the step, Marginal and Inconclusive hold it; fixed bounds, ``noData`` and ``onError``
still apply to each check.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal, Protocol

from canary.engine.tick import MissingChecks, metric_failure_detail
from canary.judge import Judgement, Score, Scored, Series, Verdict, judge, score
from canary.judge.spec import criteria_for
from canary.models import (
    Analysis,
    AnalysisScore,
    CanarySpec,
    CanaryStatus,
    LedgerEntry,
    LedgerKind,
    LedgerScore,
    Metric,
)
from canary.types import MetricResult, Observation


class Lifecycle(Protocol):
    """What the checks need of the tick (canary/engine/lifecycle.py's Lifecycle, which imports
    this module: named here as a protocol, so that the two do not import each other)."""

    analysis: Analysis
    spec: CanarySpec
    st: CanaryStatus
    obs: Observation
    now: datetime
    target: str
    threshold: int
    planning: bool
    needs_metrics: bool
    virtual: bool
    step_score: LedgerScore | None

    def event(self, reason: str, message: str, type_: Literal["Normal", "Warning"] = "Normal") -> None: ...

    def alert(self, severity: Literal["info", "warn", "error"], message: str) -> None: ...

    def record(self, kind: LedgerKind, message: str = "", actor: str = "operator", checks: bool = True, *,
               action: str | None = None, command: str | None = None) -> None: ...

    def note_dry_run(self, name: str, passed: bool) -> None: ...

    def count_failure(self, check: str, value: float | None, detail: str) -> None: ...

    def rollback_deadline(self, detail: str) -> None: ...

State = Literal["pass", "fail", "hold"]
_SEVERITY = ["pass", "hold", "fail"]


@dataclass(frozen=True)
class Assessment:
    results: tuple[MetricResult, ...]
    """Every result as judged: ok, message and judgement set, dry runs marked."""
    failed: MetricResult | None = None
    """The first deciding metric that failed."""
    hold: MetricResult | None = None
    """The first deciding metric that holds the step (no failure counted)."""
    advisory: tuple[MetricResult, ...] = ()
    """Dry-run metrics that failed or would have held."""
    dry_runs: tuple[tuple[str, State], ...] = ()
    """Every dry-run metric's state (pass, fail, hold)."""
    score: Score | None = None
    """The score over the deciding compared checks (several judged, or analysis.score set)."""
    deciding_score: bool = False
    """analysis.score is set: the score decides the compared verdicts."""

    def score_state(self) -> State:
        if not self.deciding_score or self.score is None:
            return "pass"
        return {"Pass": "pass", "Fail": "fail"}.get(self.score.classification, "hold")  # type: ignore[return-value]

    def score_detail(self, marginal: float, pass_: float) -> str:
        s = self.score
        assert s is not None
        value = "no score" if s.score is None else f"score {s.score:g}"
        bounds = f"pass {pass_:g}, marginal {marginal:g}"
        return f"{value} of the compared checks: {s.classification} ({bounds}): {s.reason}"

    def ledger_score(self) -> LedgerScore | None:
        s = self.score
        if s is None:
            return None
        return LedgerScore(value=s.score, classification=s.classification, reason=s.reason[:256],
                           deciding=True if self.deciding_score else None)


def _no_data(spec: Metric) -> State:
    return {"pass": "pass", "hold": "hold"}.get(spec.no_data or "fail", "fail")  # type: ignore[return-value]


def _judged(spec: Metric, result: MetricResult, weight_changes: tuple[float, ...],
            canary_share: float | None) -> tuple[State, Judgement]:
    assert spec.compare is not None
    j = judge(Series.of(result.canary_samples or ()), Series.of(result.primary_samples or ()),
              criteria_for(spec.compare), weight_changes, canary_share=canary_share)
    if j.verdict is Verdict.FAIL:
        return "fail", j
    if j.verdict is Verdict.NODATA:
        return _no_data(spec), j
    if j.verdict is Verdict.INCONCLUSIVE:
        return "hold", j
    return "pass", j


def classify(spec: Metric, result: MetricResult, weight_changes: tuple[float, ...] = (),
             canary_share: float | None = None, scored: bool = False) -> tuple[State, MetricResult]:
    """The check's state and its result as judged. `scored`: the score decides the compared
    verdict (Fail and Inconclusive count in the score, not in the check's own state)."""
    name = result.name
    if result.error:
        state: State = "hold" if spec.on_error == "hold" else "fail"
        message = result.message + (" (onError: hold)" if state == "hold" else "")
        return state, replace(result, ok=False, message=message, dry_run=bool(spec.dry_run))
    state, message = "pass", result.message
    bounded = result.min is not None or result.max is not None
    if spec.compare is None or bounded:
        if result.value is None:
            state = _no_data(spec)
            message += f" (noData: {spec.no_data or 'fail'})"
        elif not result.ok:
            state = "fail"
    judgement = None
    if spec.compare is not None and state != "fail":
        verdict_state, j = _judged(spec, result, weight_changes, canary_share)
        judgement = j.record()
        compared = (f"metric {name}: {j.verdict.value} against the primary "
                    f"(canary {j.canary_samples}, primary {j.primary_samples} samples): {j.reason}")
        if j.verdict is Verdict.NODATA:
            compared += f" (noData: {spec.no_data or 'fail'})"
        elif scored and j.verdict in (Verdict.FAIL, Verdict.INCONCLUSIVE):
            verdict_state = "pass"  # counted in the score, which decides
            compared += " (scored)"
        message = compared if not bounded else f"{message}; {compared}"
        state = max(state, verdict_state, key=_SEVERITY.index)
    return state, replace(result, ok=state == "pass", message=message, judgement=judgement,
                          dry_run=bool(spec.dry_run))


def _score(specs: dict[str, Metric], judged: list[MetricResult], config: AnalysisScore | None) -> Score | None:
    """The weighted score of the deciding compared checks: recorded when several were judged,
    deciding when analysis.score is set."""
    if len(judged) < (1 if config is not None else 2):
        return None
    config = config or AnalysisScore()
    weights, critical = config.weights or {}, set(config.critical or [])
    scored = []
    for m in judged:
        assert m.judgement is not None
        weight = float(weights.get(m.name, 1.0))
        scored.append(Scored(m.name, Verdict(m.judgement["verdict"]), weight, m.name in critical))
    return score(scored, config.pass_value, config.marginal_value)


def assess(specs: list[Metric], results: tuple[MetricResult, ...],
           last_weight_change: datetime | None, canary_weight: int | None = None,
           score_config: AnalysisScore | None = None) -> Assessment:
    """Classify every result by its spec (matched by name, in spec order); `canary_weight`
    (percent) is the canary's share of the traffic while the samples were taken;
    `score_config` (analysis.score) lets the score decide the compared verdicts."""
    share = None if not canary_weight else canary_weight / 100.0
    changes = () if last_weight_change is None else (last_weight_change.timestamp(),)
    by_name = {s.name: s for s in specs}
    out: list[MetricResult] = []
    failed = hold = None
    advisory: list[MetricResult] = []
    dry_runs: list[tuple[str, State]] = []
    compared: list[MetricResult] = []
    scored = score_config is not None
    for result in results:
        spec = by_name.get(result.name)
        if spec is None:
            out.append(result)
            continue
        state, judged = classify(spec, result, changes, share, scored=scored and not spec.dry_run)
        out.append(judged)
        if spec.dry_run:
            dry_runs.append((result.name, state))
        elif judged.judgement is not None:
            compared.append(judged)
        if state == "pass":
            continue
        if spec.dry_run:
            advisory.append(judged)
        elif state == "fail" and failed is None:
            failed = judged
        elif state == "hold" and hold is None:
            hold = judged
    return Assessment(tuple(out), failed, hold, tuple(advisory), tuple(dry_runs),
                      _score(by_name, compared, score_config), scored)


def last_run_start(ledger: Sequence[LedgerEntry] | None) -> datetime | None:
    """When the current run started (an advisory Canary's canary gets its traffic from then on,
    not from weight changes): the warm-up is measured from it."""
    for entry in reversed(ledger or []):
        if entry.kind in ("start", "restart"):
            return entry.time
    return None


def last_weight_change(ledger: Sequence[LedgerEntry] | None) -> datetime | None:
    """When the canary weight last changed, from the ledger (entries record the weight after
    each decision): the warm-up is measured from it."""
    when, previous = None, 0
    for entry in ledger or []:
        if entry.weight != previous:
            when = entry.time
        previous = entry.weight
    return when


def detail(metric: MetricResult) -> str:
    """A short reason for a failed or holding metric."""
    if metric.judgement is not None and metric.judgement.get("verdict") != "Pass":
        return metric.message
    if metric.error:
        return metric.message
    return metric_failure_detail(metric)


def metric_step(t: Lifecycle) -> bool:
    """Run the metric checks of an analysis step on the tick `t`. True: the step may advance;
    False: a check failed (counted) or holds (bounded by progressDeadlineSeconds)."""
    specs = t.analysis.metrics or []
    if not specs:
        return True
    if t.planning:
        t.needs_metrics = True
        return True
    if t.obs.metrics is None or any(s.name not in {m.name for m in t.obs.metrics} for s in specs):
        raise MissingChecks("metrics")
    st = t.st
    if t.virtual:
        # advisory: the canary's traffic (direct, never routed) does not follow the virtual
        # weight: no share to correct for, and the warm-up counts from the run's start
        a = assess(specs, t.obs.metrics, last_run_start(st.ledger), None, t.analysis.score)
    else:
        a = assess(specs, t.obs.metrics, last_weight_change(st.ledger), st.canary_weight, t.analysis.score)
    t.obs = replace(t.obs, metrics=a.results)  # the ledger records the checks as judged
    t.step_score = a.ledger_score()
    for name, state in a.dry_runs:
        if state != "hold":
            t.note_dry_run(name, state == "pass")
    for m in a.advisory:
        t.event("AdvisoryCheckFailed", f"dryRun metric of {t.target}: {detail(m)}", "Warning")
        t.alert("warn", f"Advisory (dryRun) check of {t.target} did not pass: {detail(m)}")
    score_state = a.score_state()
    if a.failed is not None or score_state == "fail":
        st.held_since = None
        if a.failed is not None:
            t.count_failure(a.failed.name, a.failed.value, detail(a.failed))
        else:
            assert a.score is not None and t.analysis.score is not None
            t.count_failure("score", a.score.score, _score_detail(t, a))
        return False
    if a.hold is not None:
        hold(t, a.hold.name, detail(a.hold))
        return False
    if score_state == "hold":
        hold(t, "score", _score_detail(t, a))
        return False
    st.held_since = None
    return True


def _score_detail(t: Lifecycle, a: Assessment) -> str:
    config = t.analysis.score
    assert config is not None
    return a.score_detail(config.marginal_value, config.pass_value)


def hold(t: Lifecycle, name: str, why: str) -> None:
    """Do not advance and count no failure, until progressDeadlineSeconds after the hold began."""
    st = t.st
    if st.held_since is None:
        st.held_since = t.now
    held = (t.now - st.held_since).total_seconds()
    deadline = t.spec.progress_deadline
    if held >= deadline:
        st.held_since = None
        what = "the score" if name == "score" else f"metric {name}"
        t.rollback_deadline(f"{what} held the analysis for {held:.0f}s "
                            f"(progressDeadlineSeconds {deadline}): {why}")
        return
    t.event("Hold", f"Hold {t.target} advancement: {why}", "Warning")
    t.record("wait", f"{why} (held {held:.0f}s of {deadline}s)", action="hold")


def limit_reached(t: Lifecycle) -> str | None:
    """Why the failed checks end the release, or None. consecutiveFailures N > 0: N in a
    row; Flagger's cumulative threshold applies beside it only when it is set."""
    st, analysis = t.st, t.analysis
    n = analysis.consecutive_failures or 0
    if n and (st.consecutive_failures or 0) >= n:
        return f"{st.consecutive_failures} failed checks in a row (consecutiveFailures {n})"
    if (not n or analysis.threshold) and st.failed_checks >= t.threshold:
        return "threshold"
    return None
