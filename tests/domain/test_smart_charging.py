"""The smart-charging engine: profiles, replace rules and composite schedules, pure with the clock
passed in (one station's SmartCharging service: tests/test_smart_charging_service.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bess_gateway.domain.smart_charging import (
    ChargingProfile,
    Electrical,
    Kind,
    Limits,
    Period,
    ProfileError,
    ProfileSet,
    Purpose,
    RateUnit,
    Recurrency,
    Schedule,
    Segment,
    StationProfiles,
    composite,
    endpoint_schedule,
    limit_w_at,
    session_schedule,
    to_core,
    validate,
)
from bess_gateway.endpoint.charging_limits import CompositePeriod, composite_periods

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)  # a Monday
EL = Electrical(phase_voltage_v=230.0)
DAY = timedelta(days=1)


def prof(pid: int, *, purpose: Purpose = Purpose.TX_DEFAULT, connector: int = 1, stack: int = 0,
         kind: Kind = Kind.ABSOLUTE, periods: tuple[tuple[int, float], ...] = ((0, 10_000.0),),
         start: datetime | None = T0, duration: int | None = None,
         unit: RateUnit = RateUnit.W, recurrency: Recurrency | None = None,
         valid_from: datetime | None = None, valid_to: datetime | None = None,
         phases: int | None = None) -> ChargingProfile:
    return ChargingProfile(
        profile_id=pid, connector=connector, stack_level=stack, purpose=purpose, kind=kind,
        recurrency=recurrency, valid_from=valid_from, valid_to=valid_to,
        schedule=Schedule(unit=unit, duration_s=duration, start=start,
                          periods=tuple(Period(s, lim, phases) for s, lim in periods)))


def sp(*profiles: ChargingProfile) -> StationProfiles:
    return StationProfiles(profiles, {p.profile_id: T0 for p in profiles})


def at(t: datetime, *profiles: ChargingProfile, tx_start: datetime | None = None,
       connector: int = 1) -> float | None:
    segs = session_schedule(sp(*profiles), connector, t, timedelta(seconds=1), EL,
                            tx_start=tx_start)
    return segs[0].limit_w


# -- stack levels and purposes --------------------------------------------------------------
def test_higher_stack_level_wins() -> None:
    low = prof(1, stack=1, periods=((0, 50_000.0),))
    high = prof(2, stack=2, periods=((0, 20_000.0),))
    assert at(T0, low, high) == 20_000.0


def test_higher_stack_with_no_period_now_lets_the_lower_through() -> None:
    low = prof(1, stack=1, periods=((0, 50_000.0),))
    # Starts in an hour, lasts 10 min: before, during and after.
    high = prof(2, stack=5, start=T0 + timedelta(hours=1), duration=600,
                periods=((0, 20_000.0),))
    assert at(T0, low, high) == 50_000.0
    assert at(T0 + timedelta(minutes=65), low, high) == 20_000.0
    assert at(T0 + timedelta(minutes=71), low, high) == 50_000.0
    segs = session_schedule(sp(low, high), 1, T0, timedelta(hours=2), EL, tx_start=None)
    assert segs == [Segment(T0, 50_000.0), Segment(T0 + timedelta(hours=1), 20_000.0),
                    Segment(T0 + timedelta(minutes=70), 50_000.0)]


def test_valid_from_and_valid_to_bound_a_profile() -> None:
    p = prof(1, valid_from=T0 + timedelta(minutes=5), valid_to=T0 + timedelta(minutes=10))
    assert at(T0, p) is None
    assert at(T0 + timedelta(minutes=5), p) == 10_000.0
    assert at(T0 + timedelta(minutes=10), p) is None


def test_tx_profile_overrules_tx_default_only_during_a_transaction() -> None:
    default = prof(1, stack=9, periods=((0, 50_000.0),))
    tx = prof(2, purpose=Purpose.TX, stack=0, periods=((0, 80_000.0),))
    assert at(T0, default, tx, tx_start=T0) == 80_000.0
    assert at(T0, default, tx, tx_start=None) == 50_000.0


def test_tx_default_arriving_during_a_transaction_applies_to_it() -> None:
    # A TxDefault installed after the transaction started still limits it (no TxProfile).
    default = prof(1, start=T0 + timedelta(minutes=30), periods=((0, 30_000.0),))
    later = T0 + timedelta(minutes=31)
    assert at(later, default, tx_start=T0) == 30_000.0


def test_connector_tx_default_beats_connector_zero_at_equal_level() -> None:
    everyone = prof(1, connector=0, stack=3, periods=((0, 50_000.0),))
    mine = prof(2, connector=1, stack=3, periods=((0, 70_000.0),))
    assert at(T0, everyone, mine) == 70_000.0
    assert at(T0, everyone, mine, connector=2) == 50_000.0


def test_charge_point_max_is_the_endpoint_limit_and_mins_into_the_composite() -> None:
    cp = prof(1, purpose=Purpose.CHARGE_POINT_MAX, connector=0, periods=((0, 40_000.0),))
    default = prof(2, periods=((0, 60_000.0), (600, 20_000.0)))
    assert endpoint_schedule(sp(cp, default), T0, DAY, EL) == [Segment(T0, 40_000.0)]
    segs = composite(sp(cp, default), 1, T0, timedelta(hours=1), EL, tx_start=None,
                     physical_w=150_000.0)
    assert segs == [Segment(T0, 40_000.0), Segment(T0 + timedelta(seconds=600), 20_000.0)]
    # The battery's own limit wins where it is lower.
    segs = composite(sp(cp, default), 1, T0, timedelta(hours=1), EL, tx_start=None,
                     physical_w=30_000.0)
    assert segs == [Segment(T0, 30_000.0), Segment(T0 + timedelta(seconds=600), 20_000.0)]
    # Connector 0: only the endpoint's limit.
    segs = composite(sp(cp, default), 0, T0, timedelta(hours=1), EL, tx_start=None,
                     physical_w=300_000.0)
    assert segs == [Segment(T0, 40_000.0)]


def test_no_profile_means_the_physical_limit() -> None:
    segs = composite(sp(), 2, T0, timedelta(hours=1), EL, tx_start=None, physical_w=99_000.0)
    assert segs == [Segment(T0, 99_000.0)]


# -- kinds ------------------------------------------------------------------------------------
def test_daily_recurring_crosses_midnight() -> None:
    # 22:00 for 8 h: 10 kW until 02:00, then 20 kW until 06:00, then nothing until 22:00.
    start = datetime(2026, 3, 1, 22, 0, tzinfo=UTC)
    p = prof(1, kind=Kind.RECURRING, recurrency=Recurrency.DAILY, start=start, duration=8 * 3600,
             periods=((0, 10_000.0), (4 * 3600, 20_000.0)))
    day5 = datetime(2026, 3, 5, tzinfo=UTC)
    assert at(day5 + timedelta(hours=1), p) == 10_000.0
    assert at(day5 + timedelta(hours=3), p) == 20_000.0
    assert at(day5 + timedelta(hours=7), p) is None
    assert at(day5 + timedelta(hours=23), p) == 10_000.0
    # Before its startSchedule it still recurs (startSchedule only anchors the time of day).
    assert at(start - timedelta(hours=23), p) == 10_000.0
    segs = session_schedule(sp(p), 1, day5 + timedelta(hours=12), DAY, EL, tx_start=None)
    assert segs == [Segment(day5 + timedelta(hours=12), None),
                    Segment(day5 + timedelta(hours=22), 10_000.0),
                    Segment(day5 + timedelta(hours=26), 20_000.0),
                    Segment(day5 + timedelta(hours=30), None)]


def test_daily_duration_longer_than_a_day_is_cut_to_the_day() -> None:
    p = prof(1, kind=Kind.RECURRING, recurrency=Recurrency.DAILY, duration=3 * 86_400,
             periods=((0, 10_000.0), (20 * 3600, 5_000.0)))
    assert at(T0 + timedelta(hours=23), p) == 5_000.0
    assert at(T0 + timedelta(hours=24), p) == 10_000.0


def test_weekly_recurring_crosses_the_week_boundary() -> None:
    # Sunday 20:00 for 12 h: through Monday 08:00 of the next week.
    sunday = datetime(2026, 3, 8, 20, 0, tzinfo=UTC)
    p = prof(1, kind=Kind.RECURRING, recurrency=Recurrency.WEEKLY, start=sunday,
             duration=12 * 3600, periods=((0, 7_000.0), (6 * 3600, 9_000.0)))
    next_monday = datetime(2026, 3, 16, tzinfo=UTC)
    assert at(next_monday - timedelta(hours=1), p) == 7_000.0  # Sunday 23:00
    assert at(next_monday + timedelta(hours=3), p) == 9_000.0  # Monday 03:00: 2nd period
    assert at(next_monday + timedelta(hours=9), p) is None
    assert at(next_monday + timedelta(days=6, hours=21), p) == 7_000.0


def test_relative_runs_from_the_transaction_start() -> None:
    p = prof(1, kind=Kind.RELATIVE, start=None, periods=((0, 30_000.0), (300, 10_000.0)))
    tx_start = T0 - timedelta(seconds=200)
    assert at(T0, p, tx_start=tx_start) == 30_000.0
    assert at(T0 + timedelta(seconds=100), p, tx_start=tx_start) == 10_000.0


def test_relative_without_a_transaction_runs_from_its_installation() -> None:
    """OCPP 1.6: a Relative schedule's start point is "situation-specific (such as the start of
    a Transaction)" and the station's to choose; with no transaction it is the installation."""
    p = prof(1, kind=Kind.RELATIVE, start=None, periods=((0, 30_000.0), (300, 10_000.0)))
    installed = StationProfiles((p,), {1: T0 - timedelta(seconds=200)})
    segs = composite(installed, 1, T0, timedelta(hours=1), EL, tx_start=None, physical_w=1e6)
    assert segs == [Segment(T0, 30_000.0), Segment(T0 + timedelta(seconds=100), 10_000.0)]
    # A transaction restarts it from its own start.
    segs = composite(installed, 1, T0, timedelta(hours=1), EL, tx_start=T0, physical_w=1e6)
    assert segs == [Segment(T0, 30_000.0), Segment(T0 + timedelta(seconds=300), 10_000.0)]


