"""Cron schedules, as Kubernetes' cron library (robfig/cron) reads them.

Shared by the CronJob controller and the supervisor's scheduled snapshots
(K3s's ``--etcd-snapshot-schedule-cron``). A schedule is the five cron fields (minute, hour,
day of month, month, day of week) with ``*``, ``?``, lists, ranges, steps, month and weekday
names, and the ``@hourly``-style descriptors: when both day fields are restricted, a day
matching either runs; ``*/n`` is a step, not a wildcard. Times are computed in a time zone (an
IANA name; else a ``CRON_TZ=``/``TZ=`` prefix; else UTC), minute by minute over wall-clock
time, so a daylight-saving gap is skipped and a repeated hour runs once.
"""

from __future__ import annotations

import calendar
import dataclasses
import datetime
import zoneinfo

SEARCH_DAYS = 366 * 5  # how far a schedule is searched (Feb 29 on a Monday needs up to 28 years...)

DESCRIPTORS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
MONTHS = {name.upper(): i for i, name in enumerate(calendar.month_abbr) if name}
WEEKDAYS = {"SUN": 0, "MON": 1, "TUE": 2, "WED": 3, "THU": 4, "FRI": 5, "SAT": 6}
_FIELDS = (("minute", 0, 59, {}), ("hour", 0, 23, {}), ("day of month", 1, 31, {}),
           ("month", 1, 12, MONTHS), ("day of week", 0, 6, WEEKDAYS))  # fmt: skip


class ScheduleError(ValueError):
    """A schedule or time zone Kubernetes would not accept."""


@dataclasses.dataclass(frozen=True)
class Schedule:
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    any_day: bool  # day of month was * or ?
    any_weekday: bool
    tz: datetime.tzinfo

    def day_matches(self, day: datetime.date) -> bool:
        if day.month not in self.months:
            return False
        dom = day.day in self.days
        dow = (day.weekday() + 1) % 7 in self.weekdays
        if self.any_day or self.any_weekday:
            return dom and dow
        return dom or dow

    def next(self, after: datetime.datetime) -> datetime.datetime | None:
        """The first scheduled time strictly after ``after`` (aware), or None within 5 years."""
        local = after.astimezone(self.tz).replace(tzinfo=None, second=0, microsecond=0)
        day, first = local.date(), True
        for _ in range(SEARCH_DAYS):
            if self.day_matches(day):
                for hour in self.hours:
                    if first and hour < local.hour:
                        continue
                    for minute in self.minutes:
                        if first and hour == local.hour and minute < local.minute:
                            continue
                        moment = self._aware(datetime.datetime.combine(day, datetime.time(hour, minute)))
                        if moment is not None and moment > after:
                            return moment
            day, first = day + datetime.timedelta(days=1), False
        return None

    def previous(self, at: datetime.datetime) -> datetime.datetime | None:
        """The last scheduled time at or before ``at``, or None within 5 years."""
        local = at.astimezone(self.tz).replace(tzinfo=None, second=0, microsecond=0)
        day, first = local.date(), True
        for _ in range(SEARCH_DAYS):
            if self.day_matches(day):
                for hour in reversed(self.hours):
                    if first and hour > local.hour:
                        continue
                    for minute in reversed(self.minutes):
                        if first and hour == local.hour and minute > local.minute:
                            continue
                        moment = self._aware(datetime.datetime.combine(day, datetime.time(hour, minute)))
                        if moment is not None and moment <= at:
                            return moment
            day, first = day - datetime.timedelta(days=1), False
        return None

    def _aware(self, naive: datetime.datetime) -> datetime.datetime | None:
        """The wall-clock time in the schedule's zone; None if a DST gap skips it."""
        moment = naive.replace(tzinfo=self.tz)
        if moment.astimezone(datetime.UTC).astimezone(self.tz).replace(tzinfo=None) != naive:
            return None
        return moment


def parse_schedule(text: str, time_zone: str | None = None) -> Schedule:
    """A ``Schedule`` from a cron line; ``time_zone`` (``spec.timeZone``) wins over a prefix."""
    text = text.strip()
    zone_name = time_zone
    if text.startswith(("TZ=", "CRON_TZ=")):
        prefix, _, text = text.partition(" ")
        zone_name = zone_name or prefix.split("=", 1)[1]
        text = text.strip()
    tz = zone(zone_name)
    if text.startswith("@"):
        if text not in DESCRIPTORS:
            raise ScheduleError(f"unrecognized descriptor: {text}")
        text = DESCRIPTORS[text]
    parts = text.split()
    if len(parts) != 5:
        raise ScheduleError(f"expected exactly 5 fields, found {len(parts)}: [{text}]")
    sets = [_parse_field(part, *spec) for part, spec in zip(parts, _FIELDS, strict=True)]
    return Schedule(
        minutes=tuple(sorted(sets[0][0])),
        hours=tuple(sorted(sets[1][0])),
        days=frozenset(sets[2][0]),
        months=frozenset(sets[3][0]),
        weekdays=frozenset(sets[4][0]),
        any_day=sets[2][1],
        any_weekday=sets[4][1],
        tz=tz,
    )


def zone(name: str | None) -> datetime.tzinfo:
    if not name or name == "UTC":
        return datetime.UTC
    if name == "Local":
        raise ScheduleError("unknown time zone Local")  # rejected by the API as well
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ScheduleError(f"unknown time zone {name}") from exc


def _parse_field(text: str, what: str, low: int, high: int, names: dict[str, int]) -> tuple[set[int], bool]:
    """The values one field allows, and whether it was a bare ``*``/``?``."""
    weekday = what == "day of week"
    values: set[int] = set()
    star = False
    for part in text.split(","):
        span, _, step_text = part.partition("/")
        step = _number(step_text, what, {}) if step_text else 1
        if step < 1:
            raise ScheduleError(f"step of range should be a positive number: {part}")
        if span in ("*", "?"):
            first, last = low, high
            star = star or step == 1
        else:
            a, dash, b = span.partition("-")
            first = _number(a, what, names)
            last = _number(b, what, names) if dash else (high if step_text else first)
        top = high + 1 if weekday else high  # 7 is Sunday too, as in classic cron
        if not low <= first <= last <= top:
            raise ScheduleError(f"{what}: {part} is beyond the range {low}-{high}")
        values.update(v % 7 if weekday else v for v in range(first, last + 1, step))
    return values, star


def _number(text: str, what: str, names: dict[str, int]) -> int:
    if text.upper() in names:
        return names[text.upper()]
    if not text.isdigit():
        raise ScheduleError(f"failed to parse int from {text}: invalid {what}")
    return int(text)
