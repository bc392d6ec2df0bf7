"""Strict JSON bodies: what could not be stored safely is refused up front.

Python's ``json`` accepts ``NaN``/``Infinity``, reads ``1e999`` as infinity
and lets lone surrogate escapes through; all parse fine and then fail (or
corrupt the document for other readers) when the state is written back, so
they are a 400 here. Nesting is bounded so deep-copying a metadata bag cannot
exhaust the stack.
"""

from __future__ import annotations

import json
import math
from typing import Any, NoReturn

from django.http import HttpRequest
from ninja.parser import Parser

from .errors import BodyError

MAX_DEPTH = 32


def _reject_constant(name: str) -> NoReturn:
    raise BodyError("malformed_body", f"{name} is not valid JSON; send finite numbers only")


def _finite(text: str) -> float:
    """``1e999`` is valid JSON but parses to infinity, which no JSON writer can write back."""
    value = float(text)
    if math.isinf(value):
        raise BodyError("malformed_body", f"{text} is out of range for a number")
    return value


def _check(value: Any) -> None:
    """Depth and text checks in one iterative walk (bodies are small: a state or a snapshot)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            if depth > MAX_DEPTH:
                raise BodyError("body_too_deep", f"the body nests deeper than {MAX_DEPTH} levels")
            for key, child in item.items():
                _check_text(key)
                stack.append((child, depth + 1))
        elif isinstance(item, list):
            if depth > MAX_DEPTH:
                raise BodyError("body_too_deep", f"the body nests deeper than {MAX_DEPTH} levels")
            stack.extend((child, depth + 1) for child in item)
        elif isinstance(item, str):
            _check_text(item)


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BodyError("malformed_body", "the body contains a lone surrogate (\\ud800-\\udfff) in a string") from exc


class StrictJsonParser(Parser):
    def parse_body(self, request: HttpRequest) -> dict[str, Any]:
        try:
            text = request.body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BodyError("malformed_body", "the body is not UTF-8") from exc
        try:
            data = json.loads(text, parse_constant=_reject_constant, parse_float=_finite)
        except json.JSONDecodeError as exc:
            where = f"line {exc.lineno} column {exc.colno}"
            raise BodyError("malformed_body", f"the body is not valid JSON: {exc.msg} at {where}") from exc
        except RecursionError as exc:
            raise BodyError("body_too_deep", f"the body nests deeper than {MAX_DEPTH} levels") from exc
        if not isinstance(data, dict):
            raise BodyError("malformed_body", "the body must be a JSON object")
        _check(data)
        return data
