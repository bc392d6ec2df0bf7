"""Summaries under review (leads and admins): preview a re-run, accept or discard it; write or restore one.

"Re-run" shows the current and the new text side by side with the words
that differ marked (``difflib``, rendered here); nothing is stored until a
lead accepts, and the acceptance is written with the etag the preview was
made at, so a summary the agent wrote meanwhile is shown as a conflict,
never overwritten. Every stored version is kept with where it came from.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from autoplay_storage import selectors
from autoplay_storage.audit import Action, arecord_request
from autoplay_storage.errors import ConflictError, CorruptDocumentError, UnsupportedVersionError
from autoplay_storage.services import StateNotFoundError
from autoplay_storage.summary_runs import NoSnapshotError, SummaryFailed
from autoplay_storage.support import summaries

from .reasons import kept_reason, reason_details
from .roles import RERUN_SUMMARY
from .views import console_view, not_found, page


def _back(product_id: str, user_id: str) -> str:
    return reverse("dashboard:user", args=[product_id, user_id]) + "#summary"


def _int(value: str) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _preview_page(
    request: HttpRequest, product_id: str, user_id: str, preview: summaries.Preview, status: int = 200, **extra: Any
) -> HttpResponse:
    left, right = summaries.text_diff(preview.current or "", preview.new)
    context = {
        "product_id": product_id,
        "user_id": user_id,
        "preview": preview,
        "left": left,
        "right": right,
        "same": (preview.current or "") == preview.new,
        **extra,
    }
    return page(request, "dashboard/support/summary_preview.html", context, status)


@require_POST
@console_view(RERUN_SUMMARY)
async def preview_view(request: HttpRequest, product_id: str, user_id: str) -> HttpResponse:
    """Run the summarizer (recorded) and show its text beside the current one; nothing is stored."""
    session_id = request.POST.get("session_id", "").strip() or None
    try:
        preview = await summaries.preview_summary(product_id, user_id, session_id, actor=request.user)
    except StateNotFoundError:
        return not_found(request, product_id, user_id)
    except NoSnapshotError as exc:
        messages.error(request, f"Nothing to summarize: {exc}.")
        return redirect(_back(product_id, user_id))
    except SummaryFailed as exc:
        messages.error(request, f"The summary was not re-run: {exc}. The stored summary is unchanged.")
        return redirect(_back(product_id, user_id))
    except (CorruptDocumentError, UnsupportedVersionError) as exc:
        messages.error(request, f"The summary was not re-run: {exc}. The stored documents are unchanged.")
        return redirect(_back(product_id, user_id))
    await arecord_request(  # the re-run itself: a paid summarizer call over this user's data
        request,
        Action.SUMMARY_RERUN,
        product_id=product_id,
        user_id=user_id,
        session_id=preview.run.session_id,
        details={
            "run_id": preview.run.pk, "summarizer": preview.run.summarizer, "current": preview.current,
            "previewed": preview.new, **reason_details(await kept_reason(request, product_id, user_id)),
        },
    )
    return _preview_page(request, product_id, user_id, preview)


async def _write(request: HttpRequest, product_id: str, user_id: str, **what: Any) -> None:
    """Store a version with the posted etag, recorded; raises ``ConflictError`` or ``SummaryReviewError``."""
    etag = request.POST.get("etag", "")
    _versioned, run = await summaries.write_summary(product_id, user_id, if_match=etag, actor=request.user, **what)
    await arecord_request(
        request,
        Action.SUMMARY_WRITE,
        product_id=product_id,
        user_id=user_id,
        details={
            "run_id": run.pk, "source": run.source, "before": run.previous_summary, "after": run.new_summary,
            **reason_details(await kept_reason(request, product_id, user_id)),
        },
    )


@require_POST
@console_view(RERUN_SUMMARY)
async def accept_view(request: HttpRequest, product_id: str, user_id: str) -> HttpResponse:
    run_id = _int(request.POST.get("run_id", ""))
    if run_id is None:
        messages.error(request, "The form did not say which preview to accept.")
        return redirect(_back(product_id, user_id))
    try:
        await _write(request, product_id, user_id, preview_id=run_id)
    except (summaries.SummaryReviewError, CorruptDocumentError, UnsupportedVersionError, StateNotFoundError) as exc:
        messages.error(request, f"Not stored: {exc}.")
        return redirect(_back(product_id, user_id))
    except ConflictError:
        current = await selectors.get_state(product_id, user_id)
        run = await summaries.summary_run(product_id, user_id, run_id)
        preview = summaries.Preview(run, current.state.onboarding.summary, current.etag)
        return _preview_page(request, product_id, user_id, preview, status=409, conflict=True)
    messages.success(request, "The previewed summary is now the user's summary.")
    return redirect(_back(product_id, user_id))


@require_POST
@console_view(RERUN_SUMMARY)
async def discard_view(request: HttpRequest, product_id: str, user_id: str) -> HttpResponse:
    """Nothing to undo: a preview is never stored; the run stays recorded as a preview."""
    messages.info(request, "Preview discarded; the stored summary is unchanged.")
    return redirect(_back(product_id, user_id))


@require_http_methods(["GET", "HEAD", "POST"])
@console_view(RERUN_SUMMARY)
async def write_view(request: HttpRequest, product_id: str, user_id: str) -> HttpResponse:
    """Write a summary by hand (GET: the form, with the current text and the etag it was read at)."""
    try:
        current = await selectors.get_state(product_id, user_id)
    except StateNotFoundError:
        return not_found(request, product_id, user_id)
    except (CorruptDocumentError, UnsupportedVersionError) as exc:
        messages.error(request, f"The summary cannot be written: {exc}. Rebuild the state first.")
        return redirect(_back(product_id, user_id))
    context: dict[str, Any] = {
        "product_id": product_id,
        "user_id": user_id,
        "etag": current.etag,
        "current": current.state.onboarding.summary,
        "text": current.state.onboarding.summary or "",
    }
    if request.method != "POST":
        return page(request, "dashboard/support/summary_write.html", context)
    text = request.POST.get("text", "")
    try:
        await _write(request, product_id, user_id, text=text)
    except summaries.SummaryReviewError as exc:
        return page(request, "dashboard/support/summary_write.html", {**context, "text": text, "error": exc}, 400)
    except ConflictError:
        return page(request, "dashboard/support/summary_write.html", {**context, "text": text, "conflict": True}, 409)
    messages.success(request, "Summary written by hand.")
    return redirect(_back(product_id, user_id))


@require_POST
@console_view(RERUN_SUMMARY)
async def restore_view(request: HttpRequest, product_id: str, user_id: str) -> HttpResponse:
    run_id = _int(request.POST.get("run_id", ""))
    try:
        if run_id is None:
            raise summaries.SummaryReviewError("the form did not say which version to restore")
        await _write(request, product_id, user_id, restore_id=run_id)
    except (summaries.SummaryReviewError, CorruptDocumentError, UnsupportedVersionError, StateNotFoundError) as exc:
        messages.error(request, f"Not restored: {exc}.")
    except ConflictError:
        messages.error(
            request,
            "Not restored: the state changed since this page was loaded (the agent wrote). "
            "Nothing was overwritten; the page now shows the current summary — restore again if you still want to.",
        )
    else:
        messages.success(request, f"Version {run_id} restored as the user's summary.")
    return redirect(_back(product_id, user_id))
