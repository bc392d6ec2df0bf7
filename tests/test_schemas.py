"""The API's document schemas describe exactly the documents' wire fields, with compatible types.

The schemas in ``api/schemas.py`` are written out (they carry the API's own
limits and descriptions); this test walks their JSON schema beside the
documents' declarations, so a field added to a document without the schema,
or a schema field no document writes, fails here.
"""

from __future__ import annotations

from typing import Any

import pytest

from api.schemas import SnapshotDoc, UserStateDoc
from autoplay_storage.user_adoption_state import SessionSnapshot, UserAdoptionState, layout
from autoplay_storage.user_adoption_state.rules import Choice, Entries, Map, Nested, Rule, Strings

_JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string"}


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> list[dict[str, Any]]:
    """The alternatives a schema node allows, with ``$ref`` followed."""
    if "$ref" in node:
        return _resolve(defs[node["$ref"].rsplit("/", 1)[-1]], defs)
    if "anyOf" in node:
        return [alt for option in node["anyOf"] for alt in _resolve(option, defs)]
    return [node]


def _accepts(alternatives: list[dict[str, Any]], json_type: str) -> bool:
    types = {alt.get("type") for alt in alternatives}
    return json_type in types or (json_type == "integer" and "number" in types)


def _one(alternatives: list[dict[str, Any]], json_type: str, where: str) -> dict[str, Any]:
    matching = [alt for alt in alternatives if alt.get("type") == json_type]
    assert len(matching) == 1, f"{where}: the schema has no single {json_type}"
    return matching[0]


def _check_field(rule: Rule, node: dict[str, Any], defs: dict[str, Any], where: str) -> None:
    alternatives = _resolve(node, defs)
    assert _accepts(alternatives, rule.json), f"{where}: the document writes {rule.json}, the schema says {node}"
    if rule.nullable:
        assert _accepts(alternatives, "null"), f"{where}: the document writes null, the schema refuses it"
    if isinstance(rule, Choice):
        values = {v for alt in alternatives for v in alt.get("enum", ())}
        assert values == {m.value for m in rule.enum}, f"{where}: the enum values differ"
    elif isinstance(rule, Nested):
        _check_document(rule.doc, _one(alternatives, "object", where), defs, where)
    elif isinstance(rule, Map):
        inner = _one(alternatives, "object", where)["additionalProperties"]
        _check_document(rule.doc, _one(_resolve(inner, defs), "object", where), defs, where + ".*")
    elif isinstance(rule, Entries):
        inner = _one(alternatives, "array", where)["items"]
        _check_document(rule.doc, _one(_resolve(inner, defs), "object", where), defs, where + "[]")
    elif isinstance(rule, Strings):
        assert _resolve(_one(alternatives, "array", where)["items"], defs)[0]["type"] == "string", where


def _check_document(doc: type, node: dict[str, Any], defs: dict[str, Any], where: str) -> None:
    lay = layout(doc)
    properties = node.get("properties", {})
    missing = set(lay.keys) - set(properties)
    extra = set(properties) - set(lay.keys)
    assert not missing, f"{where or doc.__name__}: the schema lacks {sorted(missing)}"
    assert not extra, f"{where or doc.__name__}: the schema has {sorted(extra)}, which {doc.__name__} does not write"
    # A document that keeps unknown keys accepts them; a nested one drops them, so the API refuses them.
    assert node.get("additionalProperties", True) is not False if lay.extras else node["additionalProperties"] is False
    for key, value in lay.constants.items():
        assert _accepts(_resolve(properties[key], defs), _JSON_TYPES[type(value)]), f"{where}.{key}"
    for f in (*lay.header, *lay.fields):
        _check_field(f.rule, properties[f.key], defs, f"{where}.{f.key}" if where else f.key)


@pytest.mark.parametrize(("schema", "doc"), [(UserStateDoc, UserAdoptionState), (SnapshotDoc, SessionSnapshot)])
def test_the_schema_describes_every_wire_field_of_the_document_and_no_other(schema, doc):
    root = schema.model_json_schema(by_alias=True)
    _check_document(doc, root, root.get("$defs", {}), "")


def test_a_document_field_missing_from_the_schema_fails():
    """The check can fail: a schema without one of the document's fields is caught."""
    root = UserStateDoc.model_json_schema(by_alias=True)
    del root["$defs"]["OnboardingDoc"]["properties"]["summary"]
    with pytest.raises(AssertionError, match=r"onboarding: the schema lacks \['summary'\]"):
        _check_document(UserAdoptionState, root, root["$defs"], "")


def test_a_schema_type_the_document_does_not_write_fails():
    root = SnapshotDoc.model_json_schema(by_alias=True)
    root["properties"]["duration_s"] = {"type": "string"}
    with pytest.raises(AssertionError, match="duration_s: the document writes number"):
        _check_document(SessionSnapshot, root, root["$defs"], "")
