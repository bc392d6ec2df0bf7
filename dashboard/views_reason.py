"""The "reason for access" form a product with ``require_access_reason`` shows before a user page."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods

from .reasons import REASON_MAX, REASON_TTL_S, keep_reason
from .views import console_view, page


def safe_next(request: HttpRequest, candidate: str, fallback: str) -> str:
    """``candidate`` when it is a path on this site (no scheme, no other host), else ``fallback``."""
    if candidate.startswith("/") and url_has_allowed_host_and_scheme(
        candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return candidate
    return fallback


@require_http_methods(["GET", "POST"])
@console_view()
async def access_reason_view(request: HttpRequest, product_id: str, user_id: str) -> HttpResponse:
    user_page = reverse("dashboard:user", args=[product_id, user_id])
    params = request.POST if request.method == "POST" else request.GET
    back = safe_next(request, params.get("next", ""), user_page)
    problems: list[str] = []
    reason = params.get("reason", "").strip()
    if request.method == "POST":
        if not reason:
            problems.append("Give a reason: a ticket id or a few words on why you open this user.")
        elif len(reason) > REASON_MAX:
            problems.append(f"The reason is longer than {REASON_MAX} characters ({len(reason)}).")
        else:
            await keep_reason(request, product_id, user_id, reason)
            return redirect(back)
    return page(
        request,
        "dashboard/reason.html",
        {
            "product_id": product_id,
            "user_id": user_id,
            "next": back,
            "reason": reason,
            "problems": problems,
            "reason_max": REASON_MAX,
            "minutes": REASON_TTL_S // 60,
        },
        status=400 if problems else 200,
    )
