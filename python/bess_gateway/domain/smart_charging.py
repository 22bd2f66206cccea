"""Smart charging, version-agnostic: charging profiles, their rules, and the composite schedule.

OCPP 1.6 (SetChargingProfile, ...) and 2.0.1 both translate into these types; nothing here knows
a message. Time is a parameter everywhere (`now`, the transaction start), so every rule is a pure
function that tests drive with any clock.

BESS meaning: a profile on connector 1 caps the discharge session, on connector 2 the charge
session; a ChargePointMaxProfile (connector 0) caps the whole endpoint, discharge and charge power
counted together (the control core's group cap). All limits are handed to the core in W.

Rules (OCPP 1.6 section 3.13, the same in 2.0.1 K01-K08):
- Purposes: ChargePointMaxProfile (connector 0 only), TxDefaultProfile (connector 0 = every
  connector, or one connector), TxProfile (a connector with a running transaction only).
- Within a purpose the highest stack level that has a period in force at a time wins; a higher
  level with no period at that time (not valid yet, expired, past its duration, before its start)
  lets the next level through. At equal stack level a connector's own TxDefaultProfile beats one
  on connector 0.
- A TxProfile overrules the TxDefaultProfiles wherever it has a period; the session's limit is
  that result, and the endpoint's limit is the ChargePointMaxProfile's.
- Installing replaces a profile with the same id, and (1.6) one with the same purpose, stack
  level and connector. 2.0.1 (`LIMITS_201`) replaces by id only and refuses a profile competing
  with an installed one at its level (`ProfileSet.conflicts`). TxProfiles end with their
  transaction.
- Kinds: Absolute (from startSchedule; without one, from when it was installed), Recurring (Daily
  or Weekly, anchored at startSchedule, repeating before and after it; a duration longer than the
  recurrence is cut to it), Relative (from the transaction start; with no transaction, from when
  it was installed: OCPP 1.6 leaves the start point of a Relative schedule to the station, "such
  as the start of a Transaction", and one that runs from its installation limits power on a
  clock that advances, like an Absolute profile without startSchedule. A 1.6 ChargePointMaxProfile
  may so be Relative; 2.0.1 forbids it for the ChargingStationMaxProfile).
- A duration of 0 is a schedule of no length: it never limits. No duration: the last period runs
  until validTo.
- A: W = A x phase voltage x numberPhases (default 3), with the phase voltage a station setting.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

DEFAULT_PHASES = 3
HORIZON = timedelta(hours=24)  # how far ahead the core gets a schedule
REFRESH = timedelta(hours=12)  # a new one is handed over well before the horizon runs out
# A composite schedule covers at most this long (a longer request is answered for this long, and
# says so in its duration): it bounds the work of one request to a few thousand boundaries.
COMPOSITE_MAX = timedelta(days=7)
UNLIMITED_W = 1e9  # "no profile limits": a finite number the core accepts, far above any cap
DAY_S = 86_400
WEEK_S = 7 * DAY_S


class Purpose(StrEnum):
    CHARGE_POINT_MAX = "ChargePointMaxProfile"
    TX_DEFAULT = "TxDefaultProfile"
    TX = "TxProfile"


class Kind(StrEnum):
    ABSOLUTE = "Absolute"
    RECURRING = "Recurring"
    RELATIVE = "Relative"
    DYNAMIC = "Dynamic"  # 2.1 K28: one period whose values the CSMS updates (bess_gateway.ocpp.v21)


class Recurrency(StrEnum):
    DAILY = "Daily"
    WEEKLY = "Weekly"


class RateUnit(StrEnum):
    W = "W"
    A = "A"


class ProfileError(ValueError):
    """A profile the station refuses (the version layer answers Rejected).

    `reason` is the 2.0.1 statusInfo reasonCode the refusal maps to (1.6 has no place for it).
    """

    def __init__(self, msg: str, reason: str = "InvalidValue") -> None:
        super().__init__(msg)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Period:
    start_s: int  # offset from the schedule's start
    limit: float  # in the schedule's unit (2.1 may omit it: UNLIMITED_W)
    phases: int | None = None
    # 2.1 V2X (bess_gateway.ocpp.v21.v2x); None: not given (1.6 and 2.0.1 never give them).
    operation_mode: str | None = None
    setpoint: float | None = None  # 2.1 sign: + charges the battery, - discharges it
    discharge_limit: float | None = None  # <= 0, in the schedule's unit

    @property
    def v2x(self) -> dict[str, Any]:
        """The 2.1 fields that are set, as stored (to_dict) and reported back."""
        out: dict[str, Any] = {}
        for key, value in (("operationMode", self.operation_mode), ("setpoint", self.setpoint),
                           ("dischargeLimit", self.discharge_limit)):
            if value is not None:
                out[key] = value
        return out


@dataclass(frozen=True, slots=True)
class Schedule:
    unit: RateUnit
    periods: tuple[Period, ...]
    duration_s: int | None = None
    start: datetime | None = None
    min_rate: float | None = None
    schedule_id: int | None = None  # 2.0.1 names its schedules (reported back as given)


@dataclass(frozen=True, slots=True)
class ChargingProfile:
    profile_id: int
    connector: int  # 0 = the whole endpoint
    stack_level: int
    purpose: Purpose
    kind: Kind
    schedule: Schedule
    recurrency: Recurrency | None = None
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    transaction_id: str | None = None  # a TxProfile's transaction, when the CSMS named it
    # 2.1 (K28 dynamic profiles, Q11/Q12 offline validity); None: not given.
    dyn_update_interval_s: int | None = None
    dyn_update_time: datetime | None = None
    max_offline_s: int | None = None
    invalid_after_offline: bool | None = None

    # -- persistence (the journal stores this, so both versions read the same rows) ----------
    def to_dict(self) -> dict[str, Any]:
        s = self.schedule
        return {
            "id": self.profile_id, "connector": self.connector, "stack": self.stack_level,
            "purpose": str(self.purpose), "kind": str(self.kind),
            "recurrency": None if self.recurrency is None else str(self.recurrency),
            "valid_from": _iso(self.valid_from), "valid_to": _iso(self.valid_to),
            "transaction_id": self.transaction_id,
            "unit": str(s.unit), "duration": s.duration_s, "start": _iso(s.start),
            "min_rate": s.min_rate, "schedule_id": s.schedule_id,
            "periods": [[p.start_s, p.limit, p.phases] + ([p.v2x] if p.v2x else [])
                        for p in s.periods],
            **({"v21": v21} if (v21 := self._v21()) else {}),
        }

    def _v21(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in (("dyn_update_interval", self.dyn_update_interval_s),
                           ("dyn_update_time", _iso(self.dyn_update_time)),
                           ("max_offline", self.max_offline_s),
                           ("invalid_after_offline", self.invalid_after_offline)):
            if value is not None:
                out[key] = value
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ChargingProfile:
        return cls(
            profile_id=int(d["id"]), connector=int(d["connector"]), stack_level=int(d["stack"]),
            purpose=Purpose(d["purpose"]), kind=Kind(d["kind"]),
            recurrency=None if d.get("recurrency") is None else Recurrency(d["recurrency"]),
            valid_from=_parse(d.get("valid_from")), valid_to=_parse(d.get("valid_to")),
            transaction_id=d.get("transaction_id"),
            dyn_update_interval_s=(d.get("v21") or {}).get("dyn_update_interval"),
            dyn_update_time=_parse((d.get("v21") or {}).get("dyn_update_time")),
            max_offline_s=(d.get("v21") or {}).get("max_offline"),
            invalid_after_offline=(d.get("v21") or {}).get("invalid_after_offline"),
            schedule=Schedule(
                unit=RateUnit(d["unit"]), duration_s=d.get("duration"),
                start=_parse(d.get("start")), min_rate=d.get("min_rate"),
                schedule_id=d.get("schedule_id"),
                periods=tuple(_period(row) for row in d["periods"]),
            ),
        )


def _period(row: list[Any]) -> Period:
    a, b, c = row[:3]
    x = row[3] if len(row) > 3 else {}
    return Period(int(a), float(b), None if c is None else int(c),
                  operation_mode=x.get("operationMode"), setpoint=x.get("setpoint"),
                  discharge_limit=x.get("dischargeLimit"))


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.isoformat()


def _parse(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


@dataclass(frozen=True, slots=True)
class Limits:
    """What a station accepts (1.6: the ChargeProfileMaxStackLevel, ... keys)."""

    max_stack_level: int = 10
    max_periods: int = 48
    max_installed: int = 20
    units: tuple[RateUnit, ...] = (RateUnit.W, RateUnit.A)
    # 1.6 (section 3.13): a profile with the same purpose, stack level and connector replaces the
    # installed one. 2.0.1 (K01.FR.05/06/39/52/53) replaces by id only and refuses a profile
    # that would compete at the same level (overlapping validity): see ProfileSet.conflicts.
    replace_same_stack: bool = True
    # 1.6 allows a Relative ChargePointMaxProfile (it runs from its installation); 2.0.1 does
    # not allow a Relative ChargingStationMaxProfile.
    relative_station_max: bool = True


STATION_LIMITS = Limits()  # what this station accepts (1.6 keys, 2.0.1 variables show it)
LIMITS_201 = replace(STATION_LIMITS, replace_same_stack=False, relative_station_max=False)


@dataclass(frozen=True, slots=True)
class Electrical:
    """How A become W: W = A x phase_voltage_v x phases (the period's, else the default)."""

    phase_voltage_v: float = 230.0
    default_phases: int = DEFAULT_PHASES

    def to_w(self, limit: float, unit: RateUnit, phases: int | None) -> float:
        if unit == RateUnit.W:
            return limit
        return limit * self.phase_voltage_v * (phases or self.default_phases)

    def from_w(self, watts: float, unit: RateUnit, phases: int | None = None) -> float:
        if unit == RateUnit.W:
            return watts
        return watts / (self.phase_voltage_v * (phases or self.default_phases))


# -- validation ---------------------------------------------------------------------------
def validate(p: ChargingProfile, limits: Limits, connectors: Iterable[int]) -> None:
    """Raise ProfileError if `p` breaks a rule that does not depend on the station's state."""
    if p.connector != 0 and p.connector not in tuple(connectors):
        raise ProfileError(f"no connector {p.connector}", "InvalidValue")
    if p.purpose == Purpose.CHARGE_POINT_MAX and p.connector != 0:
        raise ProfileError("a ChargePointMaxProfile belongs on connector 0")
    if p.purpose == Purpose.TX and p.connector == 0:
        raise ProfileError("a TxProfile needs a connector")
    if p.purpose != Purpose.TX and p.transaction_id is not None:
        raise ProfileError("only a TxProfile names a transaction")
    if not 0 <= p.stack_level <= limits.max_stack_level:
        raise ProfileError(f"stack level {p.stack_level} outside 0..{limits.max_stack_level}",
                           "InvalidStackLevel")
    if p.kind == Kind.RECURRING and (p.recurrency is None or p.schedule.start is None):
        raise ProfileError("a Recurring profile needs a recurrency kind and a startSchedule")
    if p.purpose == Purpose.CHARGE_POINT_MAX and p.kind == Kind.RELATIVE \
            and not limits.relative_station_max:
        raise ProfileError("a ChargingStationMaxProfile cannot be Relative")
    if p.valid_from is not None and p.valid_to is not None and p.valid_to <= p.valid_from:
        raise ProfileError("validTo is not after validFrom")
    s = p.schedule
    if s.unit not in limits.units:
        raise ProfileError(f"charging rate unit {s.unit} not allowed", "UnsupportedRateUnit")
    if not s.periods:
        raise ProfileError("no periods", "InvalidSchedule")
    if len(s.periods) > limits.max_periods:
        raise ProfileError(f"{len(s.periods)} periods, at most {limits.max_periods}",
                           "InvalidSchedule")
    if s.periods[0].start_s != 0:
        raise ProfileError("the first period must start at 0", "InvalidSchedule")
    if s.duration_s is not None and s.duration_s < 0:
        raise ProfileError("negative duration")
    for a, b in zip(s.periods, s.periods[1:], strict=False):
        if b.start_s <= a.start_s:
            raise ProfileError("period starts must increase", "InvalidSchedule")
    for q in s.periods:
        if not math.isfinite(q.limit) or q.limit < 0:
            raise ProfileError(f"limit {q.limit} must be >= 0")
        if q.phases is not None and q.phases not in (1, 2, 3):
            raise ProfileError(f"numberPhases {q.phases} not 1..3")
    if s.min_rate is not None and (not math.isfinite(s.min_rate) or s.min_rate < 0):
        raise ProfileError("minChargingRate must be >= 0")


# -- the installed set --------------------------------------------------------------------
@dataclass
class ProfileSet:
    """One station's installed profiles with the replace rules; knows nothing of time."""

    profiles: dict[int, ChargingProfile] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.profiles)

    def __iter__(self) -> Iterator[ChargingProfile]:
        return iter(list(self.profiles.values()))

    def replaced_by(self, p: ChargingProfile, same_stack: bool = True) -> list[ChargingProfile]:
        """The installed profiles `p` would replace (by id; with `same_stack`, also the one
        with its purpose, stack level and connector)."""
        return [
            q for q in self.profiles.values()
            if q.profile_id == p.profile_id
            or (same_stack and q.purpose == p.purpose and q.stack_level == p.stack_level
                and q.connector == p.connector)
        ]

    def conflicts(self, p: ChargingProfile) -> list[ChargingProfile]:
        """Installed profiles (other ids) that would compete with `p` at its level (2.0.1).

        Same purpose, stack level and connector with overlapping validity (K01.FR.06; two
        TxProfiles of one transaction always overlap, K01.FR.39), and a TxDefaultProfile at the
        same stack level on the station and on an EVSE (K01.FR.52/53).
        """
        def overlap(q: ChargingProfile) -> bool:
            lo = max(p.valid_from or datetime.min.replace(tzinfo=UTC),
                     q.valid_from or datetime.min.replace(tzinfo=UTC))
            hi = min(p.valid_to or datetime.max.replace(tzinfo=UTC),
                     q.valid_to or datetime.max.replace(tzinfo=UTC))
            return lo < hi

        out = []
        for q in self.profiles.values():
            if q.profile_id == p.profile_id or q.purpose != p.purpose \
                    or q.stack_level != p.stack_level:
                continue
            if q.connector == p.connector and (p.purpose == Purpose.TX or overlap(q)):
                out.append(q)
            elif p.purpose == Purpose.TX_DEFAULT and 0 in (p.connector, q.connector) \
                    and q.connector != p.connector:
                out.append(q)
        return out

    def install(self, p: ChargingProfile, limits: Limits) -> list[ChargingProfile]:
        """Install `p`; returns what it replaced. ProfileError when the set would be too big,
        or (2.0.1 rules) when `p` competes with an installed profile."""
        if not limits.replace_same_stack:
            clash = self.conflicts(p)
            if clash:
                raise ProfileError(f"profile {clash[0].profile_id} has the same purpose and "
                                   f"stack level", "DuplicateProfile")
        gone = self.replaced_by(p, limits.replace_same_stack)
        if len(self.profiles) - len(gone) + 1 > limits.max_installed:
            raise ProfileError(f"already {len(self.profiles)} profiles installed "
                               f"(at most {limits.max_installed})", "NoCapacity")
        for q in gone:
            del self.profiles[q.profile_id]
        self.profiles[p.profile_id] = p
        return gone

    def clear(self, *, profile_id: int | None = None, connector: int | None = None,
              purpose: Purpose | None = None, stack_level: int | None = None,
              ) -> list[ChargingProfile]:
        """Remove by id, or by every given criterion (none given: all); returns the removed.

        With an id, only the id matters (1.6: the other fields are then ignored).
        """
        if profile_id is not None:
            p = self.profiles.pop(profile_id, None)
            return [] if p is None else [p]
        gone = [
            q for q in self.profiles.values()
            if (connector is None or q.connector == connector)
            and (purpose is None or q.purpose == purpose)
            and (stack_level is None or q.stack_level == stack_level)
        ]
        for q in gone:
            del self.profiles[q.profile_id]
        return gone


