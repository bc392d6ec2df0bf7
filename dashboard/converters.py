"""URL converter for product, user and session ids, which may contain any character.

Django's ``str`` converter cannot carry a ``/`` and reversing an id with one
fails (a 500 on a list page). Escaping ``%`` and ``/`` here keeps every id
reachable; ``reverse`` quotes the result once more, the server decodes the
path once and ``to_python`` decodes the rest.

An id made only of dots (``.``, ``..``) would be a dot segment, which the
browser removes or resolves before sending the request; its dots are written
``%2E`` here (``%252E`` in the link), which no URL normaliser rewrites. The
API refuses to create such ids, but another writer may have stored one, and
the console must still open it.
"""

from __future__ import annotations

from urllib.parse import unquote

from autoplay_storage.ids import is_dots_only


class IdentifierConverter:
    regex = "[^/]+"

    def to_python(self, value: str) -> str:
        return unquote(value)

    def to_url(self, value: str) -> str:
        if not value:
            raise ValueError("an identifier cannot be empty")
        if is_dots_only(value):
            return value.replace(".", "%2E")
        return value.replace("%", "%25").replace("/", "%2F")
