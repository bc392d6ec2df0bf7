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
* ``PROMETHEUS_MULTIPROC_DIR`` (when ``AUTOPLAY_METRICS_TOKEN`` is set): a
  fresh, empty directory for this start, where every worker keeps its
  metrics for whichever worker answers ``/metrics`` (``config.metrics``).
  Directories of earlier starts whose main process is gone are removed; one
  the operator names is emptied instead.
* ``--log-config`` (when ``AUTOPLAY_LOG_FORMAT=json``): granian's own lines
  as JSON on stderr, like the project's (``config.logs``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

APP = "config.asgi:application"
METRICS_DIR_PREFIX = "autoplay-metrics-"


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


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def metrics_base() -> Path:
    """Memory-backed where there is one: the workers write to these files on every request, and a
    disk-backed page under writeback can stall the write (and the request) on a busy disk."""
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK) else Path(tempfile.gettempdir())


def metrics_dir(environ: dict[str, str], base: Path | None = None) -> str:
    """A fresh directory for this start's worker metrics under ``base`` (the operator's, emptied, if named)."""
    named = environ.get("PROMETHEUS_MULTIPROC_DIR")
    if named:
        Path(named).mkdir(parents=True, exist_ok=True)
        for stale in Path(named).glob("*.db"):  # a counter left from an earlier start would add to this one's
            stale.unlink()
        return named
    base = base or metrics_base()
    for old in base.glob(f"{METRICS_DIR_PREFIX}*-*"):
        pid = old.name.removeprefix(METRICS_DIR_PREFIX).split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            with contextlib.suppress(OSError):
                shutil.rmtree(old)
    # Named after this pid, which granian's main process keeps (exec): the next start knows when it is gone.
    return tempfile.mkdtemp(prefix=f"{METRICS_DIR_PREFIX}{os.getpid()}-", dir=base)


def granian_log_config() -> str:
    """Granian's logging configuration for JSON lines, written where the project keeps its files."""
    from django.conf import settings

    from config.logs import granian_logging_config

    path = Path(settings.VAR_DIR) / "granian-logging.json"
    path.write_text(json.dumps(granian_logging_config()))
    return str(path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m config.serve", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=None, help="worker processes (default: one per core)")
    args, extra = parser.parse_known_args(argv)
    workers = args.workers if args.workers and args.workers > 0 else default_workers()
    # Settings read before PROMETHEUS_MULTIPROC_DIR is set: this process keeps no metrics files of its own.
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    from django.conf import settings

    environ = dict(os.environ)
    if settings.AUTOPLAY_LOG_FORMAT == "json":
        extra = ["--log-config", granian_log_config(), *extra]
    command = granian_argv(args.host, args.port, workers, extra)
    if settings.AUTOPLAY_METRICS_TOKEN:
        environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir(environ)
    os.execve(command[0], command, environ)


if __name__ == "__main__":
    main()
