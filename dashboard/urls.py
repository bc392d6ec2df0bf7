from django.urls import path, register_converter

from . import views, views_audit, views_reason
from .converters import IdentifierConverter

register_converter(IdentifierConverter, "ident")

app_name = "dashboard"

urlpatterns = [
    path("", views.products, name="products"),
    path("p/<ident:product_id>/", views.users, name="users"),
    path("audit/", views_audit.audit_log, name="audit"),
    path("p/<ident:product_id>/u/<ident:user_id>/", views.user_detail, name="user"),
    path("p/<ident:product_id>/u/<ident:user_id>/reason", views_reason.access_reason_view, name="access_reason"),
    path("p/<ident:product_id>/u/<ident:user_id>/summary/rerun", views.rerun_summary_view, name="rerun_summary"),
    path("p/<ident:product_id>/u/<ident:user_id>/s/<ident:session_id>/", views.snapshot, name="snapshot"),
    path(
        "p/<ident:product_id>/u/<ident:user_id>/s/<ident:session_id>/snapshot.json",
        views.snapshot_download,
        name="snapshot_json",
    ),
]
