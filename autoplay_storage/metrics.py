"""The engine's Prometheus metrics: storage operations, sink deliveries, summarizer runs.

Defined with ``prometheus_client``, the reference client, whose multiprocess
mode (``PROMETHEUS_MULTIPROC_DIR``, set by ``config.serve`` for the workers)
lets any one worker answer a scrape with every worker's counts. Without that
directory the values live in this process (tests, management commands).
No Django here: the manager, the sinks and the summary runs count into these.

Labels are bounded: ``primary`` is the adapter's class name, ``operation``
one of the manager's methods, ``sink`` an admin-configured destination name,
``outcome`` a fixed set.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# Storage round trips take 0.1 ms (memory) to tens of ms (a remote primary).
_STORAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

STORAGE_SECONDS = Histogram(
    "autoplay_storage_operation_seconds",
    "Time of one call to the storage primary, by primary and operation (failed calls included).",
    ["primary", "operation"],
    buckets=_STORAGE_BUCKETS,
)
STORAGE_ERRORS = Counter(
    "autoplay_storage_operation_errors",
    "Calls to the storage primary that raised, by primary, operation and error class.",
    ["primary", "operation", "error"],
)
STORAGE_CAS_RETRIES = Counter(
    "autoplay_storage_cas_retries",
    "Compare-and-set retries: a state changed by another writer between read and write, so the change ran again.",
    ["primary", "operation"],
)

SINK_DELIVERIES = Counter(
    "autoplay_sink_deliveries",
    "Messages to a write-only sink: delivered, failed (the destination or the hand-off failed), "
    "dropped (its bounded queue was full).",
    ["sink", "outcome"],
)
SINK_QUEUED = Gauge(
    "autoplay_sink_queued",
    "Messages handed to a sink and not yet delivered or failed, summed over the live workers.",
    ["sink"],
    multiprocess_mode="livesum",
)

SUMMARIZER_RUNS = Counter(
    "autoplay_summarizer_runs", "Summarizer runs by outcome (succeeded, failed, timed_out).", ["outcome"]
)
SUMMARIZER_SECONDS = Histogram(
    "autoplay_summarizer_run_seconds",
    "Time of one summarizer run, by outcome.",
    ["outcome"],
    buckets=(0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0),
)


class StorageOperation:
    """One (primary, operation)'s children, resolved once: ``labels()`` per call would cost more than the count."""

    __slots__ = ("_errors", "_primary", "operation", "retries", "seconds")

    def __init__(self, primary: str, operation: str) -> None:
        self._primary = primary
        self.operation = operation
        self.seconds = STORAGE_SECONDS.labels(primary, operation)
        self.retries = STORAGE_CAS_RETRIES.labels(primary, operation)
        self._errors: dict[str, Counter] = {}

    def failed(self, exc: BaseException) -> None:
        name = type(exc).__name__
        child = self._errors.get(name)
        if child is None:
            child = self._errors[name] = STORAGE_ERRORS.labels(self._primary, self.operation, name)
        child.inc()
