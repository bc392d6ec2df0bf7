"""The wire, all of it through redis-py: standalone, Sentinel's current master, or a cluster.

One small interface: run these commands on one connection (``execute``),
a script with its EVAL fallback (``run_script``), a WATCH/MULTI step
(``watched``), plus the client for listings. The adapter never asks which
kind of deployment it talks to: the transport object answers for it
(``scripts``, ``atomic_indexes``). redis-py's errors become
``StorageUnavailableError`` here and nowhere else.

Deadlines: connections are made without redis-py's socket timeout, which
costs a task per send and a timer per reply; every round trip in flight is
watched by one timer per transport instead (``_Deadlines``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import redis.asyncio as aioredis
from hiredis import pack_command
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import BlockingConnectionPool, SSLConnection, parse_url
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisClusterException, RedisError, ResponseError, WatchError
from redis.maint_notifications import MaintNotificationsConfig
from redis.retry import Retry

from ...errors import StorageUnavailableError
from .index import Command
from .scripts import Script

# Everything redis-py raises for "the server could not do it": connection, timeout, server error replies.
# Lone surrogates (JSON can carry them; a hostile document's workflow id or
# metadata value) are sent as their escape text instead of failing the write.
ENCODING_ERRORS = "backslashreplace"
# RedisClusterException ("cannot be connected", slot not covered) is not a RedisError.
ERRORS = (RedisError, RedisClusterException, OSError, asyncio.TimeoutError)
SCAN_BATCH = 1000
CONFLICT = object()  # a WATCH/MULTI step lost its race


def unavailable(exc: BaseException, doing: str = "") -> StorageUnavailableError:
    """The engine's error for a redis-py failure (raise it ``from exc``)."""
    return StorageUnavailableError(f"redis: {doing}{': ' if doing else ''}{type(exc).__name__}: {exc}")


def checked(reply: Any, doing: str = "") -> Any:
    """``reply``, unless the server answered with an error."""
    if isinstance(reply, Exception):
        raise unavailable(reply, doing) from reply
    return reply


def exec_results(replies: list[Any]) -> list[Any] | None:
    """The results of a MULTI..EXEC read to its end (``None``: a WATCH conflict); raises on any error in it."""
    for reply in replies:
        checked(reply, "transaction")
    result = replies[-1]
    if isinstance(result, list):
        for item in result:
            checked(item, "command in transaction")
    return result


def packed(commands: Sequence[Command]) -> bytes:
    """The request for ``commands`` as one buffer: one socket write.

    hiredis (the parser redis-py reads with here) encodes it several times
    faster than redis-py's own packer, which also hands the socket a list of
    chunks, one write each.
    """
    try:
        return b"".join([pack_command(cmd) for cmd in commands])
    except UnicodeEncodeError:  # a lone surrogate from a hostile document, bound for an index or insight member
        return b"".join([pack_command(tuple(_escaped(arg) for arg in cmd)) for cmd in commands])


def _escaped(arg: Any) -> Any:
    """Text no UTF-8 can carry, as its escape text (``\\ud800``): what ``ENCODING_ERRORS`` does for redis-py."""
    return arg.encode("utf-8", ENCODING_ERRORS) if isinstance(arg, str) else arg


def text(raw: bytes | str) -> str:
    return raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw


