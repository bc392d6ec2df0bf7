"""Redis primary: the SDK's two wire keys, atomic per user, browsable through our own indexes.

Install with ``pip install "redis[hiredis]"``; the client is imported lazily so
the engine stays importable without it.

Atomicity (standalone, Redis 7+): every state write is a compare-and-set in
one server-side script (``_CAS_SCRIPT``). The adapter computes the new
document from the state it last saw for that user (kept in a bounded
per-process cache, ``state_cache_size``), and the script writes it together
with the browsing-index changes only if the stored state still is those
very bytes; otherwise it writes nothing and returns the current state, and the
adapter runs ``mutate`` again on it. ``mutate`` is arbitrary Python (the
lifecycle's merge rules) that cannot run inside Redis, so it may run more
than once and must be pure. A session end freezes its snapshot (``SET NX``)
and folds it into the state in the same script, so a whole session costs two
round trips while the cache is warm (a new user's first session too: its first
write guesses "no state"), four when another process wrote the user since.
Next to the bytes it wrote, the cache keeps the typed state they were written
from (``WrittenDocument.memo``) and hands it, once, to the next mutation that
reads states typed (``StoredState``): the lifecycle's next step for that user
then parses nothing.

``scripts=False`` (or a server without script shebangs) and cluster mode use
optimistic WATCH/MULTI transactions instead (WATCH+GET, then MULTI..EXEC).
Cluster mode (``cluster=True``) uses hash-tagged keys so the state, snapshots
and session history of one user share a slot; the product indexes live in the
product's slot and are updated right after the user's transaction
(idempotently). Key layout: README section "Redis keys".

Errors: a connection, timeout or server error raises
``StorageUnavailableError``; ``None`` means only "no such key"; a value that is
not a JSON object raises ``CorruptDocumentError`` and is never overwritten.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hashlib
import json
import math
import random
import re
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any, NamedTuple

from .. import codec
from ..browse import (
    MAX_PAGE_SIZE,
    Page,
    ProductSummary,
    SessionSummary,
    UserQuery,
    UserSummary,
    search_terms,
    session_summary_from_doc,
    user_summary_from_doc,
)
from ..codec import parse_document as _parse
from ..errors import CorruptDocumentError, StorageUnavailableError
from ..ids import is_dots_only
from ..keys import PREFIX, session_key, user_state_key
from ..protocol import (
    FrozenDocument,
    SessionFold,
    StateDoc,
    StateMutation,
    StoredState,
    WrittenDocument,
    memo_taking,
    takes_memo,
)
from ..user_adoption_state import JourneyState, MasteryLevel

# Optimistic transactions retried on a write conflict before giving up. 50
# writers racing for one user need at most 50 rounds; the backoff spreads them.
MAX_TX_ATTEMPTS = 500
_SCAN_BATCH = 1000
# Read-your-write of a snapshot just written (write-once, so it cannot have changed).
FRESH_SNAPSHOT_S = 1.0
FRESH_SNAPSHOT_MAX = 1024
_SEARCH_SEP = "\x00"  # between the search term and the user id in the lex index
_MAX_MEMBERS = 500  # members per ZADD/ZREM: a Lua unpack() and a reply stay small

# The compare-and-set step of every standalone state write (module docstring).
# The shebang (Redis 7+) makes the server refuse the whole script up front when
# it is out of memory, rather than fail between two of its writes.
_CAS_SCRIPT = """#!lua
-- KEYS: every key the step touches, the user's state first (cluster-safe declaration).
-- ARGV[1]: the state the caller computed from, byte for byte ('' = it saw none)
-- ARGV[2]: a snapshot key being frozen ('' = none); if it exists, nothing is written
-- ARGV[3]: a key to read back after the writes ('' = none)
-- ARGV[4..]: the writes, each as its argument count followed by its arguments
local state = redis.call('GET', KEYS[1])
if ARGV[2] ~= '' then
  local frozen = redis.call('GET', ARGV[2])
  if frozen then return {2, state or false, frozen} end
end
if ARGV[1] == '' then
  if state then return {0, state} end
elseif state ~= ARGV[1] then
  return {0, state or false}
end
local i = 4
while i <= #ARGV do
  local argc = tonumber(ARGV[i])
  redis.call(unpack(ARGV, i + 1, i + argc))
  i = i + argc + 1
end
if ARGV[3] ~= '' then return {1, redis.call('GET', ARGV[3])} end
return {1}
"""
_CAS_SHA = hashlib.sha1(_CAS_SCRIPT.encode()).hexdigest()
_STALE, _WRITTEN, _FROZEN = 0, 1, 2


def _dumps(doc: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON, as the SDK reads it (no NaN)."""
    return codec.dumps(doc)


def _expected(raw: bytes | None) -> bytes:
    """What the script compares the stored state with: the very bytes (b'' for no document).

    Sending them costs a memory copy on each side; hashing them (SHA-1 here and
    ``redis.sha1hex`` in the script) cost more than the rest of the script's checks.
    """
    return b"" if raw is None else raw


def _text(raw: bytes | str) -> str:
    return raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw


def _arg(value: Any) -> bytes:
    kind = type(value)
    if kind is str:
        return value.encode()
    if kind is bytes:
        return value
    if kind is float:
        return repr(value).encode()
    if kind is int:
        return b"%d" % value
    raise TypeError(f"cannot send {kind.__name__} to Redis")


def _pack_python(commands: Iterable[tuple[Any, ...]]) -> bytes:
    """RESP-encode a batch of commands into one buffer (one socket write, one round trip)."""
    parts: list[bytes] = []
    for cmd in commands:
        parts.append(b"*%d\r\n" % len(cmd))
        for value in cmd:
            data = _arg(value)
            parts.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(parts)


try:  # hiredis encodes the same bytes three times faster
    from hiredis import pack_command as _pack_one
except ImportError:  # pragma: no cover - hiredis comes with the redis extra
    _pack = _pack_python
else:

    def _pack(commands: Iterable[tuple[Any, ...]]) -> bytes:
        return b"".join([_pack_one(cmd) for cmd in commands])


def _script_call(keys: list[str], expected: bytes, freeze: str, read: str, writes: list[tuple[Any, ...]]) -> list[Any]:
    """The EVALSHA arguments after the script name: keys, then ARGV as ``_CAS_SCRIPT`` reads it."""
    args: list[Any] = [len(keys), *keys, expected, freeze, read]
    for cmd in writes:
        args.append(len(cmd))
        args.extend(cmd)
    return args


def _keys_of(writes: list[tuple[Any, ...]]) -> list[str]:
    """The key of every write (each command here names exactly one key, second)."""
    return [cmd[1] for cmd in writes]


# --- our keys (README "Redis keys") ------------------------------------------

PRODUCTS_KEY = f"{PREFIX}:idx:products"


def _product_part(product_id: str) -> str:
    # Always brace the product: in cluster mode it is the hash tag that keeps
    # one product's indexes in one slot; in standalone mode it is just text.
    return f"{PREFIX}:idx:{{{product_id}}}"


@functools.lru_cache(maxsize=4096)  # built on every state write: once per product instead
def users_key(product_id: str) -> str:
    return f"{_product_part(product_id)}:users"


def journey_key(product_id: str, journey_state: str) -> str:
    return f"{_product_part(product_id)}:journey:{journey_state}"


def mastery_key(product_id: str, level: str) -> str:
    return f"{_product_part(product_id)}:mastery:{level}"


def onboarded_key(product_id: str, onboarded: bool) -> str:
    return f"{_product_part(product_id)}:onboarded:{int(onboarded)}"


@functools.lru_cache(maxsize=4096)
def search_key(product_id: str) -> str:
    return f"{_product_part(product_id)}:search"


def sessions_key(product_id: str, user_id: str, *, cluster: bool = False) -> str:
    """The user's full session history, next to the state key (same slot in cluster mode)."""
    return user_state_key(product_id, user_id, cluster=cluster).removesuffix(":state") + ":sessions"


JOURNEY_STATES = [j.value for j in JourneyState]
MASTERY_LEVELS = [m.value for m in MasteryLevel]