def test_absolute_without_start_runs_from_installation() -> None:
    p = prof(1, start=None, duration=60)
    assert limit_w_at(p, T0 + timedelta(seconds=30), EL, installed_at=T0) == 10_000.0
    assert limit_w_at(p, T0 + timedelta(seconds=60), EL, installed_at=T0) is None


def test_duration_zero_never_limits() -> None:
    low = prof(1, stack=0, periods=((0, 40_000.0),))
    zero = prof(2, stack=1, duration=0, periods=((0, 1_000.0),))
    assert at(T0, zero) is None
    assert at(T0, low, zero) == 40_000.0
    # A composite of duration 0 is the limit now.
    segs = composite(sp(low), 1, T0, timedelta(0), EL, tx_start=None, physical_w=1e6)
    assert segs == [Segment(T0, 40_000.0)]


def test_amps_become_watts_with_phases() -> None:
    p = prof(1, unit=RateUnit.A, periods=((0, 32.0),))
    assert at(T0, p) == pytest.approx(32 * 230 * 3)
    p1 = prof(1, unit=RateUnit.A, periods=((0, 32.0),), phases=1)
    assert at(T0, p1) == pytest.approx(32 * 230)
    assert EL.from_w(22_080.0, RateUnit.A) == pytest.approx(32.0)


