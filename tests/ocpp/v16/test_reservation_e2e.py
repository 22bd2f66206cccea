"""1.6 Reservation end to end: the real CSMS over WebSocket, the real simulator, SQLite."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from waiting import booted, until

from bess_gateway.demo.csms import CsmsServer
from bess_gateway.domain.timefmt import iso, parse_iso
from bess_gateway.sim.server import SimulatorThread


def expiry_in(seconds: float) -> str:
    return iso(datetime.now(UTC) + timedelta(seconds=seconds))


async def reserve(csms: CsmsServer, sid: str, connector: int, rid: int, tag: str = "ALICE",
                  seconds: float = 600, **extra: Any) -> str:
    r = await csms.call(sid, "ReserveNow", {"connectorId": connector, "expiryDate":
                                            expiry_in(seconds), "idTag": tag,
                                            "reservationId": rid, **extra})
    return str(r["status"])


def status_is(connector: int, status: str) -> Any:
    return lambda p: p["connectorId"] == connector and p["status"] == status


async def test_reserved_connector_starts_only_for_its_tag(
        gateway_factory, csms: CsmsServer, sim: SimulatorThread) -> None:
    gw = await gateway_factory(1)
    (sid,) = await booted(gw, csms)
    after = csms.last_seq()
    assert await reserve(csms, sid, 1, 42, parentIdTag="FLEET") == "Accepted"
    await csms.wait_for(sid, "StatusNotification", status_is(1, "Reserved"), after=after)

    # Another idTag can neither use the reserved connector nor take it by naming no connector
    # while the other connector is free: it gets the free one.
    r = await csms.call(sid, "RemoteStartTransaction", {"idTag": "BOB", "connectorId": 1})
    assert r == {"status": "Rejected"}
    # The parentIdTag itself is not a member of its group (nothing says FLEET's parent is FLEET).
    r = await csms.call(sid, "RemoteStartTransaction", {"idTag": "FLEET", "connectorId": 1})
    assert r == {"status": "Rejected"}

    after = csms.last_seq()
    r = await csms.call(sid, "RemoteStartTransaction", {"idTag": "ALICE"})  # no connector
    assert r == {"status": "Accepted"}
    start = await csms.wait_for(sid, "StartTransaction", after=after)
    assert start.payload["connectorId"] == 1
    assert start.payload["reservationId"] == 42
    await csms.wait_for(sid, "StatusNotification", status_is(1, "Charging"), after=after)
    await until(lambda: sim.written.setpoint_w == 150_000)
    # Used: the reservation and its hold are gone, the session has the power.
    assert gw.stations[sid].reservations.on(1) is None
    assert gw.core.snapshot()["holds_w"]["discharge"] == 0
    assert (await csms.call(sid, "CancelReservation", {"reservationId": 42}))[
        "status"] == "Rejected"


async def test_parent_id_tag_admits_its_group_per_local_list(
        gateway_factory, csms: CsmsServer) -> None:
    gw = await gateway_factory(1)
    (sid,) = await booted(gw, csms)
    r = await csms.call(sid, "SendLocalList", {
        "listVersion": 1, "updateType": "Full", "localAuthorizationList": [
            {"idTag": "BOB", "idTagInfo": {"status": "Accepted", "parentIdTag": "FLEET"}},
            {"idTag": "EVE", "idTagInfo": {"status": "Accepted", "parentIdTag": "OTHER"}}]})
    assert r == {"status": "Accepted"}
    assert await reserve(csms, sid, 1, 31, tag="ALICE", parentIdTag="FLEET") == "Accepted"
    r = await csms.call(sid, "RemoteStartTransaction", {"idTag": "EVE", "connectorId": 1})
    assert r == {"status": "Rejected"}
    after = csms.last_seq()
    r = await csms.call(sid, "RemoteStartTransaction", {"idTag": "BOB", "connectorId": 1})
    assert r == {"status": "Accepted"}
    start = await csms.wait_for(sid, "StartTransaction", after=after)
    assert start.payload["idTag"] == "BOB"
    assert start.payload["reservationId"] == 31
    assert len(gw.stations[sid].reservations) == 0

    # Without a parentIdTag in the reservation, a group member is just another idTag.
    assert await reserve(csms, sid, 2, 32, tag="ALICE") == "Accepted"
    r = await csms.call(sid, "RemoteStartTransaction", {"idTag": "BOB", "connectorId": 2})
    assert r == {"status": "Rejected"}


async def test_start_without_connector_prefers_own_and_avoids_others_reservation(
        gateway_factory, csms: CsmsServer) -> None:
    gw = await gateway_factory(1)
    (sid,) = await booted(gw, csms)
    # Reserved for ALICE: BOB, naming no connector, gets the other one.
    assert await reserve(csms, sid, 1, 1) == "Accepted"
    after = csms.last_seq()
    r = await csms.call(sid, "RemoteStartTransaction", {"idTag": "BOB"})
    assert r == {"status": "Accepted"}
    start = await csms.wait_for(sid, "StartTransaction", after=after)
    assert start.payload["connectorId"] == 2
    assert "reservationId" not in start.payload
    # Nothing left for CAROL: connector 2 is busy and connector 1 is ALICE's.
    r = await csms.call(sid, "RemoteStartTransaction", {"idTag": "CAROL"})
    assert r == {"status": "Rejected"}


async def test_start_without_connector_goes_to_the_reserved_one(
        gateway_factory, csms: CsmsServer) -> None:
    gw = await gateway_factory(1)
    (sid,) = await booted(gw, csms)
    assert await reserve(csms, sid, 2, 3, tag="ALICE") == "Accepted"
    after = csms.last_seq()
    # Connector 1 is free and would be the default; ALICE's reservation says connector 2.
    r = await csms.call(sid, "RemoteStartTransaction", {"idTag": "ALICE"})
    assert r == {"status": "Accepted"}
    start = await csms.wait_for(sid, "StartTransaction", after=after)
    assert start.payload["connectorId"] == 2
    assert start.payload["reservationId"] == 3
    assert len(gw.stations[sid].reservations) == 0


async def test_cancel_reservation_frees_the_connector(gateway_factory, csms: CsmsServer) -> None:
    gw = await gateway_factory(1)
    (sid,) = await booted(gw, csms)
    after = csms.last_seq()
    assert await reserve(csms, sid, 2, 7) == "Accepted"
    await csms.wait_for(sid, "StatusNotification", status_is(2, "Reserved"), after=after)
    await until(lambda: gw.core.snapshot()["holds_w"]["charge"] == 150_000)
    assert (await csms.call(sid, "CancelReservation", {"reservationId": 8}))[
        "status"] == "Rejected"
    after = csms.last_seq()
    assert (await csms.call(sid, "CancelReservation", {"reservationId": 7}))[
        "status"] == "Accepted"
    await csms.wait_for(sid, "StatusNotification", status_is(2, "Available"), after=after)
    await until(lambda: gw.core.snapshot()["holds_w"]["charge"] == 0)
    r = await csms.call(sid, "RemoteStartTransaction", {"idTag": "BOB", "connectorId": 2})
    assert r == {"status": "Accepted"}


async def test_reservation_expires_at_its_expiry_date(gateway_factory,
                                                      csms: CsmsServer) -> None:
    gw = await gateway_factory(1)
    (sid,) = await booted(gw, csms)
    after = csms.last_seq()
    deadline = datetime.now(UTC) + timedelta(seconds=1.5)
    r = await csms.call(sid, "ReserveNow", {"connectorId": 1, "expiryDate": iso(deadline),
                                            "idTag": "ALICE", "reservationId": 5})
    assert r == {"status": "Accepted"}
    reserved = await csms.wait_for(sid, "StatusNotification", status_is(1, "Reserved"),
                                   after=after)
    freed = await csms.wait_for(sid, "StatusNotification", status_is(1, "Available"),
                                after=reserved.seq, timeout=10)
    # Freed at the deadline, not before (iso() keeps milliseconds: compare at that precision).
    assert parse_iso(freed.payload["timestamp"]) >= deadline.replace(
        microsecond=deadline.microsecond // 1000 * 1000)
    await until(lambda: gw.core.snapshot()["holds_w"]["discharge"] == 0)
    assert (await csms.call(sid, "CancelReservation", {"reservationId": 5}))[
        "status"] == "Rejected"
    r = await csms.call(sid, "RemoteStartTransaction", {"idTag": "BOB", "connectorId": 1})
    assert r == {"status": "Accepted"}


async def test_reserve_now_refusals(gateway_factory, csms: CsmsServer,
                                    sim: SimulatorThread) -> None:
    gw = await gateway_factory(1)
    (sid,) = await booted(gw, csms)
    conf = await csms.call(sid, "GetConfiguration", {"key": [
        "ReserveConnectorZeroSupported", "SupportedFeatureProfiles"]})
    values = {k["key"]: (k["value"], k["readonly"]) for k in conf["configurationKey"]}
    assert values["ReserveConnectorZeroSupported"] == ("false", True)
    assert "Reservation" in values["SupportedFeatureProfiles"][0].split(",")
    assert (await csms.call(sid, "ChangeConfiguration", {
        "key": "ReserveConnectorZeroSupported", "value": "true"}))["status"] == "Rejected"

    assert await reserve(csms, sid, 0, 1) == "Rejected"
    assert await reserve(csms, sid, 3, 1) == "Rejected"
    assert await reserve(csms, sid, 1, 1, seconds=-60) == "Rejected"

    # Occupied: a session, or another reservation, on the connector.
    r = await csms.call(sid, "RemoteStartTransaction", {"idTag": "BOB", "connectorId": 2})
    assert r == {"status": "Accepted"}
    await csms.wait_for(sid, "StartTransaction")
    assert await reserve(csms, sid, 2, 1) == "Occupied"
    assert await reserve(csms, sid, 1, 1) == "Accepted"
    assert await reserve(csms, sid, 1, 2, tag="CAROL") == "Occupied"
    # The same id replaces: a new deadline for the same connector is accepted.
    assert await reserve(csms, sid, 1, 1, seconds=900) == "Accepted"
    assert len(gw.stations[sid].reservations) == 1
    assert (await csms.call(sid, "CancelReservation", {"reservationId": 1}))[
        "status"] == "Accepted"

    assert (await csms.call(sid, "ChangeAvailability", {"connectorId": 1, "type":
                                                       "Inoperative"}))["status"] == "Accepted"
    assert await reserve(csms, sid, 1, 3) == "Unavailable"
    assert (await csms.call(sid, "ChangeAvailability", {"connectorId": 1, "type":
                                                       "Operative"}))["status"] == "Accepted"

    # Battery at its SoC floor: no discharge power to hold, so no discharge reservation.
    sim.force_soc(3.0)
    await until(lambda: gw.view.snapshot.get("sub_limits", {}).get("soc_discharge") == 0)
    assert await reserve(csms, sid, 1, 4) == "Rejected"

    sim.force_temperature(60.0)
    await until(lambda: gw.view.trip_causes)
    assert await reserve(csms, sid, 1, 5) == "Faulted"
    assert gw.stations[sid].reservations.on(1) is None


async def test_reservation_holds_power_back_from_other_sessions(
        gateway_factory, csms: CsmsServer, sim: SimulatorThread) -> None:
    gw = await gateway_factory(2, site_max_discharge_kw=200.0)
    a, b = await booted(gw, csms)
    assert await reserve(csms, a, 1, 11) == "Accepted"
    after = csms.last_seq()
    r = await csms.call(b, "RemoteStartTransaction", {"idTag": "BOB", "connectorId": 1})
    assert r == {"status": "Accepted"}
    await csms.wait_for(b, "StartTransaction", after=after)
    # 200 kW site limit - 150 kW held for A's reservation = 50 kW for B's session.
    await until(lambda: sim.written.setpoint_w == 50_000)
    snap = gw.core.snapshot()
    assert snap["holds_w"]["discharge"] == 150_000
    assert snap["allocations"][gw.stations[b].meter_id(1)] <= 50_000
    # A hold is per direction: charging keeps its whole site limit.
    assert snap["holds_w"]["charge"] == 0

    # Cancelled: B's session gets its full 150 kW.
    assert (await csms.call(a, "CancelReservation", {"reservationId": 11}))[
        "status"] == "Accepted"
    await until(lambda: sim.written.setpoint_w == 150_000)

    # Reserved again and used: the reserving session gets what the site has left (50 kW)
    # ... and B keeps its 150 kW, never more than the site limit together.
    assert await reserve(csms, a, 1, 12) == "Accepted"
    await until(lambda: gw.core.snapshot()["allocations"][gw.stations[b].meter_id(1)]
                <= 50_000)
    after = csms.last_seq()
    r = await csms.call(a, "RemoteStartTransaction", {"idTag": "ALICE", "connectorId": 1})
    assert r == {"status": "Accepted"}
    start = await csms.wait_for(a, "StartTransaction", after=after)
    assert start.payload["reservationId"] == 12
    await until(lambda: gw.core.snapshot()["holds_w"]["discharge"] == 0)
    await until(lambda: sim.written.setpoint_w == 200_000)
    allocs = gw.core.snapshot()["allocations"]
    assert sum(allocs.values()) <= 200_000 + 1


async def test_reservations_survive_a_restart(gateway_factory, csms: CsmsServer,
                                              tmp_path) -> None:
    data = tmp_path / "persist"
    gw = await gateway_factory(1, data_dir=data)
    (sid,) = await booted(gw, csms)
    assert await reserve(csms, sid, 2, 21, tag="ALICE") == "Accepted"
    deadline = datetime.now(UTC) + timedelta(seconds=1.5)
    assert await reserve(csms, sid, 1, 22, tag="BOB", seconds=1.5) == "Accepted"
    await gw.stop(drain_s=0)
    # The gateway is down when reservation 22 passes its deadline.
    await until(lambda: datetime.now(UTC) > deadline)

    after = csms.last_seq()
    gw2 = await gateway_factory(1, data_dir=data)
    assert gw2.core is not None
    # The restored reservation holds its power before the endpoint is even connected.
    await until(lambda: gw2.core.snapshot()["holds_w"]["charge"] == 150_000)
    await booted(gw2, csms)
    await csms.wait_for(sid, "StatusNotification", status_is(2, "Reserved"), after=after)
    await csms.wait_for(sid, "StatusNotification", status_is(1, "Available"), after=after)
    assert gw2.stations[sid].reservations.on(1) is None
    assert gw2.core.snapshot()["holds_w"]["discharge"] == 0

    r = await csms.call(sid, "RemoteStartTransaction", {"idTag": "BOB", "connectorId": 2})
    assert r == {"status": "Rejected"}
    after = csms.last_seq()
    r = await csms.call(sid, "RemoteStartTransaction", {"idTag": "ALICE", "connectorId": 2})
    assert r == {"status": "Accepted"}
    start = await csms.wait_for(sid, "StartTransaction", after=after)
    assert start.payload["reservationId"] == 21
    assert gw2.journal is not None and gw2.journal.reservations.reservations(sid) == []


async def test_a_zone_less_expiry_date_is_utc_whatever_the_local_zone(
        gateway_factory, csms: CsmsServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """A CSMS's expiryDate without a zone is UTC, as the schema layer takes it: in a gateway
    running at UTC+5 it is neither five hours early (already past: Rejected) nor late."""
    monkeypatch.setenv("TZ", "XST-05:00")  # POSIX: local time is UTC+5
    time.tzset()
    try:
        gw = await gateway_factory(1)
        (sid,) = await booted(gw, csms)
        expiry = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
        r = await csms.call(sid, "ReserveNow", {
            "connectorId": 1, "idTag": "ALICE", "reservationId": 7,
            "expiryDate": expiry.replace(tzinfo=None).isoformat()})
        assert r == {"status": "Accepted"}
        held = gw.stations[sid].reservations.on(1)
        assert held is not None and held.expiry == expiry
    finally:
        monkeypatch.undo()
        time.tzset()
