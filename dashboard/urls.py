from django.urls import path, register_converter

from . import (
    views,
    views_audit,
    views_diff,
    views_edit,
    views_erase,
    views_insight,
    views_reason,
    views_rebuild,
    views_summaries,
)
from .converters import IdentifierConverter

register_converter(IdentifierConverter, "ident")

app_name = "dashboard"

urlpatterns = [
    path("", views.products, name="products"),
    path("p/<ident:product_id>/", views.users, name="users"),
    path("audit/", views_audit.audit_log, name="audit"),
    path("p/<ident:product_id>/insight/", views_insight.product_insight, name="insight"),
    path("p/<ident:product_id>/insight/users/", views_insight.insight_users, name="insight_users"),
    path("p/<ident:product_id>/stuck/", views_insight.stuck_queue, name="stuck"),
    path("p/<ident:product_id>/segments/", views_insight.segment_create, name="segment_create"),
    path("p/<ident:product_id>/segments/<slug:slug>/", views_insight.segment_view, name="segment"),
    path("p/<ident:product_id>/u/<ident:user_id>/", views.user_detail, name="user"),
    path("p/<ident:product_id>/u/<ident:user_id>/reason", views_reason.access_reason_view, name="access_reason"),
    # support tooling (views_edit, views_diff, views_summaries, views_rebuild)
    path("p/<ident:product_id>/u/<ident:user_id>/summary/rerun", views_summaries.preview_view, name="rerun_summary"),
    path("p/<ident:product_id>/u/<ident:user_id>/summary/accept", views_summaries.accept_view, name="summary_accept"),
    path(
        "p/<ident:product_id>/u/<ident:user_id>/summary/discard", views_summaries.discard_view, name="summary_discard"
    ),
    path("p/<ident:product_id>/u/<ident:user_id>/summary/write", views_summaries.write_view, name="summary_write"),
    path(
        "p/<ident:product_id>/u/<ident:user_id>/summary/restore", views_summaries.restore_view, name="summary_restore"
    ),
    path("p/<ident:product_id>/u/<ident:user_id>/edit", views_edit.edit_state_view, name="edit_state"),
    path("p/<ident:product_id>/u/<ident:user_id>/compare", views_diff.compare, name="compare"),
    path("p/<ident:product_id>/u/<ident:user_id>/rebuild", views_rebuild.rebuild_view, name="rebuild_state"),
    path(
        "p/<ident:product_id>/u/<ident:user_id>/quarantine/<int:pk>.txt",
        views_rebuild.quarantine_download,
        name="quarantine_download",
    ),
    path("p/<ident:product_id>/u/<ident:user_id>/s/<ident:session_id>/", views.snapshot, name="snapshot"),
    path("p/<ident:product_id>/u/<ident:user_id>/erase", views_erase.erase_user, name="erase_user"),
    path("p/<ident:product_id>/u/<ident:user_id>/export.json", views_erase.export_user, name="export_user"),
    path("erasures/<uuid:erasure_id>/", views_erase.erasure, name="erasure"),
    path(
        "p/<ident:product_id>/u/<ident:user_id>/s/<ident:session_id>/snapshot.json",
        views.snapshot_download,
        name="snapshot_json",
    ),
]
