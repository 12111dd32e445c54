"""`canary migrate`: Flagger manifests rewritten to canary.dev/v1beta1, byte for byte apart from the
apiVersion, every differing field reported with its line, unsupported providers refused."""

from __future__ import annotations

import difflib
import io
from pathlib import Path

import pytest
import yaml

from canary import migrate
from canary.models import AlertProvider, Canary, MetricTemplate

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "flagger"
MODELS = {"Canary": Canary, "MetricTemplate": MetricTemplate, "AlertProvider": AlertProvider}

MIXED = """\
# shop: podinfo's release, as Flagger had it
apiVersion: apps/v1            # not ours: untouched
kind: Deployment
metadata: {name: podinfo}
---
apiVersion: "flagger.app/v1beta1"   # quoted, with a comment
kind: Canary
metadata:
  name: podinfo
  namespace: shop
spec:
  provider: istio
  targetRef: {apiVersion: apps/v1, kind: Deployment, name: podinfo}
  service:
    port: 9898

  analysis:
    interval: 5s       # Flagger clamps this to 10s
    threshold: 3
    maxWeight: 50
    stepWeight: 20
    webhooks:
      - name: approve
        type: confirm-rollout
        url: http://gate.shop/approve
    alerts:
      - name: team
        providerRef: {name: slack}
    metrics:
      - name: latency
        templateRef: {name: latency}
---
apiVersion: flagger.app/v1beta1
kind: MetricTemplate
metadata: {name: dd}
spec:
  provider: {type: datadog, address: https://api.datadoghq.com}
  query: avg:latency
"""


def test_only_the_api_version_changes() -> None:
    res = migrate.migrate_text(MIXED, "shop.yaml")
    assert res.changed
    diff = [line for line in difflib.unified_diff(MIXED.splitlines(), res.text.splitlines(), lineterm="", n=0)
            if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    assert sorted(diff) == ['+apiVersion: "canary.dev/v1beta1"   # quoted, with a comment',
                            "+apiVersion: canary.dev/v1beta1",
                            '-apiVersion: "flagger.app/v1beta1"   # quoted, with a comment',
                            "-apiVersion: flagger.app/v1beta1"]
    assert "apiVersion: apps/v1            # not ours: untouched" in res.text
    assert "# Flagger clamps this to 10s" in res.text and "\n\n  analysis:" in res.text


def test_every_difference_is_reported_with_its_line() -> None:
    res = migrate.migrate_text(MIXED, "shop.yaml")
    by_field = {(f.kind, f.field): f for f in res.findings}
    lines = MIXED.splitlines()

    def line_of(field: str, kind: str = "Canary") -> str:
        return lines[by_field[(kind, field)].line - 1]

    assert by_field[("Canary", "apiVersion")].severity == "changed"
    assert "5s is honoured" in by_field[("Canary", "spec.analysis.interval")].message
    assert line_of("spec.analysis.interval").strip().startswith("interval: 5s")
    assert "clamped to maxWeight 50 (Flagger overshoots to 60)" in by_field[("Canary", "spec.analysis.stepWeight")].message
    assert "at most once per interval" in by_field[("Canary", "spec.analysis.webhooks[approve]")].message
    assert "receives every alert" in by_field[("Canary", "spec.analysis.alerts[team]")].message
    assert "renders as 1m" in by_field[("Canary", "spec.analysis.metrics[latency]")].message
    assert "interval*(threshold-1)" in by_field[("Canary", "spec.analysis.threshold")].message
    err = by_field[("MetricTemplate", "spec.provider.type")]
    assert err.severity == "error" and "'datadog' is not implemented" in err.message
    assert line_of("spec.provider.type", "MetricTemplate").startswith("  provider: {type: datadog")
    assert all(f.path == "shop.yaml" and f.line > 0 for f in res.findings)


def test_unsupported_router_is_an_error() -> None:
    text = MIXED.replace("provider: istio", "provider: linkerd")
    errors = [f for f in migrate.migrate_text(text).findings if f.severity == "error"]
    assert {f.field for f in errors} == {"spec.provider", "spec.provider.type"}


@pytest.mark.parametrize("fixture", sorted(p.name for p in FIXTURES.glob("*.yaml")))
def test_flagger_fixtures_migrate_and_validate(fixture: str) -> None:
    text = (FIXTURES / fixture).read_text()
    res = migrate.migrate_text(text, fixture)
    docs = [d for d in yaml.safe_load_all(res.text) if d]
    ours = [d for d in docs if d.get("kind") in MODELS]
    assert ours, fixture
    for d in ours:
        assert d["apiVersion"] == "canary.dev/v1beta1"
        MODELS[d["kind"]].model_validate(d)  # field-compatible: our models take them as they are
    # nothing but apiVersion lines changed, comments included
    changed = [a for a, b in zip(text.splitlines(), res.text.splitlines()) if a != b]
    assert changed and all("flagger.app/v1beta1" in line for line in changed)
    assert len(text.splitlines()) == len(res.text.splitlines())
    # a second run changes nothing (idempotent)
    again = migrate.migrate_text(res.text, fixture)
    assert again.text == res.text and not again.changed


def test_cli_report_write_and_stdout(tmp_path: Path) -> None:
    tree = tmp_path / "apps"
    (tree / "shop").mkdir(parents=True)
    (tree / "shop" / "canary.yaml").write_text(MIXED.replace("datadog", "prometheus"))
    (tree / "notes.txt").write_text("not yaml: ignored")
    (tree / "plain.yml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    out = io.StringIO()
    args = migrate.build_parser().parse_args([str(tree)])
    assert migrate.run(args, out=out, err=io.StringIO()) == 0
    report = out.getvalue()
    assert "would rewrite 1 of 2 file(s); 0 error(s) (run with --write" in report
    assert f"{tree / 'shop' / 'canary.yaml'}:6: changed: Canary podinfo: apiVersion" in report
    assert "flagger.app" in (tree / "shop" / "canary.yaml").read_text()  # a dry run writes nothing

    out = io.StringIO()
    assert migrate.run(migrate.build_parser().parse_args(["-w", "-q", str(tree)]), out=out) == 0
    assert "differs" not in out.getvalue() and "rewrote 1 of 2 file(s)" in out.getvalue()
    assert "flagger.app" not in (tree / "shop" / "canary.yaml").read_text()

    bad = tmp_path / "dd.yaml"
    bad.write_text(MIXED)
    out, err = io.StringIO(), io.StringIO()
    assert migrate.run(migrate.build_parser().parse_args(["--stdout", str(bad)]), out=out, err=err) == 1
    assert out.getvalue() == migrate.migrate_text(MIXED).text and "1 error(s)" in err.getvalue()

    broken = tmp_path / "broken.yaml"
    broken.write_text("a: [unclosed\n")
    err = io.StringIO()
    assert migrate.run(migrate.build_parser().parse_args([str(broken)]), out=io.StringIO(), err=err) == 2
    assert "canary migrate:" in err.getvalue()


def test_the_canary_cli_has_migrate(tmp_path: Path, capsys) -> None:
    from canary import cli

    f = tmp_path / "c.yaml"
    f.write_text((FIXTURES / "canary-progressive.yaml").read_text())
    assert cli.main(["migrate", "--write", str(f)]) == 0
    assert "rewrote 1 of 1 file(s)" in capsys.readouterr().out
    assert "flagger.app" not in f.read_text()
