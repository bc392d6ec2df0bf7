"""The field machinery: declarations drive ``from_dict``, ``to_dict`` and ``clone`` of every document."""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autoplay_storage.user_adoption_state import (
    Mastery,
    OnboardingState,
    SessionIndexEntry,
    SessionSnapshot,
    SessionsState,
    StepInAssessment,
    StepProgress,
    UserAdoptionState,
    WorkflowProgress,
    _bool,
    _count,
    _enum,
    _is_number,
    _opt_str,
    _opt_ts,
    _str,
    _ts,
    _unit,
    layout,
)
from autoplay_storage.user_adoption_state.fields import (
    by_id,
    choice,
    document,
    duration,
    entries,
    extras,
    flag,
    free_form,
    ident,
    integer,
    nested,
    opt_text,
    opt_timestamp,
    schema_version,
    strings,
    text,
    timestamp,
    unit,
)
from autoplay_storage.user_adoption_state.rules import Entries, Map, Nested

DOCUMENTS = [
    UserAdoptionState,
    SessionSnapshot,
    Mastery,
    StepProgress,
    WorkflowProgress,
    StepInAssessment,
    OnboardingState,
    SessionIndexEntry,
    SessionsState,
]


def _key_paths(value: Any, prefix: str = "") -> list[str]:
    """Every key of a document with its path, in the order written (ids of maps collapse to ``*``)."""
    out = []
    if isinstance(value, dict):
        for key, item in value.items():
            out.append(prefix + key)
            out += _key_paths(item, prefix + key + ".")
    elif isinstance(value, list):
        for item in value[:1]:
            out += _key_paths(item, prefix + "[].")
    return out


@pytest.mark.parametrize("name", ["state__prod_1__u_mid", "snapshot__prod_1__u_123__sess_c"])
def test_to_dict_writes_the_declared_keys_in_declaration_order(sdk_fixtures, name):
    cls = UserAdoptionState if name.startswith("state") else SessionSnapshot
    out = cls.from_dict(sdk_fixtures[name]).to_dict()
    assert list(out) == list(layout(cls).keys)
    for f in layout(cls).fields:
        if isinstance(f.rule, Nested) and out[f.key] is not None:
            assert list(out[f.key]) == list(layout(f.rule.doc).keys)


def test_the_declarations_cover_every_key_the_sdk_writes(sdk_fixtures):
    """Nothing the SDK writes lands in ``extra``: every wire key is a declared field."""
    for name, doc in sdk_fixtures.items():
        read = (UserAdoptionState if name.startswith("state") else SessionSnapshot).from_dict(doc)
        assert read.extra == {}, name
        assert sorted(_key_paths(read.to_dict())) == sorted(_key_paths(doc)), name  # the fixtures' keys are sorted


@pytest.mark.parametrize("cls", DOCUMENTS, ids=lambda c: c.__name__)
def test_every_document_declares_a_rule_per_field_and_gets_its_wire_methods(cls):
    assert callable(cls.from_dict) and callable(cls.to_dict)
    assert hasattr(cls, "__slots__")
    for f in layout(cls).fields:
        if isinstance(f.rule, (Nested, Map, Entries)):
            assert f.rule.doc in DOCUMENTS


def test_a_field_without_a_rule_is_refused_at_import():
    with pytest.raises(TypeError, match="declares no reading rule"):

        @document()
        class Broken:
            plain: int = 0


class Color(StrEnum):
    RED = "red"
    BLUE = "blue"


@document()
class Part:
    part_id: str = ident()
    weight: float = unit()


@document(frozen=True, optional=True)
class Entry:
    entry_id: str = ident(drops_document=True)
    n: int = integer(1, no_default=True)


@document(top_level="a toy document", constants={"_kind": "toy"})
class Toy:
    """One field per rule: a new field is one declaration, and it is read, written and copied."""

    toy_id: str = ident()
    start: float = timestamp(fallback="end", no_default=True)
    end: float = timestamp(no_default=True)
    name: str = text("anon", nonblank=True)
    note: str | None = opt_text()
    current: str | None = opt_text(blank_is_none=True)
    on: bool = flag()
    color: Color = choice(Color.RED)
    rating: int = integer(0, 5)
    share: float = unit()
    seen: float = timestamp()
    gone: float | None = opt_timestamp()
    took: float = duration("start", "end")
    tags: list[str] = strings()
    bag: dict[str, Any] = free_form()
    part: Part = nested(Part)
    maybe: Part | None = nested(Part, optional=True)
    parts: dict[str, Part] = by_id(Part)
    log: list[Entry] = entries(Entry, unique="entry_id", keep=2)
    total: int = integer(at_least_len_of="log")
    v: Any = schema_version(1)
    extra: dict[str, Any] = extras()