class IndexEntry(NamedTuple):
    """What the browsing indexes hold for one user: exactly what ``user_summary_from_doc`` reads."""

    journey_state: str
    mastery_level: str
    onboarded: bool
    score: float  # last activity
    terms: frozenset[str]  # search_terms(): the user id and metadata strings, lower-cased

    @classmethod
    def from_row(cls, row: UserSummary) -> IndexEntry:
        return cls(
            row.journey_state,
            row.mastery_level,
            row.onboarded,
            row.last_activity_at or 0.0,
            frozenset(search_terms(row.user_id, row.metadata)),
        )


_JOURNEY_SET = frozenset(JOURNEY_STATES)
_MASTERY_SET = frozenset(MASTERY_LEVELS)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def index_entry(product_id: str, user_id: str, doc: dict[str, Any]) -> IndexEntry:
    """The index view of a document.

    Documents this engine writes are canonical (every field already valid), and
    for them the fields can be read directly; anything else goes through the
    defensive ``user_summary_from_doc`` so the two can never disagree. This
    keeps a full document parse off the hot path of every write.
    """
    version = doc.get("_v", 1)
    journey = doc.get("journey_state")
    mastery = doc.get("mastery")
    onboarding = doc.get("onboarding")
    metadata = doc.get("metadata")
    updated = doc.get("last_updated_at")
    if (
        version == 1
        and not isinstance(version, bool)
        and type(journey) is str  # a list or an object here (another writer's) cannot be looked up in a set
        and journey in _JOURNEY_SET
        and isinstance(mastery, dict)
        and type(mastery.get("level")) is str
        and mastery["level"] in _MASTERY_SET
        and isinstance(onboarding, dict)
        and isinstance(metadata, dict)
        and _finite(updated)
    ):
        completed = onboarding.get("onboarding_completed_at")
        return IndexEntry(
            journey,
            mastery["level"],
            _finite(completed),
            float(updated) or 0.0,
            frozenset(search_terms(user_id, metadata)),
        )
    return IndexEntry.from_row(user_summary_from_doc(product_id, user_id, doc))


def _captured_at(session_id: str, doc: dict[str, Any]) -> float:
    """The history score of a snapshot: its capture time, read as ``session_summary_from_doc`` does."""
    captured = doc.get("captured_at")
    if _finite(captured):
        return float(captured)
    return session_summary_from_doc(session_id, doc).captured_at


def _filter_keys(product_id: str, entry: IndexEntry) -> tuple[str, str, str]:
    return _filter_keys_of(product_id, entry.journey_state, entry.mastery_level, entry.onboarded)


@functools.lru_cache(maxsize=4096)
def _filter_keys_of(product_id: str, journey_state: str, mastery_level: str, onboarded: bool) -> tuple[str, str, str]:
    return (
        journey_key(product_id, journey_state),
        mastery_key(product_id, mastery_level),
        onboarded_key(product_id, onboarded),
    )


def _all_filter_keys(product_id: str) -> list[str]:
    return (
        [journey_key(product_id, j) for j in JOURNEY_STATES]
        + [mastery_key(product_id, m) for m in MASTERY_LEVELS]
        + [onboarded_key(product_id, b) for b in (False, True)]
    )


def _search_members(user_id: str, entry: IndexEntry) -> set[str]:
    return {f"{term}{_SEARCH_SEP}{user_id}" for term in entry.terms}


def index_commands(
    product_id: str, user_id: str, old: IndexEntry | None, new: IndexEntry, *, filed: bool = False
) -> list[tuple[Any, ...]]:
    """Commands that move one user's index entries from ``old`` to ``new`` (idempotent).

    ``old`` is the entry of the document being replaced (``None``: there is none).
    ``filed`` says this adapter filed ``old`` itself when it wrote those very
    bytes: then the product and unchanged search terms are not filed again.
    Otherwise (another writer, such as the SDK) everything is filed, so the
    indexes heal.
    """
    score = new.score
    cmds: list[tuple[Any, ...]] = [] if filed else [("SADD", PRODUCTS_KEY, product_id)]
    cmds.append(("ZADD", users_key(product_id), score, user_id))
    new_filters = _filter_keys(product_id, new)
    if old is not None and old[:3] != new[:3]:  # journey, mastery or onboarded changed
        for key in set(_filter_keys(product_id, old)) - set(new_filters):
            cmds.append(("ZREM", key, user_id))
    for key in new_filters:
        cmds.append(("ZADD", key, score, user_id))
    if filed and old is not None and old.terms == new.terms:
        return cmds  # filed under these terms already (search scores are all 0)
    new_terms = _search_members(user_id, new)
    search = search_key(product_id)
    if old is not None and old.terms != new.terms:
        stale = sorted(_search_members(user_id, old) - new_terms)
        for i in range(0, len(stale), _MAX_MEMBERS):
            cmds.append(("ZREM", search, *stale[i : i + _MAX_MEMBERS]))
    members = sorted(new_terms)
    for i in range(0, len(members), _MAX_MEMBERS):
        cmds.append(("ZADD", search, *[x for m in members[i : i + _MAX_MEMBERS] for x in (0, m)]))
    return cmds


# --- cursors -------------------------------------------------------------------


def _encode_cursor(score: float, member: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([score, member]).encode()).decode()


def _decode_cursor(cursor: str | None) -> tuple[float, str] | None:
    """Keyset position (score, member) of the last row served: stable while rows move."""
    if not cursor:
        return None
    try:
        score, member = json.loads(base64.urlsafe_b64decode(cursor.encode()).decode())
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not isinstance(member, str):
            raise ValueError
        return float(score), member
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        raise ValueError("invalid cursor") from exc


def _after(item: tuple[float, str], position: tuple[float, str] | None, descending: bool) -> bool:
    if position is None:
        return True
    return item < position if descending else item > position


# --- wire key parsing (reindex) ---------------------------------------------------

_STATE_RE = re.compile(rf"^{PREFIX}:user:(?P<pu>.+):state$", re.S)
_SNAPSHOT_RE = re.compile(rf"^{PREFIX}:user:(?P<pu>.+?):session:(?P<sid>.+)$", re.S)


def _split_user_part(part: str, user_id_hint: str | None) -> tuple[str, str]:
    """``prod:user`` (or ``{prod:user}``) → (product, user); the document's user id settles colons."""
    if part.startswith("{") and part.endswith("}"):
        part = part[1:-1]
    if user_id_hint and part.endswith(":" + user_id_hint) and len(part) > len(user_id_hint) + 1:
        return part[: -len(user_id_hint) - 1], user_id_hint
    product_id, _, user_id = part.partition(":")
    return product_id, user_id


