"""Every Redis key the adapter touches (docs/redis.md, "Keys").

The two document keys are the SDK's wire keys (``autoplay_storage.keys``);
the rest are ours, under the same prefix. Product indexes always brace the
product id: in cluster mode it is the hash tag that keeps one product's
indexes in one slot, in standalone mode it is just text.
"""

from __future__ import annotations

import functools

from ...keys import PREFIX, session_key, user_state_key
from ...user_adoption_state import JourneyState, MasteryLevel

PRODUCTS_KEY = f"{PREFIX}:idx:products"
SEARCH_SEP = "\x00"  # between the search term and the user id in the lex index
JOURNEY_STATES = [j.value for j in JourneyState]
MASTERY_LEVELS = [m.value for m in MasteryLevel]


def _product_part(product_id: str) -> str:
    return f"{PREFIX}:idx:{{{product_id}}}"


@functools.lru_cache(maxsize=4096)  # built on every state write: once per product instead
def users_key(product_id: str) -> str:
    return f"{_product_part(product_id)}:users"


def journey_key(product_id: str, journey_state: str) -> str:
    return f"{_product_part(product_id)}:journey:{journey_state}"


def mastery_key(product_id: str, level: str) -> str:
    return f"{_product_part(product_id)}:mastery:{level}"


def onboarded_key(product_id: str, onboarded: bool) -> str:
    return f"{_product_part(product_id)}:onboarded:{int(onboarded)}"


@functools.lru_cache(maxsize=4096)
def search_key(product_id: str) -> str:
    return f"{_product_part(product_id)}:search"


@functools.lru_cache(maxsize=4096)
def filter_keys(product_id: str, journey_state: str, mastery_level: str, onboarded: bool) -> tuple[str, str, str]:
    """The three filter sets one user is in."""
    return (
        journey_key(product_id, journey_state),
        mastery_key(product_id, mastery_level),
        onboarded_key(product_id, onboarded),
    )


def all_filter_keys(product_id: str) -> list[str]:
    """Every filter set of a product (a reindex removes a user from all of them first)."""
    return (
        [journey_key(product_id, j) for j in JOURNEY_STATES]
        + [mastery_key(product_id, m) for m in MASTERY_LEVELS]
        + [onboarded_key(product_id, b) for b in (False, True)]
    )


def sessions_key(product_id: str, user_id: str, *, cluster: bool = False) -> str:
    """The user's full session history, next to the state key (same slot in cluster mode)."""
    return user_state_key(product_id, user_id, cluster=cluster).removesuffix(":state") + ":sessions"


class UserKeys:
    """The per-user keys in one key mode: wire keys, or hash-tagged ones for a cluster."""

    __slots__ = ("cluster",)

    def __init__(self, *, cluster: bool) -> None:
        self.cluster = cluster

    def state(self, product_id: str, user_id: str) -> str:
        return user_state_key(product_id, user_id, cluster=self.cluster)

    def snapshot(self, product_id: str, user_id: str, session_id: str) -> str:
        return session_key(product_id, user_id, session_id, cluster=self.cluster)

    def history(self, product_id: str, user_id: str) -> str:
        return sessions_key(product_id, user_id, cluster=self.cluster)

    def tombstone(self, product_id: str, user_id: str) -> str:
        """The erased user's tombstone: outside the wire patterns, in the user's slot in cluster mode."""
        part = f"{{{product_id}:{user_id}}}" if self.cluster else f"{product_id}:{user_id}"
        return f"{PREFIX}:erased:{part}"

    def snapshot_pattern(self, product_id: str, user_id: str) -> str:
        """A SCAN pattern for every snapshot key of the user (glob characters in the ids escaped)."""
        return glob_escape(self.snapshot(product_id, user_id, "")) + "*"


def glob_escape(text: str) -> str:
    """``text`` as a literal in a Redis glob pattern (SCAN ``MATCH``)."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
