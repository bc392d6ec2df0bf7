"""What the support tooling's views share: the product-access check and the user-not-found page."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse

from autoplay_storage.access import aproduct_access

from .views import error_page


async def allowed(request: HttpRequest, product_id: str) -> bool:
    """Whether the signed-in user may see ``product_id`` (a product outside the grants is "not found")."""
    access = getattr(request, "product_access", None)
    if access is None:
        access = request.product_access = await aproduct_access(request.user)
    return access.allows(product_id)


def no_user(request: HttpRequest, product_id: str, user_id: str) -> HttpResponse:
    return error_page(
        request, 404, "No such user", f"There is no user {user_id!r} in product {product_id!r}.", product_id=product_id
    )
