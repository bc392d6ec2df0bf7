"""Listings for the console: products, users (filtered, searched, keyset-paged) and session history.

Rows come from the indexes, and the live documents have the last word:
a row whose document is gone (TTL) is skipped, one that no longer matches
the query is dropped, a corrupt one is shown as corrupt.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from ...browse import Page, ProductSummary, SessionSummary, UserQuery, UserSummary
from ..common import (
    Position,
    clamp_limit,
    decode_cursor,
    is_after,
    matches,
    next_page,
    search_needle,
    session_row,
    user_row,
)
from .index import Command
from .keys import (
    JOURNEY_STATES,
    MASTERY_LEVELS,
    PRODUCTS_KEY,
    SEARCH_SEP,
    UserKeys,
    journey_key,
    mastery_key,
    onboarded_key,
    search_key,
    users_key,
)
from .transport import Transport, text


class Browser:
    """The console's reads over the indexes of ``keys``' key mode."""

    def __init__(self, transport: Transport, keys: UserKeys) -> None:
        self.transport = transport
        self.keys = keys

    async def list_products(self) -> list[ProductSummary]:
        products = sorted(text(p) for p in await self.transport.call(self.transport.client.smembers(PRODUCTS_KEY)))
        if not products:
            return []
        cmds: list[Command] = []
        for product_id in products:
            cmds.append(("ZCARD", users_key(product_id)))
            cmds.extend(("ZCARD", journey_key(product_id, j)) for j in JOURNEY_STATES)
            cmds.extend(("ZCARD", mastery_key(product_id, m)) for m in MASTERY_LEVELS)
        counts = iter(await self.transport.pipeline(cmds))
        out = []
        for product_id in products:
            user_count = next(counts)
            journeys = {j: n for j in JOURNEY_STATES if (n := next(counts))}
            levels = {m: n for m in MASTERY_LEVELS if (n := next(counts))}
            if user_count:
                out.append(ProductSummary(product_id, user_count, journeys, levels))
        return out

    async def list_users(
        self, product_id: str, query: UserQuery | None = None, *, cursor: str | None = None, limit: int = 50
    ) -> Page[UserSummary]:
        query = query or UserQuery()
        limit = clamp_limit(limit)
        position = decode_cursor(cursor)
        descending = query.order == "-last_activity"
        filters = []
        if query.journey_state:
            filters.append(journey_key(product_id, query.journey_state))
        if query.mastery_level:
            filters.append(mastery_key(product_id, query.mastery_level))
        if query.onboarded is not None:
            filters.append(onboarded_key(product_id, query.onboarded))
        needle = search_needle(query)
        if needle:
            candidates = await self._search(product_id, needle, filters, position, descending)
        else:
            candidates = await self._walk(filters or [users_key(product_id)], position, descending, limit)
        page, next_cursor = next_page(candidates, limit, lambda item: item)
        raws = await self.transport.get_many([self.keys.state(product_id, uid) for _, uid in page])
        rows = []
        for (_, user_id), raw in zip(page, raws, strict=True):
            if raw is None:
                continue  # expired (TTL) or deleted since it was indexed
            row = user_row(product_id, user_id, self.keys.state(product_id, user_id), raw)
            if matches(row, query):  # the live document has the last word
                rows.append(row)
        return Page(rows, next_cursor)

    async def list_sessions(
        self, product_id: str, user_id: str, *, cursor: str | None = None, limit: int = 50, newest_first: bool = True
    ) -> Page[SessionSummary]:
        raws, next_cursor = await self.history_page(product_id, user_id, cursor, limit, newest_first)
        rows = [
            session_row(session_id, self.keys.snapshot(product_id, user_id, session_id), raw)
            for session_id, raw in raws
        ]
        return Page(rows, next_cursor)

    async def history_page(
        self, product_id: str, user_id: str, cursor: str | None, limit: int, newest_first: bool
    ) -> tuple[list[tuple[str, bytes]], str | None]:
        """One keyset page of the history as ``(session_id, stored bytes)`` (one MGET), and the next cursor."""
        limit = clamp_limit(limit)
        position = decode_cursor(cursor)
        items: list[Position] = []
        async for batch in self._ordered(self.keys.history(product_id, user_id), position, newest_first, limit + 1):
            items.extend(batch)
            if len(items) > limit:
                break
        page, next_cursor = next_page(items, limit, lambda item: item)
        raws = await self.transport.get_many([self.keys.snapshot(product_id, user_id, sid) for _, sid in page])
        # A snapshot gone since it was indexed (a TTL) is left out.
        found = [(session_id, raw) for (_, session_id), raw in zip(page, raws, strict=True) if raw is not None]
        return found, next_cursor

    async def _walk(self, keys: list[str], position: Position | None, descending: bool, limit: int) -> list[Position]:
        """Up to ``limit + 1`` members of the smallest set that are in every other set, in order."""
        if len(keys) > 1:
            sizes = await self.transport.pipeline([("ZCARD", k) for k in keys])
            keys = [k for _, k in sorted(zip(sizes, keys, strict=True))]
        driver, others = keys[0], keys[1:]
        out: list[Position] = []
        async for batch in self._ordered(driver, position, descending, batch=limit + 1):
            if others:
                checks = await self.transport.pipeline([("ZMSCORE", k, *[m for _, m in batch]) for k in others])
                batch = [item for i, item in enumerate(batch) if all(c[i] is not None for c in checks)]
            out.extend(batch)
            if len(out) > limit:
                break
        return out[: limit + 1]

    async def _ordered(
        self, key: str, position: Position | None, descending: bool, batch: int
    ) -> AsyncIterator[list[Position]]:
        """Members after the keyset ``position`` in (score, member) order, a batch at a time."""
        bound: float | str = position[0] if position else ("+inf" if descending else "-inf")
        client, offset = self.transport.client, 0
        while True:
            if descending:
                request = client.zrevrangebyscore(key, bound, "-inf", start=offset, num=batch, withscores=True)
            else:
                request = client.zrangebyscore(key, bound, "+inf", start=offset, num=batch, withscores=True)
            got = await self.transport.call(request)
            offset += len(got)
            items = [item for m, s in got if is_after(item := (float(s), text(m)), position, descending)]
            if items:
                yield items
            if len(got) < batch:
                return

    async def _search(
        self, product_id: str, needle: str, filters: list[str], position: Position | None, descending: bool
    ) -> list[Position]:
        """Users with a search term starting with ``needle`` (lex range), filtered, in order."""
        low = b"[" + needle.encode()
        high = b"(" + needle.encode() + b"\xff"
        members = await self.transport.call(self.transport.client.zrangebylex(search_key(product_id), low, high))
        user_ids = sorted({text(m).split(SEARCH_SEP, 1)[-1] for m in members})
        if not user_ids:
            return []
        checks: list[Any] = await self.transport.pipeline(
            [("ZMSCORE", k, *user_ids) for k in [users_key(product_id), *filters]]
        )
        items = [(float(checks[0][i]), uid) for i, uid in enumerate(user_ids) if all(c[i] is not None for c in checks)]
        return sorted((it for it in items if is_after(it, position, descending)), reverse=descending)