def test_to_core_starts_now_and_fills_gaps() -> None:
    segs = [Segment(T0, None), Segment(T0 + timedelta(seconds=10), 5_000.0)]
    assert to_core(segs, 1e9) == [(T0.timestamp(), 1e9), (T0.timestamp() + 10, 5_000.0)]
    assert to_core([Segment(T0, None)], 1e9) == []


# -- validation and the installed set ---------------------------------------------------------
@pytest.mark.parametrize(("profile", "words"), [
    (prof(1, purpose=Purpose.CHARGE_POINT_MAX, connector=1), "connector 0"),
    (prof(1, purpose=Purpose.TX, connector=0), "needs a connector"),
    (prof(1, stack=11), "stack level"),
    (prof(1, periods=((5, 1.0),)), "start at 0"),
    (prof(1, periods=((0, 1.0), (0, 2.0))), "increase"),
    (prof(1, periods=((0, -1.0),)), ">= 0"),
    (prof(1, kind=Kind.RECURRING, recurrency=None), "recurrency"),
    (prof(1, connector=3), "no connector"),
    (prof(1, periods=tuple((i, 1.0) for i in range(49))), "at most 48"),
    (prof(1, valid_from=T0, valid_to=T0), "validTo"),
])
def test_validation_refuses(profile: ChargingProfile, words: str) -> None:
    with pytest.raises(ProfileError, match=words):
        validate(profile, Limits(), (1, 2))


