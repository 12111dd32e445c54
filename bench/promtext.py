"""The operator's /metrics read back: histograms summarised as count, mean, p50 and p99.

Quantiles are estimated from the cumulative buckets as Prometheus' histogram_quantile does
(linear interpolation inside the bucket)."""

from __future__ import annotations

import math
import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def scrape(url: str, timeout: float = 10.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def histograms(text: str, name: str) -> dict[tuple[tuple[str, str], ...], dict[str, float]]:
    """{labels (without le): {"count", "sum", le: cumulative count...}} of histogram `name`."""
    out: dict[tuple[tuple[str, str], ...], dict] = {}
    for fam in text_string_to_metric_families(text):
        if fam.name != name:
            continue
        for s in fam.samples:
            labels = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
            h = out.setdefault(labels, {"buckets": []})
            if s.name.endswith("_bucket"):
                h["buckets"].append((float(s.labels["le"]), s.value))
            elif s.name.endswith("_count"):
                h["count"] = s.value
            elif s.name.endswith("_sum"):
                h["sum"] = s.value
    return out


def quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    buckets = sorted(buckets)
    if not buckets or buckets[-1][1] == 0:
        return None
    rank = q * buckets[-1][1]
    prev_le, prev_n = 0.0, 0.0
    for le, n in buckets:
        if n >= rank:
            if math.isinf(le):
                return prev_le  # as histogram_quantile: the highest finite bound
            if n == prev_n:
                return le
            return prev_le + (le - prev_le) * (rank - prev_n) / (n - prev_n)
        prev_le, prev_n = le, n
    return prev_le


def diff(after: dict, before: dict) -> dict:
    """Histograms of what happened between two scrapes."""
    out = {}
    for labels, h in after.items():
        b = before.get(labels, {"buckets": [], "count": 0.0, "sum": 0.0})
        prev = dict(b["buckets"])
        out[labels] = {"buckets": [(le, n - prev.get(le, 0.0)) for le, n in h["buckets"]],
                       "count": h.get("count", 0.0) - b.get("count", 0.0),
                       "sum": h.get("sum", 0.0) - b.get("sum", 0.0)}
    return out


def summary(hists: dict, key: str) -> dict[str, dict[str, float | None]]:
    """{label value of `key`: {count, mean, p50, p99, total seconds}} for the histograms with samples."""
    out: dict[str, dict[str, float | None]] = {}
    for labels, h in sorted(hists.items()):
        count = h.get("count") or 0.0
        if not count:
            continue
        name = "/".join(v for k, v in labels if k in key.split(","))
        p50, p99 = quantile(0.5, h["buckets"]), quantile(0.99, h["buckets"])
        out[name] = {"count": int(count), "total_seconds": round(h.get("sum", 0.0), 3),
                     "mean": round(h.get("sum", 0.0) / count, 4),
                     "p50": None if p50 is None else round(p50, 4), "p99": None if p99 is None else round(p99, 4)}
    return out


def counter(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        if fam.name != name:
            continue
        for s in fam.samples:
            if s.name.endswith("_total") or s.name == name:
                out[tuple(sorted(s.labels.items()))] = s.value
    return out
