"""kubectl-plugin conventions of the `canary` CLI: global flags anywhere, Go durations, output
formats, exit codes, errors without tracebacks (the real client against a local HTTP server
answering as an API server does), version and completion."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from canary import cli
from canary.cli.parser import build_parser, prog_name
from canary.cli.version import candidates
from tests.unit.test_cli import FakeApi, canary, run

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("argv", [
    ["-n", "shop", "--context", "prod", "get", "podinfo"],
    ["get", "podinfo", "-n", "shop", "--context", "prod"],
    ["--context", "prod", "get", "-n", "shop", "podinfo"],
])
def test_global_flags_before_or_after_the_command(argv):
    args = build_parser().parse_args(argv)
    assert (args.namespace, args.context, args.name) == ("shop", "prod", "podinfo")


def test_all_global_flags_on_every_cluster_command():
    for command in ("get", "status", "explain", "abort", "version"):
        extra = ["x"] if command in ("explain", "abort") else []
        args = build_parser().parse_args([command, *extra, "--kubeconfig", "/k", "--context", "c", "-A",
                                          "--request-timeout", "5s", "--as", "bob", "--no-color"])
        assert (args.kubeconfig, args.context, args.all_namespaces, args.request_timeout, args.as_user,
                args.no_color) == ("/k", "c", True, 5.0, "bob", True)
    assert build_parser().parse_args(["get", "--request-timeout", "0"]).request_timeout is None


def test_go_durations_for_timeouts(capsys):
    assert build_parser().parse_args(["status", "x", "--wait", "--timeout", "5m"]).timeout == 300
    assert build_parser().parse_args(["status", "x", "--timeout", "1h30m"]).timeout == 5400
    assert build_parser().parse_args(["abort", "x", "--timeout", "90"]).timeout == 90  # plain seconds too
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["status", "x", "--timeout", "5 minutes"])
    assert e.value.code == 2 and "invalid duration" in capsys.readouterr().err


def test_output_formats_of_a_list():
    api = FakeApi(canary("a"), canary("b", phase="Succeeded", weight=0))
    code, out, _ = run(api, "get", "-o", "json")
    data = json.loads(out)
    assert code == 0 and data["kind"] == "List" and data["apiVersion"] == "v1"
    assert [i["metadata"]["name"] for i in data["items"]] == ["a", "b"]
    _, out, _ = run(api, "get", "-o", "yaml")
    assert yaml.safe_load(out)["kind"] == "List"
    _, out, _ = run(api, "get", "-o", "name")
    assert out.splitlines() == ["canary.canary.dev/a", "canary.canary.dev/b"]
    _, out, _ = run(api, "get", "a", "-o", "json")
    assert json.loads(out)["kind"] == "Canary"
    _, out, _ = run(FakeApi(), "get", "-o", "json")
    assert json.loads(out)["items"] == []


def test_wide_output_has_strategy_iteration_and_image():
    ab = canary()
    ab["spec"]["analysis"].update({"iterations": 10, "match": [{"headers": {"x": {"exact": "1"}}}]})
    ab["status"]["iterations"] = 4
    _, out, _ = run(FakeApi(ab), "get", "-o", "wide")
    header, row = out.splitlines()
    assert header.split()[:8] == ["NAME", "PHASE", "STRATEGY", "ITER", "WEIGHT", "FAILED", "CHECKS", "IMAGE"]
    assert row.split()[:5] == ["podinfo", "Progressing", "ab", "4/10", "20/50"] and "podinfo:2" in row


def test_help_names_exit_codes_and_examples(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    text = capsys.readouterr().out
    assert "124  timeout" in text and "examples:" in text and "canary get podinfo -n shop --watch" in text
    with pytest.raises(SystemExit):
        build_parser("kubectl canary").parse_args(["status", "--help"])
    text = capsys.readouterr().out
    assert text.startswith("usage: kubectl canary status") and "kubectl canary get -A -o wide" in text
    assert prog_name("/usr/local/bin/kubectl-canary") == "kubectl canary" and prog_name("canary") == "canary"


def test_the_plugin_names_itself_kubectl_canary():
    out = subprocess.run([sys.executable, "-c", "import sys; sys.argv[0] = 'kubectl-canary'; "
                          "from canary.cli import main; sys.exit(main(['nope']))"],
                         capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 2 and out.stderr.startswith("usage: kubectl canary")


def test_closed_pipe_is_quiet():
    api_lines = "\n".join(f"c{i}" for i in range(3000))
    code = ("import sys; from canary.cli.parser import main; from canary.cli import Ctx; "
            "from tests.unit.test_cli import FakeApi, canary; "
            f"names = {api_lines.splitlines()!r}; api = FakeApi(*[canary(n) for n in names]); "
            "sys.exit(main(['get'], ctx=Ctx(api_factory=lambda: api)))")
    out = subprocess.run(f"{sys.executable} -c \"{code}\" | head -1", shell=True, capture_output=True, text=True,
                         cwd=REPO, executable="/bin/bash")
    assert out.stdout.startswith("NAME") and out.stderr == "", out.stderr


# ---- errors from a real client against an HTTP server answering as the API server --------------


class FakeServer:
    """Answers every request with one status and a Kubernetes Status body."""

    def __init__(self, status: int, message: str, reason: str):
        body = json.dumps({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
                           "reason": reason, "code": status}).encode()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_PATCH = do_GET

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def kubeconfig(self, path: Path) -> str:
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "staging",
            "clusters": [{"name": "c", "cluster": {"server": self.url}}],
            "contexts": [{"name": "staging", "context": {"cluster": "c", "user": "u", "namespace": "shop"}}],
            "users": [{"name": "u", "user": {"token": "t"}}]}))
        return str(path)


def cli_run(kubeconfig: str, *argv: str) -> tuple[int, str, str]:
    out = subprocess.run([sys.executable, "-m", "canary.cli", "--kubeconfig", kubeconfig, *argv], capture_output=True,
                         text=True, cwd=REPO, timeout=60)
    return out.returncode, out.stdout, out.stderr


def test_crds_not_installed(tmp_path):
    # what kube-apiserver answers for a group it does not serve
    server = FakeServer(404, "the server could not find the requested resource", "NotFound")
    kc = server.kubeconfig(tmp_path / "kc")
    for argv in (["get"], ["get", "podinfo"], ["explain", "podinfo"], ["get", "-A", "--watch"]):
        code, out, err = cli_run(kc, *argv)
        assert code == 3 and "Traceback" not in err, err
        assert err.strip().startswith("error: `canaries.canary.dev` is not served by this cluster (context staging)")


def test_forbidden_is_not_not_found(tmp_path):
    message = ('canaries.canary.dev "podinfo" is forbidden: User "bob" cannot get resource "canaries" in API group '
               '"canary.dev" in the namespace "shop"')
    kc = FakeServer(403, message, "Forbidden").kubeconfig(tmp_path / "kc")
    code, _, err = cli_run(kc, "get", "podinfo")
    assert code == 3 and err.strip() == f"error: forbidden: {message}"
    code, _, err = cli_run(kc, "abort", "podinfo", "--reason", "x")
    assert code == 3 and "forbidden" in err and "not found" not in err


def test_person_mistakes_are_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: v1\nkind: Config\nclusters: [\n")
    code, _, err = cli_run(str(bad), "get")
    assert code == 3 and err.startswith("error: cannot use the kubeconfig") and "Traceback" not in err
    code, _, err = cli_run(str(tmp_path / "missing"), "get")
    assert code == 3 and "cannot use the kubeconfig" in err
    code, _, err = cli_run(str(bad), "validate", str(tmp_path / "nope.yaml"))
    assert code == 3 and err.strip() == f"error: {tmp_path / 'nope.yaml'}: no such file"
    code, _, err = cli_run(str(bad), "validate", str(bad))
    assert code == 3 and f"{bad}:4:1: not valid YAML" in err and "Traceback" not in err
    code, _, err = cli_run(str(bad), "simulate", str(tmp_path))
    assert code == 3 and "is a directory" in err


def test_context_flag(tmp_path):
    kc = FakeServer(404, "x", "NotFound").kubeconfig(tmp_path / "kc")
    code, _, err = cli_run(kc, "get", "--context", "prod")
    assert code == 3 and err.strip() == 'error: context "prod" does not exist in the kubeconfig (contexts: staging)'
    api = cli.KubeApi(target=cli.Target(kubeconfig=kc, context="staging", as_user="alice"))
    assert (api.namespace, api.user, api.context) == ("shop", "alice", "staging")


def test_version_without_a_cluster(tmp_path):
    code, out, _ = cli_run(str(tmp_path / "none"), "version", "--client", "-o", "json")
    from importlib.metadata import version

    assert code == 0 and json.loads(out) == {"clientVersion": version("canary-operator")}
    code, out, _ = cli_run(str(tmp_path / "none"), "version")
    assert code == 0 and out.startswith(f"Client Version: {version('canary-operator')}\nServer: not reachable")


# ---- completion ------------------------------------------------------------------------------------


def test_completion_of_commands_flags_and_names():
    p = build_parser()
    assert "get" in candidates([""], p) and "explain" in candidates(["ex"], p) and candidates(["ex"], p) == ["explain"]
    assert "--watch" in candidates(["get", "--wa"], p) and "--wait" in candidates(["get", "--wa"], p)
    assert candidates(["get", "-o", ""], p) == ["text", "wide", "json", "yaml", "name"]
    assert candidates(["completion", ""], p) == ["bash", "zsh", "fish"]
    api = FakeApi(canary("podinfo"), canary("payments"), canary("other", namespace="else"))
    code, out, _ = run(api, "__complete", "explain", "p")
    assert code == 0 and out.split() == ["payments", "podinfo"]
    code, out, _ = run(api, "__complete", "get", "-n", "else", "")
    assert out.split() == ["other"]


def test_completion_scripts_run_in_bash(tmp_path):
    script = subprocess.run([sys.executable, "-m", "canary.cli", "completion", "bash"], capture_output=True,
                            text=True, cwd=REPO).stdout
    assert "complete -o default -F _canary_complete canary kubectl-canary" in script
    shim = tmp_path / "canary"
    shim.write_text(f"#!/bin/sh\ncd {REPO} && exec {sys.executable} -m canary.cli \"$@\"\n")
    shim.chmod(0o755)
    probe = (f"PATH={tmp_path}:$PATH; source <(canary completion bash); COMP_WORDS=(canary exp); COMP_CWORD=1; "
             "_canary_complete; echo \"${COMPREPLY[@]}\"")
    out = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "explain", out.stderr
