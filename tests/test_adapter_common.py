"""The helpers every browsable primary shares (autoplay_storage.adapters.common), on their own."""

from __future__ import annotations

import base64
import json

import pytest

from autoplay_storage.adapters.common import (
    clamp_limit,
    corrupt_session_row,
    decode_cursor,
    encode_cursor,
    is_after,
    matches,
    next_page,
    page_in_order,
    session_row,
    user_position,
    user_row,
)
from autoplay_storage.browse import MAX_PAGE_SIZE, UserQuery, UserSummary
from autoplay_storage.user_adoption_state import UserAdoptionState


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    ("asked", "served"),
    [
        (-5, 1),
        (0, 1),
        (1, 1),
        (50, 50),
        (MAX_PAGE_SIZE, MAX_PAGE_SIZE),
        (MAX_PAGE_SIZE + 1, MAX_PAGE_SIZE),
        (10**9, MAX_PAGE_SIZE),
    ],
)
def test_the_page_size_is_clamped(asked: int, served: int) -> None:
    assert clamp_limit(asked) == served


@pytest.mark.parametrize("position", [(0.0, ""), (1_700_000_000.25, "u_1"), (-3.0, "ünï/cødé\x00"), (5, "x")])
def test_a_cursor_round_trips_its_position(position) -> None:
    cursor = encode_cursor(position)
    assert cursor.isascii() and "/" not in cursor and "+" not in cursor  # URL-safe as it is
    assert decode_cursor(cursor) == (float(position[0]), position[1])


def test_no_cursor_is_the_first_page() -> None:
    assert decode_cursor(None) is None
    assert decode_cursor("") is None


@pytest.mark.parametrize(
    "cursor",
    [
        "not-base64!",
        "ü",
        b64("not json"),
        b64("[1, 2]"),
        b64('["a", "b"]'),
        b64('[true, "u"]'),
        b64('[1, "u", 3]'),
        b64('{"at": 1}'),
        b64('[NaN, "u"]'),
        b64('[Infinity, "u"]'),
        b64('[1e400, "u"]'),
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
    ],
)
def test_a_cursor_we_did_not_make_is_a_value_error(cursor: str) -> None:
    with pytest.raises(ValueError, match="invalid cursor"):
        decode_cursor(cursor)


def test_keyset_order_both_ways() -> None:
    assert is_after((5.0, "b"), None, descending=True)
    assert is_after((5.0, "a"), (5.0, "b"), descending=True) and not is_after((5.0, "c"), (5.0, "b"), descending=True)
    assert is_after((6.0, "a"), (5.0, "b"), descending=False) and not is_after((5.0, "b"), (5.0, "b"), descending=False)


def test_next_page_cuts_and_names_the_last_row_served() -> None:
    rows = [(3.0, "c"), (2.0, "b"), (1.0, "a")]
    assert next_page(rows, 2, lambda r: r) == ([(3.0, "c"), (2.0, "b")], encode_cursor((2.0, "b")))
    assert next_page(rows, 3, lambda r: r) == (rows, None)
    assert next_page([], 3, lambda r: r) == ([], None)


def test_paging_rows_in_order_serves_each_unmoved_row_once_while_others_move() -> None:
    rows = {f"u{i}": UserSummary("p", f"u{i}", last_activity_at=float(i // 2)) for i in range(9)}
    served: list[str] = []
    cursor = None
    while True:
        page = page_in_order(list(rows.values()), user_position, cursor, 2, descending=True)
        served.extend(row.user_id for row in page.items)
        # Between pages a served user becomes the newest, and a new one arrives.
        first = page.items[0].user_id
        rows[first] = UserSummary("p", first, last_activity_at=100.0 + len(served))
        rows[f"new{len(served)}"] = UserSummary("p", f"new{len(served)}", last_activity_at=200.0 + len(served))
        if (cursor := page.next_cursor) is None:
            break
    assert sorted(served) == sorted(f"u{i}" for i in range(9))  # each once, none skipped


def test_user_rows_read_a_document_or_mark_it_corrupt() -> None:
    doc = UserAdoptionState(user_id="u", metadata={"role": "Admin"}, last_updated_at=5.0).to_dict()
    row = user_row("p", "u", "k", json.dumps(doc))
    assert (row.user_id, row.corrupt, row.last_activity_at, row.metadata) == ("u", False, 5.0, {"role": "Admin"})
    for raw in ("{broken", "[1, 2]", '"text"', b"\xff", json.dumps({**doc, "_v": 99})):
        bad = user_row("p", "u", "k", raw)
        assert bad == UserSummary("p", "u", corrupt=True), raw


def test_session_rows_read_a_snapshot_or_mark_it_corrupt() -> None:
    snapshot = {"session_id": "s", "session_number": 2, "started_at": 10.0, "captured_at": 70.0}
    row = session_row("s", "k", json.dumps(snapshot))
    assert (row.session_number, row.captured_at, row.duration_s, row.corrupt) == (2, 70.0, 60.0, False)
    assert session_row("s", "k", "{broken", captured_at=7.0) == corrupt_session_row("s", 7.0)
    assert session_row("s", "k", "[]").corrupt


def test_matching_applies_every_filter_and_the_search_prefix() -> None:
    row = UserSummary(
        "p",
        "User_7",
        journey_state="onboarded",
        mastery_level="beginner",
        onboarded=True,
        metadata={"email": "Ann@Example.com", "team": 7},
    )
    assert matches(row, UserQuery())
    assert matches(row, UserQuery(journey_state="onboarded", mastery_level="beginner", onboarded=True))
    assert not matches(row, UserQuery(journey_state="onboarding"))
    assert not matches(row, UserQuery(mastery_level="novice"))
    assert not matches(row, UserQuery(onboarded=False))
    for search in ("ann", "  ANN@ex ", "user_", "USER_7"):
        assert matches(row, UserQuery(search=search)), search
    for search in ("example", "7", "bob"):  # prefixes only, and only string values
        assert not matches(row, UserQuery(search=search)), search
    assert matches(row, UserQuery(search="   "))  # blank: no search
