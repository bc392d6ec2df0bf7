"""The support tooling's service layer: staff edits, summary review, rebuilds, diffs of stored sessions.

Like ``summary_runs``, these are use cases over the per-process storage and
the ORM, for both interfaces: state changes go through
``services.patch_state`` (the API's ``PATCH``) and the primaries' atomic
operations, never a raw document write. The rules they apply are pure and
live in the engine (``autoplay_storage.diff``, ``autoplay_storage.state_ops``).
"""
