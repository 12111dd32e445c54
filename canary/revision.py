"""Revision hashes (pure).

* ``template_hash`` identifies a pod template. It hashes exactly the dict it is given: the
  caller should always pass ``Deployment.spec.template`` as read back from the API server, so
  that server-side defaults are present every time and the value is stable. (A Kubernetes
  upgrade that adds a new defaulted field changes the hash once and starts one spurious run;
  Flagger's own hash has the same property.) Flagger's ``ComputeHash`` (go-spew + FNV-32a)
  cannot be reproduced in Python, so values written by Flagger are opaque to us and vice versa.
* ``config_checksum`` reproduces Flagger's checksum of a tracked ConfigMap or Secret byte for
  byte: the first 8 bytes of ``sha256(json.Marshal(data))`` in hex.
* ``revision`` folds the template hash and the tracked-config checksums into one value, the
  ``Observation.revision`` the engine compares with ``lastAppliedSpec``/``lastPromotedSpec``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping

# Go's encoding/json escapes these even inside strings (HTML safety and JS line separators).
_GO_ESCAPES = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}


def go_json(value: Any) -> str:
    """Serialize like Go's ``json.Marshal`` for maps of strings (and other plain JSON values).

    Keys sorted, no whitespace, non-ASCII kept as UTF-8, ``<``, ``>``, ``&``, U+2028 and
    U+2029 escaped as ``\\uXXXX``. ``None`` is ``null`` (a nil map).
    """
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    # The characters above can only occur inside JSON strings, so a plain replace is exact.
    for char, escaped in _GO_ESCAPES.items():
        if char in text:
            text = text.replace(char, escaped)
    return text


def template_hash(pod_template: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of a pod template; the first 10 hex characters."""
    canonical = json.dumps(pod_template, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:10]


def config_checksum(data: Mapping[str, str] | None) -> str:
    """Flagger-compatible checksum of a ConfigMap's ``data`` or a Secret's ``data`` (base64 strings).

    16 hex characters (the first 8 bytes of the sha256 of Go's JSON encoding).
    """
    payload = go_json(dict(data) if data is not None else None).encode("utf-8")
    return hashlib.sha256(payload).digest()[:8].hex()


def revision(template_hash: str, tracked_configs: Mapping[str, str] | None = None) -> str:
    """One value for "template + tracked configs".

    Without tracked configs it is the template hash itself; otherwise a 10-hex hash over the
    template hash and the sorted ``kind/name=checksum`` pairs. Any config change changes it.
    """
    if not tracked_configs:
        return template_hash
    lines = [template_hash] + [f"{key}={tracked_configs[key]}" for key in sorted(tracked_configs)]
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()[:10]
