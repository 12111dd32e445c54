"""A minimal in-memory stand-in for canary.adapters.kube.Kube, for router unit tests:
objects in a dict, resourceVersions, conflicts, and request counts per verb."""

from __future__ import annotations

import copy

from canary.adapters.kube import ApiError


class FakeKube:
    def __init__(self, served=("v1beta1", "v1")):
        self.objects: dict[tuple, dict] = {}
        self.served_versions = served
        self.requests: dict[str, int] = {}
        self._rv = 0

    def _count(self, verb):
        self.requests[verb] = self.requests.get(verb, 0) + 1

    @property
    def writes(self):
        return sum(self.requests.get(v, 0) for v in ("create", "update", "patch", "delete"))

    async def served(self, group, version):
        return version in self.served_versions

    async def first_served(self, group, versions):
        return next((f"{group}/{v}" for v in versions if v in self.served_versions), None)

    async def get(self, api_version, plural, namespace, name):
        self._count("get")
        obj = self.objects.get((plural, namespace, name))
        return copy.deepcopy(obj) if obj else None

    async def create(self, api_version, plural, namespace, body):
        self._count("create")
        key = (plural, namespace, body["metadata"]["name"])
        if key in self.objects:
            raise ApiError(409, "AlreadyExists", "exists")
        self._rv += 1
        obj = copy.deepcopy(body)
        obj["metadata"]["resourceVersion"] = str(self._rv)
        self.objects[key] = obj
        return copy.deepcopy(obj)

    async def replace(self, api_version, plural, namespace, name, body):
        self._count("update")
        cur = self.objects[(plural, namespace, name)]
        if body["metadata"].get("resourceVersion") != cur["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict", "stale")
        self._rv += 1
        obj = copy.deepcopy(body)
        obj["metadata"]["resourceVersion"] = str(self._rv)
        self.objects[(plural, namespace, name)] = obj
        return copy.deepcopy(obj)
