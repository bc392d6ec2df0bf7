"""Storage adapters, one per file; each imports its client library lazily.

- ``memory``: in-process dicts (tests, local scripts); no extra needed.
- ``redis``: the production primary; ``pip install "autoplay-storage[redis]"``.
- ``database``: the Django ORM (SQLite or PostgreSQL); needs the Django app.
- ``posthog`` / ``amplitude``: write-only sinks; ``pip install "autoplay-storage[analytics]"``.
"""
