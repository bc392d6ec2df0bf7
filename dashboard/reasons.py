"""Reason for access: a product can ask staff why they open a user before showing it.

The reason (a ticket id, free text) is kept in the staff member's own
session for ``REASON_TTL_S``, keyed by who asked and which user, so a
colleague signing in on the same browser asks again; it is recorded in
``details.reason`` of every audited view of that user meanwhile. A session
holds no secret here: the reason is what the audit log records anyway.
"""

from __future__ import annotations

import json
import time
from urllib.parse import urlencode

from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse

from autoplay_storage.access import aproduct_settings

REASON_TTL_S = 30 * 60
REASON_MAX = 200
SESSION_KEY = "access_reasons"


def _key(request: HttpRequest, product_id: str, user_id: str) -> str:
    return json.dumps([request.user.get_username(), product_id, user_id])


async def kept_reason(request: HttpRequest, product_id: str, user_id: str) -> str | None:
    """The reason given for this user within the last 30 minutes, if any."""
    entry = (await request.session.aget(SESSION_KEY, {})).get(_key(request, product_id, user_id))
    if entry and entry.get("until", 0) > time.time():
        return str(entry["reason"])
    return None


async def keep_reason(request: HttpRequest, product_id: str, user_id: str, reason: str) -> None:
    now = time.time()
    kept = {k: v for k, v in (await request.session.aget(SESSION_KEY, {})).items() if v.get("until", 0) > now}
    kept[_key(request, product_id, user_id)] = {"reason": reason, "until": now + REASON_TTL_S}
    await request.session.aset(SESSION_KEY, kept)


async def access_reason(request: HttpRequest, product_id: str, user_id: str) -> tuple[str | None, HttpResponse | None]:
    """``(reason, None)`` to go on (reason ``None``: the product asks for none), or ``(None, redirect to the form)``."""
    settings = getattr(request, "product_settings", None)  # read by ``console_view`` with the access
    if settings is None or settings.product_id != product_id:
        settings = await aproduct_settings(product_id)
    if not settings.require_access_reason:
        return None, None
    reason = await kept_reason(request, product_id, user_id)
    if reason is not None:
        return reason, None
    ask = reverse("dashboard:access_reason", args=[product_id, user_id])
    return None, redirect(f"{ask}?{urlencode({'next': request.get_full_path()})}")


def reason_details(reason: str | None) -> dict[str, str]:
    return {"reason": reason} if reason is not None else {}
