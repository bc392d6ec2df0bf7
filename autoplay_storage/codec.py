"""The wire JSON codec: compact UTF-8 JSON, with orjson when it is installed.

Every store parses and writes whole documents on every session, so the codec
is on the hot path (orjson is 4-15x faster than the standard library here).
What orjson refuses or reads differently but the SDK may have written
(``NaN`` literals, integers beyond 64 bits, lone surrogates) goes to the
standard library, so documents read exactly as the SDK reads them.
"""

from __future__ import annotations

import json
import re
from typing import Any

try:  # optional speed-up: the engine must import without it
    import orjson as _orjson
except ImportError:  # pragma: no cover - exercised where orjson is absent
    _orjson = None


def dumps_strict(doc: Any) -> bytes:
    """Compact UTF-8 JSON bytes; ``ValueError`` for NaN or ±Infinity, which JSON cannot hold."""
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def dumps(doc: Any) -> bytes:
    """Compact UTF-8 JSON bytes (the shape the SDK reads back), for documents the engine built.

    The engine's documents are finite by construction (``to_dict`` replaces
    NaN in free-form bags). orjson would write a stray NaN as ``null``, so a
    document from elsewhere goes through ``dumps_strict`` first.
    """
    if _orjson is not None:
        try:
            return _orjson.dumps(doc)
        except TypeError:  # an int beyond 64 bits, a non-string key: the standard library copes
            pass
    return dumps_strict(doc)


def dumps_text(doc: Any) -> str:
    return dumps(doc).decode()


# 20 digits in a row may be an integer beyond 64 bits, which orjson would read
# as a float; the standard library keeps it exact. (Digits in a string also
# match: that only costs the slower parser.)
_LONG_DIGITS_BYTES = re.compile(rb"[0-9]{20}")
_LONG_DIGITS_TEXT = re.compile(r"[0-9]{20}")


def loads(raw: bytes | str) -> Any:
    """Parse JSON text or UTF-8 bytes; raises ``ValueError`` (or ``UnicodeDecodeError``) when it is not JSON."""
    if _orjson is not None:
        long_digits = _LONG_DIGITS_BYTES if isinstance(raw, bytes) else _LONG_DIGITS_TEXT
        if long_digits.search(raw) is None:  # type: ignore[arg-type]
            try:
                return _orjson.loads(raw)
            except ValueError:  # maybe valid JSON orjson is stricter about: let the standard library judge
                pass
    try:
        return json.loads(raw)
    except RecursionError as exc:
        raise ValueError("JSON nested too deeply") from exc
