"""Every name that reaches a request path is one path segment of its namespace (issue 10).

client-go refuses "", ".", "..", "/" and "%" in a path segment (IsValidPathSegmentName); so does
`canary.adapters.kube`, and it percent-encodes the rest, so that neither the URL normalisation of
httpx nor the API server's decoding can turn a name into another object, another namespace or a
collection."""

from __future__ import annotations

from urllib.parse import unquote

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from canary.adapters.kube import ApiError, InvalidName, Kube, UnexpectedObject, _path, check_segment


class Recorder:
    def __init__(self, answer=None):
        self.paths: list[str] = []
        self.methods: list[str] = []
        self.answer = answer

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.raw_path.decode())
        self.methods.append(request.method)
        if self.answer is not None:
            return httpx.Response(200, json=self.answer(request))
        return httpx.Response(404, json={"kind": "Status", "reason": "NotFound", "message": "nope"})


def kube(rec: Recorder) -> Kube:
    return Kube("https://api.invalid", transport=httpx.MockTransport(rec))


@pytest.mark.parametrize("name", ["", ".", "..", "../kube-system", "a/b", "..%2f..", "%2e%2e", "x\x1b[2J",
                                  "a\nb", "a\x85b"])
async def test_walking_names_are_refused_before_any_request(name: str) -> None:
    rec = Recorder()
    k = kube(rec)
    for call in (lambda: k.get("v1", "secrets", "team-a", name),
                 lambda: k.replace("v1", "services", "team-a", name, {}),
                 lambda: k.patch("apps/v1", "deployments", "team-a", name, {}),
                 lambda: k.delete("v1", "services", "team-a", name),
                 lambda: k.get("v1", "secrets", name, "token")):
        with pytest.raises(InvalidName) as err:
            await call()
        assert isinstance(err.value, ApiError) and err.value.status == 422
    assert rec.paths == []


async def test_a_missing_name_is_never_a_collection_request() -> None:
    rec = Recorder()
    k = kube(rec)
    with pytest.raises(InvalidName):
        await k.delete("v1", "services", "team-a", None)  # would be a deletecollection
    with pytest.raises(InvalidName):
        await k.get("v1", "secrets", "team-a", None)
    assert rec.paths == []


async def test_query_and_fragment_characters_are_encoded() -> None:
    rec = Recorder()
    await kube(rec).get("v1", "secrets", "team-a", "x?labelSelector=a#b")
    assert rec.paths == ["/api/v1/namespaces/team-a/secrets/x%3FlabelSelector%3Da%23b"]


async def test_an_answer_for_another_object_is_refused() -> None:
    other = {"metadata": {"name": "token", "namespace": "kube-system"}, "data": {"token": "c2VjcmV0"}}
    k = kube(Recorder(answer=lambda r: other))
    with pytest.raises(UnexpectedObject) as err:
        await k.get("v1", "secrets", "team-a", "token")
    assert "c2VjcmV0" not in str(err.value)
    with pytest.raises(UnexpectedObject):
        await k.patch("v1", "services", "team-a", "token", {})
    same = {"metadata": {"name": "token", "namespace": "team-a"}}
    assert await kube(Recorder(answer=lambda r: same)).get("v1", "secrets", "team-a", "token") == same


def _normalised(path: str) -> str:
    """The path as httpx sends it (dot segments resolved)."""
    return httpx.URL("https://api.invalid" + path).raw_path.decode()


@settings(max_examples=400, deadline=None)
@given(st.text(min_size=0, max_size=40), st.sampled_from(["team-a", "default"]))
def test_no_name_produces_a_path_outside_its_namespace(name: str, ns: str) -> None:
    try:
        check_segment(name)
    except InvalidName:
        return
    for api_version, plural in (("v1", "secrets"), ("apps/v1", "deployments")):
        path = _normalised(_path(api_version, plural, ns, name))
        prefix = _path(api_version, plural, ns) + "/"
        assert path.startswith(prefix)
        rest = path[len(prefix):]
        assert "/" not in rest and "?" not in rest and "#" not in rest
        assert unquote(rest) == name


def test_writers_take_the_namespace_from_the_canary_not_from_the_fetched_object() -> None:
    from canary.adapters.autoscaler import build_primary_hpa
    from canary.adapters.workload import build_primary_deployment, build_services
    from canary.models import Canary

    canary = Canary.from_obj({"metadata": {"name": "app", "namespace": "team-a", "uid": "u1"},
                              "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "app"},
                                       "service": {"port": 80},
                                       "autoscalerRef": {"apiVersion": "autoscaling/v2",
                                                         "kind": "HorizontalPodAutoscaler", "name": "app"}}})
    foreign = {"metadata": {"name": "app", "namespace": "kube-system"},
               "spec": {"selector": {"matchLabels": {"app": "app"}},
                        "template": {"metadata": {"labels": {"app": "app"}}, "spec": {"containers": []}}}}
    assert build_primary_deployment(canary, foreign, "r1")["metadata"]["namespace"] == "team-a"
    assert {s["metadata"]["namespace"] for s in build_services(canary, foreign)} == {"team-a"}
    hpa = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
           "metadata": {"name": "app", "namespace": "kube-system"},
           "spec": {"maxReplicas": 3, "scaleTargetRef": {"kind": "Deployment", "name": "app"}}}
    assert build_primary_hpa(canary, hpa, "autoscaling/v2")["metadata"]["namespace"] == "team-a"


async def test_a_namespaced_list_with_a_foreign_item_is_refused() -> None:
    answer = {"items": [{"metadata": {"name": "a", "namespace": "team-a"}},
                        {"metadata": {"name": "b", "namespace": "kube-system"}}]}
    with pytest.raises(UnexpectedObject):
        await kube(Recorder(answer=lambda r: answer)).list("v1", "services", "team-a")
    assert len(await kube(Recorder(answer=lambda r: answer)).list("v1", "services")) == 2  # all namespaces
