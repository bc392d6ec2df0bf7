"""Reach the console from an agent's process: a client for every API route and a storage adapter over it.

Importable without Django (only httpx and the engine's documents)::

    async with ConsoleClient("https://console.example", api_key) as client:
        started = await client.start_session("prod_1", "u_123", "sess_abc")

    storage = StorageManager([ConsoleStorageAdapter("https://console.example", api_key)])
"""

from __future__ import annotations

from .adapter import ConsoleStorageAdapter
from .calls import NO_RETRY, RetryPolicy, SessionPage, SessionRow, SessionStart, VersionedState
from .client import ConsoleClient, SyncConsoleClient
from .errors import (
    AuthenticationError,
    BadRequestError,
    ConsoleError,
    ConsoleUnavailableError,
    CorruptStoredDocumentError,
    HistoryNotAvailableError,
    IdMismatchError,
    InvalidCursorError,
    InvalidPreconditionError,
    MethodNotAllowedError,
    NotFoundError,
    PayloadTooLargeError,
    PreconditionRequiredError,
    ProductForbiddenError,
    RateLimitedError,
    RequestValidationError,
    ServerError,
    SessionNotFoundError,
    StateConflictError,
    StateExistsError,
    UnsupportedStoredVersionError,
    UserNotFoundError,
)

__all__ = [
    "NO_RETRY",
    "AuthenticationError",
    "BadRequestError",
    "ConsoleClient",
    "ConsoleError",
    "ConsoleStorageAdapter",
    "ConsoleUnavailableError",
    "CorruptStoredDocumentError",
    "HistoryNotAvailableError",
    "IdMismatchError",
    "InvalidCursorError",
    "InvalidPreconditionError",
    "MethodNotAllowedError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PreconditionRequiredError",
    "ProductForbiddenError",
    "RateLimitedError",
    "RequestValidationError",
    "RetryPolicy",
    "ServerError",
    "SessionNotFoundError",
    "SessionPage",
    "SessionRow",
    "SessionStart",
    "StateConflictError",
    "StateExistsError",
    "SyncConsoleClient",
    "UnsupportedStoredVersionError",
    "UserNotFoundError",
    "VersionedState",
]