def test_allowed_units_are_enforced() -> None:
    with pytest.raises(ProfileError, match="unit"):
        validate(prof(1, unit=RateUnit.A), Limits(units=(RateUnit.W,)), (1, 2))


def test_same_id_or_same_purpose_and_stack_replaces() -> None:
    s = ProfileSet()
    limits = Limits(max_installed=3)
    s.install(prof(1, stack=1), limits)
    s.install(prof(2, stack=2), limits)
    assert [p.profile_id for p in s.install(prof(1, stack=5), limits)] == [1]
    assert [p.profile_id for p in s.install(prof(3, stack=2), limits)] == [2]
    # Same stack and purpose on another connector is another profile.
    s.install(prof(4, stack=2, connector=2), limits)
    assert sorted(p.profile_id for p in s) == [1, 3, 4]
    with pytest.raises(ProfileError, match="at most 3"):
        s.install(prof(5, stack=7), limits)
    # A replacement still fits when the set is full.
    s.install(prof(6, stack=7, connector=2, purpose=Purpose.TX_DEFAULT), Limits(max_installed=4))
    assert len(s) == 4


def test_2_0_1_replaces_by_id_only_and_refuses_competitors() -> None:
    s = ProfileSet()
    limits = Limits(replace_same_stack=False)
    s.install(prof(1, stack=2, valid_to=T0 + DAY), limits)
    # Same purpose, stack level and connector with overlapping validity: refused, not replaced.
    with pytest.raises(ProfileError) as err:
        s.install(prof(2, stack=2), limits)
    assert err.value.reason == "DuplicateProfile"
    # Disjoint validity: both stay, and the right one decides at each time.
    assert s.install(prof(2, stack=2, valid_from=T0 + DAY, periods=((0, 5_000.0),)),
                     limits) == []
    assert sorted(p.profile_id for p in s) == [1, 2]
    # The same id replaces.
    assert [p.profile_id for p in s.install(prof(1, stack=2, valid_to=T0 + DAY), limits)] == [1]
    # A station-wide and an EVSE TxDefaultProfile at one stack level compete, either way round.
    with pytest.raises(ProfileError):
        s.install(prof(3, stack=2, connector=0), limits)
    s.install(prof(3, stack=4, connector=0), limits)
    with pytest.raises(ProfileError):
        s.install(prof(4, stack=4, connector=2), limits)
    # Two TxProfiles of one transaction at one level always compete.
    s.install(prof(5, purpose=Purpose.TX, stack=1), limits)
    with pytest.raises(ProfileError):
        s.install(prof(6, purpose=Purpose.TX, stack=1, valid_from=T0 + 2 * DAY), limits)
    assert sorted(p.profile_id for p in s) == [1, 2, 3, 5]


