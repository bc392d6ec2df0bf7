from django.apps import AppConfig


class DashboardConfig(AppConfig):
    """Server-rendered console for support staff and admins."""

    name = "dashboard"
    verbose_name = "Console"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import signin  # noqa: F401  (connects the sign-in audit receivers)
