"""Rebuilding an unreadable state from its snapshots (admins): a preview, then a compare-and-set write.

The preview page carries a fingerprint of the unreadable text it was made
from; the rebuild plans again and refuses when the text changed since (a
repair by someone else). The write itself is the primary's compare-and-set
on the stored text, so a repair racing this one wins and nothing is lost.
The unreadable text is kept (quarantined) and downloadable either way.
"""

from __future__ import annotations

import json

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_safe

from autoplay_storage.audit import Action, arecord_request
from autoplay_storage.support import rebuild

from .roles import REBUILD_STATE
from .views import console_view, not_found, page


def _preview(request: HttpRequest, plan: rebuild.RebuildPlan, status: int = 200, **extra: object) -> HttpResponse:
    state = plan.state
    context = {
        "product_id": plan.product_id,
        "user_id": plan.user_id,
        "plan": plan,
        "state": state,
        "workflows": list(state.onboarding.workflow_progress.values()),
        "new_json": json.dumps(state.to_dict(), indent=2, ensure_ascii=False),
        **extra,
    }
    return page(request, "dashboard/support/rebuild.html", context, status)


@require_http_methods(["GET", "HEAD", "POST"])
@console_view(REBUILD_STATE)
async def rebuild_view(request: HttpRequest, product_id: str, user_id: str) -> HttpResponse:
    back = reverse("dashboard:user", args=[product_id, user_id])
    try:
        plan = await rebuild.plan_rebuild(product_id, user_id)
    except rebuild.NothingToRebuild as exc:
        messages.info(request, f"Nothing to rebuild: {exc}.")
        return redirect(back)
    if request.method != "POST":
        return _preview(request, plan)
    if request.POST.get("raw_sha") != plan.raw_sha:
        return _preview(request, plan, 409, changed=True)
    outcome = await rebuild.rebuild(plan, actor=request.user)
    await arecord_request(
        request,
        Action.STATE_REBUILD,
        product_id=product_id,
        user_id=user_id,
        details={
            "written": outcome.written,
            "quarantine_id": outcome.quarantine.pk,
            "reason": plan.reason,
            "sessions_replayed": len(plan.replayed),
            "sessions_skipped": sorted(plan.skipped),
        },
    )
    if outcome.written:
        messages.success(
            request,
            f"State rebuilt from {len(plan.replayed)} session{'s' if len(plan.replayed) != 1 else ''}; "
            f"the unreadable text is kept as quarantine #{outcome.quarantine.pk}.",
        )
    else:
        messages.error(
            request,
            "Not rebuilt: the stored state changed while rebuilding (someone else repaired it). "
            f"Nothing was overwritten; the unreadable text is kept as quarantine #{outcome.quarantine.pk}.",
        )
    return redirect(back)


@require_safe
@console_view(REBUILD_STATE)
async def quarantine_download(request: HttpRequest, product_id: str, user_id: str, pk: int) -> HttpResponse:
    """The unreadable text exactly as it was stored, as a file."""
    row = await rebuild.quarantined_text(product_id, user_id, pk)
    if row is None:
        return not_found(request, product_id, user_id)
    await arecord_request(
        request, Action.STATE_QUARANTINE_DOWNLOAD, product_id=product_id, user_id=user_id, details={"id": pk}
    )
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{product_id}-{user_id}-{pk}")
    response = HttpResponse(row.raw.encode("utf-8", "backslashreplace"), content_type="text/plain; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="unreadable-state-{safe}.txt"'
    return response
