from django.apps import AppConfig


class AutoplayStorageConfig(AppConfig):
    """The storage engine's Django glue: settings, models, admin, commands."""

    name = "autoplay_storage"
    verbose_name = "Autoplay storage"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Admin-configured analytics sinks follow their configuration in every worker.
        from . import checks, erasure_sinks, sinks  # noqa: F401  (checks registers itself)
        from .access import watch_access_changes
        from .runtime import manager_hooks

        sinks.install()
        watch_access_changes()
        # Pending sink erasures are retried by every process that uses storage (they survive restarts).
        if erasure_sinks.start_retrier not in manager_hooks:
            manager_hooks.append(erasure_sinks.start_retrier)
