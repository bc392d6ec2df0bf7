"""Erasure and export routes: ``DELETE`` a user everywhere, read the receipt, download everything of a user.

Mounted on the agents' API (``api.api``). Erasing and reading receipts need
a key with the ``admin`` scope; the export needs ``read``. Every call is
recorded in the audit log. The export is streamed: one JSON document, its
snapshots read page by page (docs/erasure.md).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from ninja import Path, Router

from autoplay_storage import audit, selectors, services

from .auth import ApiKeyAuth
from .errors import ApiError, json_response
from .ids import USER, ProductId, UserId
from .models import Scope
from .schemas import Error

router = Router(tags=["erasure"])
_ERRORS: dict[int, Any] = {401: Error, 403: Error, 404: Error, 422: Error, 503: Error}



def requested_by(request: HttpRequest) -> str:
    """The receipt's "who asked": the key's prefix and name (the secret never)."""
    identity = request.auth  # type: ignore[attr-defined]
    return f"key:ap_{identity.prefix}_… {identity.name}" if identity.prefix else f"key:{identity.name}"


@router.delete(
    USER,
    response={200: dict, **_ERRORS},
    auth=ApiKeyAuth(scope=Scope.ADMIN),
    operation_id="user_erase",
    summary="Erase the user everywhere: the primary, every snapshot, the sinks (idempotent)",
)
async def user_erase(request: HttpRequest, product_id: ProductId, user_id: UserId) -> HttpResponse:
    """Removes the state, every snapshot, the history, index and search entries and the summary runs,
    and asks each analytics sink to delete the person. Returns the receipt; repeating the call returns
    the same receipt. A late end of a session that started before now answers `410 user_erased`."""
    receipt, created = await services.erase_user(product_id, user_id, requested_by=requested_by(request))
    await audit.arecord_request(
        request,
        audit.Action.USER_ERASE,
        product_id=product_id,
        user_id=user_id,
        details={"erasure": receipt["id"], "repeat": not created},
    )
    return json_response({"erasure": receipt}, headers={"Cache-Control": "no-store"})


@router.get(
    USER + "/export",
    response={200: dict, **_ERRORS},
    operation_id="user_export",
    summary="Everything stored about the user, as one JSON document (streamed)",
)
async def user_export(request: HttpRequest, product_id: ProductId, user_id: UserId) -> HttpResponseBase:
    """The state, every snapshot oldest first, the summary runs and any erasure receipts, with
    `exported_at` and `schema_version`. An unreadable document is exported as its raw text, marked."""
    if not await selectors.holds_user(product_id, user_id):
        raise ApiError(404, "user_not_found", f"nothing is stored about user {user_id!r} in product {product_id!r}")
    first, pieces = await selectors.export_user(product_id, user_id)  # a primary that is down: a 503, here
    await audit.arecord_request(request, audit.Action.USER_EXPORT, product_id=product_id, user_id=user_id)
    return streamed(first, pieces, f"{product_id}-{user_id}")


@router.get(
    "/v1/erasures/{erasure_id}",
    response={200: dict, **_ERRORS},
    auth=ApiKeyAuth(scope=Scope.ADMIN),
    operation_id="erasure_get",
    summary="An erasure receipt",
)
async def erasure_get(request: HttpRequest, erasure_id: str = Path(..., max_length=64)) -> HttpResponse:
    """Who asked, when, what the primary removed, and each sink's status (retried in the background)."""
    receipt = await selectors.erasure_receipt(erasure_id)
    if receipt is None or not request.auth.allows(receipt["product_id"]):  # type: ignore[attr-defined]
        raise ApiError(404, "erasure_not_found", f"no erasure {erasure_id!r} that this key may read")
    return json_response({"erasure": receipt}, headers={"Cache-Control": "no-store"})


def streamed(first: str, rest: AsyncIterator[str], name: str) -> StreamingHttpResponse:
    """The export as a download: never cached, named after the ids."""

    async def chunks() -> AsyncIterator[bytes]:
        yield first.encode("utf-8", "backslashreplace")
        async for piece in rest:
            yield piece.encode("utf-8", "backslashreplace")

    response = StreamingHttpResponse(chunks(), content_type="application/json")
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    response["Content-Disposition"] = f'attachment; filename="export-{safe}.json"'
    response["Cache-Control"] = "no-store"
    return response
