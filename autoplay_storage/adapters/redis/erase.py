"""Erasing one user: the tombstone first, then every key and index entry that names the user, in batches.

The order is what makes it race-safe. The tombstone (``ERASING``) is set
before anything is removed, and every session end checks it inside its own
atomic step (the script, or the WATCHed transaction), so no session end can
commit between the batches; only when everything is gone does the tombstone
take the erasure time (``tombstones``).

What is removed (docs/redis.md, "Keys"): the state key, the history sorted
set, every snapshot key: those the history lists and, found by ``SCAN
MATCH`` on the user's snapshot pattern, any another writer froze without a
history entry; then the user's members of the product indexes (users, the
filter sets, the search terms, found with ``ZSCAN MATCH`` on the id). No
``KEYS``: a SCAN costs the server a little at a time. In cluster mode the
user's keys share one slot and the product's indexes another; each batch is
one command to one slot.
"""

from __future__ import annotations

import time

from ...tombstones import ERASING
from .keys import SEARCH_SEP, UserKeys, all_filter_keys, glob_escape, search_key, users_key
from .seen import LastSeen
from .transport import Transport

BATCH = 500  # keys per UNLINK, members per ZREM: each a short command on the server


class Eraser:
    def __init__(self, transport: Transport, keys: UserKeys, seen: LastSeen) -> None:
        self.transport = transport
        self.keys = keys
        self.seen = seen

    async def erase(self, product_id: str, user_id: str, *, tombstone_s: int) -> dict[str, int]:
        tomb = self.keys.tombstone(product_id, user_id)
        await self.transport.pipeline([("SET", tomb, ERASING, "EX", tombstone_s)])
        state = self.keys.state(product_id, user_id)
        history = self.keys.history(product_id, user_id)
        self.seen.forget(state)
        found = {state, history}
        sessions = await self.transport.call(self.transport.client.zrange(history, 0, -1))
        found.update(self.keys.snapshot(product_id, user_id, s.decode()) for s in sessions)
        async for batch in self.transport.scan_batches(self.keys.snapshot_pattern(product_id, user_id)):
            found.update(batch)
        keys = sorted(found)
        removed = 0
        for start in range(0, len(keys), BATCH):
            chunk = keys[start : start + BATCH]
            for key in chunk:
                self.seen.forget(key)
            (count,) = await self.transport.pipeline([("UNLINK", *chunk)])
            removed += int(count)
        entries = await self._remove_index_entries(product_id, user_id)
        await self.transport.pipeline([("SET", tomb, repr(time.time()), "EX", tombstone_s)])
        return {"keys": removed, "index_entries": entries}

    async def _remove_index_entries(self, product_id: str, user_id: str) -> int:
        commands = [("ZREM", key, user_id) for key in [users_key(product_id), *all_filter_keys(product_id)]]
        removed = sum(int(n) for n in await self.transport.pipeline(commands))
        search = search_key(product_id)
        pattern = "*" + SEARCH_SEP + glob_escape(user_id)
        members: list[bytes] = []
        cursor = 0
        while True:
            cursor, page = await self.transport.call(
                self.transport.client.zscan(search, cursor, match=pattern, count=1000)
            )
            members.extend(member for member, _score in page)
            if cursor == 0:
                break
        for start in range(0, len(members), BATCH):
            (count,) = await self.transport.pipeline([("ZREM", search, *members[start : start + BATCH])])
            removed += int(count)
        return removed
