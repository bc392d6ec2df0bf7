"""Sign-in protection (django-axes): a limit per user name and another per address, our lockout page, audit entries.

axes 8.3 counts failures per lockout parameter (``AXES_LOCKOUT_PARAMETERS =
["username", "ip_address"]``) but compares the largest count with a single
``AXES_FAILURE_LIMIT``. Ours differ (5 per user name, 20 per address), so
the limit is axes' callable hook: :func:`failure_limit` reads the
per-parameter counts from the configured axes handler (its cache keys or its
attempt rows) and answers the limit that makes axes' own comparison come
out right. Counting, expiry and the refusal stay axes' own.
"""

from __future__ import annotations

from typing import Any

from axes.handlers.proxy import AxesProxyHandler
from axes.helpers import get_cache, get_client_cache_keys, get_client_username, get_cool_off
from axes.signals import user_locked_out
from django.conf import settings
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.db.models import Sum
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from autoplay_storage.audit import Action, Actor, client_address, record


def _limits() -> list[int]:
    """The limit of each lockout parameter, in ``AXES_LOCKOUT_PARAMETERS`` order."""
    by_name = {"username": settings.SIGNIN_USERNAME_LIMIT, "ip_address": settings.SIGNIN_ADDRESS_LIMIT}
    return [by_name[name] for name in settings.AXES_LOCKOUT_PARAMETERS]


def failure_counts(request: HttpRequest, credentials: dict | None) -> list[int]:
    """Recent failures per lockout parameter, as the configured axes handler stores them."""
    handler = AxesProxyHandler.get_implementation()
    if hasattr(handler, "get_user_attempts"):  # AxesDatabaseHandler: one queryset per parameter
        querysets = handler.get_user_attempts(request, credentials)
        return [qs.aggregate(n=Sum("failures_since_start"))["n"] or 0 for qs in querysets]
    cache = get_cache()  # AxesCacheHandler: one counter per parameter
    return [cache.get(key, 0) for key in get_client_cache_keys(request, credentials)]


def failure_limit(request: HttpRequest, credentials: dict | None) -> int:
    """``AXES_FAILURE_LIMIT``: axes locks out when its largest count reaches this.

    1 once any parameter reached its own limit (so axes' largest count, at
    least that, locks out); one past the largest count otherwise (so it
    does not).
    """
    counts = failure_counts(request, credentials)
    if any(count >= limit for count, limit in zip(counts, _limits(), strict=True)):
        return 1
    return max(counts, default=0) + 1


def lockout_response(
    request: HttpRequest, original_response: Any = None, credentials: dict | None = None
) -> HttpResponse:
    """``AXES_LOCKOUT_CALLABLE``: our page (CSP-clean template), 429 with ``Retry-After``.

    axes' async middleware passes the credentials second, its sync one third;
    neither is needed here.
    """
    cool_off = get_cool_off(request)
    minutes = round(cool_off.total_seconds() / 60) if cool_off else None
    response = render(request, "registration/locked_out.html", {"minutes": minutes}, status=429)
    if cool_off:
        response["Retry-After"] = str(int(cool_off.total_seconds()))
    return response


def _refused(request: HttpRequest | None) -> bool:
    """Refused unchecked because a lockout is on (axes counted nothing for it), not a wrong password."""
    return bool(getattr(request, "axes_locked_out", False)) and getattr(request, "axes_failures_since_start", 0) is None


def _username(request: HttpRequest | None, credentials: dict | None) -> str:
    if request is None:
        return (credentials or {}).get("username", "") or ""
    return get_client_username(request, credentials) or ""


@receiver(user_logged_in, dispatch_uid="signin-audit-success")
def _signed_in(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    record(
        Action.SIGNIN_SUCCESS,
        actor=Actor.staff(user.get_username()),
        address=client_address(request) if request is not None else None,
        details={"path": request.path if request is not None else ""},
    )


@receiver(user_login_failed, dispatch_uid="signin-audit-failure")
def _sign_in_failed(sender: Any, credentials: dict, request: HttpRequest | None = None, **kwargs: Any) -> None:
    record(
        Action.SIGNIN_FAILURE,
        actor=Actor.staff(_username(request, credentials)),
        address=client_address(request) if request is not None else None,
        details={"path": request.path if request is not None else "", "refused_while_locked_out": _refused(request)},
    )


@receiver(user_locked_out, dispatch_uid="signin-audit-lockout")
def _locked_out(sender: Any, request: HttpRequest, username: str | None, ip_address: str | None, **kwargs: Any) -> None:
    if _refused(request):  # axes signals again for every attempt while locked out: recorded as a failure
        return
    record(
        Action.SIGNIN_LOCKOUT,
        actor=Actor.staff(username or ""),
        address=ip_address,
        details={"path": request.path, "counts": failure_counts(request, getattr(request, "axes_credentials", None))},
    )
