"""State writes: the compare-and-set loop, write-once snapshots, the one-step session end.

Every state write on a standalone server (Redis 7+) is a compare-and-set in
one script run (``scripts/cas.lua``). The writer computes the new document
from the state it last saw for that user (``LastSeen``), and the script
writes it with the browsing-index changes only if the stored state still is
those very bytes; otherwise it writes nothing and returns the current state,
and ``mutate`` runs again on it. ``mutate`` is arbitrary Python (the
lifecycle's merge rules) that cannot run inside Redis, so it may run more
than once and must be pure. A session end freezes its snapshot (``SET NX``)
and folds it into the state in the same script, so a whole session costs two
round trips while the cache is warm, four when another process wrote the user
since. ``WatchWriter`` (``watch.py``) is the same contract on WATCH/MULTI.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from ... import codec
from ...browse import UserSummary, user_summary_from_doc
from ...codec import parse_document
from ...errors import CorruptDocumentError, StorageUnavailableError, UserErasedError
from ...facts import snapshot_facts, user_facts
from ...protocol import SessionFold, StateDoc, StateMutation
from ...tombstones import erased_time, session_started
from .facts import Announced, FactsMemo, facts_commands, snapshot_commands
from .index import Command, IndexEntry, captured_at, index_commands, index_entry
from .keys import UserKeys, all_filter_keys
from .scripts import CAS, ERASED, FROZEN, STALE, WRITTEN, cas_arguments
from .seen import NOTHING_SEEN, LastSeen, Seen
from .transport import CONFLICT, Transport, checked, text

# Optimistic rounds retried on a write conflict before giving up. 50 writers
# racing for one user need at most 50 rounds; the backoff spreads them.
MAX_TX_ATTEMPTS = 500

Prepared = tuple[StateDoc | None, StateDoc | None, list[Command], IndexEntry | None]
Guard = tuple[str, float]  # (the user's tombstone key, when the session started): see ``tombstones``


def gave_up(key: str) -> StorageUnavailableError:
    return StorageUnavailableError(
        f"redis: {key} kept changing under {MAX_TX_ATTEMPTS} optimistic transactions; try again"
    )


async def backoff(attempt: int) -> None:
    """Someone else won this round: wait a little so the herd spreads out."""
    await asyncio.sleep(random.uniform(0, min(0.001 * (attempt + 1), 0.02)))


def first_session_on_start(old: StateDoc | None, new: StateDoc) -> str | None:
    """The id of session number 1 when this write starts a session for a returning user.

    The lifecycle reads that snapshot next (spec 6): the write fetches it in
    the same round trip. ``old`` is the state replaced (``None``: none).
    """
    sessions = new.get("sessions")
    if not isinstance(sessions, dict) or not sessions.get("current_session_id"):
        return None
    old_sessions = old.get("sessions") if isinstance(old, dict) else None
    if isinstance(old_sessions, dict) and old_sessions.get("current_session_id") == sessions["current_session_id"]:
        return None
    index = sessions.get("index")
    for entry in index if isinstance(index, list) else ():
        if isinstance(entry, dict) and entry.get("session_number") == 1 and isinstance(entry.get("session_id"), str):
            return entry["session_id"]
    return None


def fold_into(fold: SessionFold, frozen: dict[str, Any]) -> StateMutation:
    """``fold`` as a state mutation with the frozen snapshot bound."""
    return lambda doc: fold(frozen, doc)


class Writer:
    """What both write paths share: keys, TTL, the last-seen cache, snapshots, replica acknowledgements."""

    def __init__(
        self,
        transport: Transport,
        keys: UserKeys,
        seen: LastSeen,
        *,
        ttl_s: int | None,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 1000,
    ) -> None:
        self.transport = transport
        self.keys = keys
        self.seen = seen
        self.ex: tuple[Any, ...] = ("EX", ttl_s) if ttl_s else ()
        self.ttl_s = ttl_s
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = wait_timeout_ms
        self.facts = FactsMemo(seen.size)
        self.announced = Announced()

    def guard(self, product_id: str, user_id: str, snapshot: dict[str, Any]) -> Guard:
        """What a session end's atomic step checks: no tombstone covering the session it records."""
        return self.keys.tombstone(product_id, user_id), session_started(snapshot)

    # -- replica acknowledgement (WAIT) --

    def wait_commands(self) -> list[Command]:
        return [("WAIT", self.wait_replicas, self.wait_timeout_ms)] if self.wait_replicas else []

    def check_acknowledged(self, reply: Any, key: str) -> None:
        """Raise unless ``WAIT`` says enough replicas have the writes so far: the caller retries (idempotent)."""
        acked = reply if isinstance(reply, int) else -1
        if acked < self.wait_replicas:
            raise StorageUnavailableError(
                f"redis: the session end of {key} is on the master but {max(acked, 0)} of"
                f" {self.wait_replicas} replicas acknowledged it within {self.wait_timeout_ms} ms; retry it"
            )

    async def acknowledge(self, snapshot_key: str, frozen_raw: bytes | str) -> None:
        """WAIT for a session end this call did not write in one step (a retry, the WATCH path).

        WAIT covers this connection's own writes, so the frozen snapshot is
        rewritten with its very bytes first (a write-once no-op that the
        replicas still receive): acknowledged, it carries every write before it.
        """
        if not self.wait_replicas:
            return
        replies = await self.transport.execute(
            [("SET", snapshot_key, frozen_raw, "XX", "KEEPTTL"), *self.wait_commands()]
        )
        self.check_acknowledged(replies[-1], snapshot_key)

    # -- snapshots --

    def freeze_commands(self, key: str, history: str, session_id: str, snapshot: dict[str, Any]) -> list[Command]:
        """``SET NX`` of the snapshot and its history entry: the first write wins, a retry changes nothing."""
        cmds: list[Command] = [
            ("SET", key, codec.dumps(snapshot), "NX", *self.ex),
            ("ZADD", history, "NX", captured_at(session_id, snapshot), session_id),
        ]
        if self.ttl_s:
            cmds.append(("EXPIRE", history, self.ttl_s))
        return cmds

    async def freeze(
        self, product_id: str, user_id: str, session_id: str, snapshot: dict[str, Any]
    ) -> tuple[dict[str, Any], bytes | None]:
        """Write-once (MULTI/EXEC); the snapshot stored now and its bytes (``None``: gone again at once, a TTL)."""
        key = self.keys.snapshot(product_id, user_id, session_id)
        history = self.keys.history(product_id, user_id)
        freeze = self.freeze_commands(key, history, session_id, snapshot)
        results = await self.transport.transaction(freeze)
        payload = freeze[0][2]
        if results[0] is not None:
            self.seen.keep_frozen(key, payload, snapshot)
            # Counted once, by the writer whose SET NX froze it (the product's keys may be in another slot).
            await self.transport.pipeline(snapshot_commands(product_id, snapshot_facts(snapshot)))
            return snapshot, payload
        # Already there (a retry, or written by another writer such as the SDK):
        # return the frozen one, and make the history order it by its capture time.
        raw = await self.transport.get(key)
        doc = self.seen.snapshot(key, raw)  # a corrupt one raises: never fold a guess
        if doc is None:  # deleted between the two calls (a TTL ran out): nothing is frozen
            return snapshot, None
        await self.reorder_history(history, session_id, doc)
        return doc, raw

    async def reorder_history(self, history: str, session_id: str, frozen: dict[str, Any]) -> None:
        await self.transport.pipeline([("ZADD", history, captured_at(session_id, frozen), session_id)])

    # -- the repair of an unreadable state --

    async def replace_if_raw(self, product_id: str, user_id: str, expected_raw: str, state: StateDoc) -> bool:
        """WATCH the state, compare its text, MULTI the new one: rare, so one path for both writers.

        The text is compared as ``get_raw_user_state`` decodes it, so bytes
        that are not UTF-8 can be repaired too. The user is moved out of
        every filter set it may be filed in (an unreadable state was filed as
        the defaults, or as a newer writer's fields) and filed anew.
        """
        key = self.keys.state(product_id, user_id)
        payload = codec.dumps(state)
        idx: list[Command] = []  # what the last decide() filed

        def decide(raws: list[bytes | None]) -> tuple[list[Command], list[Command]] | None:
            raw = raws[0]
            if raw is None or text(raw) != expected_raw:
                return None
            try:
                old_doc: Any = parse_document(key, raw)
            except CorruptDocumentError:
                old_doc = None
            old = IndexEntry.from_row(
                user_summary_from_doc(product_id, user_id, old_doc)
                if isinstance(old_doc, dict)
                else UserSummary(product_id=product_id, user_id=user_id, corrupt=True)
            )
            idx[:] = [("ZREM", k, user_id) for k in all_filter_keys(product_id)]
            idx.extend(index_commands(product_id, user_id, old, index_entry(product_id, user_id, state)))
            steps: list[Command] = [("SET", key, payload, *self.ex)]
            return ([*idx, *steps] if self.transport.atomic_indexes else steps), []

        for attempt in range(MAX_TX_ATTEMPTS):
            _raws, outcome = await self.transport.watched((key,), decide)
            if outcome is CONFLICT:
                await backoff(attempt)
                continue
            self.seen.forget(key)
            if outcome is not None and not self.transport.atomic_indexes:
                await self.transport.pipeline(idx)  # the product's indexes live in other slots: right after
            return outcome is not None
        raise gave_up(key)

    # -- the mutation --

    def prepare(self, key: str, product_id: str, user_id: str, seen: Seen, mutate: StateMutation) -> Prepared:
        """(current, new, index commands then nothing else, new's entry); ``new is None``: nothing to write.

        ``seen.filed``: the entry this adapter filed when it wrote ``seen.raw``
        (see ``index_commands``). An unreadable state (corrupt, a newer
        ``_v``) or a failing ``mutate`` makes the guess untrusted: the next
        write asks Redis again.
        """
        raw, filed = seen.raw, seen.filed
        try:
            current = self.seen.current(key, seen)
            # Before mutate runs: it may change the document it is given in place.
            old = filed if filed is not None or current is None else index_entry(product_id, user_id, current)
            old_facts = self.facts.old(key, filed, current)
            new = mutate(current)
        except BaseException:
            self.seen.forget(key)
            raise
        if new is None:
            return parse_document(key, raw), None, [], None
        entry = index_entry(product_id, user_id, new)
        new_facts = user_facts(new)
        self.facts.keep(key, entry, new_facts)
        commands = index_commands(product_id, user_id, old, entry, filed=filed is not None)
        commands += facts_commands(product_id, user_id, old_facts, new_facts, self.announced)
        return current, new, commands, entry

    async def last_seen(self, key: str) -> Seen:
        """The state bytes last seen for ``key``, read now if this process has not seen them.

        Never "absent" unless Redis said so.
        """
        seen = self.seen.get(key)
        if seen is None:
            seen = Seen(await self.transport.get(key))
            self.seen.see(key, seen.raw)
        return seen


