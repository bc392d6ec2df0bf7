"""Rebuild the browsing indexes from a SCAN of the two wire key patterns; safe to re-run.

Finds documents written by other writers (the published SDK), repairs
entries left stale, and drops entries whose document is gone (TTL).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from ...browse import UserSummary, user_summary_from_doc
from ...codec import parse_document
from ...errors import CorruptDocumentError
from ...facts import snapshot_facts, user_facts
from ...ids import is_dots_only
from ...keys import PREFIX
from .facts import facts_commands, snapshot_commands
from .index import Command, IndexEntry, captured_at, index_commands
from .keys import PRODUCTS_KEY, SEARCH_SEP, UserKeys, all_filter_keys, search_key, users_key
from .transport import SCAN_BATCH, Transport, text

_STATE_RE = re.compile(rf"^{PREFIX}:user:(?P<pu>.+):state$", re.S)
_SNAPSHOT_RE = re.compile(rf"^{PREFIX}:user:(?P<pu>.+?):session:(?P<sid>.+)$", re.S)
_USER_PREFIX = f"{PREFIX}:user:"
_FACTS_RE = re.compile(rf"^{PREFIX}:idx:\{{.*\}}:f:", re.S)


def split_user_part(part: str, user_id_hint: str | None) -> tuple[str, str]:
    """``prod:user`` (or ``{prod:user}``) → (product, user); the document's user id settles colons."""
    if part.startswith("{") and part.endswith("}"):
        part = part[1:-1]
    if user_id_hint and part.endswith(":" + user_id_hint) and len(part) > len(user_id_hint) + 1:
        return part[: -len(user_id_hint) - 1], user_id_hint
    product_id, _, user_id = part.partition(":")
    return product_id, user_id


