"""Revision hashes: stability, sensitivity and Go-compatible config checksums."""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from canary.revision import config_checksum, go_json, revision, template_hash

TEMPLATE = {
    "metadata": {"labels": {"app": "podinfo"}, "annotations": {"a": "1"}},
    "spec": {"containers": [{"name": "podinfo", "image": "ghcr.io/stefanprodan/podinfo:6.0.0"}]},
}


def test_template_hash_is_stable_and_key_order_independent():
    reordered = {"spec": TEMPLATE["spec"], "metadata": {"annotations": {"a": "1"}, "labels": {"app": "podinfo"}}}
    assert template_hash(TEMPLATE) == template_hash(reordered)
    assert len(template_hash(TEMPLATE)) == 10
    assert all(c in "0123456789abcdef" for c in template_hash(TEMPLATE))


def test_template_hash_changes_with_the_template():
    changed = {**TEMPLATE, "spec": {"containers": [{"name": "podinfo", "image": "podinfo:6.0.1"}]}}
    assert template_hash(changed) != template_hash(TEMPLATE)


def test_template_hash_hashes_exactly_what_it_is_given():
    # A defaulted field the API server adds is a different template for us.
    defaulted = {**TEMPLATE, "spec": {**TEMPLATE["spec"], "restartPolicy": "Always"}}
    assert template_hash(defaulted) != template_hash(TEMPLATE)


def test_go_json_matches_go_marshal():
    assert go_json({"b": "2", "a": "1"}) == '{"a":"1","b":"2"}'
    assert go_json({"k": "<x> & y"}) == '{"k":"\\u003cx\\u003e \\u0026 y"}'
    assert go_json({"k": "line\nnext\ttab"}) == '{"k":"line\\nnext\\ttab"}'
    assert go_json({"k": "é\u2028"}) == '{"k":"é\\u2028"}'
    assert go_json({"k": "\x01"}) == '{"k":"\\u0001"}'
    assert go_json(None) == "null"
    assert go_json({}) == "{}"


def test_config_checksum_is_the_first_8_bytes_of_sha256_of_go_json():
    data = {"config.yaml": "level: <info>\n", "b": "&"}
    expected = hashlib.sha256(
        b'{"b":"\\u0026","config.yaml":"level: \\u003cinfo\\u003e\\n"}'
    ).hexdigest()[:16]
    assert config_checksum(data) == expected
    assert len(config_checksum({})) == 16
    assert config_checksum(None) == hashlib.sha256(b"null").hexdigest()[:16]


def test_revision_folds_tracked_configs():
    h = template_hash(TEMPLATE)
    assert revision(h, {}) == h
    assert revision(h, None) == h
    with_cfg = revision(h, {"configmap/a": "1111", "secret/b": "2222"})
    assert with_cfg != h and len(with_cfg) == 10
    assert revision(h, {"secret/b": "2222", "configmap/a": "1111"}) == with_cfg
    assert revision(h, {"configmap/a": "1112", "secret/b": "2222"}) != with_cfg


@given(st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=5))
def test_config_checksum_is_deterministic(data):
    assert config_checksum(data) == config_checksum(dict(reversed(list(data.items()))))
