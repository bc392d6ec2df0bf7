"""Redis key schema.

The two document keys are wire format shared with the published SDK and must
stay byte-identical in the default mode. ``cluster=True`` wraps the user part
in a hash tag (``{prod:user}``) so every key of one user lands in one slot.
"""

from __future__ import annotations

PREFIX = "autoplay"


def _user_part(product_id: str, user_id: str, cluster: bool) -> str:
    if cluster:
        return f"{{{product_id}:{user_id}}}"
    return f"{product_id}:{user_id}"


def user_state_key(product_id: str, user_id: str, *, cluster: bool = False) -> str:
    """``autoplay:user:{product_id}:{user_id}:state`` (wire)."""
    return f"{PREFIX}:user:{_user_part(product_id, user_id, cluster)}:state"


def session_key(product_id: str, user_id: str, session_id: str, *, cluster: bool = False) -> str:
    """``autoplay:user:{product_id}:{user_id}:session:{session_id}`` (wire)."""
    return f"{PREFIX}:user:{_user_part(product_id, user_id, cluster)}:session:{session_id}"