# -- evaluation ---------------------------------------------------------------------------
def _schedule_start(p: ChargingProfile, at: datetime, tx_start: datetime | None,
                    installed_at: datetime | None) -> datetime | None:
    """When the occurrence of `p`'s schedule that covers `at` starts (None: none does)."""
    s = p.schedule
    if p.kind == Kind.RELATIVE:
        # Without a transaction, from the profile's installation: see the module docstring.
        return tx_start if tx_start is not None else installed_at
    if p.kind in (Kind.ABSOLUTE, Kind.DYNAMIC):
        return s.start or installed_at
    assert s.start is not None and p.recurrency is not None
    cycle = DAY_S if p.recurrency == Recurrency.DAILY else WEEK_S
    k = math.floor((at - s.start).total_seconds() / cycle)
    return s.start + timedelta(seconds=k * cycle)


def _length_s(p: ChargingProfile) -> float | None:
    d = p.schedule.duration_s
    if p.kind == Kind.RECURRING:
        cycle = DAY_S if p.recurrency == Recurrency.DAILY else WEEK_S
        return float(cycle if d is None else min(d, cycle))
    return None if d is None else float(d)


def limit_w_at(p: ChargingProfile, at: datetime, electrical: Electrical, *,
               tx_start: datetime | None = None,
               installed_at: datetime | None = None) -> float | None:
    """`p`'s limit in W at `at`, or None when it has no period in force then."""
    current = _period_at(p, at, tx_start, installed_at)
    if current is None:
        return None
    return electrical.to_w(current.limit, p.schedule.unit, current.phases)


