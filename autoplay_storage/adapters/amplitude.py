"""Write-only Amplitude sink on the official ``amplitude-analytics`` SDK (the ``analytics`` extra).

A save only hands the event to the SDK's in-memory buffer; the SDK's threads
batch, post and retry. The SDK's buffer has no bound for new events, so the
adapter keeps its own (``max_pending``): beyond it a message is dropped and
counted instead of piling up while Amplitude is down. Every outcome comes
back through the SDK's ``callback``; a rejected API key (which the SDK only
logs) writes off what is pending.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import threading
import time
import uuid
import weakref
from typing import Any

from .analytics import (
    AnalyticsSink,
    DeliveryStats,
    PendingLedger,
    SinkClosedError,
    run_in_daemon_thread,
    user_properties,
    wait_event,
)

EU_SERVER_URL = "https://api.eu.amplitude.com/2/httpapi"


class _KeyRejectionWatch(logging.LoggerAdapter):
    """The SDK's logger, watched for the one failure it reports only as a log line."""

    def __init__(self, logger: logging.Logger, on_rejected: Any) -> None:
        super().__init__(logger, {})
        self._on_rejected = on_rejected

    def error(self, msg: object, *args: object, **kwargs: Any) -> None:
        if msg == "Invalid API Key":
            self._on_rejected()
        super().error(msg, *args, **kwargs)


def _register_exit_close(adapter: AmplitudeStorageAdapter) -> None:
    """Flush on process exit, like the SDK, but bounded, once, and without keeping a replaced adapter alive.

    Registered where the SDK registers its own hook (before the thread pools
    it sends from are torn down at exit).
    """
    ref = weakref.ref(adapter)

    def close_at_exit() -> None:
        alive = ref()
        if alive is not None:
            alive.close()

    register = getattr(threading, "_register_atexit", None) or atexit.register
    register(close_at_exit)


class AmplitudeStorageAdapter(AnalyticsSink):
    """An identify (``$set`` user properties) on every state save, one ``autoplay_session_captured`` event per snapshot.

    ``server_url``: blank for Amplitude's US endpoint, ``EU_SERVER_URL`` for
    the EU data centre, or any HTTP V2-compatible URL (a proxy). Getters
    return ``None`` (write-only).
    """

    def __init__(
        self,
        api_key: str,
        property_prefix: str = "",
        server_url: str | None = None,
        *,
        name: str = "amplitude",
        max_pending: int = 10_000,
        flush_at: int = 200,
        flush_interval_s: float = 2.0,
        max_retries: int = 6,
        close_timeout_s: float = 5.0,
    ) -> None:
        if not api_key:
            raise ValueError("AmplitudeStorageAdapter needs the project API key")
        if max_retries < 1:  # the SDK counts the first attempt: 0 would drop every event unsent
            raise ValueError("max_retries must be at least 1 for Amplitude")
        from amplitude import Amplitude, Config
        from amplitude.constants import EventLogLevel

        class Client(Amplitude):
            def _register_on_exit(self) -> None:
                """The adapter registers its own exit hook: the SDK's would shut down a closed client again."""

        self.name = name
        self.property_prefix = property_prefix
        self.close_timeout_s = close_timeout_s
        self._ledger = PendingLedger(max_pending)
        self._closing = False
        self._close_lock = threading.Lock()
        config = Config(
            flush_queue_size=flush_at,
            flush_interval_millis=max(1, round(flush_interval_s * 1000)),
            flush_max_retries=max_retries,
            callback=self._on_result,
            server_url=server_url or None,
            # Our user ids are the product's own; Amplitude's default minimum of 5 characters would reject short ones.
            min_id_length=1,
            event_log_level=EventLogLevel.NONE,
            logger=_KeyRejectionWatch(logging.getLogger("amplitude"), self._on_key_rejected),
        )
        self._client = Client(api_key, config)
        _register_exit_close(self)

    # -- the four wire methods --

    async def save_user_state(self, product_id: str, user_id: str, state: dict[str, Any]) -> None:
        from amplitude import EventOptions, Identify

        identify = Identify()
        for key, value in user_properties(product_id, user_id, state, self.property_prefix).items():
            identify.set(key, value)
        insert_id = str(uuid.uuid4())
        options = EventOptions(user_id=user_id, insert_id=insert_id)
        self._hand_over(insert_id, lambda: self._client.identify(identify, options))

    async def send_event(
        self,
        event: str,
        user_id: str,
        properties: dict[str, Any],
        *,
        event_id: str | None = None,
        at: float | None = None,
    ) -> None:
        """Hand one event to the SDK (also used by the console's "send test event")."""
        from amplitude import BaseEvent

        insert_id = event_id or str(uuid.uuid4())
        body = BaseEvent(
            event_type=event,
            user_id=user_id,
            event_properties=properties,
            insert_id=insert_id,
            time=None if at is None else round(at * 1000),
        )
        self._hand_over(insert_id, lambda: self._client.track(body))

    # -- delivery --

    @property
    def closed(self) -> bool:
        return self._closing

    def _hand_over(self, insert_id: str, send: Any) -> None:
        if self._closing:
            raise SinkClosedError(f"{self.name} is closed")
        self._ledger.admit(insert_id)  # raises SinkQueueFullError beyond max_pending
        try:
            send()
        except Exception:
            self._ledger.withdraw(insert_id)
            raise

    def _on_result(self, event: Any, code: int, message: str | None) -> None:
        """Called on an SDK thread for every event sent or given up on."""
        key = event.insert_id or ""
        if 200 <= code < 300:
            self._ledger.delivered(key)
        else:
            self._ledger.failed(key, f"HTTP {code}: {message or 'no message'}")

    def _on_key_rejected(self) -> None:
        self._ledger.fail_all("Amplitude rejected the API key")

    def delivery_stats(self) -> DeliveryStats:
        return self._ledger.stats()

    async def flush(self, timeout_s: float) -> bool:
        """Push out what is buffered now; ``True`` when nothing is left pending within ``timeout_s``."""
        self._client.flush()  # only hands the batches to the SDK's sender pool
        deadline = time.monotonic() + timeout_s
        while self._ledger.stats().pending:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    def _begin_close(self) -> bool:
        with self._close_lock:
            if self._closing:
                return False
            self._closing = True
            return True

    async def aclose(self) -> None:
        """Flush and stop the SDK (bounded by ``close_timeout_s``); undelivered messages count as failed."""
        if not self._begin_close():
            return
        done = run_in_daemon_thread(self._client.shutdown, self.name)
        await wait_event(done, self.close_timeout_s)
        self._ledger.fail_all("not delivered before the client closed")

    def close(self) -> None:
        """Blocking variant of ``aclose`` for threads without an event loop."""
        if not self._begin_close():
            return
        run_in_daemon_thread(self._client.shutdown, self.name).wait(self.close_timeout_s)
        self._ledger.fail_all("not delivered before the client closed")
