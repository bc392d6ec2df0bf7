"""The WATCH/MULTI write path: servers without script shebangs (``scripts=False``) and Redis Cluster.

Optimistic transactions: WATCH and read the state (for a session end, the
snapshot key too), compute, then MULTI..EXEC the new state (with the index
changes where the transport keeps them in the same step, and a session end's
snapshot), retried when another writer got in between. In a cluster the
product indexes live in the product's slot, not the user's, so they are
updated right after the user's transaction; every index command is
idempotent and listings re-check rows against the live document.
"""

from __future__ import annotations

from typing import Any

from ... import codec
from ...facts import snapshot_facts
from ...protocol import SessionFold, StateDoc, StateMutation
from ...tombstones import check
from .facts import snapshot_commands
from .index import Command, index_commands, index_entry
from .seen import Seen
from .transport import CONFLICT
from .writes import MAX_TX_ATTEMPTS, Guard, Writer, backoff, first_session_on_start, fold_into, gave_up


class WatchWriter(Writer):
    """Writes as WATCH/MULTI transactions, one read and one write round trip each."""

    async def update(
        self, product_id: str, user_id: str, mutate: StateMutation, guard: Guard | None = None
    ) -> StateDoc | None:
        key = self.keys.state(product_id, user_id)
        atomic_indexes = self.transport.atomic_indexes
        decided: list[Any] = []  # what the last decide() computed: current, new, index commands, key read after
        watched = (key, guard[0]) if guard else (key,)

        def decide(raws: list[bytes | None]) -> tuple[list[Command], list[Command]] | None:
            if guard:  # the tombstone is watched: an erasure that begins before EXEC makes this round start over
                check(product_id, user_id, raws[1], guard[1])
            raw = raws[0]
            current, new, idx, _entry = self.prepare(key, product_id, user_id, Seen(raw), mutate)
            decided[:] = [current, new, idx, None]
            if new is None:
                return None
            steps: list[Command] = [("SET", key, codec.dumps(new), *self.ex)]
            if atomic_indexes:
                steps.extend(idx)
            after: list[Command] = []
            onboarding = first_session_on_start(current, new)
            if onboarding is not None:
                # A session starts for a returning user: fetch the snapshot the lifecycle reads next.
                decided[3] = self.keys.snapshot(product_id, user_id, onboarding)
                after.append(("GET", decided[3]))
            return steps, after

        for attempt in range(MAX_TX_ATTEMPTS):
            _raw, outcome = await self.transport.watched(watched, decide)
            if outcome is CONFLICT:
                await backoff(attempt)
                continue
            current, new, idx, read = decided
            if new is None:
                if current is not None and not atomic_indexes:
                    # A no-op is usually a retry whose first attempt may have failed
                    # between the two steps: re-file the user (idempotent) so the
                    # product indexes heal.
                    await self.transport.pipeline(
                        index_commands(product_id, user_id, None, index_entry(product_id, user_id, current))
                    )
                return current
            if not atomic_indexes:
                await self.transport.pipeline(idx)
            _results, after = outcome
            if read and after and isinstance(after[0], bytes):
                self.seen.prefetched(read, after[0])
            return new
        raise gave_up(key)

    async def session_end(
        self, product_id: str, user_id: str, session_id: str, snapshot: dict[str, Any], fold: SessionFold
    ) -> tuple[dict[str, Any], StateDoc | None]:
        """WATCH the state and the snapshot key, then one MULTI with the snapshot, its history entry and the state.

        A user's keys share one slot, so this is one transaction in a cluster
        too: no snapshot is stored that its state does not count. A snapshot
        frozen before (a retry, another writer) is folded instead.
        """
        key = self.keys.state(product_id, user_id)
        snap_key = self.keys.snapshot(product_id, user_id, session_id)
        history = self.keys.history(product_id, user_id)
        freeze = self.freeze_commands(snap_key, history, session_id, snapshot)
        counters = snapshot_commands(product_id, snapshot_facts(snapshot))  # with the write that freezes it
        if atomic_indexes := self.transport.atomic_indexes:
            freeze += counters
        mutate = fold_into(fold, snapshot)
        guard = self.guard(product_id, user_id, snapshot)
        decided: list[Any] = []  # the frozen bytes, or what prepare computed: current, new, index commands

        def decide(raws: list[bytes | None]) -> tuple[list[Command], list[Command]] | None:
            state_raw, frozen_raw, tomb = raws
            check(product_id, user_id, tomb, guard[1])  # watched: an erasure before EXEC starts the round over
            if frozen_raw is not None:
                decided[:] = [frozen_raw]
                return None
            current, new, idx, _entry = self.prepare(key, product_id, user_id, Seen(state_raw), mutate)
            decided[:] = [None, current, new, idx]
            steps = list(freeze)
            if new is not None:
                steps.append(("SET", key, codec.dumps(new), *self.ex))
                if atomic_indexes:
                    steps.extend(idx)
            return steps, self.wait_commands()

        for attempt in range(MAX_TX_ATTEMPTS):
            _raws, outcome = await self.transport.watched((key, snap_key, guard[0]), decide)
            if outcome is CONFLICT:
                await backoff(attempt)
                continue
            if decided[0] is not None:  # frozen before: fold what is frozen, as a plain update
                frozen = self.seen.snapshot(snap_key, decided[0])
                assert frozen is not None  # it was just read
                await self.reorder_history(history, session_id, frozen)
                state = await self.update(product_id, user_id, fold_into(fold, frozen), guard)
                await self.acknowledge(snap_key, decided[0])
                return frozen, state
            _frozen, current, new, idx = decided
            _results, after = outcome
            if after:
                self.check_acknowledged(after[0], snap_key)
            self.seen.keep_frozen(snap_key, freeze[0][2], snapshot)
            if not atomic_indexes:  # the product's indexes live in another slot: right after
                await self.transport.pipeline([*counters, *(idx if new is not None else [])])
            return snapshot, current if new is None else new
        raise gave_up(key)
