"""The site's wall-clock calendar for the control core (`[site]`, design.md section 8).

The core runs in UTC epoch seconds and knows no time zones. Local time enters here, with the
standard library's `zoneinfo`: for the days ahead, the UTC offsets of `timezone` (every DST
change, found to the second) and each `[[site.window]]` as UTC intervals. The core aligns the
demand windows to the local clock with the offsets and looks the time-of-use windows up in the
list. The gateway hands a fresh calendar over at start, every hour and after a wall-clock step
(gateway.py), so a calendar in the core always covers at least `DAYS_AHEAD - 1` days.

Window edges at a DST change: a local time that does not exist (the hour skipped in spring) is
taken with the offset before the change, i.e. the edge falls when the clock jumps; a local time
that exists twice (the hour repeated in autumn) is its first occurrence.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from bess_gateway.config import SiteConfig

__all__ = ["DAYS_AHEAD", "calendar", "offsets"]

DAYS_AHEAD = 3
_STEP_S = 3600.0  # offsets are sampled hourly, then every change is bisected to the second


def offsets(tz: ZoneInfo, start_s: float, end_s: float) -> list[tuple[float, float]]:
    """[(utc_from_s, offset_s)]: the offset at `start_s`, then one entry per change up to
    `end_s`, each at the first second the new offset holds."""

    def off(t: float) -> float:
        d = datetime.fromtimestamp(t, tz).utcoffset()
        return 0.0 if d is None else d.total_seconds()

    out = [(math.floor(start_s), off(start_s))]
    t = start_s
    while t < end_s:
        nxt = min(t + _STEP_S, end_s)
        if off(nxt) != out[-1][1]:
            lo, hi = math.floor(t), math.ceil(nxt)
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if off(mid) == out[-1][1]:
                    lo = mid
                else:
                    hi = mid
            out.append((float(hi), off(hi)))
        t = nxt
    return out


def _local(day: date, hhmm: str, tz: ZoneInfo) -> float:
    if hhmm == "24:00":
        return datetime.combine(day + timedelta(days=1), time(0, 0), tz).timestamp()
    h, m = (int(x) for x in hhmm.split(":"))
    return datetime.combine(day, time(h, m), tz).timestamp()


def calendar(site: SiteConfig, now_s: float,
             days: int = DAYS_AHEAD) -> tuple[list[tuple[float, float]],
                                              list[tuple[float, float, str, float]]]:
    """(offsets, windows) for the core's `set_site_calendar`, from a day before `now_s` to
    `days` after it. Windows are (start_s, end_s, mode, power_w), sorted by start."""
    tz = ZoneInfo(site.timezone)
    start = now_s - 86400.0
    end = now_s + days * 86400.0
    today = datetime.fromtimestamp(now_s, tz).date()
    windows: list[tuple[float, float, str, float]] = []
    for k in range(-1, days + 1):
        day = today + timedelta(days=k)
        for w in site.window:
            if day.weekday() not in w.weekdays:
                continue
            a = _local(day, w.start, tz)
            # An end at or before the start is on the next day (an overnight window).
            end_day = day if w.end > w.start or w.end == "24:00" else day + timedelta(days=1)
            b = _local(end_day, w.end, tz)
            if b > a and b > start and a < end:
                windows.append((a, b, w.mode, w.power_kw * 1000.0))
    windows.sort()
    return offsets(tz, start, end), windows


def utc_now() -> float:
    return datetime.now(UTC).timestamp()