class ScriptWriter(Writer):
    """Compare-and-set scripts: one round trip per write while the guess is right."""

    async def update(
        self, product_id: str, user_id: str, mutate: StateMutation, guard: Guard | None = None
    ) -> StateDoc | None:
        key = self.keys.state(product_id, user_id)
        for attempt in range(MAX_TX_ATTEMPTS):
            raw, (current, new, writes, entry) = await self._base(key, product_id, user_id, mutate, attempt == 0)
            read = ""
            if new is not None:
                onboarding = first_session_on_start(current, new)
                if onboarding is not None:
                    read = self.keys.snapshot(product_id, user_id, onboarding)
            written = self._state_write(key, new, writes)
            (reply,) = await self._cas(key, raw, writes, read=read, guard=guard)
            if reply[0] == ERASED:
                self.seen.forget(key)
                raise UserErasedError(product_id, user_id, erased_time(reply[1]))
            if reply[0] == STALE:
                self.seen.see(key, reply[1])
                continue
            if written is not None:
                self.seen.see(key, written[0], entry, new, exact=written[1])
                self.announced.confirm(writes)
            if read and len(reply) > 1 and isinstance(reply[1], bytes):
                self.seen.prefetched(read, reply[1])
            return current if new is None else new
        raise gave_up(key)

    async def session_end(
        self, product_id: str, user_id: str, session_id: str, snapshot: dict[str, Any], fold: SessionFold
    ) -> tuple[dict[str, Any], StateDoc | None]:
        """One script run: ``SET NX`` of the snapshot, its history entry, the new state and its index changes."""
        key = self.keys.state(product_id, user_id)
        snap_key = self.keys.snapshot(product_id, user_id, session_id)
        freeze = self.freeze_commands(snap_key, self.keys.history(product_id, user_id), session_id, snapshot)
        # Counted with the SET NX that freezes it.
        freeze += snapshot_commands(product_id, snapshot_facts(snapshot), self.announced)
        mutate = fold_into(fold, snapshot)
        guard = self.guard(product_id, user_id, snapshot)
        for attempt in range(MAX_TX_ATTEMPTS):
            raw, (current, new, writes, entry) = await self._base(key, product_id, user_id, mutate, attempt == 0)
            written = self._state_write(key, new, writes)
            reply, *waited = await self._cas(
                key, raw, [*freeze, *writes], freeze=snap_key, after=self.wait_commands(), guard=guard
            )
            if reply[0] == ERASED:
                self.seen.forget(key)
                raise UserErasedError(product_id, user_id, erased_time(reply[1]))
            if reply[0] == WRITTEN:
                if written is not None:
                    self.seen.see(key, written[0], entry, new, exact=written[1])
                self.announced.confirm([*freeze, *writes])
                self.seen.keep_frozen(snap_key, freeze[0][2], snapshot)
                if waited:
                    self.check_acknowledged(waited[0], snap_key)
                return snapshot, (current if new is None else new)
            self.seen.see(key, reply[1])
            if reply[0] == STALE:
                continue
            # Frozen before (a retry, another writer): fold what is frozen, as a plain update.
            assert reply[0] == FROZEN
            frozen = self.seen.snapshot(snap_key, reply[2])
            assert frozen is not None  # the script saw it exist
            await self.reorder_history(self.keys.history(product_id, user_id), session_id, frozen)
            state = await self.update(product_id, user_id, fold_into(fold, frozen), guard)
            await self.acknowledge(snap_key, reply[2])
            return frozen, state
        raise gave_up(key)

    def _state_write(self, key: str, new: StateDoc | None, writes: list[Command]) -> tuple[bytes, bool] | None:
        """Append the SET of ``new`` to ``writes`` (after its index changes); its bytes, and whether orjson wrote it."""
        if new is None:
            return None
        exact = codec.dumps_exact(new)
        payload = exact or codec.dumps_strict(new)
        writes.append(("SET", key, payload, *self.ex))
        return payload, exact is not None

    async def _base(
        self, key: str, product_id: str, user_id: str, mutate: StateMutation, guess_new: bool
    ) -> tuple[bytes | None, Prepared]:
        """The state bytes a write computes from, and ``prepare`` on them.

        Those last seen for ``key``. For a user this process never saw, with
        ``guess_new``: no state at all, when ``mutate(None)`` writes something.
        The script checks that guess like any other (a stored state makes it
        stale, and the next attempt starts from the state it returns), so a
        new user's first write costs one round trip instead of a read and a
        write. If ``mutate(None)`` writes nothing or refuses (an edit of a
        user that must exist), nothing is assumed: the state is read first.
        """
        if guess_new and self.seen.size and key not in self.seen:  # 0: always read first
            try:
                prepared = self.prepare(key, product_id, user_id, NOTHING_SEEN, mutate)
            except Exception:  # its answer for "no state" is not needed yet: ask Redis
                prepared = None
            if prepared is not None and prepared[1] is not None:
                return None, prepared
        seen = self.seen.get(key)
        if seen is not None:
            try:
                return seen.raw, self.prepare(key, product_id, user_id, seen, mutate)
            except Exception:
                # Refused on what this process remembers (an If-Match, a corrupt or missing
                # state, a session number taken): another writer may have changed it since,
                # so only what Redis holds now may refuse the write.
                pass
        seen = await self.last_seen(key)
        return seen.raw, self.prepare(key, product_id, user_id, seen, mutate)

    async def _cas(
        self,
        key: str,
        raw: bytes | None,
        writes: list[Command],
        *,
        freeze: str = "",
        read: str = "",
        after: list[Command] | None = None,
        guard: Guard | None = None,
    ) -> list[Any]:
        """One run of ``cas.lua`` (``writes`` happen only if the state is ``raw``), then ``after``; the replies."""
        args = cas_arguments(key, b"" if raw is None else raw, writes, freeze=freeze, read=read, guard=guard)
        replies = await self.transport.run_script(CAS, args, after or ())
        replies[0] = checked(replies[0], "state write")
        return replies
