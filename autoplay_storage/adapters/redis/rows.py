"""List rows from stored state text, decoding only the fields a row and the facts read.

A state document is ~5 KB, most of it workflow progress and the sessions
index that a list row never shows; parsing all of it was most of a row's
cost (an export reads every user's). msgspec decodes just the fields named
below into dicts shaped like the document, and checks the rest as JSON
without building it; ``facts.direct_row`` and ``facts.direct_facts`` read
those dicts as they read a whole document.

A text this reading cannot vouch for is read whole by the codec, as before:
not UTF-8 (msgspec does not check skipped strings), NaN literals, lone
surrogates, a number too large for a float, an integer longer than Python
reads (the codec refuses it), a field of another shape, a document another
writer wrote. So the rows and the documents left out are the ones a whole
parse gives (tested against it).
"""

from __future__ import annotations

import sys
from typing import Any, TypedDict

import msgspec

from ...browse import UserSummary
from ...codec import parse_document
from ...errors import CorruptDocumentError
from ...facts import UserFacts, UserFilter, direct_facts, direct_row, list_row, matches, user_facts


class _Mastery(TypedDict, total=False):
    level: Any
    rating: Any


class _Step(TypedDict, total=False):
    completed_at: Any


class _Workflow(TypedDict, total=False):
    status: Any
    evidence: Any
    first_detected_at: Any
    completed_at: Any
    last_evaluated_at: Any
    steps: dict[str, _Step]


class _IndexEntry(TypedDict, total=False):
    session_id: Any
    captured_at: Any


class _RowOnboarding(TypedDict, total=False):
    completion_rate: Any
    onboarding_completed_at: Any
    workflow_progress: dict[str, msgspec.Raw]  # a row only checks it is an object


class _RowSessions(TypedDict, total=False):
    count: Any
    current_session_id: Any
    index: list[msgspec.Raw]  # a row only counts it


class _FactsOnboarding(_RowOnboarding, total=False):
    workflow_progress: dict[str, _Workflow]  # type: ignore[misc]


class _FactsSessions(_RowSessions, total=False):
    index: list[_IndexEntry]  # type: ignore[misc]


class _Row(TypedDict, total=False):
    _v: Any
    journey_state: Any
    mastery: _Mastery
    onboarding: _RowOnboarding
    sessions: _RowSessions
    metadata: Any
    first_seen_at: Any
    last_updated_at: Any


class _Facts(_Row, total=False):
    onboarding: _FactsOnboarding  # type: ignore[misc]
    sessions: _FactsSessions  # type: ignore[misc]


class _Status(TypedDict, total=False):
    status: Any


class _FilterOnboarding(_RowOnboarding, total=False):
    workflow_progress: dict[str, _Status]  # type: ignore[misc]


class _Filter(_Row, total=False):
    """What ``matches`` reads through ``direct_facts``: of a workflow, only its status.

    The facts of such a head hold no workflow's progress time or evidence
    (0 and ""); no filter reads them, so they are only matched, never shown.
    """

    onboarding: _FilterOnboarding  # type: ignore[misc]
    sessions: _FactsSessions  # type: ignore[misc]


_ROW = msgspec.json.Decoder(_Row)
_FACTS = msgspec.json.Decoder(_Facts)
_FILTER = msgspec.json.Decoder(_Filter)


def _may_hold_an_unreadable_integer(raw: bytes) -> bool:
    """More digits in a row than Python converts (the codec refuses such an integer; msgspec skips it).

    Such a run covers a whole stretch between two neighbouring multiples of
    half the limit, so only those stretches are looked at, each up to its
    first byte that is not a digit.
    """
    limit = sys.get_int_max_str_digits()
    if not limit or len(raw) <= limit:
        return False
    step = limit // 2
    return any(47 < raw[i] < 58 and raw[i : i + step + 1].isdigit() for i in range(0, len(raw) - step, step))


def _head(raw: Any, decoder: msgspec.json.Decoder) -> dict[str, Any] | None:
    """The declared fields of ``raw``, or ``None`` when only a whole parse can say what it holds."""
    if raw.__class__ is not bytes or _may_hold_an_unreadable_integer(raw):
        return None
    if not raw.isascii():
        try:
            raw.decode()
        except UnicodeDecodeError:
            return None
    try:
        head = decoder.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        return None
    return head if head.__class__ is dict else None


def read_row(product_id: str, user_id: str, key: str, raw: Any, check: UserFilter | None) -> UserSummary | None:
    """The list row of a stored state; ``None`` when it is corrupt or no longer matches ``check``."""
    head = _head(raw, _ROW if check is None else _FILTER)
    if head is not None:
        row = direct_row(product_id, user_id, head)
        facts = None if check is None or row is None else direct_facts(head)
        if row is not None and (check is None or facts is not None):
            return row if check is None or matches(facts, check) else None
    try:
        doc = parse_document(key, raw) or {}
    except CorruptDocumentError:
        return None
    if check is not None and not matches(user_facts(doc), check):
        return None
    return list_row(product_id, user_id, doc)


def read_row_and_facts(product_id: str, user_id: str, key: str, raw: Any) -> tuple[UserSummary, UserFacts] | None:
    """The list row and the facts of a stored state; ``None`` when it is corrupt or counts nowhere."""
    head = _head(raw, _FACTS)
    if head is not None:
        row, facts = direct_row(product_id, user_id, head), direct_facts(head)
        if row is not None and facts is not None:
            return row, facts
    try:
        doc = parse_document(key, raw) or {}
    except CorruptDocumentError:
        return None
    facts = user_facts(doc)
    return None if facts is None else (list_row(product_id, user_id, doc), facts)
