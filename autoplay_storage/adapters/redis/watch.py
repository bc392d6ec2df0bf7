"""The WATCH/MULTI write path: servers without script shebangs (``scripts=False``) and Redis Cluster.

Optimistic transactions: WATCH and GET the state, compute, then MULTI..EXEC
the new state (with the index changes where the transport keeps them in the
same step), retried when another writer got in between. In a cluster the
product indexes live in the product's slot, not the user's, so they are
updated right after the user's transaction; every index command is
idempotent and listings re-check rows against the live document.
"""

from __future__ import annotations

from typing import Any

from ... import codec
from ...protocol import SessionFold, StateDoc, StateMutation
from .index import Command, index_commands, index_entry
from .seen import Seen
from .transport import CONFLICT
from .writes import MAX_TX_ATTEMPTS, Writer, backoff, first_session_on_start, fold_into, gave_up


class WatchWriter(Writer):
    """Writes as WATCH/MULTI transactions, one read and one write round trip each."""

    async def update(self, product_id: str, user_id: str, mutate: StateMutation) -> StateDoc | None:
        key = self.keys.state(product_id, user_id)
        atomic_indexes = self.transport.atomic_indexes
        decided: list[Any] = []  # what the last decide() computed: current, new, index commands, key read after

        def decide(raw: bytes | None) -> tuple[list[Command], list[Command]] | None:
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
            _raw, outcome = await self.transport.watched(key, decide)
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
        """Freeze (write-once), then fold what is frozen: two atomic steps, each safe to retry."""
        frozen, raw = await self.freeze(product_id, user_id, session_id, snapshot)
        state = await self.update(product_id, user_id, fold_into(fold, frozen))
        if raw is not None:
            await self.acknowledge(self.keys.snapshot(product_id, user_id, session_id), raw)
        return frozen, state
