"""The weighted score over judged checks (Kayenta's classifier without its silent passes)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from canary.judge import Scored, Verdict, score

P, F, I, N = Verdict.PASS, Verdict.FAIL, Verdict.INCONCLUSIVE, Verdict.NODATA


def test_weighted_pass_marginal_fail():
    assert score([Scored("a", P, 3), Scored("b", F, 1)]).classification == "Pass"  # 75
    s = score([Scored("a", P, 2), Scored("b", F, 1)])
    assert s.score == pytest.approx(66.67) and s.classification == "Marginal" and "b" in s.reason
    assert score([Scored("a", P, 1), Scored("b", F, 2)]).classification == "Fail"


def test_unjudged_checks_are_left_out_of_the_ratio():
    s = score([Scored("a", P, 2), Scored("b", F, 1), Scored("c", N, 1)])
    assert s.score == pytest.approx(66.67)


def test_nothing_judged_is_inconclusive_not_100():
    # Kayenta scores a group with nothing left as 100: a silent pass
    assert score([]).classification == "Inconclusive"
    assert score([Scored("a", N), Scored("b", I)]).classification == "Inconclusive"
    assert score([Scored("a", P), Scored("b", N)]).classification == "Inconclusive"  # half unjudged


def test_a_failed_critical_check_scores_zero():
    s = score([Scored("a", P, 10), Scored("b", F, 1, critical=True)])
    assert s.score == 0 and s.classification == "Fail" and "b" in s.reason


def test_bad_thresholds_and_weights_are_rejected():
    with pytest.raises(ValueError):
        score([Scored("a", P)], pass_threshold=40, marginal_threshold=50)
    with pytest.raises(ValueError):
        score([Scored("a", P, -1)])


@given(st.lists(st.tuples(st.sampled_from([P, F, I, N]), st.floats(0.1, 10)), min_size=1, max_size=8))
def test_score_is_a_percentage_and_all_passing_passes(items):
    s = score([Scored(str(i), v, w) for i, (v, w) in enumerate(items)])
    assert s.score is None or 0 <= s.score <= 100
    if all(v is P for v, _ in items):
        assert s.classification == "Pass" and s.score == 100
    if s.classification == "Pass":
        assert not any(v is F for v, _ in items) or s.score >= 75
