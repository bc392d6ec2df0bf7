"""The Redis side of ``bench/engine.py``: a private redis-server, and the probes every Redis backend reports.

Round trips are counted on the client (each socket send is one), commands
and CPU from ``INFO``, memory from ``MEMORY USAGE`` of every key.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any


class RoundTripCounter:
    """Counts requests written to Redis sockets: each is one request/response round trip.

    The adapter pipelines several commands into one write (a script call,
    MULTI..EXEC), so this counts network round trips, not commands. Every
    connection (the adapter's, the SDK's) is redis-py's: its send is wrapped.
    """

    def __init__(self) -> None:
        from redis.asyncio.connection import AbstractConnection

        self.count = 0
        self._cls = AbstractConnection
        self._original = AbstractConnection.send_packed_command
        counter = self

        async def counted(conn: Any, command: Any, check_health: bool = True) -> None:
            counter.count += 1
            await counter._original(conn, command, check_health)

        AbstractConnection.send_packed_command = counted  # type: ignore[method-assign]

    def restore(self) -> None:
        self._cls.send_packed_command = self._original  # type: ignore[method-assign]


async def redis_info_int(client: Any, section: str, field_name: str) -> int:
    info = await client.info(section)
    return int(info[field_name])


async def key_batches(client: Any) -> AsyncIterator[list[bytes]]:
    cursor = 0
    while True:
        cursor, keys = await client.scan(cursor, count=1000)
        if keys:
            yield keys
        if cursor == 0:
            return


@contextlib.asynccontextmanager
async def private_redis(args: argparse.Namespace) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """A redis-server of the benchmark's own (or ``--redis-url``), with the probes every Redis backend reports."""
    import redis.asyncio as aioredis

    from tests.support.redis_server import HOST, start_redis, wait_until

    server = None
    replicas = []
    directory = Path(tempfile.mkdtemp(prefix="bench-redis-"))
    url = args.redis_url
    if not url:
        server = start_redis(directory)
        url = server.url
        for i in range(args.wait_replicas):  # --wait-replicas: the replicas a session end waits for
            replicas.append(start_redis(directory / f"replica{i}", ["--replicaof", HOST, str(server.port)]))
        wait_until(
            lambda: server.cli("INFO", "replication").count("state=online") == len(replicas), "replicas to sync"
        )
    probe = aioredis.Redis.from_url(url)
    counter = RoundTripCounter()
    probe_trips = 0

    async def probed(awaitable: Awaitable[Any]) -> Any:
        # Probe traffic is excluded from the client-side round-trip count.
        nonlocal probe_trips
        before = counter.count
        try:
            return await awaitable
        finally:
            probe_trips += counter.count - before

    async def data_bytes() -> int:
        # MEMORY USAGE of every key (documents + indexes): unlike INFO used_memory it
        # does not move with client buffers and allocator state.
        async def total() -> int:
            n = 0
            async for keys in key_batches(probe):
                async with probe.pipeline(transaction=False) as pipe:
                    for key in keys:
                        pipe.memory_usage(key, samples=0)
                    n += sum(m or 0 for m in await pipe.execute())
            return n

        return await probed(total())

    async def commands() -> int:
        # The INFO that reads this counts in the next reading; run_serial subtracts it.
        return await probed(redis_info_int(probe, "stats", "total_commands_processed"))

    async def server_cpu() -> float:
        info = await probed(probe.info("cpu"))
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    async def reset() -> None:
        await probed(probe.flushall())

    probes = {
        "reset": reset,
        "round_trips": lambda: counter.count - probe_trips,
        "commands": commands,
        "memory_bytes": data_bytes,
        "server_cpu_s": server_cpu,
    }
    try:
        yield url, probes
    finally:
        counter.restore()
        await probe.aclose()
        for replica in replicas:
            replica.stop()
        if server is not None:
            server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def redis_notes(args: argparse.Namespace) -> list[str]:
    return [
        f"redis-server {'at ' + args.redis_url if args.redis_url else 'private, on a free loopback port'}",
        "round trips: socket sends counted on the client (pipelined commands share one);"
        " commands: INFO stats total_commands_processed delta (MULTI/EXEC/WATCH and commands run by a script count)",
        "memory: MEMORY USAGE summed over every key after FLUSHALL, divided by users (documents + indexes)",
        "server CPU: INFO cpu used_cpu_user + used_cpu_sys delta over the serial phase",
    ]
