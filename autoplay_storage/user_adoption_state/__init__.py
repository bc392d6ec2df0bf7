"""Documents: the mutable user adoption state and the frozen session snapshot.

Pure Python, no I/O, no Django. ``to_dict`` writes the wire format of the
published ``autoplay_sdk`` 0.13; ``from_dict`` reads it defensively (spec
section 4): stored documents may be hand-edited, truncated or written by an
older writer, and reading must neither crash nor invent history. Unknown
top-level keys are kept and written back, so a newer writer's fields survive
a round trip through this engine.

Each field is declared once, with its reading rule (``fields``); the wire
methods of every document are generated from the declarations at import.
The modules: ``readers`` (one value, read defensively), ``rules`` (how a
field is read, written and copied), ``fields`` (the declarations and the
generator), ``parts`` (enums and nested documents), ``state``
(``UserAdoptionState``), ``snapshot`` (``SessionSnapshot``).
"""

from __future__ import annotations

from .fields import Layout, WireField, layout
from .parts import (
    SCHEMA_VERSION,
    SESSIONS_INDEX_LIMIT,
    CompletionRateDenominator,
    JourneyState,
    Mastery,
    MasteryLevel,
    OnboardingState,
    SessionIndexEntry,
    SessionsState,
    StepInAssessment,
    StepProgress,
    WorkflowProgress,
    WorkflowStatus,
)

# The readers, for code that reads single fields of a stored document the way
# the documents do (the database adapter's listing columns).
from .readers import (
    _FLOAT_MAX,
    _bool,
    _count,
    _dict,
    _enum,
    _extras,
    _is_number,
    _json_safe,
    _list,
    _now,
    _opt_str,
    _opt_ts,
    _stamp,
    _str,
    _str_list,
    _ts,
    _unit,
)
from .snapshot import SessionSnapshot, build_onboarding_summary_input
from .state import UserAdoptionState

__all__ = [
    "SCHEMA_VERSION",
    "SESSIONS_INDEX_LIMIT",
    "_FLOAT_MAX",
    "CompletionRateDenominator",
    "JourneyState",
    "Layout",
    "Mastery",
    "MasteryLevel",
    "OnboardingState",
    "SessionIndexEntry",
    "SessionSnapshot",
    "SessionsState",
    "StepInAssessment",
    "StepProgress",
    "UserAdoptionState",
    "WireField",
    "WorkflowProgress",
    "WorkflowStatus",
    "_bool",
    "_count",
    "_dict",
    "_enum",
    "_extras",
    "_is_number",
    "_json_safe",
    "_list",
    "_now",
    "_opt_str",
    "_opt_ts",
    "_stamp",
    "_str",
    "_str_list",
    "_ts",
    "_unit",
    "build_onboarding_summary_input",
    "layout",
]
