"""The one command line the console is served with: ``make run``, the tests and the benchmarks all exec it.

    python -m config.serve [--host H] [--port P] [--workers N] [granian options...]

It replaces itself (``exec``) with granian, so the process started is
granian's main process and the workers are its children. Options after ours
go to granian as they are (``--no-access-log``, ``--log-level warning``).

Why these options:

* ``--respawn-failed-workers``: without it one dead worker (SIGKILL, the OOM
  killer, a segfault in a C extension) makes granian's main process stop the
  others and exit. With it the dead worker is replaced at once (granian waits
  ``--respawn-interval`` only between graceful reloads, never after a crash);
  the listening socket is shared, so the other workers keep accepting while
  the new one imports the project. Granian still exits when the same worker
  dies again within 5.5 s of being respawned (a crash loop: a broken
  deployment, not a stray kill), which a service manager then restarts.
* ``--workers``: one per core this process may run on, so a SQLite
  deployment is as parallel as a Redis one (writers wait on each other
  through ``BEGIN IMMEDIATE`` and the busy timeout in ``config.settings``).
* ``--http1-header-read-timeout``: a client gets ``AUTOPLAY_BODY_TIMEOUT_S``
  to send its headers, as it gets that long for its body
  (``config.request_body``), so a slow or silent client holds a connection
  for a bounded time.
* ``--interface asginl``: Django has no ASGI lifespan; skipping the probe
  saves a failed startup exchange per worker.
"""

from __future__ import annotations

import argparse
import os
import sys

APP = "config.asgi:application"


def default_workers() -> int:
    """The cores this process may use (affinity and cgroup cpusets included where the OS says)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def header_timeout_ms() -> int:
    """``AUTOPLAY_BODY_TIMEOUT_S`` in granian's unit, within the range granian accepts (1 ms to 60 s)."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    from django.conf import settings

    return max(1, min(60_000, round(settings.AUTOPLAY_BODY_TIMEOUT_S * 1000)))


def granian_argv(host: str, port: int, workers: int, extra: list[str] | None = None) -> list[str]:
    """The full granian command line (interpreter first), as exec'd."""
    return [
        sys.executable,
        "-m",
        "granian",
        "--interface",
        "asginl",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--respawn-failed-workers",
        "--http1-header-read-timeout",
        str(header_timeout_ms()),
        *(extra or []),
        APP,
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m config.serve", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=None, help="worker processes (default: one per core)")
    args, extra = parser.parse_known_args(argv)
    workers = args.workers if args.workers and args.workers > 0 else default_workers()
    command = granian_argv(args.host, args.port, workers, extra)
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
