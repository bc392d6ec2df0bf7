"""The wire JSON codec: compact UTF-8 JSON, with orjson when it is installed.

Every store parses and writes whole documents on every session, so the codec
is on the hot path (orjson is 4-15x faster than the standard library here).
What orjson refuses or reads differently but the SDK may have written
(``NaN`` literals, integers beyond 64 bits, lone surrogates) goes to the
standard library, so documents read exactly as the SDK reads them.
"""

from __future__ import annotations

import json
import math
from typing import Any

from .errors import CorruptDocumentError

try:  # optional speed-up: the engine must import without it
    import orjson as _orjson
except ImportError:  # pragma: no cover - exercised where orjson is absent
    _orjson = None


def dumps_text(doc: Any, *, allow_nan: bool = False) -> str:
    """Compact JSON text that UTF-8 can carry.

    Python's json reads ``"\\ud800"`` as a lone surrogate, which UTF-8 cannot
    encode; such a document is written back with that escape (the text the
    SDK read), never refused. ``allow_nan=False``: ``ValueError`` for NaN or
    ±Infinity, which JSON cannot hold.
    """
    text = json.dumps(doc, separators=(",", ":"), ensure_ascii=False, allow_nan=allow_nan)
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:
            return json.dumps(doc, separators=(",", ":"), allow_nan=allow_nan)
    return text


def dumps_strict(doc: Any) -> bytes:
    """Compact UTF-8 JSON bytes; ``ValueError`` for NaN or ±Infinity, which JSON cannot hold."""
    return dumps_text(doc).encode()


def dumps(doc: Any) -> bytes:
    """Compact UTF-8 JSON bytes (the shape the SDK reads back), for documents the engine built.

    The engine's documents are finite by construction (``to_dict`` replaces
    NaN in free-form bags). orjson would write a stray NaN as ``null``, so a
    document from elsewhere goes through ``dumps_strict`` first.
    """
    return dumps_exact(doc) or dumps_strict(doc)


def dumps_exact(doc: Any) -> bytes | None:
    """What ``dumps`` writes when orjson can write it, else ``None`` (an int beyond 64 bits, a lone surrogate).

    orjson reads back exactly what it wrote (every integer it writes is in its
    64-bit range), so these bytes may be read with ``loads_exact``.
    """
    if _orjson is None:
        return None
    try:
        return _orjson.dumps(doc)
    except TypeError:  # the standard library copes
        return None


def loads_exact(raw: bytes) -> Any:
    """Parse bytes ``dumps_exact`` wrote: without the scan for long integers that text from anywhere needs."""
    assert _orjson is not None  # dumps_exact wrote them
    return _orjson.loads(raw)


# 19 digits in a row may be an integer beyond 64 bits (below -2**63 already
# has 19), which orjson would read as a float; the standard library keeps it
# exact. (Digits in a string also count: that only costs the slower parser.)
# translate+find is ~15x faster than a regular expression here.
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_RUN = b"0" * 19


def _may_hold_a_long_integer(raw: bytes) -> bool:
    return raw.translate(_DIGITS_TO_ZERO).find(_LONG_RUN) >= 0


def loads(raw: bytes | str) -> Any:
    """Parse JSON text or UTF-8 bytes; raises ``ValueError`` (or ``UnicodeDecodeError``) when it is not JSON."""
    if _orjson is not None:
        try:
            data = raw if isinstance(raw, bytes) else raw.encode()
        except UnicodeEncodeError:  # a lone surrogate in text: only the standard library reads it
            data = None
        if data is not None and not _may_hold_a_long_integer(data):
            try:
                return _orjson.loads(data)
            except ValueError:  # maybe valid JSON orjson is stricter about: let the standard library judge
                pass
    try:
        return json.loads(raw)
    except RecursionError as exc:
        raise ValueError("JSON nested too deeply") from exc


def parse_document(key: str, raw: bytes | str | None) -> dict[str, Any] | None:
    """A stored value as a document: ``None`` for none, else a JSON object or ``CorruptDocumentError``.

    Every store reads its documents through this, so a corrupt value is
    reported the same way (with its raw text) whichever primary holds it.
    """
    if raw is None:
        return None
    try:
        doc = loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CorruptDocumentError(key, raw, f"invalid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise CorruptDocumentError(key, raw, f"not a JSON object but {type(doc).__name__}")
    return doc


def non_finite_paths(doc: Any, limit: int = 20) -> list[str]:
    """Where a parsed document holds NaN or ±Infinity (``first_seen_at``, ``metadata.score``, ``index[2]``).

    Python's json writes and reads those literals, so other writers store
    them; the console says where they are and how they read. Walks without
    recursion, so a deeply nested document cannot exhaust the stack.
    """
    found: list[str] = []
    stack: list[tuple[str, Any]] = [("", doc)]
    while stack and len(found) < limit:
        path, value = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            found.append(path or "(the document)")
        elif isinstance(value, dict):
            stack.extend((f"{path}.{k}" if path else str(k), v) for k, v in reversed(list(value.items())))
        elif isinstance(value, list):
            stack.extend((f"{path}[{i}]", v) for i, v in reversed(list(enumerate(value))))
    return found
