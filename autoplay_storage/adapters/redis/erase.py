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

The insight aggregates (``facts.py``) lose the user as a state write would
move them to "no user": the state is deleted under WATCH with the diff of
its facts to none, and each batch of snapshots under WATCH with their
counts taken back, in the same MULTI where the product's keys share the
server. In a cluster they live in another slot: the state's members are
removed just *before* its deletion (a retry still finds the state, and a
write in between makes the deletion start over) and once more at the end
(a session end that committed before sends its product step after its
transaction), the snapshots' counts just after theirs.
"""

from __future__ import annotations

import time
from typing import Any

from ...codec import parse_document
from ...errors import DocumentError
from ...facts import SnapshotFacts, UserFacts, snapshot_facts, user_facts
from ...tombstones import ERASING
from .facts import facts_commands, snapshot_uncount_commands
from .index import Command
from .keys import SEARCH_SEP, UserKeys, all_filter_keys, glob_escape, search_key, users_key
from .seen import LastSeen
from .transport import CONFLICT, Transport
from .writes import MAX_TX_ATTEMPTS, backoff, gave_up

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
        removed, facts = await self._remove_state(product_id, user_id, state)
        sessions = await self.transport.call(self.transport.client.zrange(history, 0, -1))
        found = {self.keys.snapshot(product_id, user_id, s.decode()) for s in sessions}
        async for batch in self.transport.scan_batches(self.keys.snapshot_pattern(product_id, user_id)):
            found.update(batch)
        keys = sorted(found)
        for start in range(0, len(keys), BATCH):
            chunk = keys[start : start + BATCH]
            for key in chunk:
                self.seen.forget(key)
            removed += await self._remove_snapshots(product_id, chunk)
        (count,) = await self.transport.pipeline([("UNLINK", history)])
        removed += int(count)
        entries = await self._remove_index_entries(product_id, user_id)
        if not self.transport.atomic_indexes:  # again: a session end's product step may have come after the first
            await self.transport.pipeline(facts_commands(product_id, user_id, facts, None))
        await self.transport.pipeline([("SET", tomb, repr(time.time()), "EX", tombstone_s)])
        return {"keys": removed, "index_entries": entries}

    async def _remove_state(self, product_id: str, user_id: str, key: str) -> tuple[int, UserFacts | None]:
        """UNLINK the state with its facts diffed to none (see the module's docstring); keys removed, the facts."""
        atomic = self.transport.atomic_indexes
        sent: list[bytes | None] = []  # cluster: the state whose members were just removed
        changed: list[bool] = []

        def decide(raws: list[bytes | None]) -> tuple[list[Command], list[Command]] | None:
            raw = raws[0]
            if raw is None:
                return None
            if sent and raw != sent[0]:  # written since its members were removed: once more
                changed.append(True)
                return None
            steps: list[Command] = [("UNLINK", key)]
            if atomic:
                steps += facts_commands(product_id, user_id, _user_facts(key, raw), None)
            return steps, []

        for attempt in range(MAX_TX_ATTEMPTS):
            changed.clear()
            if not atomic:
                sent[:] = [await self.transport.get(key)]
                await self.transport.pipeline(facts_commands(product_id, user_id, _user_facts(key, sent[0]), None))
            raws, outcome = await self.transport.watched((key,), decide)
            if outcome is CONFLICT or changed:
                await backoff(attempt)
                continue
            facts = _user_facts(key, sent[0] if sent else raws[0])
            return (0, facts) if outcome is None else (int(outcome[0][0]), facts)
        raise gave_up(key)

    async def _remove_snapshots(self, product_id: str, keys: list[str]) -> int:
        """UNLINK snapshots (one slot) and take their counts back, once: WATCHed, so racing erasures never both do."""
        atomic = self.transport.atomic_indexes
        uncount: list[Command] = []

        def decide(raws: list[bytes | None]) -> tuple[list[Command], list[Command]] | None:
            present = [(k, raw) for k, raw in zip(keys, raws, strict=True) if raw is not None]
            if not present:
                return None
            erased = [f for k, raw in present if (f := _snapshot_facts(k, raw)) is not None]
            uncount[:] = snapshot_uncount_commands(product_id, erased)
            steps: list[Command] = [("UNLINK", *(k for k, _ in present))]
            return (steps + uncount if atomic else steps), []

        for attempt in range(MAX_TX_ATTEMPTS):
            _raws, outcome = await self.transport.watched(keys, decide)
            if outcome is CONFLICT:
                await backoff(attempt)
                continue
            if outcome is None:
                return 0
            if not atomic:  # the product's counters are in another slot: right after
                await self.transport.pipeline(uncount)
            return int(outcome[0][0])
        raise gave_up(keys[0])

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


def _document(key: str, raw: bytes | None) -> dict[str, Any] | None:
    try:
        return parse_document(key, raw)
    except DocumentError:  # unreadable: it was counted nowhere
        return None


def _user_facts(key: str, raw: bytes | None) -> UserFacts | None:
    doc = _document(key, raw)
    return None if doc is None else user_facts(doc)


def _snapshot_facts(key: str, raw: bytes | None) -> SnapshotFacts | None:
    doc = _document(key, raw)
    return None if doc is None else snapshot_facts(doc)
