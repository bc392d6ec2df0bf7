"""Console views (placeholder until the dashboard lands)."""

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse


@login_required
def products(request: HttpRequest) -> HttpResponse:
    return HttpResponse("Autoplay storage console")