class _Pool(BlockingConnectionPool):
    """redis-py's pool that makes callers wait for a free connection, with a fast path when none waits.

    Checking a connection out and back in through ``BlockingConnectionPool``
    costs a condition, a timeout context, a socket probe and metrics hooks on
    every round trip, as much as the rest of a state write (docs/redis.md,
    "Benchmarks"). When a connection is idle and nobody waits, it is taken
    and returned directly; otherwise the library's waiting path runs, so a
    burst still queues in order and times out as redis-py does it.

    The socket probe (a read under a zero timeout) finds replies left unread;
    this transport never returns a connection with replies unread (it
    disconnects it instead), so only a close by the server while idle is
    checked.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._waiting = 0  # callers inside the library's waiting path

    async def get_connection(self) -> Any:  # type: ignore[override]
        if self._available_connections and not self._waiting:
            connection = self._available_connections.pop()
            self._in_use_connections.add(connection)
            try:
                await self.ensure_connection(connection)
            except BaseException:
                await self.release(connection)
                raise
            return connection
        self._waiting += 1
        try:
            return await super().get_connection()
        finally:
            self._waiting -= 1

    async def release(self, connection: Any) -> None:
        if self._waiting:
            await super().release(connection)  # hands it to the next waiter
            return
        self._in_use_connections.discard(connection)
        self._available_connections.append(connection)

    async def ensure_connection(self, connection: Any) -> None:
        reader = connection._reader
        if reader is not None and (reader.at_eof() or reader.exception() is not None):
            await connection.disconnect()
        if not connection.is_connected:
            await connection.connect()


class _Deadlines:
    """The deadline of every round trip in flight, on one timer, instead of a timeout context each.

    An ``asyncio.timeout`` per round trip cost a sixth of what redis-py adds
    to a session (docs/redis.md, "The transport"). Every round trip lasts at
    most ``timeout_s``, so those in flight are kept in the order they started
    and one timer, armed for the oldest, cancels the overdue ones; the
    exchange that sees its cancellation raises ``TimeoutError``.
    """

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._inflight: dict[asyncio.Task[Any], float] = {}  # task -> deadline, oldest first
        self._expired: set[asyncio.Task[Any]] = set()
        self._timer: asyncio.TimerHandle | None = None
        # The loop the connections belong to, asked once: asking for the running
        # loop costs a getpid() system call each time.
        self._loop: asyncio.AbstractEventLoop | None = None

    def begin(self) -> asyncio.Task[Any]:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        assert task is not None
        deadline = loop.time() + self.timeout_s
        self._inflight[task] = deadline
        if self._timer is None:
            self._timer = loop.call_at(deadline, self._expire, loop)
        return task

    def end(self, task: asyncio.Task[Any]) -> None:
        self._inflight.pop(task, None)

    def expired(self, task: asyncio.Task[Any], exc: BaseException) -> bool:
        """Whether ``exc`` is this watch's cancellation of ``task`` (then it is taken back)."""
        if not isinstance(exc, asyncio.CancelledError) or task not in self._expired:
            return False
        self._expired.discard(task)
        task.uncancel()
        return True

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        now = loop.time()
        for task, deadline in list(self._inflight.items()):
            if deadline > now:
                self._timer = loop.call_at(deadline, self._expire, loop)
                return
            del self._inflight[task]
            self._expired.add(task)
            task.cancel()


class _SentinelPool(SentinelConnectionPool, _Pool):
    """Connections to the master Sentinel names now, bounded and waited for like ``_Pool``'s."""


