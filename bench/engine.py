"""Engine benchmark: the full session lifecycle through StorageManager([primary]).

One lifecycle = ``on_session_start`` + ``SessionSnapshot.from_adoption_state``
+ ``on_session_end``, as an agent runs it. For every backend it prints:

- sessions/s serial (one lifecycle at a time) with p50/p99 latency. The
  serial phase runs in ``--rounds`` rounds that alternate the backends, so
  each is measured in the same minutes: on a shared VM the machine's speed
  drifts by ±25% between runs, and a ratio of two runs minutes apart measures
  that drift as much as the backends;
- sessions/s with ``--concurrency`` users (default 200) each running sessions back to back;
- round trips per lifecycle and commands per lifecycle, where the backend can count them;
- storage memory per user holding ``--sessions-per-user`` sessions (default 10).

Backends are a registry of named factories (``@backend("name")``): each is an
async context manager yielding a ``Backend``. Add one without touching the
measurement code. Usage::

    .venv/bin/python bench/engine.py                       # every registered backend
    .venv/bin/python bench/engine.py --backend redis --serial 5000 --concurrent-sessions 4000
    .venv/bin/python bench/engine.py --backend redis --backend sdk-redis --loop asyncio
    .venv/bin/python bench/engine.py --backend redis --backend sdk-redis --wait-replicas 1   # the cost of WAIT
    .venv/bin/python bench/engine.py --backend redis --backend redis-typed-only   # the cost of the plain documents

Every backend runs on the same event loop: uvloop by default (granian serves
the API on it when installed), or asyncio's own with ``--loop asyncio``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from autoplay_storage.lifecycle import on_session_end, on_session_start
from autoplay_storage.manager import StorageManager
from autoplay_storage.user_adoption_state import SessionSnapshot, WorkflowStatus
from bench.redis_probes import private_redis, redis_notes

CATALOG = [f"wf_{i}" for i in range(8)]


@dataclass
class Backend:
    """What a benchmark run needs from one storage backend."""

    name: str
    storage: StorageManager
    reset: Callable[[], Awaitable[None]]  # empty the store between phases
    # Optional probes; a backend that cannot measure one leaves it None ("n/a").
    round_trips: Callable[[], int] | None = None  # client-side count, monotonically increasing
    commands: Callable[[], Awaitable[int]] | None = None  # server-side count, monotonically increasing
    memory_bytes: Callable[[], Awaitable[int]] | None = None  # storage memory in use now
    server_cpu_s: Callable[[], Awaitable[float]] | None = None  # CPU seconds the server has used so far
    notes: list[object] = field(default_factory=list)  # printed with str(): a counter reads at the end
    # What one session does on this backend; default: this engine's ``lifecycle`` below.
    lifecycle: Callable[[Any, str, str, str, int], Awaitable[None]] | None = None


BackendFactory = Callable[[argparse.Namespace], contextlib.AbstractAsyncContextManager[Backend]]
BACKENDS: dict[str, BackendFactory] = {}


def backend(name: str) -> Callable[[BackendFactory], BackendFactory]:
    """Register a backend factory under ``name`` (selectable with ``--backend name``)."""

    def register(factory: BackendFactory) -> BackendFactory:
        BACKENDS[name] = factory
        return factory

    return register


# --- backends ---------------------------------------------------------------------------


@backend("redis")
@contextlib.asynccontextmanager
async def redis_backend(args: argparse.Namespace) -> AsyncIterator[Backend]:
    """RedisStorageAdapter on a private redis-server (or ``--redis-url``)."""
    from autoplay_storage.adapters.redis import RedisStorageAdapter

    async with private_redis(args) as (url, probes):
        adapter = RedisStorageAdapter(url, max_connections=args.max_connections, wait_replicas=args.wait_replicas)
        waits = f"; each session end waits for {args.wait_replicas} replica(s) (WAIT)" if args.wait_replicas else ""
        try:
            yield Backend(
                name="redis",
                storage=StorageManager([adapter]),
                notes=[*redis_notes(args), f"pool of {args.max_connections} connections{waits}"],
                **probes,
            )
        finally:
            await adapter.aclose()


class _CountingHandler(logging.Handler):
    """Counts the warnings the SDK logs where it swallows a failed read or write."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1

    def __str__(self) -> str:
        return f"{self.count:,} failed reads/writes the SDK logged and swallowed (its pool refuses bursts)"


