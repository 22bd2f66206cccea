"""2.0.1 H Reservation end to end: the demo CSMS (ocpp.v201), the real simulator, SQLite."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from waiting import booted, until

from bess_gateway.demo.csms import CsmsServer
from bess_gateway.domain.timefmt import iso
from bess_gateway.gateway import Gateway
from bess_gateway.sim.server import SimulatorThread

_remote_ids = itertools.count(1)


def token(text: str) -> dict[str, str]:
    return {"idToken": text, "type": "Central"}


async def reserve(csms: CsmsServer, sid: str, evse: int | None, rid: int, tag: str = "ALICE",
                  seconds: float = 600, **extra: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {"id": rid, "expiryDateTime": iso(datetime.now(UTC) + timedelta(
        seconds=seconds)), "idToken": token(tag), **extra}
    if evse is not None:
        payload["evseId"] = evse
    return await csms.call(sid, "ReserveNow", payload)


async def request_start(csms: CsmsServer, sid: str, tag: str, evse: int | None = None) -> str:
    payload: dict[str, Any] = {"idToken": token(tag), "remoteStartId": next(_remote_ids)}
    if evse is not None:
        payload["evseId"] = evse
    return str((await csms.call(sid, "RequestStartTransaction", payload))["status"])


def status_is(evse: int, status: str) -> Any:
    return lambda p: p["evseId"] == evse and p["connectorStatus"] == status


def holds(gw: Gateway) -> dict[str, float]:
    return dict(gw.core.snapshot()["holds_w"])


async def test_reserved_evse_holds_power_and_starts_only_for_its_token(
        gateway_factory, csms: CsmsServer, sim: SimulatorThread) -> None:
    gw = await gateway_factory(1, ocpp="2.0.1")
    (sid,) = await booted(gw, csms)
    after = csms.last_seq()
    assert await reserve(csms, sid, 1, 42) == {"status": "Accepted"}
    await csms.wait_for(sid, "StatusNotification", status_is(1, "Reserved"), after=after)
    await until(lambda: holds(gw)["discharge"] == 150_000)

    # Another token can neither use the reserved EVSE nor take it by naming no EVSE.
    assert await request_start(csms, sid, "BOB", 1) == "Rejected"
    after = csms.last_seq()
    assert await request_start(csms, sid, "ALICE") == "Accepted"  # no EVSE: its reserved one
    started = await csms.wait_for(sid, "TransactionEvent", lambda p: p["eventType"] == "Started",
                                  after=after, timeout=20)
    assert started.payload["evse"]["id"] == 1
    assert started.payload["reservationId"] == 42
    await csms.wait_for(sid, "StatusNotification", status_is(1, "Occupied"), after=after)
    await until(lambda: sim.written.setpoint_w == 150_000, 20)
    # Used: the reservation and its hold are gone, the session has the power.
    assert gw.stations[sid].reservations.on(1) is None
    await until(lambda: holds(gw)["discharge"] == 0)
    assert await csms.call(sid, "CancelReservation", {"reservationId": 42}) == {
        "status": "Rejected"}
    assert gw.journal.reservations.reservations(sid) == []


async def test_reserve_now_refusals(gateway_factory, csms: CsmsServer,
                                    sim: SimulatorThread) -> None:
    gw = await gateway_factory(1, ocpp="2.0.1")
    (sid,) = await booted(gw, csms)
    # No EVSE: a BESS reservation must say which way to hold power (NonEvseSpecific false).
    r = await reserve(csms, sid, None, 1)
    assert r["status"] == "Rejected" and r["statusInfo"]["reasonCode"] == "InvalidValue"
    r = await reserve(csms, sid, 3, 1)
    assert r["status"] == "Rejected" and r["statusInfo"]["reasonCode"] == "UnknownEvse"
    assert (await reserve(csms, sid, 1, 1, seconds=-5))["status"] == "Rejected"
    r = await csms.call(sid, "GetVariables", {"getVariableData": [
        {"component": {"name": "ReservationCtrlr"}, "variable": {"name": "NonEvseSpecific"}}]})
    assert r["getVariableResult"][0]["attributeValue"] == "false"

    assert await request_start(csms, sid, "BOB", 2) == "Accepted"
    await until(lambda: 2 in gw.stations[sid].transactions, 20)
    assert await reserve(csms, sid, 2, 2) == {"status": "Occupied"}
    assert await reserve(csms, sid, 1, 3) == {"status": "Accepted"}
    assert await reserve(csms, sid, 1, 4, tag="CAROL") == {"status": "Occupied"}
    # The same id again replaces (here: a new expiry on the same EVSE).
    assert await reserve(csms, sid, 1, 3, seconds=900) == {"status": "Accepted"}
    assert len(gw.stations[sid].reservations) == 1

    # A battery fault refuses new reservations.
    sim.force_temperature(60.0)
    await until(lambda: gw.stations[sid].view.trip_causes, 20)
    assert await reserve(csms, sid, 2, 5) == {"status": "Faulted"}
    assert (await csms.call(sid, "CancelReservation", {"reservationId": 3}))["status"] == \
        "Accepted"
    assert await reserve(csms, sid, 1, 6) == {"status": "Faulted"}
    sim.force_temperature(None)


async def test_cancel_frees_the_evse_and_its_power(gateway_factory, csms: CsmsServer) -> None:
    gw = await gateway_factory(1, ocpp="2.0.1")
    (sid,) = await booted(gw, csms)
    after = csms.last_seq()
    assert await reserve(csms, sid, 2, 7) == {"status": "Accepted"}
    await csms.wait_for(sid, "StatusNotification", status_is(2, "Reserved"), after=after)
    await until(lambda: holds(gw)["charge"] == 150_000)
    assert await csms.call(sid, "CancelReservation", {"reservationId": 8}) == {
        "status": "Rejected"}
    after = csms.last_seq()
    assert await csms.call(sid, "CancelReservation", {"reservationId": 7}) == {
        "status": "Accepted"}
    await csms.wait_for(sid, "StatusNotification", status_is(2, "Available"), after=after)
    await until(lambda: holds(gw)["charge"] == 0)
    assert await request_start(csms, sid, "BOB", 2) == "Accepted"
    assert csms.of(sid, "ReservationStatusUpdate") == []  # a cancel is answered, not reported


async def test_expiry_is_reported_and_releases_the_power(gateway_factory,
                                                         csms: CsmsServer) -> None:
    gw = await gateway_factory(1, ocpp="2.0.1")
    (sid,) = await booted(gw, csms)
    after = csms.last_seq()
    assert await reserve(csms, sid, 1, 9, seconds=1.5) == {"status": "Accepted"}
    await until(lambda: holds(gw)["discharge"] == 150_000)
    m = await csms.wait_for(sid, "ReservationStatusUpdate", after=after, timeout=20)
    assert m.payload == {"reservationId": 9, "reservationUpdateStatus": "Expired"}
    await csms.wait_for(sid, "StatusNotification", status_is(1, "Available"), after=after)
    await until(lambda: holds(gw)["discharge"] == 0)
    assert gw.journal.reservations.reservations(sid) == []
    assert await request_start(csms, sid, "BOB", 1) == "Accepted"


async def test_group_token_uses_the_groups_reservation(gateway_factory,
                                                       csms: CsmsServer) -> None:
    gw = await gateway_factory(1, ocpp="2.0.1")
    (sid,) = await booted(gw, csms)
    r = await csms.call(sid, "SendLocalList", {
        "versionNumber": 1, "updateType": "Full", "localAuthorizationList": [
            {"idToken": token("BOB"), "idTokenInfo": {
                "status": "Accepted", "groupIdToken": token("FLEET")}},
            {"idToken": token("EVE"), "idTokenInfo": {
                "status": "Accepted", "groupIdToken": token("OTHER")}}]})
    assert r["status"] == "Accepted"
    assert await reserve(csms, sid, 2, 31, groupIdToken=token("FLEET")) == {"status": "Accepted"}
    assert await request_start(csms, sid, "EVE", 2) == "Rejected"
    after = csms.last_seq()
    assert await request_start(csms, sid, "BOB", 2) == "Accepted"
    started = await csms.wait_for(sid, "TransactionEvent", lambda p: p["eventType"] == "Started",
                                  after=after, timeout=20)
    assert started.payload["idToken"]["idToken"] == "BOB"
    assert started.payload["reservationId"] == 31
    assert len(gw.stations[sid].reservations) == 0


async def test_reservation_survives_a_restart(gateway_factory, csms: CsmsServer,
                                              tmp_path) -> None:
    data = tmp_path / "persist"
    gw = await gateway_factory(1, data_dir=data, ocpp="2.0.1")
    (sid,) = await booted(gw, csms)
    assert await reserve(csms, sid, 2, 11) == {"status": "Accepted"}
    lapses = datetime.now(UTC) + timedelta(seconds=1)
    assert await reserve(csms, sid, 1, 12, tag="BOB", seconds=1) == {"status": "Accepted"}
    await gw.stop(drain_s=0)
    await until(lambda: datetime.now(UTC) > lapses + timedelta(milliseconds=100))

    after = csms.last_seq()
    gw2 = await gateway_factory(1, data_dir=data, ocpp="2.0.1")
    await until(lambda: holds(gw2)["charge"] == 150_000, 20)
    assert holds(gw2)["discharge"] == 0
    await booted(gw2, csms)
    await csms.wait_for(sid, "StatusNotification", status_is(2, "Reserved"), after=after)
    # The one that expired while the gateway was down is reported once it is back.
    m = await csms.wait_for(sid, "ReservationStatusUpdate", after=after, timeout=20)
    assert m.payload == {"reservationId": 12, "reservationUpdateStatus": "Expired"}
    assert await request_start(csms, sid, "BOB", 2) == "Rejected"
    assert await csms.call(sid, "CancelReservation", {"reservationId": 11}) == {
        "status": "Accepted"}
    await until(lambda: holds(gw2)["charge"] == 0)