def _first_session_on_start(old: StateDoc | None, new: StateDoc) -> str | None:
    """The id of session number 1 when this write starts a session for a returning user.

    ``old`` is the state replaced, ``None`` when there was none or it was not
    parsed (a memo): then any write with a current session counts.
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


class _RespConnection(asyncio.Protocol):
    """One Redis connection on a bare asyncio Protocol: pipelined requests, replies parsed by hiredis.

    redis-py's asyncio connection reads through a StreamReader, a parser
    wrapper and a timeout context per reply, several event-loop turns per
    round trip; on a machine where every syscall is dear that doubled the
    cost of a round trip (bench/engine.py). Here a request is one
    ``transport.write`` and one future that ``data_received`` completes.
    Plain TCP and Unix sockets only; ``rediss://`` uses redis-py's connections.
    """

    sends = 0  # every request written, all connections: one round trip each (benchmarks read it)

    def __init__(self, params: dict[str, Any], connect_timeout_s: float) -> None:
        import hiredis
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import ResponseError

        # Kept here: an import statement on the request path costs a few microseconds each time.
        self._connection_error = RedisConnectionError
        self._params = params
        self._connect_timeout_s = connect_timeout_s
        self._reader = hiredis.Reader(replyError=ResponseError)  # one object per connection: never reconnected
        # Requests in flight: (future, replies expected, replies so far, deadline on the loop's clock).
        self._waiting: deque[tuple[asyncio.Future[list[Any]], int, list[Any], float]] = deque()
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None  # armed for the oldest request's deadline
        self._loop: asyncio.AbstractEventLoop | None = None  # set by connect()

    # -- asyncio.Protocol --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        waiting = self._waiting
        while waiting:
            reply = self._reader.gets()
            if reply is False:
                return
            future, expected, replies, _deadline = waiting[0]
            replies.append(reply)
            if len(replies) == expected:
                waiting.popleft()
                if not future.done():
                    future.set_result(replies)

    def connection_lost(self, exc: Exception | None) -> None:
        from redis.exceptions import ConnectionError as RedisConnectionError

        self._fail(RedisConnectionError(f"connection to Redis lost: {exc or 'closed by the server'}"))

    def _fail(self, exc: Exception) -> None:
        """Drop the connection and fail every request in flight on it."""
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.abort()  # replies may be pending: nothing of this connection is reused
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._waiting:
            future, _, _, _ = self._waiting.popleft()
            if not future.done():
                future.set_exception(exc)

    def _check_deadline(self) -> None:
        """The timer fired: fail the connection if its oldest request is overdue, else wait for that one.

        One timer per connection, re-armed lazily, instead of a timeout context
        per request (5% of the client's CPU per lifecycle, bench/engine.py):
        most requests are answered long before their connection's timer runs.
        """
        self._timer = None
        if not self._waiting:
            return
        deadline = self._waiting[0][3]
        loop = self._loop
        if loop.time() >= deadline:
            self._fail(TimeoutError("Redis did not answer in time"))
        else:
            self._timer = loop.call_at(deadline, self._check_deadline)

    # -- what the pool and the adapter use --

    @property
    def is_connected(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    async def connect(self) -> None:
        from redis.exceptions import ConnectionError as RedisConnectionError

        loop = self._loop = asyncio.get_running_loop()
        params = self._params
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                if "path" in params:
                    await loop.create_unix_connection(lambda: self, params["path"])
                else:  # asyncio sets TCP_NODELAY on TCP sockets
                    host, port = params.get("host", "localhost"), params.get("port", 6379)
                    await loop.create_connection(lambda: self, host, port)
        except (OSError, TimeoutError) as exc:
            raise RedisConnectionError(f"cannot connect to Redis: {exc or type(exc).__name__}") from exc
        handshake: list[tuple[Any, ...]] = []
        if params.get("password") is not None:
            user = params.get("username")
            handshake.append(("AUTH", user, params["password"]) if user else ("AUTH", params["password"]))
        if params.get("db"):
            handshake.append(("SELECT", params["db"]))
        if handshake:
            try:
                replies = await self.exchange(_pack(handshake), len(handshake), self._connect_timeout_s)
            except BaseException:
                await self.disconnect()
                raise
            for reply in replies:
                if isinstance(reply, Exception):
                    await self.disconnect()
                    raise RedisConnectionError(f"Redis refused the connection: {reply}")

    async def disconnect(self) -> None:
        from redis.exceptions import ConnectionError as RedisConnectionError

        self._fail(RedisConnectionError("connection to Redis closed"))

    async def exchange(self, packed: bytes, expected: int, timeout_s: float) -> list[Any]:
        """Write one request of ``expected`` commands; their replies (error replies as exception objects)."""
        transport = self._transport
        if transport is None or transport.is_closing():
            raise self._connection_error("connection to Redis is closed")
        # The loop this connection was made on (asyncio.get_running_loop() costs a getpid() syscall).
        loop = self._loop
        future: asyncio.Future[list[Any]] = loop.create_future()
        deadline = loop.time() + timeout_s
        self._waiting.append((future, expected, [], deadline))
        transport.write(packed)
        _RespConnection.sends += 1
        if self._timer is None:
            self._timer = loop.call_at(deadline, self._check_deadline)
        return await future


class _RedisPyConnection:
    """A redis-py connection behind ``exchange``: ``rediss://``, which ``_RespConnection`` does not speak."""

    def __init__(self, connection: Any) -> None:
        from redis.exceptions import ResponseError

        self._connection = connection
        self._response_error = ResponseError

    @property
    def is_connected(self) -> bool:
        stream = getattr(self._connection, "_reader", None)
        if not self._connection.is_connected:
            return False
        return stream is None or not (stream.at_eof() or stream.exception() is not None)

    async def connect(self) -> None:
        await self._connection.connect()

    async def disconnect(self) -> None:
        await self._connection.disconnect()

    async def exchange(self, packed: bytes, expected: int, timeout_s: float) -> list[Any]:
        replies: list[Any] = []
        async with asyncio.timeout(timeout_s):
            await self._connection.send_packed_command(packed, check_health=False)
            for _ in range(expected):
                try:
                    replies.append(await self._connection.read_response(timeout=math.inf))
                except self._response_error as exc:
                    replies.append(exc)
        return replies


class _FastPool:
    """A bounded LIFO pool for the pipelined fast path; callers wait when every connection is busy.

    A pooled connection is clean: every reply is read, or the connection is
    dropped. One the server closed while idle (restart, timeout) is replaced
    on checkout, with no probe of the socket.
    """

    def __init__(self, factory: Callable[[], Any], max_connections: int, timeout_s: float) -> None:
        self._factory = factory  # an unconnected connection with connect/exchange/disconnect
        self._idle: list[Any] = []
        # Slots counted by hand, not with asyncio.Semaphore: its locked() walks
        # the waiters on every acquire, a measurable share of a round trip.
        self._free = max_connections
        self._waiters: deque[asyncio.Future[None]] = deque()  # first come, first served
        self._timeout_s = timeout_s

    def checkout(self) -> Any | None:
        """An idle connection at once, or ``None``: then ``await get_connection()`` (it may connect or queue)."""
        idle = self._idle
        if self._free > 0 and idle and not self._waiters and idle[-1].is_connected:
            self._free -= 1
            return idle.pop()
        return None

    async def get_connection(self) -> Any:
        if self._free > 0 and not self._waiters:
            self._free -= 1
        else:  # a burst: queue for a connection instead of failing
            await self._wait_for_slot()
        try:
            while self._idle:
                connection = self._idle.pop()
                if connection.is_connected:
                    return connection
                await connection.disconnect()
            connection = self._factory()
            await connection.connect()
        except BaseException:
            self._release_slot()
            raise
        return connection

    async def _wait_for_slot(self) -> None:
        from redis.exceptions import ConnectionError as RedisConnectionError

        slot: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(slot)
        try:
            async with asyncio.timeout(self._timeout_s):
                await slot
        except BaseException as exc:
            if slot.done() and not slot.cancelled():
                self._release_slot()  # handed over just as this caller gave up: pass it on
            else:
                slot.cancel()  # _release_slot skips it
            if isinstance(exc, TimeoutError):
                raise RedisConnectionError("No connection available.") from exc
            raise

    def _release_slot(self) -> None:
        """Hand the slot to the oldest waiter still waiting, else free it."""
        while self._waiters:
            slot = self._waiters.popleft()
            if not slot.done():
                slot.set_result(None)
                return
        self._free += 1

    def release(self, connection: Any) -> None:
        if connection.is_connected:
            self._idle.append(connection)
        self._release_slot()

    async def disconnect(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            await connection.disconnect()


class RedisStorageAdapter:
    """Readable primary on Redis (standalone, or Redis Cluster with ``cluster=True``)."""

    name = "redis"

    def __init__(
        self,
        redis_url: str,
        *,
        ttl_s: int | None = None,
        cluster: bool = False,
        max_connections: int = 64,
        pool_timeout_s: float = 30.0,
        socket_timeout_s: float = 5.0,
        connect_timeout_s: float = 2.0,
        scripts: bool = True,
        state_cache_size: int = 4096,
    ) -> None:
        import redis.asyncio as aioredis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.redis_url = redis_url
        self.ttl_s = int(ttl_s) if ttl_s else None
        self.cluster = cluster
        self.max_connections = max_connections
        self.socket_timeout_s = socket_timeout_s
        # Transport failures surface at once as StorageUnavailableError; the
        # caller (agent/API) retries whole idempotent operations instead.
        no_retry = Retry(NoBackoff(), 0)
        if cluster:
            from redis.asyncio.cluster import RedisCluster

            self._client: Any = RedisCluster.from_url(
                redis_url,
                max_connections=max_connections,
                socket_timeout=socket_timeout_s,
                socket_connect_timeout=connect_timeout_s,
                retry=no_retry,
            )
            self._pool = None
            # The cluster client raises "too many connections" instead of waiting:
            # bound the operations in flight so bursts queue here.
            self._gate: asyncio.Semaphore | None = asyncio.Semaphore(max_connections)
        else:
            # Pools that wait for a free connection: a burst of sessions queues
            # instead of failing with "too many connections" (the SDK dropped 1,900 of 2,000).
            # The wire methods use the first on the pipelined fast path, where each
            # exchange carries its own deadline (a redis-py socket timeout would
            # cost a task per send); listings and maintenance use the second,
            # through the ordinary client and its socket timeout.
            self._pool: _FastPool | None = _FastPool(
                self._connection_factory(redis_url, connect_timeout_s, no_retry), max_connections, pool_timeout_s
            )
            self._browse_pool = aioredis.BlockingConnectionPool.from_url(
                redis_url,
                max_connections=max(4, max_connections // 4),
                timeout=pool_timeout_s,
                socket_timeout=socket_timeout_s,
                socket_connect_timeout=connect_timeout_s,
                retry=no_retry,
            )
            self._client = aioredis.Redis(connection_pool=self._browse_pool)
            self._gate = None
        # The compare-and-set path: standalone only (the product indexes live in
        # other cluster slots than the user's keys).
        self.scripts = scripts and not cluster
        # The last state bytes seen per state key: the base a write computes from.
        # Only ever a guess: the script checks it against the stored bytes.
        self._seen: OrderedDict[str, _Seen] = OrderedDict()
        self.state_cache_size = max(0, state_cache_size)
        self._fresh_snapshots: dict[str, tuple[float, bytes]] = {}
        # Frozen snapshots this process wrote with a memo (the lifecycle's first
        # sessions): their bytes and how they read, for the start that fetches them.
        self._frozen: OrderedDict[str, tuple[bytes, object]] = OrderedDict()
        self._errors = self._error_types()
        from redis.exceptions import NoScriptError

        self._noscript = NoScriptError

    @staticmethod
    def _error_types() -> tuple[type[BaseException], ...]:
        from redis.exceptions import RedisClusterException, RedisError

        # RedisClusterException ("cannot be connected", slot not covered) is not a RedisError.
        return (RedisError, RedisClusterException, OSError, asyncio.TimeoutError)

    def __repr__(self) -> str:
        mode = "cluster" if self.cluster else "standalone"
        return f"<RedisStorageAdapter {mode} ttl_s={self.ttl_s}>"

    # -- keys --

    def state_key(self, product_id: str, user_id: str) -> str:
        return user_state_key(product_id, user_id, cluster=self.cluster)

    def snapshot_key(self, product_id: str, user_id: str, session_id: str) -> str:
        return session_key(product_id, user_id, session_id, cluster=self.cluster)

    def history_key(self, product_id: str, user_id: str) -> str:
        return sessions_key(product_id, user_id, cluster=self.cluster)

    # -- plumbing --

    async def _call(self, awaitable: Any) -> Any:
        """Run one Redis call, turning every Redis failure into ``StorageUnavailableError``."""
        from redis.exceptions import WatchError

        try:
            if self._gate is not None:
                async with self._gate:
                    return await awaitable
            return await awaitable
        except WatchError:
            raise
        except self._errors as exc:
            raise StorageUnavailableError(f"redis: {type(exc).__name__}: {exc}") from exc

    async def _get(self, key: str) -> bytes | None:
        """GET on the fast path (standalone) or through the cluster client."""
        if self._pool is None:
            return await self._call(self._client.get(key))
        (reply,) = await self._raw([("GET", key)])
        if isinstance(reply, Exception):
            raise StorageUnavailableError(f"redis: GET {key} failed: {reply}") from reply
        return reply

    async def _exchange(self, connection: Any, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Send commands as one write, read every reply under one deadline.

        Error replies come back as exception objects in the list: a MULTI block
        must be read to its EXEC before the connection can be reused.
        """
        return await connection.exchange(_pack(commands), len(commands), self.socket_timeout_s)

    @staticmethod
    def _connection_factory(redis_url: str, connect_timeout_s: float, retry: Any) -> Callable[[], Any]:
        """Bare-protocol connections for ``redis://`` and ``unix://``; redis-py's for the rest (TLS)."""
        import redis.asyncio as aioredis
        from redis.asyncio.connection import parse_url

        params = parse_url(redis_url)
        if params.get("connection_class") in (None, aioredis.UnixDomainSocketConnection):
            return lambda: _RespConnection(params, connect_timeout_s)
        template = aioredis.ConnectionPool.from_url(
            redis_url, socket_timeout=None, socket_connect_timeout=connect_timeout_s, retry=retry
        )
        return lambda: _RedisPyConnection(template.make_connection())

    async def _raw(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Standalone fast path: one round trip on one pooled connection (a failure is ``StorageUnavailableError``).

        Flat on purpose: every coroutine between the caller and the socket is
        paid on each of a session's round trips.
        """
        pool = self._pool
        assert pool is not None
        try:
            connection = pool.checkout() or await pool.get_connection()
        except self._errors as exc:
            raise StorageUnavailableError(f"redis: {type(exc).__name__}: {exc}") from exc
        try:
            return await connection.exchange(_pack(commands), len(commands), self.socket_timeout_s)
        except BaseException as exc:
            await connection.disconnect()  # replies may be unread: never reuse it
            if isinstance(exc, self._errors):
                raise StorageUnavailableError(f"redis: {type(exc).__name__}: {exc}") from exc
            raise
        finally:
            pool.release(connection)

    def _ex(self) -> tuple[Any, ...]:
        return ("EX", self.ttl_s) if self.ttl_s else ()

    # -- the four wire methods --

    async def save_user_state(self, product_id: str, user_id: str, state: dict[str, Any]) -> None:
        """Replace the document; the index diff needs the old one, so this is a transaction too.

        The document may come from anywhere (a copy, a script): NaN is refused here, not nulled.
        """
        codec.dumps_strict(state)
        await self.update_user_state(product_id, user_id, lambda _old: state)

    async def get_user_state(self, product_id: str, user_id: str) -> dict[str, Any] | None:
        key = self.state_key(product_id, user_id)
        return _parse(key, await self._get(key))

    async def save_session_snapshot(
        self, product_id: str, user_id: str, session_id: str, snapshot: dict[str, Any]
    ) -> None:
        codec.dumps_strict(snapshot)  # from anywhere: NaN is refused, not nulled
        await self.create_session_snapshot(product_id, user_id, session_id, snapshot)

    def _freeze_commands(
        self, key: str, history: str, session_id: str, snapshot: dict[str, Any]
    ) -> list[tuple[Any, ...]]:
        """``SET NX`` of the snapshot and its history entry: the first write wins, a retry changes nothing."""
        cmds: list[tuple[Any, ...]] = [
            ("SET", key, _dumps(snapshot), "NX", *self._ex()),
            ("ZADD", history, "NX", _captured_at(session_id, snapshot), session_id),
        ]
        if self.ttl_s:
            cmds.append(("EXPIRE", history, self.ttl_s))
        return cmds

    async def create_session_snapshot(
        self, product_id: str, user_id: str, session_id: str, snapshot: dict[str, Any]
    ) -> dict[str, Any]:
        """``SET NX``: the first write wins, a retried end changes nothing; indexed in the same MULTI.

        The ``SET NX`` reply says whether this call wrote it; only when it did
        not is the frozen one read (and returned).
        """
        key = self.snapshot_key(product_id, user_id, session_id)
        history = self.history_key(product_id, user_id)
        freeze = self._freeze_commands(key, history, session_id, snapshot)
        results = await self._transaction(freeze)
        if results[0] is not None:
            self._keep_frozen(freeze, snapshot)
            return snapshot
        # Already there (a retry, or written by another writer such as the SDK):
        # return the frozen one, and make the history order it by its capture time.
        doc = self._frozen_document(key, await self._get(key))  # a corrupt one raises: never fold a guess
        if doc is None:  # deleted between the two calls (a TTL ran out): nothing is frozen
            return snapshot
        await self._reorder_history(history, session_id, doc)
        return doc

    async def _reorder_history(self, history: str, session_id: str, frozen: dict[str, Any]) -> None:
        await self._call(self._client.zadd(history, {session_id: _captured_at(session_id, frozen)}))

    def _keep_frozen(self, freeze: list[tuple[Any, ...]], snapshot: dict[str, Any]) -> None:
        """After ``freeze`` wrote ``snapshot``: keep its memo (``WrittenDocument``) with the bytes, for its reads."""
        if type(snapshot) is not WrittenDocument or not self.state_cache_size:
            return
        _set, key, payload = freeze[0][:3]  # _freeze_commands: the SET NX comes first
        frozen = self._frozen
        frozen[key] = (payload, snapshot.memo)
        frozen.move_to_end(key)
        if len(frozen) > self.state_cache_size:
            frozen.popitem(last=False)

    def _frozen_document(self, key: str, raw: bytes | str | None) -> dict[str, Any] | None:
        """A stored snapshot parsed, with the memo it was written with when these are its very bytes."""
        doc = _parse(key, raw)
        kept = self._frozen.get(key)
        if doc is None or kept is None or kept[0] != raw:
            return doc
        self._frozen.move_to_end(key)  # the first session's snapshot is read at every start: keep it
        return FrozenDocument(doc, kept[1])

    def _remember_snapshot(self, key: str, payload: bytes) -> None:
        """Keep a snapshot fetched ahead of time for the read that usually follows.

        Session start fetches a returning user's first-session snapshot in its
        final round trip; the lifecycle asks for it right after. A snapshot
        never changes once written, so that read is answered from here (once,
        within ``FRESH_SNAPSHOT_S``) instead of by another round trip.
        """
        fresh = self._fresh_snapshots
        fresh.pop(key, None)
        fresh[key] = (time.monotonic() + FRESH_SNAPSHOT_S, payload)
        while len(fresh) > FRESH_SNAPSHOT_MAX:
            del fresh[next(iter(fresh))]

    async def get_session_snapshot(self, product_id: str, user_id: str, session_id: str) -> dict[str, Any] | None:
        key = self.snapshot_key(product_id, user_id, session_id)
        fresh = self._fresh_snapshots.pop(key, None)
        if fresh is not None and fresh[0] > time.monotonic():
            return self._frozen_document(key, fresh[1])
        return self._frozen_document(key, await self._get(key))

    async def _transaction(self, cmds: list[tuple[Any, ...]]) -> list[Any]:
        """MULTI/EXEC of single-slot commands, without WATCH; the EXEC results."""
        if self._pool is not None:
            replies = await self._raw([("MULTI",), *cmds, ("EXEC",)])
            return self._exec_results(replies)

        async def run() -> list[Any]:
            async with self._client.pipeline(transaction=True) as pipe:
                for cmd in cmds:
                    pipe.execute_command(*cmd)
                return await pipe.execute()

        return await self._call(run())

    @staticmethod
    def _exec_results(replies: list[Any]) -> list[Any]:
        """Check a raw MULTI..EXEC reply list; ``None`` results mean a WATCH conflict (caller handles)."""
        for reply in replies:
            if isinstance(reply, Exception):
                raise StorageUnavailableError(f"redis: transaction failed: {reply}") from reply
        result = replies[-1]
        if isinstance(result, list):
            for item in result:
                if isinstance(item, Exception):
                    raise StorageUnavailableError(f"redis: command in transaction failed: {item}") from item
        return result

    # -- atomic update --

    async def update_user_state(self, product_id: str, user_id: str, mutate: StateMutation) -> StateDoc | None:
        """Compare-and-set (or WATCH/MULTI) of ``mutate(current)``, retried on conflict (``mutate`` must be pure)."""
        key = self.state_key(product_id, user_id)
        if self.scripts:
            return await self._cas_update(key, product_id, user_id, mutate)
        for attempt in range(MAX_TX_ATTEMPTS):
            if self._pool is not None:
                outcome = await self._call(self._try_update_standalone(key, product_id, user_id, mutate))
            else:
                outcome = await self._try_update_cluster(key, product_id, user_id, mutate)
            if outcome is not _CONFLICT:
                return outcome
            # Someone else won this round: back off a little so the herd spreads out.
            await asyncio.sleep(random.uniform(0, min(0.001 * (attempt + 1), 0.02)))
        raise _gave_up(key)

    async def record_session_end(
        self, product_id: str, user_id: str, session_id: str, snapshot: dict[str, Any], fold: SessionFold
    ) -> tuple[dict[str, Any], StateDoc | None]:
        """Freeze the snapshot and fold it into the state in one step (``SessionEndStore``).

        One script call: ``SET NX`` of the snapshot, its history entry, the new
        state and its index changes, all or nothing. When the snapshot is
        already frozen (a retry, or another writer), nothing is written and the
        frozen one is folded instead.
        """
        if not self.scripts:
            return await self._record_end_watched(product_id, user_id, session_id, snapshot, fold)
        key = self.state_key(product_id, user_id)
        snap_key = self.snapshot_key(product_id, user_id, session_id)
        freeze = self._freeze_commands(snap_key, self.history_key(product_id, user_id), session_id, snapshot)
        for attempt in range(MAX_TX_ATTEMPTS):
            raw, (current, new, payload, writes, entry) = await self._base(
                key, product_id, user_id, _fold_into(fold, snapshot), guess_new=attempt == 0
            )
            reply = await self._cas(key, raw, [*freeze, *writes], freeze=snap_key)
            if reply[0] == _WRITTEN:
                if payload is not None:
                    self._see(key, payload, entry, _memo_of(new))
                self._keep_frozen(freeze, snapshot)
                return snapshot, (current if new is None else new)
            if reply[0] == _STALE:
                self._see(key, reply[1])
                continue
            # Frozen before: fold what is frozen, as a plain update (rare: retries).
            self._see(key, reply[1])
            frozen = self._frozen_document(snap_key, reply[2])
            return await self._fold_frozen(product_id, user_id, session_id, frozen, fold)
        raise _gave_up(key)

    async def _record_end_watched(
        self, product_id: str, user_id: str, session_id: str, snapshot: dict[str, Any], fold: SessionFold
    ) -> tuple[dict[str, Any], StateDoc | None]:
        """The session end with WATCH on the state and the snapshot key, then one MULTI of both.

        For servers without scripts and for cluster mode (a user's keys share
        one slot). A snapshot already frozen is folded instead; a change to
        either key between the reads and ``EXEC`` starts the round over.
        """
        from redis.exceptions import WatchError

        key = self.state_key(product_id, user_id)
        snap_key = self.snapshot_key(product_id, user_id, session_id)
        freeze = self._freeze_commands(snap_key, self.history_key(product_id, user_id), session_id, snapshot)
        mutate = _fold_into(fold, snapshot)

        async def attempt() -> Any:
            async with self._client.pipeline(transaction=True) as pipe:
                await pipe.watch(key, snap_key)
                frozen_raw, raw = await pipe.execute_command("MGET", snap_key, key)  # one slot: the user's hash tag
                if frozen_raw is not None:
                    await pipe.unwatch()
                    return frozen_raw, None
                current, new, idx, _entry = self._prepare(key, product_id, user_id, _Seen(raw), mutate)
                pipe.multi()
                for cmd in freeze:
                    pipe.execute_command(*cmd)
                if new is not None:
                    pipe.set(key, _dumps(new), ex=self.ttl_s)
                    if not self.cluster:  # standalone: the product's indexes in the same transaction
                        for cmd in idx:
                            pipe.execute_command(*cmd)
                try:
                    await pipe.execute()
                except WatchError:
                    return _CONFLICT
                return None, (current, new, idx)

        for round_ in range(MAX_TX_ATTEMPTS):
            outcome = await self._call(attempt())
            if outcome is _CONFLICT:
                await asyncio.sleep(random.uniform(0, min(0.001 * (round_ + 1), 0.02)))
                continue
            frozen_raw, written = outcome
            if frozen_raw is not None:  # frozen before: fold what is frozen (a retry, another writer)
                frozen = self._frozen_document(snap_key, frozen_raw)
                return await self._fold_frozen(product_id, user_id, session_id, frozen, fold)
            current, new, idx = written
            if new is None:
                return snapshot, current
            if self.cluster:  # the product's indexes live in another slot: right after, idempotently
                await self._pipeline(idx)
            return snapshot, new
        raise _gave_up(key)

    async def _fold_frozen(
        self, product_id: str, user_id: str, session_id: str, frozen: dict[str, Any] | None, fold: SessionFold
    ) -> tuple[dict[str, Any], StateDoc | None]:
        assert frozen is not None  # the script saw it exist
        await self._reorder_history(self.history_key(product_id, user_id), session_id, frozen)
        return frozen, await self.update_user_state(product_id, user_id, _fold_into(fold, frozen))

    async def _base(
        self, key: str, product_id: str, user_id: str, mutate: StateMutation, *, guess_new: bool
    ) -> tuple[bytes | None, tuple[StateDoc | None, StateDoc | None, bytes | None, list[tuple[Any, ...]], Any]]:
        """The state bytes a write computes from, and ``_prepare_cas`` on them.

        Those last seen for ``key``. For a user this process never saw, with
        ``guess_new``: no state at all, when ``mutate(None)`` writes something.
        The script checks that guess like any other (a stored state makes it
        stale, and the next attempt starts from the state it returns), so a
        new user's first write costs one round trip instead of a read and a
        write. If ``mutate(None)`` writes nothing or refuses (an edit of a
        user that must exist), nothing is assumed: the state is read first.
        """
        if guess_new and self.state_cache_size and key not in self._seen:  # 0: always read first
            try:
                prepared = self._prepare_cas(key, product_id, user_id, _NOTHING_SEEN, mutate)
            except Exception:  # its answer for "no state" is not needed yet: ask Redis
                prepared = None
            if prepared is not None and prepared[1] is not None:
                return None, prepared
        seen = self._seen.get(key)
        if seen is not None:
            try:
                return seen.raw, self._prepare_cas(key, product_id, user_id, seen, mutate)
            except Exception:
                # Refused on what this process remembers (an If-Match, a corrupt or missing
                # state): another writer may have changed it since, so only what Redis holds
                # now may refuse the write.
                pass
        # Never "absent" unless Redis said so: a ``mutate(None)`` whose result is
        # kept means there is no state, not that this process does not know it.
        seen = _Seen(await self._get(key))
        self._see(key, seen.raw)
        return seen.raw, self._prepare_cas(key, product_id, user_id, seen, mutate)

    def _see(self, key: str, raw: bytes | None, filed: IndexEntry | None = None, memo: object = None) -> None:
        """Remember the state bytes last seen for ``key`` (bounded, least recently used out)."""
        if not self.state_cache_size:
            return
        seen = self._seen
        seen[key] = _Seen(raw, filed, memo)
        seen.move_to_end(key)
        if len(seen) > self.state_cache_size:
            seen.popitem(last=False)

    def _prepare_cas(
        self,
        key: str,
        product_id: str,
        user_id: str,
        seen: _Seen,
        mutate: StateMutation,
    ) -> tuple[StateDoc | None, StateDoc | None, bytes | None, list[tuple[Any, ...]], IndexEntry | None]:
        """(current, new, its bytes, the writes: index changes then the state, new's index entry).

        ``new is None``: nothing to write.
        """
        try:
            current, new, idx, entry = self._prepare(key, product_id, user_id, seen, mutate)
        except BaseException:
            # Unreadable (corrupt, a newer _v) or a mutate that failed: never trust
            # this guess again without asking Redis.
            self._seen.pop(key, None)
            raise
        if new is None:
            return current, None, None, [], None
        payload = _dumps(new)
        return current, new, payload, [*idx, ("SET", key, payload, *self._ex())], entry

    async def _cas_update(self, key: str, product_id: str, user_id: str, mutate: StateMutation) -> StateDoc | None:
        for attempt in range(MAX_TX_ATTEMPTS):
            raw, (current, new, payload, writes, entry) = await self._base(
                key, product_id, user_id, mutate, guess_new=attempt == 0
            )
            read = ""
            if new is not None:
                onboarding = _first_session_on_start(current, new)
                if onboarding is not None:
                    # A session starts for a returning user: the lifecycle reads the
                    # first session's snapshot next (spec 6); fetch it in this round trip.
                    read = self.snapshot_key(product_id, user_id, onboarding)
            reply = await self._cas(key, raw, writes, read=read)
            if reply[0] == _STALE:
                self._see(key, reply[1])
                continue
            if payload is not None:
                self._see(key, payload, entry, _memo_of(new))
            if read and len(reply) > 1 and isinstance(reply[1], bytes):
                self._remember_snapshot(read, reply[1])
            return current if new is None else new
        raise _gave_up(key)

    async def _cas(
        self, key: str, raw: bytes | None, writes: list[tuple[Any, ...]], *, freeze: str = "", read: str = ""
    ) -> list[Any]:
        """One run of ``_CAS_SCRIPT``: ``writes`` happen only if the state still is ``raw``."""
        keys = list(dict.fromkeys([key, *([freeze] if freeze else []), *([read] if read else []), *_keys_of(writes)]))
        args = _script_call(keys, _expected(raw), freeze, read, writes)
        (reply,) = await self._raw([("EVALSHA", _CAS_SHA, *args)])
        if isinstance(reply, self._noscript) or (isinstance(reply, Exception) and str(reply).startswith("NOSCRIPT")):
            # First use on this server (or after SCRIPT FLUSH / a restart): send the body once.
            (reply,) = await self._raw([("EVAL", _CAS_SCRIPT, *args)])
        if isinstance(reply, Exception):
            raise StorageUnavailableError(f"redis: state write failed: {reply}") from reply
        return reply

    def _prepare(
        self,
        key: str,
        product_id: str,
        user_id: str,
        seen: _Seen,
        mutate: StateMutation,
    ) -> tuple[StateDoc | None, StateDoc | None, list[tuple[Any, ...]], IndexEntry | None]:
        """(current, new, index commands, new's entry); ``new is None`` means nothing to write.

        ``seen.filed``: the entry this adapter filed when it wrote ``seen.raw`` (see ``index_commands``).
        """
        raw, filed = seen.raw, seen.filed
        if seen.memo is not None and raw is not None and filed is not None and takes_memo(mutate):
            # The state this adapter wrote, to a mutation that reads it typed: no parse at all.
            self._seen[key] = _Seen(raw, filed)  # the memo is handed out once: the reader owns it now
            new = mutate(StoredState(key, raw, seen.memo))
            if new is None:
                return _parse(key, raw), None, [], None
            entry = index_entry(product_id, user_id, new)
            return None, new, index_commands(product_id, user_id, filed, entry, filed=True), entry
        current = _parse(key, raw)
        # Before mutate runs: it may change the document it is given in place.
        old_entry = filed if filed is not None or current is None else index_entry(product_id, user_id, current)
        new = mutate(current)
        if new is None:
            return _parse(key, raw), None, [], None
        entry = index_entry(product_id, user_id, new)
        return current, new, index_commands(product_id, user_id, old_entry, entry, filed=filed is not None), entry

    async def _try_update_standalone(
        self, key: str, product_id: str, user_id: str, mutate: StateMutation
    ) -> Any:
        assert self._pool is not None
        connection = await self._pool.get_connection()
        try:
            watched, raw = await self._exchange(connection, [("WATCH", key), ("GET", key)])
            for reply in (watched, raw):
                if isinstance(reply, Exception):
                    raise StorageUnavailableError(f"redis: WATCH/GET failed: {reply}") from reply
            current, new, idx, _entry = self._prepare(key, product_id, user_id, _Seen(raw), mutate)
            if new is None:
                await self._exchange(connection, [("UNWATCH",)])
                return current
            cmds: list[tuple[Any, ...]] = [("MULTI",), ("SET", key, _dumps(new), *self._ex()), *idx, ("EXEC",)]
            onboarding = _first_session_on_start(current, new)
            if onboarding is not None:
                # A session starts for a returning user: the lifecycle reads the
                # first session's snapshot next (spec 6); fetch it in this round trip.
                cmds.append(("GET", self.snapshot_key(product_id, user_id, onboarding)))
            replies = await self._exchange(connection, cmds)
        except BaseException:
            # A WATCH may still be active, or replies unread: never reuse this connection.
            await connection.disconnect()
            raise
        finally:
            self._pool.release(connection)
        if onboarding is not None:
            fetched = replies.pop()
            if isinstance(fetched, bytes):
                self._remember_snapshot(self.snapshot_key(product_id, user_id, onboarding), fetched)
        if self._exec_results(replies) is None:
            return _CONFLICT
        return new

    async def _try_update_cluster(self, key: str, product_id: str, user_id: str, mutate: StateMutation) -> Any:
        from redis.exceptions import WatchError

        async def attempt() -> Any:
            async with self._client.pipeline(transaction=True) as pipe:
                await pipe.watch(key)
                raw = await pipe.get(key)
                current, new, idx, _entry = self._prepare(key, product_id, user_id, _Seen(raw), mutate)
                if new is None:
                    await pipe.unwatch()
                    return current, None, []
                pipe.multi()
                pipe.set(key, _dumps(new), ex=self.ttl_s)
                try:
                    await pipe.execute()
                except WatchError:
                    return _CONFLICT
                return current, new, idx

        outcome = await self._call(attempt())
        if outcome is _CONFLICT:
            return _CONFLICT
        current, new, idx = outcome
        if new is None:
            if current is not None:
                # A no-op is usually a retry whose first attempt may have failed
                # between the two steps: re-file the user (idempotent) so the
                # product indexes heal.
                entry = index_entry(product_id, user_id, current)
                await self._pipeline(index_commands(product_id, user_id, None, entry))
            return current
        # The product's indexes live in another slot: update them right after
        # the user's transaction. Every command is idempotent, and listings
        # re-check rows against the live document.
        await self._pipeline(idx)
        return new

    async def _pipeline(self, cmds: Iterable[tuple[Any, ...]]) -> list[Any]:
        """Non-transactional pipeline (one round trip per node); raises on any error reply."""

        async def run() -> list[Any]:
            async with self._client.pipeline(transaction=False) as pipe:
                for cmd in cmds:
                    pipe.execute_command(*cmd)
                return await pipe.execute()

        return await self._call(run())

    # -- browsing --

    async def ping(self) -> None:
        if not await self._call(self._client.ping()):
            raise StorageUnavailableError("redis: PING did not answer")

    async def list_products(self) -> list[ProductSummary]:
        products = sorted(_text(p) for p in await self._call(self._client.smembers(PRODUCTS_KEY)))
        if not products:
            return []
        cmds: list[tuple[Any, ...]] = []
        for product_id in products:
            cmds.append(("ZCARD", users_key(product_id)))
            cmds.extend(("ZCARD", journey_key(product_id, j)) for j in JOURNEY_STATES)
            cmds.extend(("ZCARD", mastery_key(product_id, m)) for m in MASTERY_LEVELS)
        counts = iter(await self._pipeline(cmds))
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
        limit = max(1, min(limit, MAX_PAGE_SIZE))
        position = _decode_cursor(cursor)
        descending = query.order == "-last_activity"
        filters = []
        if query.journey_state:
            filters.append(journey_key(product_id, query.journey_state))
        if query.mastery_level:
            filters.append(mastery_key(product_id, query.mastery_level))
        if query.onboarded is not None:
            filters.append(onboarded_key(product_id, query.onboarded))
        needle = (query.search or "").strip().lower()

        if needle:
            candidates = await self._search(product_id, needle, filters, position, descending)
        else:
            candidates = await self._walk(product_id, filters or [users_key(product_id)], position, descending, limit)
        page, more = candidates[:limit], len(candidates) > limit

        raws = await self._get_many([self.state_key(product_id, uid) for _, uid in page])
        rows = []
        for (_, user_id), raw in zip(page, raws, strict=True):
            if raw is None:
                continue  # expired (TTL) or deleted since it was indexed
            try:
                doc = _parse(self.state_key(product_id, user_id), raw)
                row = user_summary_from_doc(product_id, user_id, doc or {})
            except CorruptDocumentError:
                row = UserSummary(product_id=product_id, user_id=user_id, corrupt=True)
            if _matches(row, query, needle):  # the live document has the last word
                rows.append(row)
        next_cursor = _encode_cursor(*page[-1]) if more and page else None
        return Page(rows, next_cursor)

    async def _walk(
        self, product_id: str, keys: list[str], position: tuple[float, str] | None, descending: bool, limit: int
    ) -> list[tuple[float, str]]:
        """Up to ``limit + 1`` members of the smallest set that are in every other set, in order."""
        if len(keys) > 1:
            sizes = await self._pipeline([("ZCARD", k) for k in keys])
            keys = [k for _, k in sorted(zip(sizes, keys, strict=True))]
        driver, others = keys[0], keys[1:]
        out: list[tuple[float, str]] = []
        async for batch in self._zscan_ordered(driver, position, descending, batch=limit + 1):
            if others:
                checks = await self._pipeline([("ZMSCORE", k, *[m for _, m in batch]) for k in others])
                batch = [item for i, item in enumerate(batch) if all(c[i] is not None for c in checks)]
            out.extend(batch)
            if len(out) > limit:
                break
        return out[: limit + 1]

    async def _zscan_ordered(
        self, key: str, position: tuple[float, str] | None, descending: bool, batch: int
    ) -> AsyncIterator[list[tuple[float, str]]]:
        """Members after the keyset ``position`` in (score, member) order, a batch at a time."""
        bound: float | str = position[0] if position else ("+inf" if descending else "-inf")
        offset = 0
        while True:
            if descending:
                got = await self._call(
                    self._client.zrevrangebyscore(key, bound, "-inf", start=offset, num=batch, withscores=True)
                )
            else:
                got = await self._call(
                    self._client.zrangebyscore(key, bound, "+inf", start=offset, num=batch, withscores=True)
                )
            offset += len(got)
            items = [(float(s), _text(m)) for m, s in got]
            items = [item for item in items if _after(item, position, descending)]
            if items:
                yield items
            if len(got) < batch:
                return

    async def _search(
        self,
        product_id: str,
        needle: str,
        filters: list[str],
        position: tuple[float, str] | None,
        descending: bool,
    ) -> list[tuple[float, str]]:
        """Users with a search term starting with ``needle`` (lex range), filtered, in order."""
        low = b"[" + needle.encode()
        high = b"(" + needle.encode() + b"\xff"
        members = await self._call(self._client.zrangebylex(search_key(product_id), low, high))
        user_ids = sorted({_text(m).split(_SEARCH_SEP, 1)[-1] for m in members})
        if not user_ids:
            return []
        keys = [users_key(product_id), *filters]
        checks = await self._pipeline([("ZMSCORE", k, *user_ids) for k in keys])
        items = [
            (float(checks[0][i]), uid)
            for i, uid in enumerate(user_ids)
            if all(c[i] is not None for c in checks)
        ]
        items = sorted((it for it in items if _after(it, position, descending)), reverse=descending)
        return items

    async def _get_many(self, keys: list[str]) -> list[Any]:
        if not keys:
            return []
        if self._pool is not None:
            return await self._call(self._client.mget(keys))
        return await self._pipeline([("GET", k) for k in keys])

    async def list_sessions(
        self,
        product_id: str,
        user_id: str,
        *,
        cursor: str | None = None,
        limit: int = 50,
        newest_first: bool = True,
    ) -> Page[SessionSummary]:
        limit = max(1, min(limit, MAX_PAGE_SIZE))
        position = _decode_cursor(cursor)
        items: list[tuple[float, str]] = []
        history = self.history_key(product_id, user_id)
        async for batch in self._zscan_ordered(history, position, newest_first, limit + 1):
            items.extend(batch)
            if len(items) > limit:
                break
        page, more = items[:limit], len(items) > limit
        raws = await self._get_many([self.snapshot_key(product_id, user_id, sid) for _, sid in page])
        rows = []
        for (_, session_id), raw in zip(page, raws, strict=True):
            if raw is None:
                continue  # expired (TTL) since it was indexed
            try:
                doc = _parse(self.snapshot_key(product_id, user_id, session_id), raw)
            except CorruptDocumentError:
                rows.append(SessionSummary(session_id, session_number=0, started_at=0.0, captured_at=0.0, corrupt=True))
                continue
            rows.append(session_summary_from_doc(session_id, doc or {}))
        return Page(rows, _encode_cursor(*page[-1]) if more and page else None)

    async def get_raw_user_state(self, product_id: str, user_id: str) -> str | None:
        raw = await self._get(self.state_key(product_id, user_id))
        return None if raw is None else _text(raw)

    async def get_raw_session_snapshot(self, product_id: str, user_id: str, session_id: str) -> str | None:
        raw = await self._get(self.snapshot_key(product_id, user_id, session_id))
        return None if raw is None else _text(raw)

    # -- maintenance --

    async def reindex(
        self,
        progress: Callable[[int, int], None] | None = None,
        unaddressable: Callable[[str, str, str | None], None] | None = None,
    ) -> dict[str, int]:
        """Rebuild the browsing indexes from a SCAN of the two wire key patterns; safe to re-run.

        Finds documents written by other writers (the published SDK), repairs
        entries left stale, and drops entries whose document is gone (TTL).
        ``progress(advanced, total)`` is called as keys are scanned;
        ``unaddressable(product_id, user_id, session_id or None)`` for each
        document filed under an id no URL can address (``ids.is_dots_only``).
        """
        report = unaddressable or (lambda product_id, user_id, session_id: None)
        total = await self._dbsize()
        counts = {"keys_scanned": 0, "states": 0, "snapshots": 0, "corrupt": 0, "pruned": 0}
        states: list[str] = []
        snapshots: list[str] = []
        histories: list[str] = []
        async for batch in self._scan_batches():
            for key in batch:
                if key.startswith(f"{PREFIX}:user:"):
                    if key.endswith(":state"):
                        states.append(key)
                    elif key.endswith(":sessions"):
                        histories.append(key)
                    elif ":session:" in key:
                        snapshots.append(key)
            counts["keys_scanned"] += len(batch)
            if len(states) >= _SCAN_BATCH:
                await self._reindex_states(states, counts, report)
                states = []
            if len(snapshots) >= _SCAN_BATCH:
                await self._reindex_snapshots(snapshots, counts, report)
                snapshots = []
            if progress is not None:
                progress(len(batch), total)
        await self._reindex_states(states, counts, report)
        await self._reindex_snapshots(snapshots, counts, report)
        counts["pruned"] += await self._prune(histories)
        return counts

    async def _dbsize(self) -> int:
        if self._pool is not None:
            return int(await self._call(self._client.dbsize()))
        sizes = await self._call(self._client.dbsize(target_nodes=self._client.PRIMARIES))
        return int(sum(sizes.values()) if isinstance(sizes, dict) else sizes)

    async def _scan_batches(self) -> AsyncIterator[list[str]]:
        if self._pool is not None:
            cursor = 0
            while True:
                cursor, keys = await self._call(self._client.scan(cursor, count=_SCAN_BATCH))
                yield [_text(k) for k in keys]
                if cursor == 0:
                    return
        for node in self._client.get_primaries():
            cursor = 0
            while True:
                cursors, keys = await self._call(self._client.scan(cursor, count=_SCAN_BATCH, target_nodes=node))
                cursor = next(iter(cursors.values())) if isinstance(cursors, dict) else cursors
                yield [_text(k) for k in keys]
                if cursor == 0:
                    break

    async def _reindex_states(
        self, keys: list[str], counts: dict[str, int], report: Callable[[str, str, str | None], None]
    ) -> None:
        if not keys:
            return
        raws = await self._get_many(keys)
        cmds: list[tuple[Any, ...]] = []
        for key, raw in zip(keys, raws, strict=True):
            match = _STATE_RE.match(key)
            if raw is None or match is None:
                continue
            try:
                doc = _parse(key, raw)
                hint = doc.get("user_id") if doc else None
            except CorruptDocumentError:
                doc, hint = None, None
                counts["corrupt"] += 1
            product_id, user_id = _split_user_part(match["pu"], hint if isinstance(hint, str) else None)
            if not product_id or not user_id or self.state_key(product_id, user_id) != key:
                continue  # a key of the other key mode, or not ours to interpret
            if is_dots_only(product_id) or is_dots_only(user_id):
                report(product_id, user_id, None)
            row = (
                user_summary_from_doc(product_id, user_id, doc)
                if doc is not None
                else UserSummary(product_id=product_id, user_id=user_id, corrupt=True)
            )
            # Any filter set the user may be in from an older document: ZREM is a no-op where absent.
            cmds.extend(("ZREM", k, user_id) for k in _all_filter_keys(product_id))
            cmds.extend(index_commands(product_id, user_id, None, IndexEntry.from_row(row)))
            counts["states"] += 1
        if cmds:
            await self._pipeline(cmds)

    async def _reindex_snapshots(
        self, keys: list[str], counts: dict[str, int], report: Callable[[str, str, str | None], None]
    ) -> None:
        if not keys:
            return
        raws = await self._get_many(keys)
        cmds: list[tuple[Any, ...]] = []
        for key, raw in zip(keys, raws, strict=True):
            match = _SNAPSHOT_RE.match(key)
            if raw is None or match is None:
                continue
            try:
                doc = _parse(key, raw)
            except CorruptDocumentError:
                doc = None
                counts["corrupt"] += 1
            hint_sid = doc.get("session_id") if doc else None
            hint_uid = doc.get("user_id") if doc else None
            pu, session_id = match["pu"], match["sid"]
            rest = key[len(f"{PREFIX}:user:") :]
            if isinstance(hint_sid, str) and hint_sid and rest.endswith(":session:" + hint_sid):
                pu, session_id = rest[: -len(":session:" + hint_sid)], hint_sid
            product_id, user_id = _split_user_part(pu, hint_uid if isinstance(hint_uid, str) else None)
            if not product_id or not user_id or self.snapshot_key(product_id, user_id, session_id) != key:
                continue
            if is_dots_only(product_id) or is_dots_only(user_id) or is_dots_only(session_id):
                report(product_id, user_id, session_id)
            captured = _captured_at(session_id, doc) if doc is not None else 0.0
            cmds.append(("ZADD", self.history_key(product_id, user_id), captured, session_id))
            counts["snapshots"] += 1
        if cmds:
            await self._pipeline(cmds)

    async def _prune(self, histories: list[str]) -> int:
        """Drop index entries whose document no longer exists (expired or deleted)."""
        pruned = 0
        for product_id in sorted(_text(p) for p in await self._call(self._client.smembers(PRODUCTS_KEY))):
            members = [_text(m) for m in await self._call(self._client.zrange(users_key(product_id), 0, -1))]
            exists = await self._pipeline([("EXISTS", self.state_key(product_id, u)) for u in members])
            gone = {u for u, e in zip(members, exists, strict=True) if not e}
            if gone:
                cmds: list[tuple[Any, ...]] = [
                    ("ZREM", k, *sorted(gone)) for k in [users_key(product_id), *_all_filter_keys(product_id)]
                ]
                terms = [_text(m) for m in await self._call(self._client.zrange(search_key(product_id), 0, -1))]
                stale_terms = [t for t in terms if t.split(_SEARCH_SEP, 1)[-1] in gone]
                if stale_terms:
                    cmds.append(("ZREM", search_key(product_id), *stale_terms))
                await self._pipeline(cmds)
                pruned += len(gone)
            if len(gone) == len(members):
                await self._call(self._client.srem(PRODUCTS_KEY, product_id))
        for history in histories:
            base = history.removesuffix(":sessions")
            sids = [_text(m) for m in await self._call(self._client.zrange(history, 0, -1))]
            exists = await self._pipeline([("EXISTS", f"{base}:session:{sid}") for sid in sids])
            gone_sessions = [sid for sid, e in zip(sids, exists, strict=True) if not e]
            if gone_sessions:
                await self._call(self._client.zrem(history, *gone_sessions))
                pruned += len(gone_sessions)
        return pruned

    async def aclose(self) -> None:
        """Close the pool (pooled connections belong to the event loop that made them)."""
        with contextlib.suppress(*self._errors):
            await self._client.aclose()
        if self._pool is not None:
            await self._pool.disconnect()
            await self._browse_pool.disconnect()


_CONFLICT = object()


class _Seen(NamedTuple):
    """What this process last saw of one state key: the base its next write computes from."""

    raw: bytes | None
    filed: IndexEntry | None = None  # the index entry this adapter filed when it wrote ``raw``
    memo: object = None  # the typed state ``raw`` was written from (``WrittenDocument``)


_NOTHING_SEEN = _Seen(None)


def _memo_of(doc: StateDoc | None) -> object:
    return doc.memo if type(doc) is WrittenDocument else None


def _fold_into(fold: SessionFold, frozen: dict[str, Any]) -> StateMutation:
    """``fold`` as a state mutation with the frozen snapshot bound (taking memos when ``fold`` does)."""
    return memo_taking(lambda doc: fold(frozen, doc), like=fold)


def _gave_up(key: str) -> StorageUnavailableError:
    return StorageUnavailableError(
        f"redis: {key} kept changing under {MAX_TX_ATTEMPTS} optimistic transactions; try again"
    )


def _matches(row: UserSummary, query: UserQuery, needle: str) -> bool:
    if query.journey_state and row.journey_state != query.journey_state:
        return False
    if query.mastery_level and row.mastery_level != query.mastery_level:
        return False
    if query.onboarded is not None and row.onboarded != query.onboarded:
        return False
    return not needle or any(t.startswith(needle) for t in search_terms(row.user_id, row.metadata))
