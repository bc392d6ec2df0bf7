"""Writing the audit log: one call per sensitive action, from the console, the API or a command.

Recording never fails the action it records: a database error is logged
(logger ``autoplay_storage.audit``) and the request goes on, so an audit
table that is briefly locked or full cannot take the console or the agents'
API down with it. The entry is written before the response leaves, in the
request's own task, so its order matches what happened.

Async callers write through one thread of the audit's own that keeps its
database connection (``kept_connection``): written from the request's
thread-sensitive thread, every entry opened a connection of its own.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from axes.helpers import get_client_ip_address
from django.db import DatabaseError, router
from django.http import HttpRequest

from .kept_connection import KeptConnectionThread
from .models import AuditEntry

logger = logging.getLogger("autoplay_storage.audit")


class Action:
    """The action names: dotted, ``<subject>.<verb>``. Add new ones here."""

    USER_VIEW = "user.view"
    SNAPSHOT_VIEW = "snapshot.view"
    SNAPSHOT_DOWNLOAD = "snapshot.download"
    SUMMARY_RERUN = "summary.rerun"
    STATE_PUT = "state.put"
    STATE_PATCH = "state.patch"
    STATE_EDIT = "state.edit"
    STATE_REBUILD = "state.rebuild"
    STATE_QUARANTINE_DOWNLOAD = "state.quarantine_download"
    SUMMARY_WRITE = "summary.write"
    USER_ERASE = "user.erase"
    USER_EXPORT = "user.export"
    USERS_EXPORT_CSV = "users.export_csv"
    APIKEY_CREATE = "apikey.create"
    APIKEY_REVOKE = "apikey.revoke"
    SINK_CHANGE = "sink.change"
    GRANT_CHANGE = "grant.change"
    PRODUCT_SETTINGS_CHANGE = "product_settings.change"
    SIGNIN_SUCCESS = "signin.success"
    SIGNIN_FAILURE = "signin.failure"
    SIGNIN_LOCKOUT = "signin.lockout"
    PERMISSION_DENIED = "permission.denied"
    AUDIT_VIEW = "audit.view"
    AUDIT_EXPORT = "audit.export"
    AUDIT_PRUNE = "audit.prune"


SECRET_MASK = "********"


@dataclass(frozen=True)
class Actor:
    kind: str
    name: str

    @classmethod
    def system(cls, name: str) -> Actor:
        """A command or a background job, e.g. ``Actor.system("manage.py autoplay_erase")``."""
        return cls(AuditEntry.ActorKind.SYSTEM, name)

    @classmethod
    def staff(cls, username: str) -> Actor:
        return cls(AuditEntry.ActorKind.STAFF, username)

    @classmethod
    def of_request(cls, request: HttpRequest) -> Actor:
        """The API key (``request.auth``, set by the API's key check) or the signed-in console user.

        Reads ``request.user`` only when the middleware already resolved it
        (``_cached_user``): a lazy lookup here would be a synchronous query
        inside an async view.
        """
        key = getattr(request, "auth", None)
        if key is not None and hasattr(key, "key_id"):
            prefix = getattr(key, "prefix", "")
            return cls(AuditEntry.ActorKind.API_KEY, f"ap_{prefix}_… {key.name}" if prefix else str(key.name))
        user = getattr(request, "_cached_user", None)
        if user is None:
            user = request.__dict__.get("user")
        if user is not None and getattr(user, "is_authenticated", False):
            return cls.staff(user.get_username())
        return cls(AuditEntry.ActorKind.ANONYMOUS, "")


def client_address(request: HttpRequest) -> str | None:
    """The client's address as the sign-in lockouts count it (axes' rule: behind the proxy, the forwarded one)."""
    address = get_client_ip_address(request) or None
    return address if address and address != "unix" else None


def _entry(
    action: str,
    actor: Actor,
    *,
    product_id: str = "",
    user_id: str = "",
    session_id: str = "",
    address: str | None = None,
    details: dict[str, Any] | None = None,
) -> AuditEntry:
    # Round-trip through JSON so a value the encoder cannot take (a set, an
    # object) is recorded as text rather than losing the entry.
    clean = json.loads(json.dumps(details or {}, default=str))
    return AuditEntry(
        actor_kind=actor.kind,
        actor=actor.name[:255],
        action=action,
        product_id=product_id[:128],
        user_id=user_id[:128],
        session_id=session_id[:128],
        client_address=address,
        details=clean,
    )


def _failed(action: str, exc: Exception) -> None:
    logger.error("audit entry %s could not be written: %s", action, exc)


def record(action: str, *, actor: Actor, address: str | None = None, **fields: Any) -> None:
    """Write one entry (sync callers: admin, signals, commands)."""
    try:
        _entry(action, actor, address=address, **fields).save()
    except (DatabaseError, ValueError) as exc:
        _failed(action, exc)


_writer = KeptConnectionThread("autoplay-audit")


async def arecord(action: str, *, actor: Actor, address: str | None = None, **fields: Any) -> None:
    """Write one entry (async callers)."""
    try:
        entry = _entry(action, actor, address=address, **fields)
        await _writer.run(router.db_for_write(AuditEntry), entry.save)
    except (DatabaseError, ValueError) as exc:
        _failed(action, exc)


def record_request(request: HttpRequest, action: str, **fields: Any) -> None:
    """Write one entry whose actor and address come from the request."""
    record(action, actor=Actor.of_request(request), address=client_address(request), **fields)


async def arecord_request(request: HttpRequest, action: str, **fields: Any) -> None:
    await arecord(action, actor=Actor.of_request(request), address=client_address(request), **fields)


def masked(values: dict[str, Any], secrets: set[str]) -> dict[str, Any]:
    """``values`` with every secret field replaced by a mask (or ``""`` when unset): never a secret in the log."""
    return {k: (SECRET_MASK if v else "") if k in secrets else v for k, v in values.items()}


# -- reading the log (the audit page, its CSV, the user page's panel) ---------


@dataclass(frozen=True)
class AuditFilter:
    """What the audit page filters on; empty fields match everything, times are ``since <= at < until``."""

    actor: str = ""
    action: str = ""
    product_id: str = ""
    user_id: str = ""
    since: datetime | None = None
    until: datetime | None = None

    def queryset(self) -> Any:
        rows = AuditEntry.objects.all()
        for field in ("actor", "action", "product_id", "user_id"):
            if value := getattr(self, field):
                rows = rows.filter(**{field: value})
        if self.since is not None:
            rows = rows.filter(at__gte=self.since)
        if self.until is not None:
            rows = rows.filter(at__lt=self.until)
        return rows.order_by("-id")


async def apage(where: AuditFilter, *, before_id: int | None, limit: int) -> tuple[list[AuditEntry], int | None]:
    """One page, newest first, keyset on id: the entries below ``before_id``, and the next page's cursor."""
    rows = where.queryset()
    if before_id is not None:
        rows = rows.filter(id__lt=before_id)
    found = [entry async for entry in rows[: limit + 1]]
    return found[:limit], (found[limit - 1].id if len(found) > limit else None)


async def aexport(where: AuditFilter, chunk_size: int = 2000) -> AsyncIterator[AuditEntry]:
    """Every matching entry, newest first, fetched ``chunk_size`` rows at a time (for a streamed CSV)."""
    async for entry in where.queryset().aiterator(chunk_size=chunk_size):
        yield entry


async def arecent_staff_entries(product_id: str, user_id: str, *, limit: int) -> list[AuditEntry]:
    """The newest entries console users left on one end user (the user page's "recent access" panel)."""
    rows = AuditEntry.objects.filter(product_id=product_id, user_id=user_id, actor_kind=AuditEntry.ActorKind.STAFF)
    return [entry async for entry in rows.order_by("-id")[:limit]]
