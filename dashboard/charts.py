"""Inline SVG charts rendered on the server: no JavaScript, works offline and in print."""

from __future__ import annotations

from collections.abc import Sequence

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from autoplay_storage.browse import SessionSummary

WIDTH, HEIGHT = 760, 220
LEFT, RIGHT, TOP, BOTTOM = 44, 44, 16, 30


def _x(i: int, n: int) -> float:
    span = WIDTH - LEFT - RIGHT
    return LEFT + (span / 2 if n == 1 else span * i / (n - 1))


def _y(fraction: float) -> float:
    return TOP + (HEIGHT - TOP - BOTTOM) * (1.0 - fraction)


def session_chart(sessions: Sequence[SessionSummary]) -> SafeString:
    """Completion rate (left axis, %) and mastery rating (right axis, 0-10) per session, oldest first."""
    rows = [s for s in sessions if not s.corrupt]
    n = len(rows)
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="Completion rate and mastery rating across {n} sessions" xmlns="http://www.w3.org/2000/svg">'
    ]
    for tick in range(0, 5):
        frac = tick / 4
        y = _y(frac)
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(f'<text class="axis rate" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{tick * 25}%</text>')
        parts.append(
            f'<text class="axis mastery" x="{WIDTH - RIGHT + 6}" y="{y + 4:.1f}">{frac * 10:g}</text>'
        )
    if n:
        rate_pts = [(_x(i, n), _y(s.completion_rate)) for i, s in enumerate(rows)]
        mastery_pts = [(_x(i, n), _y(s.mastery_rating / 10)) for i, s in enumerate(rows)]
        for cls, pts in (("rate", rate_pts), ("mastery", mastery_pts)):
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
            parts.append(f'<polyline class="line {cls}" points="{path}"/>')
        dotted = rows if n <= 120 else []  # beyond that the dots are noise; the lines carry the trend
        for i, s in enumerate(dotted):
            tip = escape(
                f"Session {s.session_number} ({s.session_id}): completion {round(s.completion_rate * 100)}%, "
                f"mastery {s.mastery_rating}/10 {s.mastery_level.replace('_', ' ')}"
            )
            for cls, (x, y) in (("rate", rate_pts[i]), ("mastery", mastery_pts[i])):
                parts.append(
                    f'<circle class="dot {cls}" cx="{x:.1f}" cy="{y:.1f}" r="3.5"><title>{tip}</title></circle>'
                )
        first, last = rows[0].session_number, rows[-1].session_number
        parts.append(f'<text class="axis" x="{LEFT}" y="{HEIGHT - 8}">session {first}</text>')
        if n > 1:
            parts.append(
                f'<text class="axis" x="{WIDTH - RIGHT}" y="{HEIGHT - 8}" text-anchor="end">session {last}</text>'
            )
    parts.append("</svg>")
    return mark_safe("".join(parts))
