"""What the console's user pages share: the user-not-found page.

A product outside the signed-in person's grants never gets this far: ``views.console_view``
answers it with the same 404 (and records the refusal) before any view runs.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse

from .views import error_page


def no_user(request: HttpRequest, product_id: str, user_id: str) -> HttpResponse:
    return error_page(
        request, 404, "No such user", f"There is no user {user_id!r} in product {product_id!r}.", product_id=product_id
    )