def _period_at(p: ChargingProfile, at: datetime, tx_start: datetime | None,
               installed_at: datetime | None) -> Period | None:
    """`p`'s period in force at `at`, or None."""
    if p.valid_from is not None and at < p.valid_from:
        return None
    if p.valid_to is not None and at >= p.valid_to:
        return None
    start = _schedule_start(p, at, tx_start, installed_at)
    if start is None:
        return None
    offset = (at - start).total_seconds()
    length = _length_s(p)
    if offset < 0 or (length is not None and offset >= length):
        return None
    periods = p.schedule.periods
    i = bisect.bisect_right(periods, offset, key=lambda q: q.start_s) - 1
    return None if i < 0 else periods[i]


def _boundaries(p: ChargingProfile, lo: datetime, hi: datetime, tx_start: datetime | None,
                installed_at: datetime | None) -> Iterator[datetime]:
    """Every time in (lo, hi) at which `p`'s value may change."""
    for t in (p.valid_from, p.valid_to):
        if t is not None:
            yield t
    length = _length_s(p)
    offsets: list[float] = [float(q.start_s) for q in p.schedule.periods]
    if length is not None:
        offsets.append(length)
    if p.kind == Kind.RECURRING:
        cycle = DAY_S if p.recurrency == Recurrency.DAILY else WEEK_S
        start = _schedule_start(p, lo, tx_start, installed_at)
        assert start is not None
        while start < hi:
            for off in offsets:
                yield start + timedelta(seconds=off)
            start += timedelta(seconds=cycle)
        return
    start = _schedule_start(p, lo, tx_start, installed_at)
    if start is not None:
        for off in offsets:
            yield start + timedelta(seconds=off)