class Transport:
    """Standalone Redis or Sentinel's master: every command on one pooled connection."""

    scripts = True  # compare-and-set scripts can run here (every key of a step on one server)
    atomic_indexes = True  # the product indexes can change in the same step as the user's state

    def __init__(
        self, pool: BlockingConnectionPool, socket_timeout_s: float, description: str, sentinel: Sentinel | None = None
    ) -> None:
        self._pool = pool
        self._sentinel = sentinel
        self._deadlines = _Deadlines(socket_timeout_s)
        self.socket_timeout_s = socket_timeout_s
        self.description = description
        self.client: Any = aioredis.Redis(connection_pool=pool)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.description}>"

    async def call(self, awaitable: Awaitable[Any]) -> Any:
        """One call on the client (listings, maintenance), under the round-trip deadline."""
        try:
            async with asyncio.timeout(self.socket_timeout_s):
                return await awaitable
        except ERRORS as exc:
            raise unavailable(exc) from exc

    async def execute(self, commands: Sequence[Command]) -> list[Any]:
        """Send ``commands`` in one write on one connection and read every reply: one round trip.

        Error replies come back as exception objects in the list: a MULTI
        block is read to its EXEC before the connection can be reused. Flat on
        purpose: every coroutine between the caller and the socket is paid on
        each of a session's round trips.
        """
        pool = self._pool
        try:
            connection = await pool.get_connection()
        except ERRORS as exc:
            raise unavailable(exc) from exc
        deadlines = self._deadlines
        task = deadlines.begin()
        try:
            await connection.send_packed_command(packed(commands), check_health=False)
            replies: list[Any] = []
            for _ in range(len(commands)):
                try:
                    replies.append(await connection.read_response(disconnect_on_error=False))
                except ResponseError as exc:
                    replies.append(exc)
        except BaseException as exc:
            await self._failed(connection, task, exc)
            raise
        finally:
            deadlines.end(task)
            await pool.release(connection)
        return replies

    async def _failed(self, connection: Any, task: asyncio.Task[Any], exc: BaseException) -> None:
        """Drop a connection an exchange failed on (replies may be unread), raising the engine's error."""
        timed_out = self._deadlines.expired(task, exc)
        await connection.disconnect()
        if timed_out:
            raise unavailable(TimeoutError(f"no answer within {self._deadlines.timeout_s} s")) from exc
        if isinstance(exc, ERRORS):
            raise unavailable(exc) from exc

    async def run_script(self, script: Script, args: list[Any], after: Sequence[Command] = ()) -> list[Any]:
        """EVALSHA (EVAL the first time a server sees it), then ``after`` in the same round trip; every reply."""
        replies = await self.execute([("EVALSHA", script.sha, *args), *after])
        if isinstance(replies[0], NoScriptError):
            # First use on this server (or after SCRIPT FLUSH, a restart, a failover): send the body once.
            replies = await self.execute([("EVAL", script.body, *args), *after])
        return replies

    async def get(self, key: str) -> bytes | None:
        (reply,) = await self.execute([("GET", key)])
        return checked(reply, f"GET {key}")

    async def get_many(self, keys: list[str]) -> list[Any]:
        if not keys:
            return []
        (reply,) = await self.execute([("MGET", *keys)])
        return checked(reply, "MGET")

    async def pipeline(self, commands: Sequence[Command]) -> list[Any]:
        """Commands in one round trip, not atomic; raises on any error reply."""
        return [checked(reply) for reply in await self.execute(commands)] if commands else []

    async def transaction(self, commands: Sequence[Command]) -> list[Any]:
        """MULTI/EXEC of ``commands`` (no WATCH); their results."""
        result = exec_results(await self.execute([("MULTI",), *commands, ("EXEC",)]))
        assert result is not None  # nothing was watched
        return result

    async def watched(
        self,
        keys: Sequence[str],
        decide: Callable[[list[bytes | None]], tuple[list[Command], list[Command]] | None],
    ) -> tuple[list[bytes | None], Any]:
        """WATCH ``keys`` (one slot) and read them; ``decide(raws)`` gives (commands for MULTI..EXEC, commands after).

        Returns ``(raws, CONFLICT)`` when another writer changed a key in
        between, ``(raws, None)`` when ``decide`` wrote nothing, else
        ``(raws, (EXEC results, replies of the commands after))``.
        """
        pool = self._pool
        try:
            connection = await pool.get_connection()
        except ERRORS as exc:
            raise unavailable(exc) from exc
        deadlines = self._deadlines
        task = deadlines.begin()
        try:
            await connection.send_packed_command(packed([("WATCH", *keys), ("MGET", *keys)]), check_health=False)
            await connection.read_response(disconnect_on_error=False)
            raw = list(await connection.read_response(disconnect_on_error=False))
            deadlines.end(task)
            steps = decide(raw)  # between the two round trips: the time it takes is not theirs
            commands = [("UNWATCH",)] if steps is None else [("MULTI",), *steps[0], ("EXEC",), *steps[1]]
            deadlines.begin()
            await connection.send_packed_command(packed(commands), check_health=False)
            replies: list[Any] = []
            for _ in range(len(commands)):
                try:
                    replies.append(await connection.read_response(disconnect_on_error=False))
                except ResponseError as exc:
                    replies.append(exc)
        except BaseException as exc:
            await self._failed(connection, task, exc)  # a WATCH may still be active, or replies unread
            raise
        finally:
            deadlines.end(task)
            await pool.release(connection)
        if steps is None:
            return raw, None
        after = len(steps[1])
        exec_replies, after_replies = (replies[:-after], replies[-after:]) if after else (replies, [])
        result = exec_results(exec_replies)
        return raw, (CONFLICT if result is None else (result, after_replies))

    async def dbsize(self) -> int:
        return int(await self.call(self.client.dbsize()))

    async def scan_batches(self, match: str | None = None) -> AsyncIterator[list[str]]:
        cursor = 0
        while True:
            cursor, keys = await self.call(self.client.scan(cursor, match=match, count=SCAN_BATCH))
            yield [text(k) for k in keys]
            if cursor == 0:
                return

    async def aclose(self) -> None:
        """Close every connection (pooled connections belong to the event loop that made them)."""
        with contextlib.suppress(*ERRORS):  # a server already gone has nothing left to close
            await self.client.aclose()
            await self._pool.disconnect()
            for client in self._sentinel.sentinels if self._sentinel is not None else ():
                await client.aclose()


