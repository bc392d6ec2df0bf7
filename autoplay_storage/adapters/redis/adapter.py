"""``RedisStorageAdapter``: the protocol methods, each delegating to the module that does the work.

Install with ``pip install "redis[hiredis]" msgspec`` (the ``redis`` extra). Design and key layout:
docs/redis.md. Errors: a connection, timeout or server error raises
``StorageUnavailableError``; ``None`` means only "no such key"; a value that
is not a JSON object raises ``CorruptDocumentError`` and is never overwritten.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ... import codec
from ...browse import Page, ProductSummary, SessionSummary, UserQuery, UserSummary
from ...codec import parse_document
from ...facts import ProductStats, StuckUser, UserFilter
from ...protocol import SessionFold, StateDoc, StateMutation
from .browse import Browser
from .erase import Eraser
from .insight import Insight
from .keys import UserKeys
from .reindex import Reindexer
from .seen import LastSeen
from .transport import connect, text
from .watch import WatchWriter
from .writes import ScriptWriter


class RedisStorageAdapter:
    """Readable primary on Redis: standalone, Sentinel's master, or Redis Cluster (``cluster=True``)."""

    name = "redis"

    def __init__(
        self,
        redis_url: str,
        *,
        ttl_s: int | None = None,
        cluster: bool = False,
        sentinels: Sequence[tuple[str, int]] = (),
        sentinel_master: str = "",
        sentinel_password: str | None = None,
        max_connections: int = 64,
        pool_timeout_s: float = 30.0,
        socket_timeout_s: float = 5.0,
        connect_timeout_s: float = 2.0,
        scripts: bool = True,
        state_cache_size: int = 4096,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 1000,
    ) -> None:
        if cluster and wait_replicas:
            raise ValueError("WAIT for replicas needs one connection to the master: not available in cluster mode")
        self.redis_url = redis_url
        self.ttl_s = int(ttl_s) if ttl_s else None
        self.cluster = cluster
        self.transport = connect(
            redis_url,
            cluster=cluster,
            sentinels=sentinels,
            sentinel_master=sentinel_master,
            sentinel_password=sentinel_password,
            max_connections=max_connections,
            pool_timeout_s=pool_timeout_s,
            socket_timeout_s=socket_timeout_s,
            connect_timeout_s=connect_timeout_s,
        )
        self.keys = UserKeys(cluster=cluster)
        self._seen = LastSeen(state_cache_size)
        writer = ScriptWriter if scripts and self.transport.scripts else WatchWriter
        self.scripts = writer is ScriptWriter
        self._writer = writer(
            self.transport,
            self.keys,
            self._seen,
            ttl_s=self.ttl_s,
            wait_replicas=wait_replicas,
            wait_timeout_ms=wait_timeout_ms,
        )
        self._browser = Browser(self.transport, self.keys)
        self._insight = Insight(self.transport, self.keys)

    def __repr__(self) -> str:
        return f"<RedisStorageAdapter {self.transport.description} ttl_s={self.ttl_s}>"

    # -- keys --

    def state_key(self, product_id: str, user_id: str) -> str:
        return self.keys.state(product_id, user_id)

    def snapshot_key(self, product_id: str, user_id: str, session_id: str) -> str:
        return self.keys.snapshot(product_id, user_id, session_id)

    def history_key(self, product_id: str, user_id: str) -> str:
        return self.keys.history(product_id, user_id)

    # -- the four wire methods --

    async def save_user_state(self, product_id: str, user_id: str, state: dict[str, Any]) -> None:
        """Replace the document; the index diff needs the old one, so this is an atomic update too.

        The document may come from anywhere (a copy, a script): NaN is refused here, not nulled.
        """
        codec.dumps_strict(state)
        await self._writer.update(product_id, user_id, lambda _old: state)

    async def get_user_state(self, product_id: str, user_id: str) -> dict[str, Any] | None:
        key = self.keys.state(product_id, user_id)
        return parse_document(key, await self.transport.get(key))

    async def save_session_snapshot(
        self, product_id: str, user_id: str, session_id: str, snapshot: dict[str, Any]
    ) -> None:
        codec.dumps_strict(snapshot)  # from anywhere: NaN is refused, not nulled
        await self.create_session_snapshot(product_id, user_id, session_id, snapshot)

    async def get_session_snapshot(self, product_id: str, user_id: str, session_id: str) -> dict[str, Any] | None:
        key = self.keys.snapshot(product_id, user_id, session_id)
        raw = self._seen.take_prefetched(key)
        return self._seen.snapshot(key, raw if raw is not None else await self.transport.get(key))

    # -- atomic steps (AtomicStateStore, SnapshotStore, SessionEndStore) --

    async def update_user_state(self, product_id: str, user_id: str, mutate: StateMutation) -> StateDoc | None:
        """Compare-and-set (or WATCH/MULTI) of ``mutate(current)``, retried on conflict (``mutate`` must be pure)."""
        return await self._writer.update(product_id, user_id, mutate)

    async def replace_state_if_raw(self, product_id: str, user_id: str, expected_raw: str, state: StateDoc) -> bool:
        """Compare-and-set on the stored text (WATCH/MULTI): the repair of a state no ``mutate`` can parse."""
        codec.dumps_strict(state)
        return await self._writer.replace_if_raw(product_id, user_id, expected_raw, state)

    async def create_session_snapshot(
        self, product_id: str, user_id: str, session_id: str, snapshot: dict[str, Any]
    ) -> dict[str, Any]:
        """``SET NX``: the first write wins, a retried end changes nothing; returns the snapshot stored."""
        frozen, _raw = await self._writer.freeze(product_id, user_id, session_id, snapshot)
        return frozen

    async def record_session_end(
        self, product_id: str, user_id: str, session_id: str, snapshot: dict[str, Any], fold: SessionFold
    ) -> tuple[dict[str, Any], StateDoc | None]:
        """Freeze the snapshot and fold it into the state, all or nothing (one script run where scripts run)."""
        return await self._writer.session_end(product_id, user_id, session_id, snapshot, fold)

    # -- browsing (BrowsableStorage) --

    async def ping(self) -> None:
        await self.transport.call(self.transport.client.ping())

    async def list_products(self) -> list[ProductSummary]:
        return await self._browser.list_products()

    async def list_users(
        self, product_id: str, query: UserQuery | None = None, *, cursor: str | None = None, limit: int = 50
    ) -> Page[UserSummary]:
        return await self._browser.list_users(product_id, query, cursor=cursor, limit=limit)

    async def list_sessions(
        self, product_id: str, user_id: str, *, cursor: str | None = None, limit: int = 50, newest_first: bool = True
    ) -> Page[SessionSummary]:
        return await self._browser.list_sessions(
            product_id, user_id, cursor=cursor, limit=limit, newest_first=newest_first
        )

    async def list_raw_sessions(
        self, product_id: str, user_id: str, *, cursor: str | None = None, limit: int = 50
    ) -> Page[tuple[str, str]]:
        """The history oldest first as ``(session_id, stored text)``: a range and one MGET per page (the export)."""
        raws, next_cursor = await self._browser.history_page(product_id, user_id, cursor, limit, False)
        return Page([(session_id, text(raw)) for session_id, raw in raws], next_cursor)

    async def get_raw_user_state(self, product_id: str, user_id: str) -> str | None:
        raw = await self.transport.get(self.keys.state(product_id, user_id))
        return None if raw is None else text(raw)

    async def get_raw_session_snapshot(self, product_id: str, user_id: str, session_id: str) -> str | None:
        raw = await self.transport.get(self.keys.snapshot(product_id, user_id, session_id))
        return None if raw is None else text(raw)

    # -- insight (InsightStore, insight.py) --

    async def insight_stats(self, product_id: str) -> ProductStats:
        return await self._insight.stats(product_id)

    async def count_users(self, product_id: str, f: UserFilter) -> int:
        return await self._insight.count(product_id, f)

    async def list_filtered_users(
        self, product_id: str, f: UserFilter, *, cursor: str | None = None, limit: int = 50
    ) -> Page[UserSummary]:
        return await self._insight.list_users(product_id, f, cursor=cursor, limit=limit)

    async def export_users(
        self, product_id: str, f: UserFilter, *, cursor: str | None = None, limit: int = 50
    ) -> Page[UserSummary]:
        return await self._insight.list_users(product_id, f, cursor=cursor, limit=limit, export=True)

    async def list_stuck(
        self, product_id: str, older_than: float, *, cursor: str | None = None, limit: int = 50
    ) -> Page[StuckUser]:
        return await self._insight.stuck(product_id, older_than, cursor=cursor, limit=limit)

    # -- erasure (ErasableStorage) --

    async def erase_user(self, product_id: str, user_id: str, *, tombstone_s: int) -> dict[str, int]:
        """Tombstone, then every key and index entry of the user, in batches (``erase.py``)."""
        return await Eraser(self.transport, self.keys, self._seen).erase(product_id, user_id, tombstone_s=tombstone_s)

    # -- maintenance --

    async def reindex(
        self,
        progress: Callable[[int, int], None] | None = None,
        unaddressable: Callable[[str, str, str | None], None] | None = None,
    ) -> dict[str, int]:
        """Rebuild the browsing indexes from the documents (``reindex.py``); safe to re-run.

        ``unaddressable`` hears of documents filed under ids made only of dots.
        """
        return await Reindexer(self.transport, self.keys, unaddressable).run(progress)

    async def aclose(self) -> None:
        await self.transport.aclose()