@dataclass(frozen=True, slots=True)
class Stack:
    """The profiles that decide one limit, in precedence order, with what they need to know."""

    profiles: tuple[ChargingProfile, ...]
    tx_start: datetime | None
    installed_at: dict[int, datetime]

    def limit_w_at(self, at: datetime, electrical: Electrical) -> float | None:
        return self.value_at(at, electrical)[0]

    def value_at(self, at: datetime, electrical: Electrical) -> tuple[float | None, int | None]:
        """The leading profile's limit in W at `at` and the numberPhases of its period."""
        for p in self.profiles:
            q = _period_at(p, at, self.tx_start, self.installed_at.get(p.profile_id))
            if q is not None:
                return electrical.to_w(q.limit, p.schedule.unit, q.phases), q.phases
        return None, None

    def leading_at(self, at: datetime) -> tuple[ChargingProfile, Period] | None:
        """The leading profile with a period in force at `at`, and that period (2.1 V2X)."""
        for p in self.profiles:
            q = _period_at(p, at, self.tx_start, self.installed_at.get(p.profile_id))
            if q is not None:
                return p, q
        return None

    def boundaries(self, lo: datetime, hi: datetime) -> Iterator[datetime]:
        for p in self.profiles:
            yield from _boundaries(p, lo, hi, self.tx_start, self.installed_at.get(p.profile_id))


