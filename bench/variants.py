"""A backend of ``bench/engine.py`` with one part switched off: the cost of that part, side by side."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any


def variant(
    factories: dict[str, Any],
    base: str,
    name: str,
    context: Callable[[], contextlib.AbstractContextManager[Any]],
    lifecycle: Any,
    *,
    args_update: dict[str, Any] | None = None,
    note: str = "",
) -> Any:
    """The factory of backend ``base`` renamed ``name``, each of its lifecycles run inside ``context()``.

    ``args_update``: options changed for this backend only (a database copy of its own, say).
    """

    @contextlib.asynccontextmanager
    async def factory(args: argparse.Namespace) -> AsyncIterator[Any]:
        if args_update:
            args = argparse.Namespace(**{**vars(args), **args_update})
        async with factories[base](args) as b:
            inner = b.lifecycle or lifecycle

            async def run(*call: Any) -> None:
                with context():
                    await inner(*call)

            b.name, b.lifecycle = name, run
            if note:
                b.notes.append(note)
            yield b

    return factory
