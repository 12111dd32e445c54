"""What `canary explain` says about advisory verdicts (analysis.advisory, dryRun metrics), their
tally against the real outcomes, and the score over the compared checks of a step."""

from __future__ import annotations

from canary.cli.views import View, cut, hhmmss
from canary.models import ADVISORY_CANARY, LedgerEntry, LedgerScore

_WOULD = {"Promote": "would promote", "Rollback": "would roll back"}


def advisory_lines(view: View) -> list[str]:
    """The verdict of an advisory Canary's run and the tallies, as lines of text."""
    adv = view.status.advisory
    if adv is None:
        return []
    lines = []
    if view.analysis.advisory:
        head = f"Advisory: traffic is never shifted; the analysis is at weight {adv.weight or 0} (not routed)"
        if adv.verdict is not None:
            when = f" at {hhmmss(adv.time)}" if adv.time else ""
            head = f"Advisory: the analysis {_WOULD[adv.verdict]}{when}: {cut(adv.reason or '', 160)}"
            head += f"; then {adv.outcome}" if adv.outcome else "; waiting for a person: canary promote or canary abort"
        lines.append(head)
    for tally in adv.tallies or []:
        what = "the advisory verdict" if tally.check == ADVISORY_CANARY else f"dryRun {tally.check}"
        text = (f"Advisory tally: {what} agreed with {tally.agreed or 0} and disagreed with {tally.disagreed or 0} "
                f"real outcomes")
        if tally.last:
            text += f" (last {hhmmss(tally.last_time)}: {cut(tally.last, 120)})"
        lines.append(text)
    return lines


def weight_cell(entry: LedgerEntry) -> str:
    """The WEIGHT column: the routed weight, and an advisory Canary's virtual one beside it."""
    if entry.advisory_weight is None:
        return str(entry.weight)
    return f"{entry.weight} (advisory {entry.advisory_weight})"


def score_line(score: LedgerScore) -> str:
    value = "-" if score.value is None else f"{score.value:g}"
    deciding = ", deciding" if score.deciding else ""
    return f"score {value} {score.classification}{deciding}: {cut(score.reason or '', 120)}"
