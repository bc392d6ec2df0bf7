"""Every API error is JSON ``{"code", "message", "details"?}`` with a stable code.

Agents branch on ``code`` (never on the wording of ``message``). Bad input is
a 4xx that names the field; a primary that cannot be reached is a 503 with
``Retry-After`` so the agent retries instead of carrying on without memory.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from django.http import HttpRequest, HttpResponse
from ninja import NinjaAPI
from ninja.errors import HttpError, ValidationError

from autoplay_storage.codec import dumps_text
from autoplay_storage.errors import (
    ConflictError,
    CorruptDocumentError,
    NotBrowsableError,
    StorageUnavailableError,
    UnsupportedVersionError,
    UserErasedError,
)
from autoplay_storage.services import StateNotFoundError

from .ids import ID_RULES, id_problem

logger = logging.getLogger("api")

RETRY_AFTER_S = 2


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> HttpResponse:
    """Serialize once, strictly (no NaN), without a second validation pass.

    A lone surrogate read from a stored document goes out as its ``\\uXXXX``
    escape, the text the SDK's json reads back as the same string.
    """
    body = dumps_text(data).encode("utf-8")
    response = HttpResponse(body, status=status, content_type="application/json")
    for name, value in (headers or {}).items():
        response[name] = value
    return response


class ApiError(Exception):
    """An error the API answers with as it is."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers or {}

    def response(self) -> HttpResponse:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            body["details"] = self.details
        return json_response(body, self.status, self.headers)


class BodyError(ValueError):
    """The body is not acceptable JSON; raised by the parser, answered with 400."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    """``("body", "payload", "state", "mastery", "rating")`` -> ``state.mastery.rating``."""
    parts = [str(p) for p in loc]
    if parts and parts[0] == "body":
        parts = parts[2:] if len(parts) > 1 and parts[1] == "payload" else parts[1:]
    elif parts and parts[0] in {"path", "query", "header"}:
        parts = parts[1:]
    return ".".join(parts) or "body"


def _validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    details = []
    for err in exc.errors:
        loc = err.get("loc", ())
        source = str(loc[0]) if loc else "body"
        field = _field(loc)
        message = err.get("msg", "invalid")
        if source == "path" and field in ID_RULES:  # the pattern itself says little to a person
            match = getattr(request, "resolver_match", None)
            message = id_problem(field, str(match.kwargs.get(field, "")) if match else "")
        details.append({"field": field, "in": source, "message": message, "type": err.get("type")})
    first = details[0] if details else {"field": "body", "message": "invalid"}
    message = f"{first['field']}: {first['message']}"
    if len(details) > 1:
        message += f" (and {len(details) - 1} more)"
    return ApiError(422, "validation_error", message, details=details).response()


def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    cause = exc.__cause__
    if isinstance(cause, BodyError):
        return ApiError(400, cause.code, cause.message).response()
    if exc.status_code == 400:
        return ApiError(400, "malformed_body", "the request body could not be parsed as JSON").response()
    return ApiError(exc.status_code, "http_error", str(exc)).response()


def missing_key() -> ApiError:
    return ApiError(
        401, "missing_api_key", "send an API key: Authorization: Bearer <key>", headers={"WWW-Authenticate": "Bearer"}
    )


def _unavailable(request: HttpRequest, exc: StorageUnavailableError) -> HttpResponse:
    logger.warning("primary unavailable: %s", exc, extra={"path": request.path})
    return ApiError(
        503,
        "storage_unavailable",
        "the storage primary cannot be reached; nothing was changed, retry later",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    ).response()


def _corrupt(request: HttpRequest, exc: CorruptDocumentError) -> HttpResponse:
    return ApiError(
        409,
        "corrupt_document",
        "the stored document is not valid JSON; it is kept as it is for an admin to recover in the console",
        details={"key": exc.key, "reason": exc.reason},
    ).response()


def _unsupported(request: HttpRequest, exc: UnsupportedVersionError) -> HttpResponse:
    return ApiError(
        409,
        "unsupported_version",
        f"the stored user state has schema version _v={exc.version!r}, which this server cannot read or overwrite",
        details={"version": exc.version if isinstance(exc.version, (int, str, type(None))) else repr(exc.version)},
    ).response()


def _conflict(request: HttpRequest, exc: ConflictError) -> HttpResponse:
    return ApiError(
        409,
        "state_conflict",
        "the state changed since you read it (If-Match does not match); read it again and reapply your change",
        details={"expected_etag": exc.expected, "current_etag": exc.actual},
        headers={"ETag": f'"{exc.actual}"'} if exc.actual else None,
    ).response()


def _erased(request: HttpRequest, exc: UserErasedError) -> HttpResponse:
    erased_at = None if exc.erased_at is None else datetime.fromtimestamp(exc.erased_at, UTC).isoformat()
    return ApiError(
        410,
        "user_erased",
        "this user was erased after the session started; its history is gone and is not brought back. "
        "A new session starts a new user",
        details={"erased_at": erased_at, "erasing": exc.erased_at is None},
    ).response()


def _not_browsable(request: HttpRequest, exc: NotBrowsableError) -> HttpResponse:
    return ApiError(501, "not_browsable", str(exc)).response()


def _state_not_found(request: HttpRequest, exc: StateNotFoundError) -> HttpResponse:
    return ApiError(404, "user_not_found", f"{exc}; start a session first").response()


def body_too_large() -> ApiError:
    from django.conf import settings

    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    return ApiError(413, "body_too_large", f"the request body is larger than {limit} bytes", details={"limit": limit})


def _api_error(request: HttpRequest, exc: ApiError) -> HttpResponse:
    return exc.response()


def _unexpected(request: HttpRequest, exc: Exception) -> HttpResponse:
    """A bug, not bad input: logged with its traceback, answered as JSON."""
    logger.exception("unhandled error in %s %s", request.method, request.path)
    return ApiError(500, "internal_error", "unexpected server error; it has been logged").response()


def install(api: NinjaAPI) -> None:
    for exc_class, handler in (
        (ApiError, _api_error),
        (ValidationError, _validation_error),
        (HttpError, _http_error),
        (StorageUnavailableError, _unavailable),
        (CorruptDocumentError, _corrupt),
        (UnsupportedVersionError, _unsupported),
        (ConflictError, _conflict),
        (UserErasedError, _erased),
        (NotBrowsableError, _not_browsable),
        (StateNotFoundError, _state_not_found),
        (Exception, _unexpected),
    ):
        api.add_exception_handler(exc_class, handler)