class Reindexer:
    """One reindex run over ``keys``' key mode (keys of the other mode are left alone)."""

    def __init__(
        self, transport: Transport, keys: UserKeys, unaddressable: Callable[[str, str, str | None], None] | None = None
    ) -> None:
        """``unaddressable(product_id, user_id, session_id or None)`` hears of each document filed
        under an id no URL can address (``ids.is_dots_only``)."""
        self.transport = transport
        self.keys = keys
        self.report = unaddressable or (lambda product_id, user_id, session_id: None)
        self.counts = {"keys_scanned": 0, "states": 0, "snapshots": 0, "corrupt": 0, "pruned": 0}

    async def run(self, progress: Callable[[int, int], None] | None = None) -> dict[str, int]:
        """``progress(advanced, total)`` is called as keys are scanned."""
        await self._clear_facts()
        total = await self.transport.dbsize()
        states: list[str] = []
        snapshots: list[str] = []
        histories: list[str] = []
        async for batch in self.transport.scan_batches():
            for key in batch:
                if key.startswith(_USER_PREFIX):
                    if key.endswith(":state"):
                        states.append(key)
                    elif key.endswith(":sessions"):
                        histories.append(key)
                    elif ":session:" in key:
                        snapshots.append(key)
            self.counts["keys_scanned"] += len(batch)
            if len(states) >= SCAN_BATCH:
                await self._states(states)
                states = []
            if len(snapshots) >= SCAN_BATCH:
                await self._snapshots(snapshots)
                snapshots = []
            if progress is not None:
                progress(len(batch), total)
        await self._states(states)
        await self._snapshots(snapshots)
        self.counts["pruned"] += await self._prune(histories)
        return self.counts

    async def _clear_facts(self) -> None:
        """Drop the insight indexes and counters: the scan below counts every document again from nothing."""
        async for batch in self.transport.scan_batches():
            stale = [key for key in batch if _FACTS_RE.match(key)]
            if stale:
                await self.transport.pipeline([("DEL", key) for key in stale])

    def _document(self, key: str, raw: Any) -> dict[str, Any] | None:
        try:
            return parse_document(key, raw)
        except CorruptDocumentError:
            self.counts["corrupt"] += 1
            return None

    async def _states(self, keys: list[str]) -> None:
        if not keys:
            return
        cmds: list[Command] = []
        for key, raw in zip(keys, await self.transport.get_many(keys), strict=True):
            match = _STATE_RE.match(key)
            if raw is None or match is None:
                continue
            doc = self._document(key, raw)
            hint = doc.get("user_id") if doc else None
            product_id, user_id = split_user_part(match["pu"], hint if isinstance(hint, str) else None)
            if not product_id or not user_id or self.keys.state(product_id, user_id) != key:
                continue  # a key of the other key mode, or not ours to interpret
            if is_dots_only(product_id) or is_dots_only(user_id):
                self.report(product_id, user_id, None)
            row = (
                user_summary_from_doc(product_id, user_id, doc)
                if doc is not None
                else UserSummary(product_id=product_id, user_id=user_id, corrupt=True)
            )
            # Any filter set the user may be in from an older document: ZREM is a no-op where absent.
            cmds.extend(("ZREM", k, user_id) for k in all_filter_keys(product_id))
            cmds.extend(index_commands(product_id, user_id, None, IndexEntry.from_row(row)))
            cmds.extend(facts_commands(product_id, user_id, None, None if doc is None else user_facts(doc)))
            self.counts["states"] += 1
        await self.transport.pipeline(cmds)

    async def _snapshots(self, keys: list[str]) -> None:
        if not keys:
            return
        cmds: list[Command] = []
        for key, raw in zip(keys, await self.transport.get_many(keys), strict=True):
            match = _SNAPSHOT_RE.match(key)
            if raw is None or match is None:
                continue
            doc = self._document(key, raw)
            hint_sid = doc.get("session_id") if doc else None
            hint_uid = doc.get("user_id") if doc else None
            pu, session_id = match["pu"], match["sid"]
            rest = key[len(_USER_PREFIX) :]
            if isinstance(hint_sid, str) and hint_sid and rest.endswith(":session:" + hint_sid):
                pu, session_id = rest[: -len(":session:" + hint_sid)], hint_sid
            product_id, user_id = split_user_part(pu, hint_uid if isinstance(hint_uid, str) else None)
            if not product_id or not user_id or self.keys.snapshot(product_id, user_id, session_id) != key:
                continue
            if is_dots_only(product_id) or is_dots_only(user_id) or is_dots_only(session_id):
                self.report(product_id, user_id, session_id)
            score = captured_at(session_id, doc) if doc is not None else 0.0
            cmds.append(("ZADD", self.keys.history(product_id, user_id), score, session_id))
            if doc is not None:
                cmds.extend(snapshot_commands(product_id, snapshot_facts(doc)))
            self.counts["snapshots"] += 1
        await self.transport.pipeline(cmds)

    async def _prune(self, histories: list[str]) -> int:
        """Drop index entries whose document no longer exists (expired or deleted)."""
        call, client, pipeline = self.transport.call, self.transport.client, self.transport.pipeline
        pruned = 0
        for product_id in sorted(text(p) for p in await call(client.smembers(PRODUCTS_KEY))):
            members = [text(m) for m in await call(client.zrange(users_key(product_id), 0, -1))]
            exists = await pipeline([("EXISTS", self.keys.state(product_id, u)) for u in members])
            gone = {u for u, e in zip(members, exists, strict=True) if not e}
            if gone:
                cmds: list[Command] = [
                    ("ZREM", k, *sorted(gone)) for k in [users_key(product_id), *all_filter_keys(product_id)]
                ]
                terms = [text(m) for m in await call(client.zrange(search_key(product_id), 0, -1))]
                stale_terms = [t for t in terms if t.split(SEARCH_SEP, 1)[-1] in gone]
                if stale_terms:
                    cmds.append(("ZREM", search_key(product_id), *stale_terms))
                await pipeline(cmds)
                pruned += len(gone)
            if len(gone) == len(members):
                await call(client.srem(PRODUCTS_KEY, product_id))
        for history in histories:
            base = history.removesuffix(":sessions")
            sids = [text(m) for m in await call(client.zrange(history, 0, -1))]
            exists = await pipeline([("EXISTS", f"{base}:session:{sid}") for sid in sids])
            gone_sessions = [sid for sid, e in zip(sids, exists, strict=True) if not e]
            if gone_sessions:
                await call(client.zrem(history, *gone_sessions))
                pruned += len(gone_sessions)
        return pruned
