"""Small formatting helpers for the console's templates: dates, durations, rates, labels."""

from __future__ import annotations

import datetime as dt
import math

from django import template
from django.contrib.humanize.templatetags.humanize import naturaltime
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import mark_safe

register = template.Library()


def to_datetime(value: object) -> dt.datetime | None:
    """Unix seconds (the documents' clock) or a datetime (ORM rows) as an aware datetime."""
    if isinstance(value, dt.datetime):
        return value if timezone.is_aware(value) else timezone.make_aware(value, dt.UTC)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0:
        try:
            return dt.datetime.fromtimestamp(value, tz=dt.UTC)
        except (OverflowError, OSError, ValueError):
            return None
    return None


@register.filter
def when(value: object) -> str:
    """A human date ("3 hours ago") with the exact UTC timestamp on hover."""
    moment = to_datetime(value)
    if moment is None:
        return mark_safe('<span class="muted">—</span>')
    exact = moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return format_html('<time datetime="{}" title="{}">{}</time>', moment.isoformat(), exact, naturaltime(moment))


@register.filter
def exact(value: object) -> str:
    moment = to_datetime(value)
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "—"


@register.filter
def duration(seconds: object) -> str:
    """``754.2`` → ``12 min 34 s``."""
    if not isinstance(seconds, (int, float)) or not math.isfinite(seconds) or seconds < 0:
        return "—"
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{secs} s"


@register.filter
def pct(rate: object) -> str:
    """``0.4567`` → ``46%``."""
    if not isinstance(rate, (int, float)) or not math.isfinite(rate):
        return "—"
    return f"{round(rate * 100)}%"


@register.filter
def label(value: object) -> str:
    """``power_user`` → ``power user``."""
    return str(value).replace("_", " ")


@register.filter
def bar(count: float, total: float) -> str:
    """The width class (``w-0`` .. ``w-100``, whole percent) of one part of a bar.

    A class, not a ``style`` attribute: the Content-Security-Policy allows no inline style.
    """
    percent = round(100.0 * count / total) if total else 0
    return f"w-{min(100, max(0, percent))}"


@register.filter
def get(mapping: object, key: str) -> object:
    return mapping.get(key, 0) if isinstance(mapping, dict) else None


@register.filter
def split(value: str) -> list[str]:
    """Words of a literal, to loop over in a template."""
    return str(value).split()


@register.filter
def share(count: float, total: float) -> str:
    """``count`` as a whole percentage of ``total`` ('0%' of nothing)."""
    return f"{round(100 * count / total) if total else 0}%"
