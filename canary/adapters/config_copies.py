"""Config tracking, the pure copy part (no I/O): the name, ownership and content of the `-primary`
copy of a tracked ConfigMap or Secret; the naming rules are told in canary/adapters/configs.py."""

from __future__ import annotations

import copy
import hashlib
from typing import Any, Callable, Iterable, Mapping

from canary.adapters.config_scan import _API, MAX_NAME, SECRET, SOURCE_ANNOTATION, ConfigError, split_key
from canary.adapters.workload import CANARY_KIND, as_canary, owner_references, without_flux_keys
from canary.models import Canary


# ---- copies (pure) ----------------------------------------------------------------------------


def _fit(name: str, suffix: str, salt: str) -> str:
    """`name + suffix`, shortened with a hash when it would exceed the name length limit."""
    if len(name) + len(suffix) <= MAX_NAME:
        return name + suffix
    digest = hashlib.sha256(f"{salt}/{name}".encode()).hexdigest()[:8]
    keep = MAX_NAME - len(suffix) - len(digest) - 1
    return f"{name[:keep].rstrip('-.')}-{digest}{suffix}"


def copy_name_candidates(canary: Canary, name: str) -> list[str]:
    """Names a copy of `name` may get for this Canary, in order of preference."""
    target = canary.spec.target_ref.name
    digest = hashlib.sha256(f"{canary.namespace}/{target}/{name}".encode()).hexdigest()[:8]
    out: list[str] = []
    for candidate in (_fit(name, "-primary", ""),
                      _fit(name, f"-{target}-primary", target),
                      _fit(name, f"-{digest}-primary", digest)):
        if candidate not in out:
            out.append(candidate)
    return out


def _controller(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return ref
    return None


def copy_relation(obj: Mapping[str, Any] | None, canary: Canary, key: str) -> str:
    """How an existing object relates to this Canary's copy of `key`.

    "missing" (no object), "ours" (made by this Canary for this source), "adoptable" (a copy of
    this source made for a Canary of the same name: Flagger's, a re-created Canary's, or one
    whose owner was removed), "foreign" (anything else: never overwritten).
    """
    if obj is None:
        return "missing"
    meta = obj.get("metadata") or {}
    source = (meta.get("annotations") or {}).get(SOURCE_ANNOTATION)
    _, name = split_key(key)
    if source is not None:
        same_source = source == key
    else:  # a copy made by Flagger carries no annotation; its name is the only hint
        same_source = meta.get("name") == f"{name}-primary"
    if not same_source:
        return "foreign"
    ctrl = _controller(obj)
    if ctrl is None:
        # unowned: only adopt what we annotated ourselves (never a user's own "x-primary")
        return "adoptable" if source is not None else "foreign"
    if ctrl.get("kind") != CANARY_KIND or ctrl.get("name") != canary.name:
        return "foreign"
    uid = canary.metadata.get("uid")
    group = str(ctrl.get("apiVersion", "")).split("/")[0]
    if group == "canary.dev" and (not uid or ctrl.get("uid") == uid):
        return "ours"
    return "adoptable"


def choose_copy_name(canary: Canary, key: str, existing: Callable[[str], Mapping[str, Any] | None]) -> str:
    """The copy name for tracked config `key`, given `existing(name)` -> object or None."""
    canary = as_canary(canary)
    _, name = split_key(key)
    candidates = copy_name_candidates(canary, name)
    relations = {c: copy_relation(existing(c), canary, key) for c in candidates}
    for wanted in ("ours", "adoptable", "missing"):
        for c in candidates:
            if relations[c] == wanted:
                return c
    raise ConfigError(f"no name is free for the copy of {key}: {', '.join(candidates)} "
                      "all exist and are not managed by this Canary")


def build_copy(canary: Canary, key: str, source: Mapping[str, Any], copy_name: str) -> dict:
    """The copy of a ConfigMap or Secret: same content (and type), labels without Flux keys,
    controlled by this Canary, annotated with its source."""
    canary = as_canary(canary)
    kind, _ = split_key(key)
    api_version, _, kind_name = _API[kind]
    smeta = source.get("metadata") or {}
    meta: dict[str, Any] = {
        "name": copy_name,
        "namespace": canary.namespace,
        "annotations": {SOURCE_ANNOTATION: key},
    }
    labels = without_flux_keys(smeta.get("labels"))
    if labels:
        meta["labels"] = labels
    owners = owner_references(canary)
    if owners:
        meta["ownerReferences"] = owners
    body: dict[str, Any] = {"apiVersion": api_version, "kind": kind_name, "metadata": meta}
    if kind == SECRET:
        body["type"] = source.get("type") or "Opaque"
    for field in ("data", "binaryData"):
        if source.get(field):
            body[field] = copy.deepcopy(source[field])
    return body


def _merged_owners(existing: list[dict] | None, ours: list[dict]) -> list[dict]:
    """Our controller reference, plus the owners that are not Canaries (references to other
    Canaries come from Flagger's shared copies, which per-Canary copies replace)."""
    existing = list(existing or [])
    if not ours:
        return existing
    others = [r for r in existing if r.get("kind") != CANARY_KIND and not r.get("controller")]
    mine = [r for r in existing if r.get("uid") == ours[0]["uid"]]
    if mine == ours and len(existing) == len(others) + 1:
        return existing  # already right: keep the order as stored
    return ours + others


def copy_update(existing: Mapping[str, Any], desired: Mapping[str, Any]) -> dict | None:
    """The body to PUT so that `existing` matches `desired`, or None when it already does."""
    body = copy.deepcopy(dict(existing))
    meta = body.setdefault("metadata", {})
    for field in ("data", "binaryData"):
        if desired.get(field):
            body[field] = copy.deepcopy(desired[field])
        else:
            body.pop(field, None)
    if "type" in desired:
        body["type"] = desired["type"]
    want_labels = desired["metadata"].get("labels") or {}
    if (meta.get("labels") or {}) != want_labels:
        meta["labels"] = want_labels
    meta["annotations"] = {**(meta.get("annotations") or {}), **desired["metadata"]["annotations"]}
    meta["ownerReferences"] = _merged_owners(meta.get("ownerReferences"),
                                             desired["metadata"].get("ownerReferences") or [])
    if not meta["ownerReferences"]:
        meta.pop("ownerReferences")
    return None if body == existing else body


def copy_names(tracked: Iterable[str]) -> dict[str, str]:
    """Flagger's naming (`<name>-primary`) for keys, for callers that do not sync copies."""
    return {key: f"{split_key(key)[1]}-primary" for key in tracked}
