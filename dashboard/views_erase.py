"""Console views for erasing a user (admins) and downloading all of a user's data (leads and admins).

Erasing asks the operator to type the user id, as a guard against a wrong
click; the POST is CSRF-checked like every console form. Both actions are
recorded in the audit log; the receipt page shows the erasure's outcome,
each sink's status included (retried in the background).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from uuid import UUID

from django.http import HttpRequest, HttpResponse, HttpResponseBase, StreamingHttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_http_methods, require_safe

from autoplay_storage import audit, selectors, services

from .roles import ERASE_USER, EXPORT_USER
from .views import console_view, error_page, not_found, page


@require_http_methods(["GET", "HEAD", "POST"])
@console_view(ERASE_USER)
async def erase_user(request: HttpRequest, product_id: str, user_id: str) -> HttpResponse:
    context = {"product_id": product_id, "user_id": user_id, "problem": ""}
    if request.method != "POST":
        if not await selectors.holds_user(product_id, user_id):
            return not_found(request, product_id, user_id)
        context["receipts"] = await selectors.erasure_receipts(product_id, user_id)
        return page(request, "dashboard/erase.html", context)
    typed = request.POST.get("confirm", "").strip()
    if typed != user_id:
        context["problem"] = f"To erase, type the user id exactly: {user_id}. Nothing was erased."
        return page(request, "dashboard/erase.html", context, status=400)
    receipt, created = await services.erase_user(
        product_id, user_id, requested_by=f"staff:{request.user.get_username()}"
    )
    await audit.arecord_request(
        request,
        audit.Action.USER_ERASE,
        product_id=product_id,
        user_id=user_id,
        details={"erasure": receipt["id"], "repeat": not created},
    )
    return redirect("dashboard:erasure", erasure_id=receipt["id"])


@require_safe
@console_view(ERASE_USER)
async def erasure(request: HttpRequest, erasure_id: UUID) -> HttpResponse:
    receipt = await selectors.erasure_receipt(str(erasure_id))
    if receipt is None or not request.product_access.allows(receipt["product_id"]):
        return error_page(request, 404, "No such erasure", f"There is no erasure receipt {erasure_id}.")
    return page(request, "dashboard/erasure.html", {"receipt": receipt})


@require_safe
@console_view(EXPORT_USER)
async def export_user(request: HttpRequest, product_id: str, user_id: str) -> HttpResponseBase:
    """One JSON document with everything stored about the user, streamed (docs/erasure.md)."""
    if not await selectors.holds_user(product_id, user_id):
        return not_found(request, product_id, user_id)
    first, pieces = await selectors.export_user(product_id, user_id)  # an unreachable primary: the 503 page
    await audit.arecord_request(request, audit.Action.USER_EXPORT, product_id=product_id, user_id=user_id)

    async def chunks() -> AsyncIterator[bytes]:
        yield first.encode("utf-8", "backslashreplace")
        async for piece in pieces:
            yield piece.encode("utf-8", "backslashreplace")

    response = StreamingHttpResponse(chunks(), content_type="application/json")
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{product_id}-{user_id}")
    response["Content-Disposition"] = f'attachment; filename="export-{safe}.json"'
    response["Cache-Control"] = "no-store"
    return response
