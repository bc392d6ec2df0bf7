"""The CSV export's reads give the list's rows on every primary (the database's from its columns and
metadata rows, reading a document only where those cannot say), and its date cells are ``datetime``'s."""

from __future__ import annotations

import datetime as dt
import random

from autoplay_storage.demo import clone_states, state_archetypes
from autoplay_storage.facts import UserFilter
from autoplay_storage.manager import StorageManager
from dashboard.views_insight import _iso, user_cells
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
