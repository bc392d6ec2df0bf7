"""The defensive readers: one value of a stored document, read as spec section 4 says.

Each takes whatever a hand-edited, truncated or older document holds and
returns a value of the field's type, never raising. The exact-type checks
first are the hot path (what this engine writes); the general rule after
them decides everything else. The generated ``from_dict`` of each document
(``fields``) inlines those fast checks and calls these for the rest.
"""

from __future__ import annotations

import copy
import math
import sys
import time
from collections.abc import Mapping
from enum import Enum
from typing import Any


def _now() -> float:
    return time.time()


_FLOAT_MAX = sys.float_info.max


def _is_number(value: Any) -> bool:
    """A finite int or float; not a bool, and not an int too large to be a float (JSON allows those)."""
    kind = type(value)
    if kind is float:  # the hot path: exact types first (a bool's type is bool, not int)
        return value - value == 0.0  # false for NaN and ±Infinity
    if kind is int:
        return -_FLOAT_MAX <= value <= _FLOAT_MAX
    if kind is bool or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _stamp(now: float | None) -> float:
    """A time a caller passes in: ``None`` means now; a non-finite one is refused.

    A NaN stamp cannot be written as JSON and silently breaks every cooldown
    comparison, so it fails here, at the call that made it.
    """
    if now is None:
        return _now()
    if not _is_number(now):
        raise ValueError(f"a timestamp must be a finite number of unix seconds, not {now!r}")
    return float(now)


def _ts(value: Any, default: float) -> float:
    """A required timestamp: a finite number, else ``default`` (usually now)."""
    if type(value) is float and value - value == 0.0:  # the common case, without another call
        return value
    return float(value) if _is_number(value) else default


def _opt_ts(value: Any) -> float | None:
    """An optional timestamp: a finite number, else ``None`` (NaN breaks cooldowns)."""
    if value is None:
        return None
    if type(value) is float and value - value == 0.0:
        return value
    return float(value) if _is_number(value) else None


def _unit(value: Any, default: float = 0.0) -> float:
    """A confidence or rate clamped to 0..1."""
    if type(value) is float and 0.0 <= value <= 1.0:  # false for NaN
        return value
    if not _is_number(value):
        return default
    return min(1.0, max(0.0, float(value)))


def _count(value: Any) -> int:
    """A count: integers below 0 become 0; anything else is 0."""
    if not _is_number(value):
        return 0
    return max(0, int(value))


def _str(value: Any, default: str = "") -> str:
    return value if isinstance(value, str) else default


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _bool(value: Any, default: bool = False) -> bool:
    return value if isinstance(value, bool) else default


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _str_list(value: Any) -> list[str]:
    """Strings only, insertion order, no duplicates, blanks dropped."""
    out: list[str] = []
    seen: set[str] = set()
    for item in _list(value):
        if isinstance(item, str) and item.strip() and item not in seen:
            seen.add(item)
            out.append(item)
    return out


def _enum(enum: type[Enum], value: Any, default: Enum) -> Any:
    try:
        return enum._value2member_map_[value]  # what Enum(value) looks up, minus its overhead
    except (KeyError, TypeError):  # unknown, or unhashable (a list where a string belongs)
        return default


def _json_safe(value: Any) -> Any:
    """A copy of a free-form value with NaN and ±Infinity replaced by ``None``.

    Free-form bags (metadata, unknown fields) are kept as they are, but a
    non-finite float cannot be written as JSON: it would make the whole
    document unwritable.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value  # immutable: no copy needed (the hot path)
    return copy.deepcopy(value)


def _extras(data: Mapping[str, Any], known: frozenset[str]) -> dict[str, Any]:
    if len(data) <= len(known) and known.issuperset(data):  # the usual case: no unknown fields
        return {}
    return {k: _json_safe(v) for k, v in data.items() if k not in known}


def _int_in(value: Any, low: int, high: int | None = None) -> int:
    """An integer clamped to ``low..high`` (a fraction truncates); anything else is ``low``."""
    if not _is_number(value):
        return low
    number = max(low, int(value))
    return number if high is None else min(high, number)


def _duration(value: Any, started: float, captured: float) -> float:
    """Seconds, never negative, 2 decimals; when not a number, what the two stamps say."""
    seconds = float(value) if _is_number(value) else captured - started
    return round(max(0.0, seconds), 2)


def _version(value: Any, default: int) -> Any:
    """A lenient schema version: any integer (not a bool), else ``default``."""
    return value if isinstance(value, int) and not isinstance(value, bool) else default