_SDK: list[Any] = []  # the SDK's lifecycle helpers and document classes, once sdk-redis is chosen


async def sdk_lifecycle(storage: Any, product_id: str, user_id: str, session_id: str, n: int) -> None:
    """The same session as ``lifecycle``, through the published SDK's own lifecycle helpers."""
    sdk_start, sdk_end, SdkSnapshot, SdkStatus = _SDK  # imported once, by the backend: not timed here

    state, _onboarding = await sdk_start(product_id, user_id, session_id, storage)
    state.metadata.update({"email": f"{user_id}@example.com", "role": "analyst"})
    state.onboarding.upsert_workflow_progress(
        CATALOG[n % len(CATALOG)], status=SdkStatus.COMPLETED if n % 3 == 0 else SdkStatus.IN_PROGRESS,
        confidence=0.8, evidence="clicked through the tour", source="activity",
    )
    state.record_discovered_features([f"feature_{n % 12}"])
    snapshot = SdkSnapshot.from_adoption_state(
        state,
        session_id=session_id,
        session_number=state.sessions_count + 1,
        started_at=state.last_updated_at,
        catalog_workflow_ids=CATALOG,
    )
    await sdk_end(product_id, user_id, snapshot, storage)


@backend("sdk-redis")
@contextlib.asynccontextmanager
async def sdk_redis_backend(args: argparse.Namespace) -> AsyncIterator[Backend]:
    """The baseline: the published autoplay-sdk 0.13 (``pip install .[bench]``) on the same kind of Redis."""
    from autoplay_sdk.storage.adapters.redis import RedisStorageAdapter as SdkRedisAdapter
    from autoplay_sdk.storage.lifecycle import on_session_end, on_session_start
    from autoplay_sdk.user_adoption_state import SessionSnapshot as SdkSnapshot
    from autoplay_sdk.user_adoption_state import WorkflowStatus as SdkStatus

    _SDK[:] = [on_session_start, on_session_end, SdkSnapshot, SdkStatus]
    swallowed = _CountingHandler()
    sdk_log = logging.getLogger("autoplay_sdk")
    sdk_log.addHandler(swallowed)
    sdk_log.propagate = False  # one line per lost write would drown the table

    async with private_redis(args) as (url, probes):
        adapter = SdkRedisAdapter(url)
        try:
            yield Backend(
                name="sdk-redis",
                storage=adapter,
                lifecycle=sdk_lifecycle,
                notes=[
                    "autoplay-sdk 0.13's RedisStorageAdapter and lifecycle: not atomic, no indexes,"
                    " errors swallowed; the baseline the issue measures against",
                    swallowed,  # read when the notes are printed, after the run
                ],
                **probes,
            )
        finally:
            await adapter._redis.aclose()


@backend("memory")
@contextlib.asynccontextmanager
async def memory_backend(args: argparse.Namespace) -> AsyncIterator[Backend]:
    """The in-process reference adapter: no I/O, so it shows what the engine itself costs."""
    from autoplay_storage.adapters.memory import InMemoryStorageAdapter

    storage = StorageManager([InMemoryStorageAdapter()])

    async def reset() -> None:
        storage.primary = InMemoryStorageAdapter()

    yield Backend(
        name="memory",
        storage=storage,
        reset=reset,
        notes=["in-process dicts (JSON text per document): the engine's own cost, the ceiling for any backend"],
    )


# The database adapter on SQLite and PostgreSQL (database-sqlite, database-postgres);
# that module configures Django itself, with its own temporary file and database.
from bench.engine_database import register_engine_backends  # noqa: E402

register_engine_backends(backend, Backend)


# --- the workload ----------------------------------------------------------------------------


def _cost_backends() -> None:
    """Backends that measure one part's cost side by side: ``<backend>-no-insight`` (the insight aggregates,
    bench/insight_cost.py) and ``redis-typed-only`` (the plain documents' parse, bench/parse_cost.py)."""
    from bench import insight_cost, parse_cost

    insight_cost.register(backend, BACKENDS, lifecycle)
    parse_cost.register(backend, BACKENDS, lifecycle)



