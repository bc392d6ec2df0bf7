from django.apps import AppConfig


class AutoplayStorageConfig(AppConfig):
    """The storage engine's Django glue: settings, models, admin, commands."""

    name = "autoplay_storage"
    verbose_name = "Autoplay storage"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Admin-configured analytics sinks follow their configuration in every worker.
        from . import checks, sinks  # noqa: F401  (checks registers itself)

        sinks.install()
