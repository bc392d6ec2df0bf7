"""The product page's charts as inline SVG rendered on the server (classes only: the CSP forbids inline styles)."""

from __future__ import annotations

import datetime as dt

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from autoplay_storage.selectors import DAY_S
from autoplay_storage.user_adoption_state import MasteryLevel

WIDTH, HEIGHT = 760, 200
LEFT, RIGHT, TOP, BOTTOM = 44, 12, 12, 28
LEVELS = [m.value for m in MasteryLevel]


def _date(day: int) -> str:
    return dt.datetime.fromtimestamp(day * DAY_S, tz=dt.UTC).strftime("%b %d")


def _frame(label: str, top_value: float, unit: str) -> list[str]:
    parts = [
        f'<svg class="chart insight" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(label)}" '
        'xmlns="http://www.w3.org/2000/svg">'
    ]
    for tick in range(5):
        y = TOP + (HEIGHT - TOP - BOTTOM) * (1 - tick / 4)
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>')
        value = top_value * tick / 4
        parts.append(f'<text class="axis" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{value:.0f}{unit}</text>')
    return parts


def sessions_per_day_chart(per_day: dict[int, int], today: int, days: int = 90) -> SafeString:
    """Sessions ended per day (UTC) over the last ``days`` days, one bar a day."""
    span = range(today - days + 1, today + 1)
    values = [per_day.get(d, 0) for d in span]
    top = max(values) or 1
    parts = _frame(f"Sessions per day, last {days} days: {sum(values)} in all", top, "")
    width = (WIDTH - LEFT - RIGHT) / days
    height = HEIGHT - TOP - BOTTOM
    for i, (day, n) in enumerate(zip(span, values, strict=True)):
        if not n:
            continue
        h = height * n / top
        x, y = LEFT + i * width, TOP + height - h
        parts.append(
            f'<rect class="bar sessions" x="{x:.1f}" y="{y:.1f}" width="{max(width - 1, 1):.1f}" height="{h:.1f}">'
            f"<title>{_date(day)}: {n} session{'s' if n != 1 else ''}</title></rect>"
        )
    parts.append(f'<text class="axis" x="{LEFT}" y="{HEIGHT - 8}">{_date(span[0])}</text>')
    parts.append(f'<text class="axis" x="{WIDTH - RIGHT}" y="{HEIGHT - 8}" text-anchor="end">{_date(today)}</text>')
    parts.append("</svg>")
    return mark_safe("".join(parts))


def mastery_per_week_chart(per_week: dict[int, dict[str, int]], weeks: list[int]) -> SafeString:
    """Sessions ended each week by the mastery level at capture, as shares of the week (stacked to 100%)."""
    parts = _frame(f"Mastery at session end per week, {len(weeks)} weeks", 100, "%")
    if weeks:
        width = (WIDTH - LEFT - RIGHT) / len(weeks)
        height = HEIGHT - TOP - BOTTOM
        for i, week in enumerate(weeks):
            levels = per_week.get(week, {})
            total = sum(levels.values())
            y = TOP + height
            for level in LEVELS:
                n = levels.get(level, 0)
                if not total or not n:
                    continue
                h = height * n / total
                y -= h
                tip = f"week of {_date(week * 7 - 3)}: {level.replace('_', ' ')} {n} of {total}"
                parts.append(
                    f'<rect class="bar level-{level}" x="{LEFT + i * width + 1:.1f}" y="{y:.1f}" '
                    f'width="{max(width - 2, 1):.1f}" height="{h:.1f}"><title>{escape(tip)}</title></rect>'
                )
        first, last = _date(weeks[0] * 7 - 3), _date(weeks[-1] * 7 - 3)
        parts.append(f'<text class="axis" x="{LEFT}" y="{HEIGHT - 8}">{first}</text>')
        parts.append(f'<text class="axis" x="{WIDTH - RIGHT}" y="{HEIGHT - 8}" text-anchor="end">{last}</text>')
    parts.append("</svg>")
    return mark_safe("".join(parts))