def _ordered(profiles: Iterable[ChargingProfile]) -> tuple[ChargingProfile, ...]:
    # Highest stack level first; at equal level a connector's own profile beats connector 0.
    return tuple(sorted(profiles, key=lambda p: (-p.stack_level, p.connector == 0)))


def _lowest(layers: list[Stack], at: datetime,
            electrical: Electrical) -> tuple[float | None, int | None]:
    """The minimum over `layers` at `at`, with the numberPhases of the layer that sets it."""
    value: float | None = None
    phases: int | None = None
    for layer in layers:
        w, n = layer.value_at(at, electrical)
        if w is not None and (value is None or w < value):
            value, phases = w, n
    return value, phases


@dataclass(frozen=True, slots=True)
class Segment:
    """A piece of a composite schedule: from `start` on, `limit_w` (None = no profile limits),
    over the numberPhases of the period that sets it (None: not given, the default)."""

    start: datetime
    limit_w: float | None
    phases: int | None = None


def piecewise(layers: list[Stack], now: datetime, horizon: timedelta,
              electrical: Electrical) -> list[Segment]:
    """The minimum over `layers` (each: its leading profile's value) from `now` over `horizon`,
    as piecewise-constant segments; equal neighbours merged. Pure: time is the argument."""
    end = now + horizon
    times = {now}
    for layer in layers:
        times.update(t for t in layer.boundaries(now, end) if now < t < end)
    out: list[Segment] = []
    for t in sorted(times):
        value, phases = _lowest(layers, t, electrical)
        if not out or (out[-1].limit_w, out[-1].phases) != (value, phases):
            out.append(Segment(t, value, phases))
    return out


