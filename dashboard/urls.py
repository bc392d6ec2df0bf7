from django.urls import path, register_converter

from . import views, views_diff, views_edit, views_rebuild, views_summaries
from .converters import IdentifierConverter

register_converter(IdentifierConverter, "ident")

app_name = "dashboard"

urlpatterns = [
    path("", views.products, name="products"),
    path("p/<ident:product_id>/", views.users, name="users"),
    path("p/<ident:product_id>/u/<ident:user_id>/", views.user_detail, name="user"),
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
    path(
        "p/<ident:product_id>/u/<ident:user_id>/s/<ident:session_id>/snapshot.json",
        views.snapshot_download,
        name="snapshot_json",
    ),
]