GOOD = {
    "_v": 3,
    "_kind": "toy",
    "toy_id": "t1",
    "start": 10.0,
    "end": 70.0,
    "name": "box",
    "note": "",
    "current": "c",
    "on": True,
    "color": "blue",
    "rating": 4,
    "share": 0.25,
    "seen": 5.0,
    "gone": None,
    "took": 60.0,
    "tags": ["a", "b"],
    "bag": {"k": [1, 2]},
    "part": {"part_id": "p", "weight": 0.5},
    "maybe": None,
    "parts": {"p1": {"part_id": "p1", "weight": 1.0}},
    "log": [{"entry_id": "e1", "n": 1}, {"entry_id": "e2", "n": 2}],
    "total": 7,
}


def test_a_new_document_round_trips_in_declaration_order_with_header_constants_and_extras():
    doc = {"later": {"x": 1}, **GOOD}
    toy = Toy.from_dict(doc)
    out = toy.to_dict()
    assert out == doc
    assert list(out) == ["later", "_v", "_kind", *[k for k in GOOD if k not in ("_v", "_kind")]]
    copy = toy.clone()
    assert copy == toy and copy.parts["p1"] is not toy.parts["p1"] and copy.log[0] is toy.log[0]


def test_a_new_document_reads_every_rule_defensively():
    hostile = {
        "toy_id": "",
        "start": math.nan,
        "end": "later",
        "name": "",
        "note": 5,
        "current": "",
        "on": 1,
        "color": ["red"],
        "rating": 99.7,
        "share": -2,
        "seen": math.inf,
        "gone": "never",
        "took": None,
        "tags": ["x", "x", "", 3],
        "bag": [1],
        "part": "no",
        "maybe": {"part_id": 7, "weight": True},
        "parts": {5: {}},
        "log": [{"entry_id": "e1"}, {"entry_id": "e1"}, {"n": 3}, {"entry_id": "e2"}, {"entry_id": "e3", "n": -4}],
        "total": -1,
        "v": True,
        "_v": "2",
    }
    toy = Toy.from_dict(hostile, toy_id="from-key", now=100.0)
    assert toy.toy_id == "from-key"
    assert (toy.start, toy.end, toy.took) == (100.0, 100.0, 0.0)  # end: now; start: falls back to end
    assert toy.name == "anon" and toy.note is None and toy.current is None
    assert toy.on is False and toy.color is Color.RED and toy.rating == 5 and toy.share == 0.0
    assert toy.seen == 100.0 and toy.gone is None
    assert toy.tags == ["x"] and toy.bag == {}
    assert toy.part == Part("", 0.0) and toy.maybe == Part("", 0.0)
    assert toy.parts == {"5": Part("5", 0.0)}
    assert [(e.entry_id, e.n) for e in toy.log] == [("e2", 1), ("e3", 1)]  # unique, newest 2, none without an id
    assert toy.total == 2  # never below the entries it holds
    assert toy.v == 1 and toy.extra == {"v": True}
    with pytest.raises(TypeError, match="a toy document must be a JSON object"):
        Toy.from_dict([])
    assert Entry.from_dict("no") is None and Entry.from_dict({"n": 2}) is None


VALUES = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.just(2**1100)
    | st.floats()
    | st.floats(-2, 12)
    | st.integers(-2, 12)
    | st.text(max_size=3)
    | st.sampled_from(["red", "blue", ""])
    | st.lists(st.integers(), max_size=2)
    | st.dictionaries(st.text(max_size=2), st.integers(), max_size=2)
)


def _same(a: Any, b: Any) -> bool:
    return a is b or (a == b and type(a) is type(b))


@settings(max_examples=300)
@given(VALUES)
def test_the_generated_fast_checks_give_what_the_general_readers_give(value):
    keys = ("toy_id", "start", "end", "name", "note", "current", "on", "color", "rating", "share", "seen", "gone")
    toy = Toy.from_dict({**dict.fromkeys(keys, value), "total": value, "_v": value}, now=5.0)
    expected = {
        "toy_id": _str(value) or "",
        "end": _ts(value, 5.0),
        "name": _str(value, "anon") or "anon",
        "note": _opt_str(value),
        "current": _opt_str(value) or None,
        "on": _bool(value),
        "color": _enum(Color, value, Color.RED),
        "rating": min(5, max(0, int(value))) if _is_number(value) else 0,
        "share": _unit(value),
        "seen": _ts(value, 5.0),
        "gone": _opt_ts(value),
        "total": _count(value),
        "v": value if isinstance(value, int) and not isinstance(value, bool) else 1,
    }
    expected["start"] = _ts(value, expected["end"])
    for name, want in expected.items():
        assert _same(getattr(toy, name), want), name