class ClusterTransport(Transport):
    """Redis Cluster through redis-py's ``RedisCluster``: hash-tagged keys keep one user's step on one node."""

    scripts = False  # the product indexes live in other slots than the user's keys
    atomic_indexes = False

    def __init__(self, client: RedisCluster, max_connections: int, socket_timeout_s: float) -> None:
        self.client = client
        self.socket_timeout_s = socket_timeout_s
        self.description = "cluster"
        # The cluster client raises "too many connections" instead of waiting:
        # bound the operations in flight so bursts queue here.
        self._gate = asyncio.Semaphore(max_connections)

    async def call(self, awaitable: Awaitable[Any]) -> Any:
        try:
            async with self._gate:
                return await awaitable
        except ERRORS as exc:
            raise unavailable(exc) from exc

    async def execute(self, commands: Sequence[Command]) -> list[Any]:
        """Single-slot commands in one pipeline to their node (error replies as exception objects)."""

        async def run() -> list[Any]:
            async with self.client.pipeline(transaction=False) as pipe:
                for cmd in commands:
                    pipe.execute_command(*cmd)
                return await pipe.execute(raise_on_error=False)

        return await self.call(run())

    async def get(self, key: str) -> bytes | None:
        return await self.call(self.client.get(key))

    async def get_many(self, keys: list[str]) -> list[Any]:
        return await self.pipeline([("GET", k) for k in keys])

    async def transaction(self, commands: Sequence[Command]) -> list[Any]:
        async def run() -> list[Any]:
            async with self.client.pipeline(transaction=True) as pipe:
                for cmd in commands:
                    pipe.execute_command(*cmd)
                return await pipe.execute()

        return await self.call(run())

    async def watched(
        self,
        keys: Sequence[str],
        decide: Callable[[list[bytes | None]], tuple[list[Command], list[Command]] | None],
    ) -> tuple[list[bytes | None], Any]:
        decided: list[tuple[list[Command], list[Command]] | None] = []

        async def attempt() -> tuple[list[bytes | None], Any]:
            async with self.client.pipeline(transaction=True) as pipe:
                await pipe.watch(*keys)
                raw = list(await pipe.execute_command("MGET", *keys))  # one slot: the user's hash tag
                decided.append(steps := decide(raw))
                if steps is None:
                    await pipe.unwatch()
                    return raw, None
                pipe.multi()
                for cmd in steps[0]:
                    pipe.execute_command(*cmd)
                try:
                    return raw, await pipe.execute()
                except WatchError:
                    return raw, CONFLICT

        raw, result = await self.call(attempt())
        steps = decided[-1]
        if steps is None or result is CONFLICT:
            return raw, result
        # Outside the gate: the commands after may be in another slot, and so need a connection of their own.
        return raw, (result, await self.pipeline(steps[1]) if steps[1] else [])

    async def dbsize(self) -> int:
        sizes = await self.call(self.client.dbsize(target_nodes=self.client.PRIMARIES))
        return int(sum(sizes.values()) if isinstance(sizes, dict) else sizes)

    async def scan_batches(self, match: str | None = None) -> AsyncIterator[list[str]]:
        for node in self.client.get_primaries():
            cursor = 0
            while True:
                scan = self.client.scan(cursor, match=match, count=SCAN_BATCH, target_nodes=node)
                cursors, keys = await self.call(scan)
                cursor = next(iter(cursors.values())) if isinstance(cursors, dict) else cursors
                yield [text(k) for k in keys]
                if cursor == 0:
                    break

    async def aclose(self) -> None:
        with contextlib.suppress(*ERRORS):
            await self.client.aclose()


