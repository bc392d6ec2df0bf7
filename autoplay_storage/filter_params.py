"""A segment's filter from a query string (the console's list URL, the API's query), with what is wrong with it."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from typing import Any

from .facts import META_KEY_MAX, META_VALUE_MAX, UserFilter
from .user_adoption_state import JourneyState, MasteryLevel

ORDERS = ("-last_activity", "last_activity")
WORKFLOW_STATUSES = ("in_progress", "completed", "untouched")
PARAMS = (
    "journey",
    "mastery",
    "onboarded",
    "workflow",
    "status",
    "active_after",
    "active_before",
    "first_seen_after",
    "first_seen_before",
    "sessions_min",
    "sessions_max",
    "meta_key",
    "meta_value",
    "order",
)
_ONBOARDED = {"yes": True, "true": True, "no": False, "false": False}


def _time(name: str, value: str, problems: list[str]) -> float | None:
    """Unix seconds, or a date (``2026-11-30``, UTC midnight)."""
    if not value:
        return None
    try:
        t = float(value)
    except ValueError:
        try:
            day = dt.date.fromisoformat(value)
        except ValueError:
            problems.append(f"{name} must be unix seconds or a date like 2026-11-30, not {value!r}.")
            return None
        return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()
    if not math.isfinite(t):
        problems.append(f"{name} must be a finite number of seconds.")
        return None
    return t


def _count(name: str, value: str, problems: list[str]) -> int | None:
    if not value:
        return None
    if not value.isdigit() or len(value) > 9:
        problems.append(f"{name} must be a whole number of sessions (0 or more), not {value!r}.")
        return None
    return int(value)


def parse_filter(params: Mapping[str, Any]) -> tuple[UserFilter, list[str]]:
    """The filter the query string names, and a message per bad value (answer 400 with them)."""
    problems: list[str] = []

    def get(name: str) -> str:
        value = params.get(name, "")
        return value.strip() if isinstance(value, str) else ""

    journey = get("journey")
    if journey and journey not in JourneyState._value2member_map_:
        problems.append(f"Unknown journey state {journey!r}: use one of {', '.join(JourneyState)}.")
        journey = ""
    levels = tuple(dict.fromkeys(m.strip() for m in get("mastery").split(",") if m.strip()))
    unknown = [m for m in levels if m not in MasteryLevel._value2member_map_]
    if unknown:
        problems.append(f"Unknown mastery level {unknown[0]!r}: use one or more of {', '.join(MasteryLevel)}.")
        levels = ()
    onboarded = get("onboarded").lower()
    if onboarded and onboarded not in _ONBOARDED:
        problems.append(f"Unknown onboarding filter {onboarded!r}: use yes or no.")
        onboarded = ""
    workflow, status = get("workflow"), get("status")
    if status and status not in WORKFLOW_STATUSES:
        problems.append(f"Unknown workflow status {status!r}: use one of {', '.join(WORKFLOW_STATUSES)}.")
        status = ""
    if status and not workflow:
        problems.append("A workflow status needs the workflow it is about (workflow=...).")
    if len(workflow) > 128:
        problems.append("The workflow id is longer than 128 characters.")
        workflow = ""
    meta_key, meta_value = get("meta_key"), get("meta_value")
    if len(meta_key) > META_KEY_MAX or len(meta_value) > META_VALUE_MAX:
        problems.append(
            f"Metadata filters take a key of at most {META_KEY_MAX} and a value of at most {META_VALUE_MAX} characters."
        )
        meta_key = meta_value = ""
    if meta_value and not meta_key:
        problems.append("A metadata value needs the key it belongs to (meta_key=...).")
    order = get("order") or "-last_activity"
    if order not in ORDERS:
        problems.append(f"Unknown sort {order!r}: use last_activity or -last_activity.")
        order = "-last_activity"
    f = UserFilter(
        journey_state=journey or None,
        mastery_levels=levels,
        onboarded=_ONBOARDED.get(onboarded),
        workflow_id=workflow or None,
        workflow_status=(status or "in_progress") if workflow else None,  # type: ignore[arg-type]
        active_after=_time("active_after", get("active_after"), problems),
        active_before=_time("active_before", get("active_before"), problems),
        first_seen_after=_time("first_seen_after", get("first_seen_after"), problems),
        first_seen_before=_time("first_seen_before", get("first_seen_before"), problems),
        sessions_min=_count("sessions_min", get("sessions_min"), problems),
        sessions_max=_count("sessions_max", get("sessions_max"), problems),
        meta_key=meta_key or None,
        meta_value=meta_value if meta_key else None,
        order=order,  # type: ignore[arg-type]
    )
    return f, problems
