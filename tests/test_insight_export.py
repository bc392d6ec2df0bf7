"""The CSV export's reads give the list's rows on every primary (the database's from its columns and
metadata rows, reading a document only where those cannot say), and its date cells are ``datetime``'s."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import datetime as dt
import io
import json
import random
import sys
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autoplay_storage.adapters.database import DatabaseStorageAdapter
from autoplay_storage.adapters.redis import RedisStorageAdapter
from autoplay_storage.adapters.redis.rows import read_row, read_row_and_facts
from autoplay_storage.codec import parse_document
from autoplay_storage.demo import clone_states, state_archetypes
from autoplay_storage.errors import CorruptDocumentError
from autoplay_storage.facts import UserFilter, list_row, matches, user_facts
from autoplay_storage.manager import StorageManager
from autoplay_storage.selectors import EXPORT_BATCH
from dashboard.views_insight import _iso, user_cells
from tests.support.hostile import stored_texts
from tests.test_insight_aggregates import PRODUCT, store  # noqa: F401 (the fixture: every primary)

FILTERS = [
    UserFilter(),
    UserFilter(order="last_activity"),
    UserFilter(journey_state="onboarded"),
    UserFilter(workflow_id="create_project", workflow_status="completed"),
    UserFilter(meta_key="plan", meta_value="team", mastery_levels=("beginner", "intermediate", "proficient")),
]


async def every_page(read, f: UserFilter, limit: int) -> list:
    rows, cursor = [], None
    while True:
        page = await read(PRODUCT, f, cursor=cursor, limit=limit)
        rows += page.items
        if not (cursor := page.next_cursor):
            return rows


async def test_export_rows_are_the_list_rows(store) -> None:  # noqa: F811
    adapter, _, _ = store
    storage = StorageManager([adapter])
    docs = dict(clone_states(await state_archetypes(6, seed=4), 14, seed=4))
    ids = sorted(docs)
    odd = [
        {"email": "x" * 150 + "@example.com"},  # longer than a metadata row holds: read from the document
        {"role": 7},  # not text: the CSV shows none
        {"email": '=HYPERLINK("http://x")', "role": "-admin"},  # formula cells
        {"role": None},
        {"email": ""},
    ]
    for uid, extra in zip(ids, odd, strict=False):
        docs[uid]["metadata"] = {**docs[uid]["metadata"], **extra}
    del docs[ids[5]]["metadata"]["role"]
    docs[ids[6]]["mastery"] = {**docs[ids[6]]["mastery"], "rating": "7"}  # another writer's: read defensively
    for uid, doc in docs.items():
        await storage.save_user_state(PRODUCT, uid, doc)
    for f in FILTERS:
        listed = await every_page(adapter.list_filtered_users, f, 500)
        exported = await every_page(adapter.export_users, f, 3)
        assert [user_cells(u) for u in exported] == [user_cells(u) for u in listed], f
        if f.empty:
            assert len(exported) == len(docs)
    cells = {u.user_id: user_cells(u) for u in await every_page(adapter.export_users, UserFilter(), 4)}
    assert cells[ids[0]][1] == "x" * 150 + "@example.com"
    assert cells[ids[1]][2] == "" and cells[ids[3]][2] == "" and cells[ids[5]][2] == ""
    assert cells[ids[2]][1:3] == ["'=HYPERLINK(\"http://x\")", "'-admin"]


def test_iso_cells_are_datetimes_isoformat() -> None:
    rng = random.Random(5)
    edges = [1e-6, 0.4999995, 0.9999995, 0.99999949, 59.9999996, 86399.9999995, 1795710741.6483333, 253402300799.0]
    values = edges + [rng.uniform(0, 4e9) for _ in range(20_000)]
    values += [rng.randrange(4 * 10**9) + rng.choice([0.9999995, 0.99999949, 0.5, 5e-7]) for _ in range(20_000)]
    for t in values:
        assert _iso(t) == dt.datetime.fromtimestamp(t, tz=dt.UTC).isoformat(timespec="seconds"), t
    assert _iso(None) == _iso(0.0) == ""


# -- Redis: rows from the fields a row shows (adapters/redis/rows.py) ------------------------

KEY = "autoplay:user:prod_insight:u_1:state"
CHECKS = [
    None,
    UserFilter(journey_state="onboarded"),
    UserFilter(mastery_levels=("novice", "beginner"), onboarded=False),
    UserFilter(onboarded=True, sessions_min=2, sessions_max=40),
    UserFilter(workflow_id="create_project", workflow_status="completed"),
    UserFilter(workflow_id="create_project", workflow_status="untouched"),
    UserFilter(workflow_id="invite_team", workflow_status="in_progress"),
    UserFilter(meta_key="plan", meta_value="team"),
    UserFilter(active_after=1.0, first_seen_before=4e9),
]


def whole_document_row(raw: bytes, check: UserFilter | None):
    """What a row was before: the whole document parsed, its facts checked, the row read from it."""
    try:
        doc = parse_document(KEY, raw) or {}
    except CorruptDocumentError:
        return None
    if check is not None and not matches(user_facts(doc), check):
        return None
    return list_row(PRODUCT, "u_1", doc)


def whole_document_facts(raw: bytes):
    try:
        doc = parse_document(KEY, raw) or {}
    except CorruptDocumentError:
        return None
    facts = user_facts(doc)
    return None if facts is None else (list_row(PRODUCT, "u_1", doc), facts)


def as_bytes(text: str, how: str) -> bytes:
    """The stored bytes: as written, as UTF-8 (surrogates too, as another writer may), or with a byte not UTF-8."""
    if how == "ascii":
        return text.encode()
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return text.encode("utf-8", "surrogatepass")
    if how == "utf-8":
        return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")
    quote = text.find('"')
    raw = text.encode()
    return raw if quote < 0 else raw[: quote + 1] + b"\xff" + raw[quote + 1 :]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_rows_read_from_their_fields_are_the_rows_of_the_whole_document(sdk_fixtures, engine_states, data) -> None:
    states = [doc for name, doc in sorted(sdk_fixtures.items()) if name.startswith("state__")] + engine_states
    text = data.draw(st.one_of(st.sampled_from([json.dumps(d) for d in states]), stored_texts(states)))
    raw = as_bytes(text, data.draw(st.sampled_from(["ascii", "utf-8", "not-utf-8"])))
    for check in CHECKS:
        assert settled(read_row(PRODUCT, "u_1", KEY, raw, check)) == settled(whole_document_row(raw, check)), check
    assert settled(read_row_and_facts(PRODUCT, "u_1", KEY, raw)) == settled(whole_document_facts(raw))


def settled(value):
    """``value`` with the times a document does not hold, which the reader makes "now", as "now" (two reads differ)."""
    if dataclasses.is_dataclass(value):
        value = dataclasses.astuple(value)
    if isinstance(value, tuple):
        return tuple(settled(v) for v in value)
    return "now" if isinstance(value, float) and abs(value - time.time()) < 600 else value


def test_texts_msgspec_reads_otherwise_are_judged_by_the_codec(engine_states) -> None:
    doc = engine_states[0]
    digits = "9" * (sys.get_int_max_str_digits() + 1)
    text = json.dumps(doc).encode()
    assert text.startswith(b'{"_v": 1, ')

    def with_note(note: bytes) -> bytes:
        return text.replace(b'{"_v": 1, ', b'{"_v": 1, "note": ' + note + b", ", 1)

    refused = [with_note(digits.encode()), with_note(b'"\xff"'), with_note(b"[1,]")]  # too long, not UTF-8, not JSON
    read = [with_note(n) for n in (b"NaN", b"1e400", b'"\\ud800"', b'"\xed\xa0\x80"', b'"' + digits.encode() + b'"')]
    for raw in refused:
        assert whole_document_row(raw, None) is None and read_row(PRODUCT, "u_1", KEY, raw, None) is None, raw[:40]
    for raw in read:
        row = list_row(PRODUCT, "u_1", doc)
        assert read_row(PRODUCT, "u_1", KEY, raw, None) == whole_document_row(raw, None) == row, raw[:40]


@pytest.fixture(scope="module")
def engine_states() -> list[dict]:
    """States this engine wrote, with the odd values a list row must read the same way."""
    docs = [doc for _, doc in clone_states(asyncio.run(state_archetypes(6, seed=7)), 6, seed=7)]
    docs[1]["metadata"] = {**docs[1]["metadata"], "name": "Zoë Ünal", "role": "=cmd", "plan": "team"}
    docs[2]["metadata"] = {**docs[2]["metadata"], "score": 1.5}
    docs[3]["mastery"] = {**docs[3]["mastery"], "rating": "7"}
    docs[4]["onboarding"]["workflow_progress"]["invite_team"] = {"status": "in_progress", "steps": []}
    return docs


# -- the same users on Redis and on the database: the same CSV ------------------------------


async def save_all(storage: StorageManager, docs: dict[str, dict]) -> None:
    items = list(docs.items())
    for i in range(0, len(items), 20):
        await asyncio.gather(*(storage.save_user_state(PRODUCT, uid, doc) for uid, doc in items[i : i + 20]))


def csv_text(rows: list) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerows(map(user_cells, rows))
    return buffer.getvalue()


@pytest.mark.django_db(transaction=True)
async def test_redis_and_the_database_export_the_same_csv(redis_url, engine_states) -> None:
    docs = dict(clone_states(await state_archetypes(8, seed=9), 1_101, seed=9))  # three reads of documents a page
    ids = sorted(docs)
    for uid, doc in zip(ids, engine_states, strict=False):
        docs[uid] = {**doc, "user_id": uid}
    docs[ids[7]]["metadata"] = {**docs[ids[7]]["metadata"], "email": "ana.o'neil@example.com", "role": 'a "lead"'}
    redis, database = RedisStorageAdapter(redis_url), DatabaseStorageAdapter("default")
    try:
        for adapter in (redis, database):
            await save_all(StorageManager([adapter]), docs)
        for f in [*FILTERS, UserFilter(mastery_levels=("novice", "beginner"), sessions_max=3)]:
            on_redis = await every_page(redis.export_users, f, EXPORT_BATCH)
            on_database = await every_page(database.export_users, f, EXPORT_BATCH)
            assert on_redis and csv_text(on_redis) == csv_text(on_database), f
        assert len(await every_page(redis.export_users, UserFilter(), EXPORT_BATCH)) == len(docs)
    finally:
        await redis.aclose()
        await database.aclose()


async def test_an_export_page_leaves_out_what_its_documents_no_longer_say(redis_url) -> None:
    """Documents are read in several batches a page; a deleted, a corrupt and a changed one are left out."""
    import redis.asyncio as aioredis

    adapter = RedisStorageAdapter(redis_url)
    storage = StorageManager([adapter])
    docs = dict(clone_states(await state_archetypes(4, seed=3), 1_300, seed=3))
    await save_all(storage, docs)
    f = UserFilter(journey_state=docs["u_0000001"]["journey_state"])
    listed = await every_page(adapter.list_filtered_users, f, 500)
    gone, corrupt, changed = (listed[i].user_id for i in (10, 600, 1_100 if len(listed) > 1_100 else -1))
    client = aioredis.from_url(redis_url)
    try:
        await client.delete(adapter.state_key(PRODUCT, gone))  # its index entries stay until a rebuild
        await client.set(adapter.state_key(PRODUCT, corrupt), b'{"journey_state": ')
        moved = {**docs[changed], "journey_state": "onboarded" if f.journey_state == "onboarding" else "onboarding"}
        await client.set(adapter.state_key(PRODUCT, changed), json.dumps(moved))  # the index says otherwise
    finally:
        await client.aclose()
    exported = await every_page(adapter.export_users, f, EXPORT_BATCH)
    assert [u.user_id for u in exported] == [u.user_id for u in listed if u.user_id not in (gone, corrupt, changed)]
    again = await every_page(adapter.list_filtered_users, f, 500)
    assert [user_cells(u) for u in exported] == [user_cells(u) for u in again]
    await adapter.aclose()