@dataclass(frozen=True, slots=True)
class StationProfiles:
    """The view of a station's profiles the composite needs: what is installed, and when."""

    profiles: tuple[ChargingProfile, ...]
    installed_at: dict[int, datetime]

    def session_stack(self, connector: int, tx_start: datetime | None) -> list[Stack]:
        """The layers of a connector's session limit: TxProfile over TxDefaultProfile.

        TxProfiles only count while a transaction runs (`tx_start` given); where none has a
        period the TxDefaultProfiles decide. Returned as one Stack (TxProfiles first), because
        the Tx layer overrules rather than mins the TxDefault layer.
        """
        tx = [p for p in self.profiles if p.purpose == Purpose.TX and p.connector == connector]
        default = [p for p in self.profiles
                   if p.purpose == Purpose.TX_DEFAULT and p.connector in (0, connector)]
        ordered = (_ordered(tx) if tx_start is not None else ()) + _ordered(default)
        return [Stack(ordered, tx_start, self.installed_at)]

    def endpoint_stack(self) -> list[Stack]:
        cp = [p for p in self.profiles if p.purpose == Purpose.CHARGE_POINT_MAX]
        return [Stack(_ordered(cp), None, self.installed_at)]


def session_schedule(sp: StationProfiles, connector: int, now: datetime,
                     horizon: timedelta, electrical: Electrical, *,
                     tx_start: datetime | None) -> list[Segment]:
    """A session's own limit (TxProfile, else TxDefaultProfile) from `now` over `horizon`."""
    return piecewise(sp.session_stack(connector, tx_start), now, horizon, electrical)


def endpoint_schedule(sp: StationProfiles, now: datetime, horizon: timedelta,
                      electrical: Electrical) -> list[Segment]:
    """The endpoint's limit (ChargePointMaxProfile) from `now` over `horizon`."""
    return piecewise(sp.endpoint_stack(), now, horizon, electrical)


def composite(sp: StationProfiles, connector: int, now: datetime, duration: timedelta,
              electrical: Electrical, *, tx_start: datetime | None,
              physical_w: float) -> list[Segment]:
    """GetCompositeSchedule: the minimum of the leading profile of every purpose and of the
    physical limit (`physical_w`: the battery's own limit, which no profile can raise).

    Connector 0 is the endpoint (ChargePointMaxProfile only). Every segment has a number.
    """
    layers = sp.endpoint_stack()
    if connector != 0:
        layers += sp.session_stack(connector, tx_start)
    segs = piecewise(layers, now, duration, electrical) if duration > timedelta(0) else \
        [Segment(now, *_lowest(layers, now, electrical))]
    out: list[Segment] = []
    for s in segs:
        # Where the battery's own limit is lower, no period's numberPhases applies.
        limited = s.limit_w is not None and s.limit_w <= physical_w
        value = s.limit_w if limited and s.limit_w is not None else physical_w
        phases = s.phases if limited else None
        if not out or (out[-1].limit_w, out[-1].phases) != (value, phases):
            out.append(Segment(s.start, value, phases))
    return out


def to_core(segments: list[Segment], unlimited_w: float) -> list[tuple[float, float]]:
    """Segments -> the control core's `[(start_epoch_s, limit_w), ...]`, in wall-clock time.

    "No limit" becomes `unlimited_w` (the core's schedules always carry a number), and a schedule
    that never limits becomes [] (the core's "no schedule"). The core evaluates a schedule at its
    live wall clock and applies the first period to any time before it too, so a schedule built
    "from now" needs no lead, and a wall clock stepped back keeps the limit in force
    (docs/control.md, "Time base").
    """
    out: list[tuple[float, float]] = []
    if all(s.limit_w is None for s in segments):
        return out
    for s in segments:
        out.append((s.start.timestamp(), unlimited_w if s.limit_w is None else max(0.0, s.limit_w)))
    return out


def utc(t: datetime) -> datetime:
    """A timestamp as an aware UTC datetime (naive ones are taken as UTC)."""
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def with_transaction(p: ChargingProfile, transaction_id: str | None) -> ChargingProfile:
    return replace(p, transaction_id=transaction_id)
