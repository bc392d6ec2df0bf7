"""Storage errors.

"Not found" is ``None``; everything here is a *failure* the caller must see.
The published SDK folded failures into "not found", which let one failed read
save a blank state over a user's history.
"""

from __future__ import annotations


class StorageError(Exception):
    """Base class for every error the storage engine raises."""


class StorageUnavailableError(StorageError):
    """The readable primary could not be reached or failed (the API answers 503)."""


class DocumentError(StorageError):
    """A stored document cannot be used as it is."""


class CorruptDocumentError(DocumentError):
    """A stored value is not valid JSON (or not a JSON object).

    Carries the raw text so it can be shown and recovered; never replaced
    silently.
    """

    def __init__(self, key: str, raw: str | bytes | None, reason: str = "") -> None:
        self.key = key
        if isinstance(raw, bytes):
            raw = raw.decode("utf-8", errors="replace")
        self.raw = raw
        self.reason = reason or "not a JSON object"
        super().__init__(f"corrupt document at {key}: {self.reason}")


class UnsupportedVersionError(DocumentError):
    """A user state whose ``_v`` this engine does not know; restoring it would lose data."""

    def __init__(self, version: object, key: str = "") -> None:
        self.version = version
        self.key = key
        where = f" at {key}" if key else ""
        super().__init__(f"unsupported user state version _v={version!r}{where}")


class ConflictError(StorageError):
    """An optimistic-concurrency check failed: the document changed since it was read."""

    def __init__(self, expected: str | None, actual: str | None) -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(f"state changed: expected version {expected!r}, found {actual!r}")


class NotBrowsableError(StorageError):
    """The configured primary cannot list products, users or session history."""


class UserErasedError(StorageError):
    """A session end for a user erased after that session started (the API answers 410 ``user_erased``).

    ``erased_at`` is the erasure time (epoch seconds), ``None`` while the
    erasure is still under way. A session that starts after the erasure
    starts a new user instead.
    """

    def __init__(self, product_id: str, user_id: str, erased_at: float | None) -> None:
        self.product_id = product_id
        self.user_id = user_id
        self.erased_at = erased_at
        when = "is being erased" if erased_at is None else f"was erased at {erased_at:.3f}"
        super().__init__(f"user {user_id!r} of product {product_id!r} {when}, after this session started")
