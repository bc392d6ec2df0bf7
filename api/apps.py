from django.apps import AppConfig


class ApiConfig(AppConfig):
    """The agents' JSON API (django-ninja) and its API keys."""

    name = "api"
    verbose_name = "Agent API"
    default_auto_field = "django.db.models.BigAutoField"
