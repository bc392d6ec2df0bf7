"""URL routes: the agents' API under /api/, the console at /, Django admin at /admin/, /metrics."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from config.metrics import metrics_view

urlpatterns = [
    path("admin/", admin.site.urls),
    path("metrics", metrics_view, name="metrics"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", include("api.urls")),
    path("", include("dashboard.urls")),
]
