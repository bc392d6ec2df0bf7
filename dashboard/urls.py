from django.urls import path, register_converter

from . import views, views_audit, views_erase, views_insight, views_reason
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
    path("p/<ident:product_id>/u/<ident:user_id>/summary/rerun", views.rerun_summary_view, name="rerun_summary"),
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
