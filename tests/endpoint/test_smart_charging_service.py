"""One station's smart charging as a service (bess_gateway.endpoint.smart_charging_service) over
the real
Station, journal and control core: profiles stored before they apply, TxProfiles ending with
their session, anchors carried over wall-clock steps."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bess_gateway.control import ControlCore
from bess_gateway.domain.settings import Settings
from bess_gateway.domain.smart_charging import (
    LIMITS_201,
    ChargingProfile,
    Electrical,
    Kind,
    Limits,
    Period,
    ProfileError,
    Purpose,
    RateUnit,
    Schedule,
    session_schedule,
    validate,
)
from bess_gateway.domain.station import CoreView, Station, StopReason
from bess_gateway.endpoint.smart_charging_service import SmartCharging
from bess_gateway.gateway import tx_record
from bess_gateway.journal import Journal, JournalError

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)  # a Monday
EL = Electrical(phase_voltage_v=230.0)


def prof(pid: int, *, purpose: Purpose = Purpose.TX_DEFAULT, connector: int = 1, stack: int = 0,
         kind: Kind = Kind.ABSOLUTE, periods: tuple[tuple[int, float], ...] = ((0, 10_000.0),),
         start: datetime | None = T0) -> ChargingProfile:
    return ChargingProfile(
        profile_id=pid, connector=connector, stack_level=stack, purpose=purpose, kind=kind,
        recurrency=None, valid_from=None, valid_to=None,
        schedule=Schedule(unit=RateUnit.W, duration_s=None, start=start,
                          periods=tuple(Period(s, lim, None) for s, lim in periods)))


# -- one station: the real Station, journal and (unstarted) control core ----------------------
StationSC = tuple[Station, SmartCharging, Journal]


@pytest.fixture
def station_sc(tmp_path: Path) -> Iterator[StationSC]:
    journal = Journal(tmp_path / "j.sqlite")
    core = ControlCore()  # commands queue before start: a real core without a PCS
    st = Station("CP-1", 3, core=core, view=CoreView(), settings=Settings({}),
                 session_max_w=150_000.0, tx_store=journal.transactions, make_record=tx_record,
                 hash_id_tag=journal.hash_id_tag, clock=lambda: T0)
    smart = SmartCharging(st, core, store=journal.profiles, limits=lambda: Limits(max_installed=3),
                          electrical=lambda: EL, clock=lambda: T0)
    st.start_schedule = smart.start_schedule
    st.on_change(smart.sessions_changed)
    try:
        yield st, smart, journal
    finally:
        journal.close()


def test_tx_profile_needs_a_session_and_ends_with_it(station_sc: StationSC) -> None:
    st, smart, journal = station_sc
    tx_prof = prof(1, purpose=Purpose.TX, periods=((0, 5_000.0),))
    with pytest.raises(ProfileError, match="running transaction"):
        smart.set_profile(tx_prof)
    smart.set_profile(prof(2, periods=((0, 40_000.0),)))
    st.begin(1, "TAG")
    assert smart.start_schedule(1) == [(T0.timestamp(), 40_000.0)]
    smart.set_profile(tx_prof)
    assert smart.start_schedule(1) == [(T0.timestamp(), 5_000.0)]
    st.end(1, StopReason.REMOTE)
    assert sorted(p.profile_id for p in smart.installed) == [2]
    assert [d["id"] for d, _ in journal.profiles.charging_profiles("CP-1")] == [2]


def test_a_profile_that_cannot_be_stored_is_not_installed(station_sc: StationSC) -> None:
    _, smart, journal = station_sc
    smart.set_profile(prof(1, stack=1))
    journal.close()
    with pytest.raises(JournalError):
        smart.set_profile(prof(1, stack=2, periods=((0, 1.0),)))
    assert [(p.profile_id, p.stack_level) for p in smart.installed] == [(1, 1)]


def test_a_wall_clock_step_back_keeps_a_running_sessions_relative_profile(
        tmp_path: Path) -> None:
    # The wall clock steps back 600 s while a session with a Relative TxProfile (10 kW, then
    # 40 kW from +120 s) runs 60 s in: the schedule rebuilt for the stepped clock still limits
    # it to 10 kW now, and the 40 kW period comes 60 s later, by the monotonic clock.
    journal = Journal(tmp_path / "j.sqlite")
    wall = [T0]
    mono = [1000.0]
    core = ControlCore()
    st = Station("CP-1", 3, core=core, view=CoreView(), settings=Settings({}),
                 session_max_w=150_000.0, tx_store=journal.transactions, make_record=tx_record,
                 hash_id_tag=journal.hash_id_tag, clock=lambda: wall[0])
    smart = SmartCharging(st, core, store=journal.profiles, limits=lambda: Limits(max_installed=3),
                          electrical=lambda: EL, clock=lambda: wall[0], mono=lambda: mono[0])
    st.start_schedule = smart.start_schedule
    st.on_change(smart.sessions_changed)
    try:
        st.begin(1, "TAG")
        smart.set_profile(prof(5, purpose=Purpose.TX, kind=Kind.RELATIVE, start=None,
                               periods=((0, 10_000.0), (120, 40_000.0))))
        wall[0] += timedelta(seconds=60)
        mono[0] += 60.0
        wall[0] -= timedelta(seconds=600)  # the step
        segs = session_schedule(smart.snapshot(), 1, wall[0], timedelta(hours=1), EL,
                                tx_start=smart.tx_start(1))
        assert segs[0].start == wall[0] and segs[0].limit_w == 10_000.0
        assert segs[1].start == wall[0] + timedelta(seconds=60)
        assert segs[1].limit_w == 40_000.0
    finally:
        journal.close()


class RecordingCore:
    """A ScheduleCore that keeps what it was handed."""

    def __init__(self) -> None:
        self.groups: dict[int, list[tuple[float, float]]] = {}
        self.sessions: dict[int, list[tuple[float, float]]] = {}

    def set_session_schedule(self, meter_id: int, schedule: list[tuple[float, float]]) -> None:
        self.sessions[meter_id] = schedule

    def set_session_group(self, meter_id: int, group_id: int | None) -> None:
        pass

    def set_group_schedule(self, group_id: int, schedule: list[tuple[float, float]]) -> None:
        self.groups[group_id] = schedule

    def clear_group(self, group_id: int) -> None:
        self.groups.pop(group_id, None)


def test_a_relative_charge_point_max_profile_caps_the_endpoint_without_a_transaction(
        tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    core = RecordingCore()
    st = Station("CP-1", 3, core=ControlCore(), view=CoreView(), settings=Settings({}),
                 session_max_w=150_000.0, tx_store=journal.transactions, make_record=tx_record,
                 hash_id_tag=journal.hash_id_tag, clock=lambda: T0)
    smart = SmartCharging(st, core, store=journal.profiles, limits=lambda: Limits(),
                          electrical=lambda: EL, clock=lambda: T0, mono=lambda: 1000.0)
    cap = prof(1, purpose=Purpose.CHARGE_POINT_MAX, connector=0, kind=Kind.RELATIVE,
               start=None, periods=((0, 50_000.0), (600, 20_000.0)))
    try:
        assert not st.transactions
        smart.set_profile(cap)
        assert core.groups[3] == [(T0.timestamp(), 50_000.0), (T0.timestamp() + 600, 20_000.0)]
        segs = smart.composite(0, timedelta(hours=1), physical_w=1e6)
        assert [(s.start, s.limit_w) for s in segs] == [
            (T0, 50_000.0), (T0 + timedelta(seconds=600), 20_000.0)]
    finally:
        journal.close()
    # 2.0.1 K01: a ChargingStationMaxProfile is never Relative.
    with pytest.raises(ProfileError, match="Relative"):
        validate(cap, LIMITS_201, (1, 2))
