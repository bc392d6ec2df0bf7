"""Everything the console holds about one user, as one JSON document, streamed (data portability).

The document: ``schema_version`` (this format), ``document_schema_version``
(the state's and snapshots' ``_v``), ``exported_at``, the ids, the
``state``, every snapshot oldest first (``{"session_id", "document"}``),
the summary runs and any erasure receipts. A stored document that cannot
be parsed is exported as ``{"unreadable": true, "reason", "raw"}``: its text
as stored.

The history is paged with the primary's own keyset cursors and each page's
documents are read concurrently, then written out and dropped, so memory
stays flat however many sessions a user has.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from .codec import dumps_text, parse_document

try:
    import orjson
except ImportError:  # pragma: no cover - the standard library reads and writes every piece then
    orjson = None
from .erasure import receipt_document
from .errors import CorruptDocumentError, NotBrowsableError
from .models import Erasure, SummaryRun
from .protocol import BrowsableStorage, RawHistoryStore
from .runtime import get_storage
from .user_adoption_state import SCHEMA_VERSION

EXPORT_SCHEMA_VERSION = 1
PAGE = 500


def snapshot_piece(key: str, session_id: str, raw: str) -> str:
    """``{"session_id", "document"}`` as JSON text: the stored text itself when it is strict JSON already
    (most are: no parse-and-write-again for 10,000 of them), else what the reader makes of it."""
    if orjson is not None:
        try:
            doc = orjson.loads(raw)
        except ValueError:
            doc = None
        if isinstance(doc, dict):
            return '{"session_id":' + orjson.dumps(session_id).decode() + ',"document":' + raw + "}"
    doc = _readable(key, raw)
    try:
        return dumps_text({"session_id": session_id, "document": doc})
    except ValueError:  # NaN or Infinity, which another writer stored and strict JSON cannot hold
        return dumps_text({"session_id": session_id, "document": _unreadable("not strict JSON (NaN or Infinity)", raw)})


def _unreadable(reason: str, raw: str | None) -> dict[str, Any]:
    return {"unreadable": True, "reason": reason, "raw": raw}


def _readable(key: str, raw: str | None) -> Any:
    try:
        return parse_document(key, raw)
    except CorruptDocumentError as exc:
        return _unreadable(exc.reason, exc.raw)


def _run(run: SummaryRun) -> dict[str, Any]:
    return {
        "session_id": run.session_id,
        "source": run.source,
        "summarizer": run.summarizer,
        "started_at": run.started_at.isoformat(),
        "duration_ms": run.duration_ms,
        "outcome": run.outcome,
        "error": run.error or None,
        "previous_summary": run.previous_summary,
        "new_summary": run.new_summary,
    }


def _browsable() -> BrowsableStorage:
    primary = get_storage().primary
    if not isinstance(primary, BrowsableStorage):
        raise NotBrowsableError(f"the primary {getattr(primary, 'name', primary)} cannot list a user's history")
    return primary


async def export_user(product_id: str, user_id: str) -> tuple[str, AsyncIterator[str]]:
    """The document's head (read now: an unreachable primary raises here) and the rest, in pieces.

    The rest is an async generator not started yet, so whoever streams it
    runs it in its own event loop (a WSGI server consumes a streamed response
    in a loop of its own; a generator started in the view's loop would be
    closed with that loop).
    """
    primary = _browsable()
    raw_state = await primary.get_raw_user_state(product_id, user_id)
    head = {
        "schema_version": EXPORT_SCHEMA_VERSION,
        "document_schema_version": SCHEMA_VERSION,
        "exported_at": datetime.now(UTC).isoformat(),
        "product_id": product_id,
        "user_id": user_id,
        "state": _readable(f"{product_id}/{user_id}", raw_state),
    }
    try:
        text = dumps_text(head)
    except ValueError:  # NaN or Infinity in the stored state, which strict JSON cannot hold
        head["state"] = _unreadable("not strict JSON (NaN or Infinity)", raw_state)
        text = dumps_text(head)
    return text[:-1] + ',"snapshots":[', _rest(product_id, user_id)


async def _history(primary: BrowsableStorage, product_id: str, user_id: str) -> AsyncIterator[list[tuple[str, str]]]:
    """The stored snapshots oldest first, a page at a time: in one round trip each where the primary can."""
    cursor = None
    while True:
        if isinstance(primary, RawHistoryStore):
            page = await primary.list_raw_sessions(product_id, user_id, cursor=cursor, limit=PAGE)
            next_cursor = page.next_cursor
            yield page.items
        else:
            listed = await primary.list_sessions(product_id, user_id, cursor=cursor, limit=PAGE, newest_first=False)
            ids = [row.session_id for row in listed.items]
            raws = await asyncio.gather(*(primary.get_raw_session_snapshot(product_id, user_id, s) for s in ids))
            # A snapshot gone between the listing and the read (an erasure, a TTL) is left out.
            next_cursor = listed.next_cursor
            yield [(s, raw) for s, raw in zip(ids, raws, strict=True) if raw is not None]
        if next_cursor is None:
            return
        cursor = next_cursor


async def _rest(product_id: str, user_id: str) -> AsyncIterator[str]:
    primary = _browsable()
    first = True
    async for rows in _history(primary, product_id, user_id):
        pieces = []
        for session_id, raw in rows:
            pieces.append(
                ("" if first else ",") + snapshot_piece(f"{product_id}/{user_id}/{session_id}", session_id, raw)
            )
            first = False
        if pieces:
            yield "".join(pieces)
    runs = [
        _run(r) async for r in SummaryRun.objects.filter(product_id=product_id, user_id=user_id).order_by("started_at")
    ]
    receipts = [
        await receipt_document(e)
        async for e in Erasure.objects.filter(product_id=product_id, user_id=user_id).order_by("round")
    ]
    yield '],"summary_runs":' + dumps_text(runs) + ',"erasures":' + dumps_text(receipts) + "}"
