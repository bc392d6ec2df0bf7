"""Typed errors for the console API's error codes.

Every API error is JSON ``{"code", "message", "details"?}``; callers branch on
the exception class (one per code that calls for a different reaction) or on
``code``. The classes that mean the same as an engine error also inherit it
(503 is a ``StorageUnavailableError``, a stale etag a ``ConflictError``), so
the lifecycle and the ``StorageManager`` treat the console like any primary.
"""

from __future__ import annotations

from typing import Any

from autoplay_storage import errors as engine


class ConsoleError(Exception):
    """Any error answer of the console API (or no answer at all, ``status`` ``None``)."""

    def __init__(
        self, status: int | None, code: str, message: str, details: Any = None, retry_after: float | None = None
    ) -> None:
        # Not super(): the engine bases some subclasses inherit take other arguments.
        Exception.__init__(self, f"{status or 'no answer'} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.retry_after = retry_after


class BadRequestError(ConsoleError):
    """400: the request is malformed (``malformed_body``, ``body_too_deep``, ``disallowed_host`` ...)."""


class InvalidPreconditionError(BadRequestError):
    """400 ``invalid_precondition``: If-Match / If-None-Match is not an etag this API returned."""


class InvalidCursorError(BadRequestError):
    """400 ``invalid_cursor``: the cursor is not a ``next_cursor`` of this API."""


class AuthenticationError(ConsoleError):
    """401: the API key is missing, malformed, unknown or revoked."""


class ProductForbiddenError(ConsoleError):
    """403 ``product_forbidden``: the key is not scoped to this product."""


class NotFoundError(ConsoleError):
    """404: no such route, user or session."""


class UserNotFoundError(NotFoundError):
    """404 ``user_not_found``: the user has no state yet (start a session first)."""


class SessionNotFoundError(NotFoundError):
    """404 ``session_not_found``: no frozen snapshot of that session."""


class MethodNotAllowedError(ConsoleError):
    """405: the route does not take this method."""


class StateConflictError(ConsoleError, engine.ConflictError):
    """409 ``state_conflict``: the state changed since the etag sent as If-Match; read it again."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        details = self.details if isinstance(self.details, dict) else {}
        self.expected = details.get("expected_etag")
        self.actual = details.get("current_etag")

    @property
    def current_etag(self) -> str | None:
        return self.actual


class StateExistsError(ConsoleError):
    """409 ``state_exists``: a create-only replace (If-None-Match: *) found a state."""

    @property
    def current_etag(self) -> str | None:
        return self.details.get("current_etag") if isinstance(self.details, dict) else None


class CorruptStoredDocumentError(ConsoleError, engine.CorruptDocumentError):
    """409 ``corrupt_document``: the stored document is not JSON; an admin recovers it in the console."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        details = self.details if isinstance(self.details, dict) else {}
        self.key = str(details.get("key", ""))
        self.raw = None  # the API never returns the raw text to agents
        self.reason = str(details.get("reason", ""))


class UnsupportedStoredVersionError(ConsoleError, engine.UnsupportedVersionError):
    """409 ``unsupported_version``: a state of a schema version the server cannot read."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.version = self.details.get("version") if isinstance(self.details, dict) else None
        self.key = ""


class PayloadTooLargeError(ConsoleError):
    """413 ``body_too_large``."""


class RequestValidationError(ConsoleError):
    """422: a field is invalid; ``details`` lists each with ``field``, ``in`` and ``message``."""


class IdMismatchError(RequestValidationError):
    """422 ``user_id_mismatch`` / ``session_id_mismatch``: a body id disagrees with the path."""


class PreconditionRequiredError(ConsoleError):
    """428 ``precondition_required``: a replace needs If-Match or If-None-Match."""


class RateLimitedError(ConsoleError):
    """429: too many requests; retried after ``Retry-After`` until the retry budget is spent."""


class ServerError(ConsoleError):
    """500 (``internal_error``) and other 5xx without a meaning of their own."""


class HistoryNotAvailableError(ConsoleError):
    """501 ``not_browsable``: the server's primary cannot list the session history."""


class ConsoleUnavailableError(ConsoleError, engine.StorageUnavailableError):
    """503 (``storage_unavailable``, ``auth_unavailable``), or the console could not be reached at all."""


_BY_CODE: dict[str, type[ConsoleError]] = {
    "invalid_precondition": InvalidPreconditionError,
    "invalid_cursor": InvalidCursorError,
    "product_forbidden": ProductForbiddenError,
    "user_not_found": UserNotFoundError,
    "session_not_found": SessionNotFoundError,
    "state_conflict": StateConflictError,
    "state_exists": StateExistsError,
    "corrupt_document": CorruptStoredDocumentError,
    "unsupported_version": UnsupportedStoredVersionError,
    "user_id_mismatch": IdMismatchError,
    "session_id_mismatch": IdMismatchError,
    "precondition_required": PreconditionRequiredError,
}

_BY_STATUS: dict[int, type[ConsoleError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: ProductForbiddenError,
    404: NotFoundError,
    405: MethodNotAllowedError,
    409: StateConflictError,
    413: PayloadTooLargeError,
    422: RequestValidationError,
    428: PreconditionRequiredError,
    429: RateLimitedError,
    501: HistoryNotAvailableError,
    502: ConsoleUnavailableError,
    503: ConsoleUnavailableError,
    504: ConsoleUnavailableError,
}


def error_for(status: int, body: Any, retry_after: float | None = None) -> ConsoleError:
    """The typed error for an answer: by its ``code`` first, then by its status."""
    code, message, details = "http_error", f"HTTP {status}", None
    if isinstance(body, dict) and isinstance(body.get("code"), str):
        code = body["code"]
        message = str(body.get("message") or message)
        details = body.get("details")
    cls = _BY_CODE.get(code) or _BY_STATUS.get(status) or (ServerError if status >= 500 else ConsoleError)
    return cls(status, code, message, details, retry_after)
