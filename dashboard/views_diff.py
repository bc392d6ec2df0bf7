"""What changed: a session against the one before it (on the snapshot page), any two sessions, or the live state.

The diff is the engine's (``autoplay_storage.diff``), the very one the API's
``.../diff`` route returns, grouped for reading by ``support_context``.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_safe

from autoplay_storage import selectors
from autoplay_storage.support import diffs

from .support_context import diff_context
from .views import console_view, not_found, page

COMPARE_CHOICES = 200


@require_safe
@console_view()
async def compare(request: HttpRequest, product_id: str, user_id: str) -> HttpResponse:
    """``?a=<session>&b=<session>|state``: two sessions (earlier first) or a session and the live state."""
    history = await selectors.list_sessions(product_id, user_id, limit=COMPARE_CHOICES)
    if not history.items and not (await selectors.read_state(product_id, user_id)).found:
        return not_found(request, product_id, user_id)
    sessions = [row.session_id for row in history.items]
    a = request.GET.get("a") or (sessions[1] if len(sessions) > 1 else (sessions[0] if sessions else ""))
    b = request.GET.get("b") or (sessions[0] if len(sessions) > 1 else diffs.STATE)
    context: dict[str, Any] = {
        "product_id": product_id,
        "user_id": user_id,
        "sessions": history.items,
        "a": a,
        "b": b,
        "state_choice": diffs.STATE,
    }
    problems = []
    if a and a == b:
        problems.append("Pick two different sides to compare.")
    elif a:
        try:
            context.update(diff_context(await diffs.session_diff(product_id, user_id, a, b)))
        except diffs.SessionMissing as exc:
            problems.append(f"{exc}.")
    context["problems"] = problems
    return page(request, "dashboard/support/compare.html", context, status=400 if problems else 200)