def test_clear_by_id_or_criteria() -> None:
    s = ProfileSet()
    for p in (prof(1, stack=1), prof(2, stack=2),
              prof(3, purpose=Purpose.CHARGE_POINT_MAX, connector=0),
              prof(4, connector=2, stack=2)):
        s.install(p, Limits())
    assert [p.profile_id for p in s.clear(profile_id=9)] == []
    assert [p.profile_id for p in s.clear(profile_id=3, connector=1)] == [3]
    assert sorted(p.profile_id for p in s.clear(stack_level=2)) == [2, 4]
    assert [p.profile_id for p in s.clear(purpose=Purpose.TX_DEFAULT, connector=1)] == [1]
    assert len(s) == 0


def test_profiles_round_trip_through_dicts() -> None:
    p = prof(7, kind=Kind.RECURRING, recurrency=Recurrency.WEEKLY, unit=RateUnit.A,
             valid_from=T0, valid_to=T0 + DAY, duration=3600, phases=1,
             periods=((0, 16.0), (60, 8.5)))
    assert ChargingProfile.from_dict(p.to_dict()) == p


# -- GetCompositeSchedule periods (charging_limits.composite_periods, both versions) -----------
def test_an_amp_composite_takes_its_number_of_phases_from_the_profile() -> None:
    one_phase = prof(1, unit=RateUnit.A, periods=((0, 16.0), (600, 10.0)), phases=1)
    segs = composite(sp(one_phase), 1, T0, timedelta(hours=1), EL, tx_start=None,
                     physical_w=1e6)
    assert segs == [Segment(T0, 16 * 230.0, 1), Segment(T0 + timedelta(seconds=600), 2300.0, 1)]
    assert composite_periods(segs, RateUnit.A, EL) == [
        CompositePeriod(0, 16.0, 1), CompositePeriod(600, 10.0, 1)]
    # No numberPhases in the profile, or the battery's own limit: the station's default (3).
    three = prof(2, unit=RateUnit.A, periods=((0, 16.0),))
    segs = composite(sp(three), 1, T0, timedelta(hours=1), EL, tx_start=None, physical_w=1e6)
    assert composite_periods(segs, RateUnit.A, EL) == [CompositePeriod(0, 16.0, 3)]
    segs = composite(sp(one_phase), 1, T0, timedelta(hours=1), EL, tx_start=None,
                     physical_w=2000.0)
    assert composite_periods(segs, RateUnit.A, EL) == [CompositePeriod(0, 2.9, 3)]
    # In W no numberPhases is reported.
    assert composite_periods(segs, RateUnit.W, EL) == [CompositePeriod(0, 2000.0, None)]


def test_sub_second_offsets_give_one_period_at_0_and_whole_second_starts() -> None:
    """The composite starts "now", mid-second; boundaries 0.4 s and 9.4 s later become periods
    at 0 and 9, never two periods at 0."""
    p = prof(1, periods=((0, 20_000.0), (1, 10_000.0), (10, 5_000.0)))
    now = T0 + timedelta(milliseconds=600)
    segs = composite(sp(p), 1, now, timedelta(minutes=1), EL, tx_start=None, physical_w=1e6)
    assert [s.start for s in segs] == [now, T0 + timedelta(seconds=1),
                                       T0 + timedelta(seconds=10)]
    periods = composite_periods(segs, RateUnit.W, EL)
    assert periods == [CompositePeriod(0, 10_000.0, None), CompositePeriod(9, 5_000.0, None)]
    # A boundary in the second half of a second rounds up, not onto the period before it.
    segs = composite(sp(p), 1, T0 + timedelta(milliseconds=400), timedelta(minutes=1), EL,
                     tx_start=None, physical_w=1e6)
    assert composite_periods(segs, RateUnit.W, EL) == [
        CompositePeriod(0, 20_000.0, None), CompositePeriod(1, 10_000.0, None),
        CompositePeriod(10, 5_000.0, None)]
