"""Station reservations against the pure control step: status, refusals, hold-back, expiry.

The core is the real `_core.Controller` (no thread, no socket) and the clock is a variable the
tests move, so expiry is checked without waiting.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bess_gateway._core import Controller
from bess_gateway.domain.reservations import ReserveStatus
from bess_gateway.domain.settings import Settings
from bess_gateway.domain.station import ConnectorStatus, CoreView, StartRefusal, Station
from bess_gateway.gateway import tx_record
from bess_gateway.journal import Journal

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def journal() -> Any:
    with Journal(":memory:") as j:
        yield j


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def core() -> Controller:
    return Controller({"site_max_discharge_kw": 200.0})


@pytest.fixture
def station(core: Controller, journal: Journal, clock: Clock) -> Station:
    return Station("E1", 3, core=core, view=CoreView(), settings=Settings({}),
                   session_max_w=150_000.0, tx_store=journal, make_record=tx_record,
                   hash_id_tag=journal.hash_id_tag, clock=clock)


def holds(core: Controller) -> dict[str, float]:
    return dict(core.step(0.0, None)["holds_w"])


def test_reserved_connector_status_refusal_and_hold(station: Station, core: Controller) -> None:
    until = T0 + timedelta(minutes=10)
    assert station.reserve(1, 1, "ALICE", until) == ReserveStatus.ACCEPTED
    assert station.status(1).status == ConnectorStatus.RESERVED
    assert station.status(2).status == ConnectorStatus.AVAILABLE
    assert station.status(0).status == ConnectorStatus.AVAILABLE
    assert station.refusal(1, "BOB") == StartRefusal.RESERVED
    assert station.refusal(1) == StartRefusal.RESERVED
    assert station.refusal(1, "ALICE") is None
    assert station.pick_connector("BOB") == 2
    assert station.pick_connector("ALICE") == 1
    assert holds(core) == {"discharge": 150_000.0, "charge": 0.0}

    # Moving the reservation (same id) to the charge connector moves the hold with it.
    assert station.reserve(1, 2, "ALICE", until) == ReserveStatus.ACCEPTED
    assert station.status(1).status == ConnectorStatus.AVAILABLE
    assert holds(core) == {"discharge": 0.0, "charge": 150_000.0}

    assert station.cancel_reservation(1)
    assert not station.cancel_reservation(1)
    assert holds(core) == {"discharge": 0.0, "charge": 0.0}
    assert station.status(2).status == ConnectorStatus.AVAILABLE


def test_expiry_follows_the_clock(station: Station, core: Controller, clock: Clock) -> None:
    changes: list[None] = []
    station.on_change(lambda: changes.append(None))
    station.reserve(4, 2, "ALICE", T0 + timedelta(seconds=30))
    clock.now = T0 + timedelta(seconds=29)
    assert station.expire_reservations() == []
    assert station.status(2).status == ConnectorStatus.RESERVED
    seen = len(changes)
    clock.now = T0 + timedelta(hours=1)
    assert [r.reservation_id for r in station.expire_reservations()] == [4]
    assert len(changes) == seen + 1  # the status reporter is woken once
    assert station.status(2).status == ConnectorStatus.AVAILABLE
    assert holds(core)["charge"] == 0.0
    assert station.reserve(5, 2, "BOB", T0) == ReserveStatus.REJECTED  # deadline passed


def test_refusals_from_station_state(station: Station) -> None:
    until = T0 + timedelta(minutes=10)
    assert station.reserve(1, 0, "ALICE", until) == ReserveStatus.REJECTED
    assert station.reserve(1, 3, "ALICE", until) == ReserveStatus.REJECTED
    station.prepare(2)
    assert station.reserve(1, 2, "ALICE", until) == ReserveStatus.OCCUPIED
    station.unprepare(2)
    station.set_availability(2, False)
    assert station.reserve(1, 2, "ALICE", until) == ReserveStatus.UNAVAILABLE
    station.set_availability(2, True)
    # SoC at the floor: no discharge, but charge still possible.
    station.view.snapshot = {"link_up": True, "sub_limits": {"soc_discharge": 0.0,
                                                             "soc_charge": 100_000.0}}
    assert station.reserve(1, 1, "ALICE", until) == ReserveStatus.REJECTED
    assert station.reserve(1, 2, "ALICE", until) == ReserveStatus.ACCEPTED
    station.view.snapshot = {"link_up": True, "tripped": True,
                             "trip_causes": ["over_temperature"]}
    assert station.reserve(2, 1, "BOB", until) == ReserveStatus.FAULTED
    assert station.status(2).status == ConnectorStatus.FAULTED  # faulted outranks reserved
    station.view.snapshot = {"link_up": False}
    assert station.reserve(2, 1, "BOB", until) == ReserveStatus.FAULTED
    assert len(station.reservations) == 1


def test_parent_lookup_admits_a_group_member(station: Station, journal: Journal) -> None:
    parents = {journal.hash_id_tag("BOB"): journal.hash_id_tag("FLEET")}
    station.parent_of = parents.get
    station.reserve(9, 1, "ALICE", T0 + timedelta(minutes=5), parent_id_tag="FLEET")
    assert station.refusal(1, "BOB") is None
    assert station.refusal(1, "EVE") == StartRefusal.RESERVED
    assert station.pick_connector("BOB") == 1
