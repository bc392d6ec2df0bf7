"""What an id in a URL may look like, and why.

Product and user ids become parts of Redis keys that are split on ``:``
(``autoplay:user:{product}:{user}:state``), so a ``:`` in either would let
product ``a:b`` / user ``c`` and product ``a`` / user ``b:c`` share one key.
Braces would change the Redis Cluster hash slot, and ``*?[]`` are glob
characters in key scans. Session ids sit at the end of their key, so ``:`` is
safe there and allowed (timestamps, URNs).

No id may be made only of dots: HTTP clients, proxies and browsers rewrite
``.`` and ``..`` path segments before the request is sent
(``autoplay_storage.ids``). The patterns say "at least one character that is
not a dot" without a look-ahead, so every JSON Schema tool reads them.
"""

from __future__ import annotations

import re
from typing import Annotated

from ninja import Path

from autoplay_storage.ids import is_dots_only

ID_MAX_LENGTH = 128
_ID_CHARS = r"A-Za-z0-9._@+\-"
_SESSION_ID_CHARS = r"A-Za-z0-9._@+:\-"
PRODUCT_ID_PATTERN = rf"^[{_ID_CHARS}]*[{_ID_CHARS.replace('.', '')}][{_ID_CHARS}]*$"
USER_ID_PATTERN = PRODUCT_ID_PATTERN
SESSION_ID_PATTERN = rf"^[{_SESSION_ID_CHARS}]*[{_SESSION_ID_CHARS.replace('.', '')}][{_SESSION_ID_CHARS}]*$"

ID_RULES = {
    "product_id": "1 to 128 of A-Z a-z 0-9 . _ @ + -",
    "user_id": "1 to 128 of A-Z a-z 0-9 . _ @ + -",
    "session_id": "1 to 128 of A-Z a-z 0-9 . _ @ + : -",
}

_product_re = re.compile(PRODUCT_ID_PATTERN)


def is_product_id(value: str) -> bool:
    return len(value) <= ID_MAX_LENGTH and bool(_product_re.fullmatch(value))


def id_problem(name: str, value: str) -> str:
    """Why ``value`` is not a valid ``name`` (one of ``ID_RULES``), in words a developer can act on."""
    if is_dots_only(value):
        return (
            f"{value!r} is made only of dots, which HTTP clients and browsers rewrite in a URL path "
            "('.' and '..' are path segments); use at least one other character"
        )
    return f"must be {ID_RULES[name]}, and not only dots"


# The path parameters every router declares its routes with, so they are validated alike.
ProductId = Annotated[str, Path(pattern=PRODUCT_ID_PATTERN, max_length=ID_MAX_LENGTH, description="product id")]
UserId = Annotated[str, Path(pattern=USER_ID_PATTERN, max_length=ID_MAX_LENGTH, description="user id")]
SessionId = Annotated[str, Path(pattern=SESSION_ID_PATTERN, max_length=ID_MAX_LENGTH, description="session id")]
USER = "/v1/products/{product_id}/users/{user_id}"
