"""The wire codec reads what the standard library reads, and the documents' fast paths change no value."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from autoplay_storage import codec
from autoplay_storage.user_adoption_state import (
    _FLOAT_MAX,
    SessionIndexEntry,
    _is_number,
    _opt_ts,
    _ts,
    _unit,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_dumps_reads_back_as_the_standard_library_reads_it(value):
    assert json.loads(codec.dumps(value)) == value
    assert codec.loads(codec.dumps(value)) == value


@given(json_values)
def test_what_orjson_wrote_reads_back_exactly_without_the_scan(value):
    """``loads_exact`` skips the long-integer scan only for bytes orjson wrote, which it reads as it wrote them."""
    raw = codec.dumps_exact(value)
    if raw is not None:
        assert codec.loads_exact(raw) == value == codec.loads(raw)
        assert raw == codec.dumps(value)


def test_orjson_does_not_write_what_it_would_read_back_otherwise():
    for edge in (-(2**63), 2**64 - 1):  # the ends of its range: written, and read back as integers
        assert type(codec.loads_exact(codec.dumps_exact(edge))) is int
    for beyond in (-(2**63) - 1, 2**64, "\ud800"):  # the standard library writes these; they need the scan
        assert codec.dumps_exact({"n": beyond}) is None
        assert codec.loads(codec.dumps({"n": beyond})) == {"n": beyond}


@pytest.mark.parametrize(
    "text",
    [
        '{"a":NaN}',  # the SDK's json.dumps writes these
        '{"big":123456789012345678901234567890}',
        '{"s":"\\ud800"}',  # a lone surrogate
        '{"neg":-123456789012345678901234567890,"f":1e400}',
        '{"n":-9223372036854775809}',  # 19 digits, one below the 64-bit range
        '{"n":18446744073709551616}',  # 2**64
    ],
)
def test_what_orjson_refuses_the_standard_library_still_reads(text):
    expected = json.loads(text)
    got = codec.loads(text)
    if isinstance(expected, dict) and isinstance(expected.get("a"), float):
        assert math.isnan(got["a"])
    else:
        assert got == expected


def test_not_json_is_a_value_error():
    for bad in ("{nope", b"\xff\xfe", "", "[" * 100_000 + "]" * 100_000):
        with pytest.raises(ValueError):
            codec.loads(bad)


def test_dumps_copes_with_what_orjson_cannot_encode():
    assert json.loads(codec.dumps({"n": 2**70})) == {"n": 2**70}
    for edge in (-(2**63) - 1, -(2**63), 2**64 - 1, 2**64):  # just beyond and at orjson's integer range
        assert codec.loads(codec.dumps({"n": edge})) == {"n": edge}
        assert type(codec.loads(codec.dumps({"n": edge}))["n"]) is int
    assert json.loads(codec.dumps({1: "x"})) == {"1": "x"}


def test_strict_dumps_refuses_nan():
    with pytest.raises(ValueError):
        codec.dumps_strict({"x": float("nan")})


# The exact-type fast paths in the document readers must give what the general rule gives.


def _ts_rule(value, default):
    return float(value) if _is_number(value) else default


def _opt_ts_rule(value):
    return float(value) if _is_number(value) else None


def _unit_rule(value, default=0.0):
    return min(1.0, max(0.0, float(value))) if _is_number(value) else default


numbers = st.floats() | st.integers() | st.booleans() | st.none() | st.text(max_size=3) | st.just(2**1100)


def _same(a, b):
    return (a is None and b is None) or (a == b and type(a) is type(b))


@given(numbers)
def test_fast_paths_match_the_general_rule(value):
    assert _same(_ts(value, -1.0), _ts_rule(value, -1.0))
    assert _same(_opt_ts(value), _opt_ts_rule(value))
    assert _same(_unit(value), _unit_rule(value))


@given(st.text(min_size=1, max_size=5), numbers, numbers, numbers)
def test_index_entry_fast_path_matches_the_general_rule(session_id, number, started, captured):
    entry = SessionIndexEntry.from_dict(
        {"session_id": session_id, "session_number": number, "started_at": started, "captured_at": captured}
    )
    assert entry is not None
    expected_captured = _ts_rule(captured, entry.captured_at)
    assert entry.captured_at == expected_captured
    assert entry.started_at == _ts_rule(started, expected_captured)
    count = max(0, int(number)) if _is_number(number) else 0
    assert entry.session_number == max(1, count)
    assert entry.session_number <= max(1, _FLOAT_MAX)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [(b"{truncated", "invalid JSON"), ("[1, 2]", "not a JSON object but list"), (b"\xff\xfe", "invalid JSON")],
)
def test_every_store_reports_an_unreadable_document_the_same_way(raw, reason):
    """``parse_document`` is the one reader of stored values (memory, database and Redis primaries)."""
    from autoplay_storage.errors import CorruptDocumentError

    with pytest.raises(CorruptDocumentError) as info:
        codec.parse_document("k", raw)
    assert info.value.key == "k" and reason in info.value.reason
    assert info.value.raw == (raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw)
    assert codec.parse_document("k", None) is None
    assert codec.parse_document("k", '{"a": 1}') == {"a": 1}
