"""Ids that a URL path cannot carry, for every layer to agree on.

A path segment made only of dots is a *dot segment*: browsers, HTTP clients
and proxies remove ``.`` and resolve ``..`` before a request leaves them
(RFC 3986 section 5.2.4; the WHATWG URL standard also treats ``%2e`` as a
dot), so ``/users/../state`` never reaches the server as sent. The rule is
"at least one character that is not a dot": simple to state, and it leaves
nothing for any normaliser to rewrite.

The engine itself never refuses such an id: another writer (the published
SDK) may have stored one, and it must stay readable and copyable. The API
refuses to create them, the console still opens the ones stored (through an
encoding no normaliser touches), and ``autoplay_reindex`` lists them.
"""

from __future__ import annotations


def is_dots_only(value: str) -> bool:
    """``"."``, ``".."``, ``"..."``: an id no URL path can address as it is."""
    return bool(value) and not value.strip(".")
