"""What an id in a URL may look like, and why.

Product and user ids become parts of Redis keys that are split on ``:``
(``autoplay:user:{product}:{user}:state``), so a ``:`` in either would let
product ``a:b`` / user ``c`` and product ``a`` / user ``b:c`` share one key.
Braces would change the Redis Cluster hash slot, and ``*?[]`` are glob
characters in key scans. Session ids sit at the end of their key, so ``:`` is
safe there and allowed (timestamps, URNs).
"""

from __future__ import annotations

import re

ID_MAX_LENGTH = 128
PRODUCT_ID_PATTERN = r"^[A-Za-z0-9._@+\-]{1,128}$"
USER_ID_PATTERN = PRODUCT_ID_PATTERN
SESSION_ID_PATTERN = r"^[A-Za-z0-9._@+:\-]{1,128}$"

_product_re = re.compile(PRODUCT_ID_PATTERN)


def is_product_id(value: str) -> bool:
    return bool(_product_re.fullmatch(value))
