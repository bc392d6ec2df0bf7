from django.apps import AppConfig


class DashboardConfig(AppConfig):
    """Server-rendered console for support staff and admins."""

    name = "dashboard"
    verbose_name = "Console"
    default_auto_field = "django.db.models.BigAutoField"