async def lifecycle(storage: StorageManager, product_id: str, user_id: str, session_id: str, n: int) -> None:
    """What an agent does for one session: start, work (progress, features), end.

    ``n`` is the user's session ordinal, so every phase builds the same documents
    (a user ends up tracking up to 8 workflows and 12 features).
    """
    state, _onboarding = await on_session_start(
        product_id, user_id, session_id, storage, metadata={"email": f"{user_id}@example.com", "role": "analyst"}
    )
    state.upsert_workflow_progress(
        CATALOG[n % len(CATALOG)], status=WorkflowStatus.COMPLETED if n % 3 == 0 else WorkflowStatus.IN_PROGRESS,
        confidence=0.8, evidence="clicked through the tour", source="activity",
    )
    state.record_discovered_features([f"feature_{n % 12}"])
    snapshot = SessionSnapshot.from_adoption_state(
        state,
        session_id=session_id,
        session_number=state.sessions.count + 1,
        started_at=state.last_updated_at,
        catalog_workflow_ids=CATALOG,
    )
    await on_session_end(product_id, user_id, snapshot, storage)


@dataclass
class Result:
    backend: str
    serial_rate: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    round_rates: list[float] = field(default_factory=list)  # serial sessions/s of each round
    concurrent_rate: float = 0.0
    concurrent_recorded: int = 0  # sessions the store holds after the concurrent phase
    concurrent_attempted: int = 0
    round_trips: float | None = None
    commands: float | None = None
    memory_per_user: float | None = None
    client_cpu_us: float = 0.0
    server_cpu_us: float | None = None


@dataclass
class _SerialTally:
    """One backend's serial phase, summed over its rounds."""

    done: int = 0
    elapsed: float = 0.0
    cpu: float = 0.0
    trips: int = 0
    commands: int = 0
    server_cpu: float = 0.0
    latencies: list[float] = field(default_factory=list)


async def run_serial(backends: list[Backend], n: int, users: int, rounds: int, results: dict[str, Result]) -> None:
    """One lifecycle at a time, in rounds that alternate the backends; also the per-lifecycle costs.

    Each round runs the next ``n / rounds`` lifecycles of every backend, the
    order reversed every other round. A backend's rate is its lifecycles over
    its time summed across rounds; its round rates say how far the machine
    drifted meanwhile.
    """
    rounds = max(1, min(rounds, n))
    tallies = {b.name: _SerialTally() for b in backends}
    for b in backends:
        await b.reset()
        run_one = b.lifecycle or lifecycle
        for i in range(min(n, 50)):  # warm up: connections, code paths
            await run_one(b.storage, "warm", f"w{i}", f"s{i}", i)
    for r in range(rounds):
        first, last = n * r // rounds, n * (r + 1) // rounds
        for b in backends if r % 2 == 0 else list(reversed(backends)):
            tally = tallies[b.name]
            elapsed = await _serial_segment(b, range(first, last), users, tally)
            results[b.name].round_rates.append((last - first) / elapsed)
    for b in backends:
        tally, result = tallies[b.name], results[b.name]
        result.serial_rate = tally.done / tally.elapsed
        result.client_cpu_us = tally.cpu / tally.done * 1e6
        result.p50_ms = statistics.median(tally.latencies) * 1000
        result.p99_ms = statistics.quantiles(tally.latencies, n=100)[98] * 1000
        if b.round_trips:
            result.round_trips = tally.trips / tally.done
        if b.commands:
            result.commands = tally.commands / tally.done
        if b.server_cpu_s:
            result.server_cpu_us = tally.server_cpu / tally.done * 1e6


