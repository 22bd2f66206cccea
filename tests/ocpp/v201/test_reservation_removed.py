"""2.0.1 ReservationStatusUpdate Removed: a reserved EVSE made Inoperative ends its reservation
and frees its power; a fault or a cancel does not report Removed. The demo CSMS (ocpp.v201),
the real simulator, a real SQLite journal."""

from __future__ import annotations

from waiting import booted, until

from bess_gateway.demo.csms import CsmsServer
from bess_gateway.endpoint.link import Backoff
from bess_gateway.sim.server import SimulatorThread
from tests.ocpp.v201.test_reservation201_e2e import holds, request_start, reserve, status_is


def updates(csms: CsmsServer, sid: str) -> list[tuple[int, str]]:
    return [(m.payload["reservationId"], m.payload["reservationUpdateStatus"])
            for m in csms.of(sid, "ReservationStatusUpdate")]


async def test_an_evse_made_inoperative_removes_its_reservation(
        gateway_factory, csms: CsmsServer) -> None:
    gw = await gateway_factory(1, ocpp="2.0.1")
    (sid,) = await booted(gw, csms)
    after = csms.last_seq()
    assert await reserve(csms, sid, 1, 5) == {"status": "Accepted"}
    assert await reserve(csms, sid, 2, 6) == {"status": "Accepted"}
    await csms.wait_for(sid, "StatusNotification", status_is(1, "Reserved"), after=after)
    await until(lambda: holds(gw)["discharge"] == 150_000)

    after = csms.last_seq()
    assert await csms.call(sid, "ChangeAvailability", {
        "operationalStatus": "Inoperative", "evse": {"id": 1}}) == {"status": "Accepted"}
    m = await csms.wait_for(sid, "ReservationStatusUpdate", after=after, timeout=20)
    assert m.payload == {"reservationId": 5, "reservationUpdateStatus": "Removed"}
    await csms.wait_for(sid, "StatusNotification", status_is(1, "Unavailable"), after=after)
    # Its power is free again and the journal forgets it; the other EVSE's stays.
    await until(lambda: holds(gw)["discharge"] == 0)
    assert holds(gw)["charge"] == 150_000
    assert [r.reservation_id for r in gw.journal.reservations.reservations(sid)] == [6]
    assert await csms.call(sid, "CancelReservation", {"reservationId": 5}) == {
        "status": "Rejected"}

    # Back in operation: Available, not Reserved; the reservation does not come back.
    after = csms.last_seq()
    assert await csms.call(sid, "ChangeAvailability", {
        "operationalStatus": "Operative", "evse": {"id": 1}}) == {"status": "Accepted"}
    await csms.wait_for(sid, "StatusNotification", status_is(1, "Available"), after=after)
    assert gw.stations[sid].reservations.on(1) is None

    # The whole station made Inoperative removes the other one too.
    after = csms.last_seq()
    assert await csms.call(sid, "ChangeAvailability", {"operationalStatus": "Inoperative"}) == {
        "status": "Accepted"}
    m = await csms.wait_for(sid, "ReservationStatusUpdate", after=after, timeout=20)
    assert m.payload == {"reservationId": 6, "reservationUpdateStatus": "Removed"}
    assert gw.journal.reservations.reservations(sid) == []
    await until(lambda: holds(gw)["charge"] == 0)
    assert updates(csms, sid) == [(5, "Removed"), (6, "Removed")]


async def test_a_scheduled_change_removes_the_reservation_when_it_applies(
        gateway_factory, csms: CsmsServer) -> None:
    """Station-wide Inoperative while a session runs: the reservation on the other EVSE
    stays until the change applies (Scheduled), then goes with it."""
    gw = await gateway_factory(1, ocpp="2.0.1")
    (sid,) = await booted(gw, csms)
    assert await request_start(csms, sid, "BOB", 1) == "Accepted"
    await until(lambda: 1 in gw.stations[sid].transactions, 20)
    started = await csms.wait_for(sid, "TransactionEvent", lambda p: p["eventType"] == "Started",
                                  timeout=20)
    tid = started.payload["transactionInfo"]["transactionId"]
    # Charge EVSE 2 is free: reserved. Then the station is taken out of service.
    assert await reserve(csms, sid, 2, 8) == {"status": "Accepted"}
    await csms.call(sid, "ChangeAvailability", {"operationalStatus": "Inoperative"})
    # Not yet: the station is still operative while its session runs.
    assert gw.stations[sid].reservations.on(2) is not None
    after = csms.last_seq()
    assert await csms.call(sid, "RequestStopTransaction", {"transactionId": tid}) == {
        "status": "Accepted"}
    m = await csms.wait_for(sid, "ReservationStatusUpdate", after=after, timeout=20)
    assert m.payload == {"reservationId": 8, "reservationUpdateStatus": "Removed"}
    await csms.wait_for(sid, "StatusNotification", status_is(2, "Unavailable"), after=after)


async def test_faults_and_cancels_do_not_report_removed(
        gateway_factory, csms: CsmsServer, sim: SimulatorThread) -> None:
    gw = await gateway_factory(1, ocpp="2.0.1")
    (sid,) = await booted(gw, csms)
    st = gw.stations[sid]
    assert await reserve(csms, sid, 1, 11) == {"status": "Accepted"}
    # A trip: the EVSE reports Faulted, the reservation stays (trips clear by themselves).
    after = csms.last_seq()
    sim.force_temperature(60.0)
    await csms.wait_for(sid, "StatusNotification", status_is(1, "Faulted"), after=after,
                        timeout=20)
    sim.force_temperature(None)
    after = csms.last_seq()
    await csms.wait_for(sid, "StatusNotification", status_is(1, "Reserved"), after=after,
                        timeout=30)
    assert st.reservations.on(1) is not None
    # A cancel is answered, not reported.
    assert await csms.call(sid, "CancelReservation", {"reservationId": 11}) == {
        "status": "Accepted"}
    # A removal is the first update the CSMS gets: nothing was sent for 11.
    assert await reserve(csms, sid, 2, 12) == {"status": "Accepted"}
    assert await csms.call(sid, "ChangeAvailability", {
        "operationalStatus": "Inoperative", "evse": {"id": 2}}) == {"status": "Accepted"}
    await csms.wait_for(sid, "ReservationStatusUpdate", timeout=20)
    assert updates(csms, sid) == [(12, "Removed")]


async def test_removed_while_offline_is_reported_after_the_reconnect(
        gateway_factory, csms: CsmsServer) -> None:
    """Made inoperative by the operator while the CSMS is unreachable: the report queues in the
    journal's outbox and goes out after the reconnect."""
    gw = await gateway_factory(1, ocpp="2.0.1")
    (sid,) = await booted(gw, csms)
    ep = gw.endpoints[sid]
    assert await reserve(csms, sid, 2, 21) == {"status": "Accepted"}
    ep.backoff = Backoff(0.05, 0.05)
    csms.policy.passwords = {}  # every reconnect is refused: the station stays offline
    await csms.drop(sid)
    await until(lambda: not ep.ctx.online, 15)
    assert gw.stations[sid].set_availability(2, False) == "Accepted"
    assert gw.journal.outbox.queued_payloads(sid, "ReservationStatusUpdate") == [
        {"reservationId": 21, "reservationUpdateStatus": "Removed"}]
    csms.policy.passwords = None
    m = await csms.wait_for(sid, "ReservationStatusUpdate", timeout=30)
    assert m.payload == {"reservationId": 21, "reservationUpdateStatus": "Removed"}