def connect(
    redis_url: str,
    *,
    cluster: bool = False,
    sentinels: Sequence[tuple[str, int]] = (),
    sentinel_master: str = "",
    sentinel_password: str | None = None,
    max_connections: int = 64,
    pool_timeout_s: float = 30.0,
    socket_timeout_s: float = 5.0,
    connect_timeout_s: float = 2.0,
) -> Transport:
    """The transport for a deployment (no connection is made yet).

    ``redis_url`` is ``redis://``, ``rediss://`` (TLS; ``ssl_ca_certs`` and
    friends as query arguments) or ``unix://``, with any ACL user and password
    and the database. With ``sentinels``, its host and port are ignored: the
    master is the one Sentinel names ``sentinel_master`` now, asked again on
    every new connection, so a failover is followed without a restart.
    """
    # Transport failures surface at once as StorageUnavailableError; the
    # caller (agent/API) retries whole idempotent operations instead.
    no_retry = Retry(NoBackoff(), 0)
    if cluster:
        client = RedisCluster.from_url(
            redis_url,
            max_connections=max_connections,
            socket_timeout=socket_timeout_s,
            socket_connect_timeout=connect_timeout_s,
            retry=no_retry,
            encoding_errors=ENCODING_ERRORS,
        )
        return ClusterTransport(client, max_connections, socket_timeout_s)
    options: dict[str, Any] = {
        "max_connections": max_connections,
        "timeout": pool_timeout_s,
        "socket_timeout": None,  # one deadline per round trip instead (module docstring)
        "socket_connect_timeout": connect_timeout_s,
        "retry": no_retry,
        "encoding_errors": ENCODING_ERRORS,
        # A new connection sends only what it needs (AUTH, SELECT): RESP2, as the
        # SDK and the scripts speak it, without the client-name and managed-service
        # maintenance handshakes, which cost a round trip each.
        "protocol": 2,
        "driver_info": None,
        "maint_notifications_config": MaintNotificationsConfig(enabled=False),
    }
    if not sentinels:
        pool = _Pool.from_url(redis_url, **options)
        return Transport(pool, socket_timeout_s, redis_url.split("://", 1)[0])
    if not sentinel_master:
        raise ValueError("Sentinel needs the master's name (AUTOPLAY_REDIS_SENTINEL_MASTER)")
    params = dict(parse_url(redis_url or "redis://"))
    for where in ("host", "port", "path"):
        params.pop(where, None)
    if params.pop("connection_class", None) is SSLConnection:
        params["ssl"] = True  # SentinelConnectionPool picks its TLS connection class from this
    sentinel_options: dict[str, Any] = {"socket_timeout": socket_timeout_s, "socket_connect_timeout": connect_timeout_s}
    if sentinel_password:
        sentinel_options["password"] = sentinel_password
    manager = Sentinel(list(sentinels), sentinel_kwargs=sentinel_options)
    pool = _SentinelPool(sentinel_master, manager, **params, **options)
    return Transport(pool, socket_timeout_s, f"sentinel master {sentinel_master}", manager)
