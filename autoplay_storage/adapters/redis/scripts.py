"""The server-side scripts (``scripts/*.lua``) and how their arguments are laid out."""

from __future__ import annotations

import hashlib
from importlib.resources import files
from typing import Any, NamedTuple

from .index import Command

STALE, WRITTEN, FROZEN, ERASED = 0, 1, 2, 3  # the first element of a compare-and-set reply


class Script(NamedTuple):
    """A Lua body and its SHA-1: EVALSHA first, EVAL when the server does not have it yet."""

    body: bytes
    sha: str


def _load(name: str) -> Script:
    body = files(__package__).joinpath("scripts", name).read_bytes()
    return Script(body, hashlib.sha1(body).hexdigest())


CAS = _load("cas.lua")


def cas_arguments(
    state_key: str,
    expected: bytes,
    writes: list[Command],
    *,
    freeze: str,
    read: str,
    guard: tuple[str, float] | None = None,
) -> list[Any]:
    """Everything after the script name: the key count, the keys, then ARGV as ``cas.lua`` reads it.

    ``expected`` is the very state bytes the writes were computed from (b''
    for none): sending them costs a memory copy on each side, hashing them
    cost more than the rest of the script's checks. ``guard``: the user's
    tombstone key and when the session started; the script writes nothing
    when the tombstone covers that session (``ERASED``).
    """
    # Each write names exactly one key, second: with the state, the frozen and the read key, all of them.
    tomb, started = guard or ("", 0.0)
    keys = list(
        dict.fromkeys(
            [
                state_key,
                *([freeze] if freeze else []),
                *([read] if read else []),
                *([tomb] if tomb else []),
                *[cmd[1] for cmd in writes],
            ]
        )
    )
    args: list[Any] = [len(keys), *keys, expected, freeze, read, tomb, repr(started)]
    for cmd in writes:
        args.append(len(cmd))
        args.extend(cmd)
    return args
