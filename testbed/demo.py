"""The demo: on the local testbed, canary-operator promotes a good release of podinfo and
rolls back a bad one, printing each release's progress as it happens.

    python -m testbed.demo [--keep]     (scripts/demo.sh sets everything up first)
"""

from __future__ import annotations

import argparse
import sys
import time

from testbed import cluster, ops

NS = "demo"
NAME = "podinfo"


def _progress_line(st: dict) -> str:
    cr = ops.success_rate(NS, NAME)
    pr = ops.success_rate(NS, f"{NAME}-primary")
    fmt = lambda v: "   -  " if v is None or v != v else f"{v:5.1f}%"  # noqa: E731  (None or NaN: no traffic)
    return (
        f"  {time.strftime('%H:%M:%S')}  {st.get('phase') or '-':<17} weight={st.get('canaryWeight', 0):>3}  "
        f"failedChecks={st.get('failedChecks', 0)}  success rate: primary {fmt(pr)} canary {fmt(cr)}"
    )


def follow(client, until: set[str], timeout: float) -> dict:
    """Print a line each time phase, weight or failed checks change; return the final status."""
    last = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = ops.canary_status(client, NS, NAME)
        key = (st.get("phase"), st.get("canaryWeight"), st.get("failedChecks"))
        if key != last:
            print(_progress_line(st), flush=True)
            last = key
        if st.get("phase") in until:
            return st
        time.sleep(0.3)
    raise TimeoutError(f"release did not finish within {timeout:.0f}s (last status {last})")


def release(client, title: str, image: str, error_rate: str, expect: str) -> bool:
    print(f"\n== {title}: image {image}, simulated error rate {error_rate}", flush=True)
    start = time.monotonic()
    before = ops.canary_status(client, NS, NAME).get("lastTransitionTime")
    ops.patch_deployment(client, NS, NAME, image=image, annotations={"sim.canary.dev/error-rate": error_rate})
    # wait for the operator to pick the new revision up before following it
    ops.wait_until(
        lambda: ops.canary_status(client, NS, NAME).get("phase") in ("Progressing", "Waiting")
        and ops.canary_status(client, NS, NAME).get("lastTransitionTime") != before,
        30,
        "the new revision to be detected",
    )
    st = follow(client, {"Succeeded", "Failed"}, 240)
    took = time.monotonic() - start
    ok = st.get("phase") == expect
    why = ""
    if st.get("phase") == "Failed":
        why = f" — {(st.get('lastFailure') or {}).get('message', '')}"
    print(f"OUTCOME {title}: {st.get('phase')} in {took:.0f}s (expected {expect}){why}", flush=True)
    return ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m testbed.demo")
    ap.add_argument("--keep", action="store_true", help="leave the testbed running afterwards")
    args = ap.parse_args(argv)

    was_running = cluster.status()["running"]
    info = cluster.up()
    cluster.say(f"testbed up in {info['started_in_seconds']}s; Prometheus {info['prometheus']}")
    cluster.install_crds(cluster.paths(), [cluster.REPO / "crds"])
    client = ops.api_client()
    op = ops.OperatorProcess(name="demo-operator").start()
    cluster.say(f"operator started (log: {op.log_path})")
    ok = True
    try:
        ops.ensure_namespace(client, NS)
        ops.apply_file(client, cluster.REPO / "examples" / "podinfo" / "deployment.yaml", NS)
        ops.apply_file(client, cluster.REPO / "examples" / "podinfo" / "canary.yaml", NS)
        print("\n== Initialization: podinfo-primary, Services and VirtualService created", flush=True)
        st = follow(client, {"Initialized", "Succeeded"}, 120)
        print(f"OUTCOME initialization: {st.get('phase')}", flush=True)
        # let both workloads carry traffic for a moment so the rates have data
        time.sleep(3)
        ok &= release(client, "good release", "ghcr.io/stefanprodan/podinfo:6.0.1", "0", "Succeeded")
        ok &= release(client, "bad release", "ghcr.io/stefanprodan/podinfo:6.0.2", "0.5", "Failed")
    except Exception as e:  # the demo explains itself, then fails
        print(f"demo failed: {e}\noperator log:\n{op.log_tail()}", file=sys.stderr)
        ok = False
    finally:
        op.stop()
        try:
            import kubernetes

            kubernetes.client.CoreV1Api(client).delete_namespace(NS)
        except Exception:
            pass
        if not args.keep and not was_running:
            cluster.down()
        else:
            cluster.say("testbed left running: `make testbed-down` stops it")
    print("\nDEMO " + ("PASSED" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