async def _serial_segment(b: Backend, span: range, users: int, tally: _SerialTally) -> float:
    """Lifecycles ``span`` of the serial workload on one backend; returns their wall time."""
    run_one = b.lifecycle or lifecycle
    trips0 = b.round_trips() if b.round_trips else 0
    cmds0 = await b.commands() if b.commands else 0
    server0 = await b.server_cpu_s() if b.server_cpu_s else 0.0
    gc.collect()
    cpu0 = time.process_time()
    start = time.perf_counter()
    for i in span:
        t0 = time.perf_counter()
        await run_one(b.storage, "bench", f"u{i % users}", f"s{i}", i // users)
        tally.latencies.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - start
    tally.cpu += time.process_time() - cpu0
    tally.elapsed += elapsed
    tally.done += len(span)
    if b.round_trips:
        tally.trips += b.round_trips() - trips0
    if b.commands:
        tally.commands += await b.commands() - cmds0 - 1  # the INFO that read cmds0 counts in this reading
    if b.server_cpu_s:
        tally.server_cpu += await b.server_cpu_s() - server0
    return elapsed


async def run_concurrent(b: Backend, concurrency: int, total: int, result: Result) -> None:
    """Users running sessions at the same time; then how many sessions the store really recorded."""
    await b.reset()
    per_user = max(1, total // concurrency)
    run_one = b.lifecycle or lifecycle

    async def user(u: int) -> None:
        for k in range(per_user):
            await run_one(b.storage, "bench", f"c{u}", f"c{u}_s{k}", k)

    start = time.perf_counter()
    await asyncio.gather(*(user(u) for u in range(concurrency)))
    result.concurrent_rate = concurrency * per_user / (time.perf_counter() - start)
    result.concurrent_attempted = concurrency * per_user
    # A store that drops writes under load (the SDK swallows its errors) is not faster for it.
    for u in range(concurrency):
        doc = await b.storage.get_user_state("bench", f"c{u}")
        sessions = doc.get("sessions") if isinstance(doc, dict) else None
        result.concurrent_recorded += sessions.get("count", 0) if isinstance(sessions, dict) else 0


async def run_memory(b: Backend, users: int, sessions: int) -> float | None:
    if b.memory_bytes is None:
        return None
    await b.reset()
    run_one = b.lifecycle or lifecycle
    before = await b.memory_bytes()
    for u in range(users):
        for k in range(sessions):
            await run_one(b.storage, "mem", f"m{u}", f"m{u}_s{k}", k)
    return (await b.memory_bytes() - before) / users


async def bench_backends(names: list[str], args: argparse.Namespace) -> tuple[list[Result], dict[str, list[object]]]:
    """Every chosen backend open at once: serial rounds interleaved, then each one's concurrent and memory phases."""
    async with contextlib.AsyncExitStack() as stack:
        backends = [await stack.enter_async_context(BACKENDS[name](args)) for name in names]
        results = {b.name: Result(backend=b.name) for b in backends}
        await run_serial(backends, args.serial, args.serial_users, args.rounds, results)
        for b in backends:
            await run_concurrent(b, args.concurrency, args.concurrent_sessions, results[b.name])
            results[b.name].memory_per_user = await run_memory(b, args.memory_users, args.sessions_per_user)
        return [results[b.name] for b in backends], {b.name: b.notes for b in backends}


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def print_table(results: list[Result], args: argparse.Namespace, notes: dict[str, list[str]]) -> None:
    headers = [
        "backend",
        "serial sess/s",
        "p50 ms",
        "p99 ms",
        f"{args.concurrency} users sess/s",
        "recorded",
        "round trips/lifecycle",
        "client CPU us/lc",
        "server CPU us/lc",
        "commands/lifecycle",
        f"bytes/user ({args.sessions_per_user} sessions)",
    ]
    rows = [
        [
            r.backend,
            f"{r.serial_rate:,.0f}",
            f"{r.p50_ms:.2f}",
            f"{r.p99_ms:.2f}",
            f"{r.concurrent_rate:,.0f}",
            f"{r.concurrent_recorded:,}/{r.concurrent_attempted:,}",
            _fmt(r.round_trips, ".2f"),
            f"{r.client_cpu_us:,.0f}",
            _fmt(r.server_cpu_us, ",.0f"),
            _fmt(r.commands, ".2f"),
            _fmt(r.memory_per_user, ",.0f"),
        ]
        for r in results
    ]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]
    line = "+".join("-" * (w + 2) for w in widths)
    print("\nFull lifecycle (on_session_start + SessionSnapshot.from_adoption_state + on_session_end)")
    print(
        f"serial: {args.serial} lifecycles over {args.serial_users} users in {args.rounds} interleaved rounds;"
        f" concurrent: {args.concurrency} users x "
        f"{max(1, args.concurrent_sessions // args.concurrency)} sessions; memory: {args.memory_users} users x "
        f"{args.sessions_per_user} sessions; event loop: {args.loop} (the same for every backend)"
    )
    print(line)
    print(" | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    print(line)
    for row in rows:
        print(" | ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))))
    print(line)
    print(
        "client CPU: this process's CPU time per serial lifecycle (engine + adapter + client library);"
        " with server CPU it tells a busy machine from a slow path"
    )
    print("recorded: sessions the store holds after the concurrent phase, of those run (a lost write counts nothing)")
    for name, lines in notes.items():
        for note in lines:
            print(f"[{name}] {note}")
    for r in results:
        if len(r.round_rates) > 1:
            print(f"[{r.backend}] serial sess/s by round: {', '.join(f'{x:,.0f}' for x in r.round_rates)}")
    by_name = {r.backend: r for r in results}
    for r in results:  # the insight aggregates' cost, as the issue reads it: their share of a lifecycle's rate
        off = by_name.get(f"{r.backend}-no-insight")
        if off and len(r.round_rates) == len(off.round_rates) and off.serial_rate:
            rounds = sorted(on / o - 1 for on, o in zip(r.round_rates, off.round_rates, strict=True))
            cpu = r.client_cpu_us / off.client_cpu_us - 1 if off.client_cpu_us else 0.0
            server = f", server CPU {r.server_cpu_us / off.server_cpu_us - 1:+.1%}" if off.server_cpu_us else ""
            print(
                f"{r.backend} with the aggregates vs without: serial {r.serial_rate / off.serial_rate - 1:+.1%}"
                f" (round by round: median {statistics.median(rounds):+.1%}, from {rounds[0]:+.1%}"
                f" to {rounds[-1]:+.1%}); client CPU {cpu:+.1%}{server} per lifecycle"
            )
    ours, sdk = by_name.get("redis"), by_name.get("sdk-redis")
    if ours and sdk and sdk.serial_rate and sdk.concurrent_recorded:
        ratios = sorted(o / s for o, s in zip(ours.round_rates, sdk.round_rates, strict=True))
        print(
            f"redis vs the published SDK, same machine, same rounds: {ours.serial_rate / sdk.serial_rate:.2f}x serial"
            f" (round by round: median {statistics.median(ratios):.2f}x, lowest {ratios[0]:.2f}x,"
            f" highest {ratios[-1]:.2f}x); with {args.concurrency} users"
            f" {_recorded_rate(ours) / _recorded_rate(sdk):.2f}x in sessions recorded/s"
            f" ({_recorded_rate(ours):,.0f} vs {_recorded_rate(sdk):,.0f}: the SDK kept {sdk.concurrent_recorded:,}"
            f" of {sdk.concurrent_attempted:,})"
        )


def _recorded_rate(r: Result) -> float:
    """Sessions per second that the store actually holds afterwards."""
    return r.concurrent_rate * r.concurrent_recorded / r.concurrent_attempted if r.concurrent_attempted else 0.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    if "redis-no-insight" not in BACKENDS:
        _cost_backends()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--backend", action="append", choices=sorted(BACKENDS), help="repeatable; default: every registered backend"
    )
    parser.add_argument("--serial", type=int, default=3000, help="lifecycles run one at a time")
    parser.add_argument("--serial-users", type=int, default=300, help="users the serial lifecycles rotate over")
    parser.add_argument(
        "--rounds", type=int, default=6, help="serial rounds alternating the backends (same conditions for each)"
    )
    parser.add_argument("--concurrency", type=int, default=200, help="users running sessions at the same time")
    parser.add_argument("--concurrent-sessions", type=int, default=2000, help="lifecycles in the concurrent phase")
    parser.add_argument("--memory-users", type=int, default=200, help="users for the memory measurement")
    parser.add_argument("--sessions-per-user", type=int, default=10)
    parser.add_argument("--max-connections", type=int, default=64, help="Redis pool size")
    parser.add_argument("--redis-url", default="", help="use this Redis instead of starting one (it is FLUSHALLed!)")
    parser.add_argument(
        "--wait-replicas",
        type=int,
        default=0,
        help="start this many replicas of the private Redis; the redis backend's session ends WAIT for them",
    )
    parser.add_argument(
        "--aggregates-off", action="store_true", help="every backend without the insight aggregates (their cost)"
    )
    parser.add_argument(
        "--loop",
        choices=["uvloop", "asyncio"],
        default="uvloop" if _uvloop_installed() else "asyncio",
        help="event loop every backend runs on (default: uvloop, as granian picks it when installed)",
    )
    return parser.parse_args(argv)


def _uvloop_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("uvloop") is not None


def _sdk_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("autoplay_sdk") is not None


async def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.aggregates_off:
        from bench.insight_cost import aggregates_off

        aggregates_off().__enter__()  # for the whole run: every backend without the insight aggregates
    names = args.backend or [n for n in sorted(BACKENDS) if n != "sdk-redis" or _sdk_installed()]
    if "sdk-redis" not in names:
        print("(the sdk-redis baseline is skipped: `pip install -e .[bench]` installs the published SDK)")
    results, notes = await bench_backends(names, args)
    print_table(results, args, notes)


if __name__ == "__main__":
    if parse_args().loop == "uvloop":
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())
