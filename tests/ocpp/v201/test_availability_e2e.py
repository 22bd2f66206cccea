"""2.0.1 G Availability end to end: ChangeAvailability and protection trips as NotifyEvent, with
the real simulator's fault injection and the demo CSMS (ocpp.v201) on loopback."""

from __future__ import annotations

from typing import Any

from waiting import until

from bess_gateway.demo.csms import CsmsServer
from bess_gateway.domain import alarms
from bess_gateway.gateway import Gateway
from bess_gateway.sim.server import SimulatorThread
from tests.conftest import GatewayFactory

SID = "DEMO-01"


async def booted(gw: Gateway, csms: CsmsServer, sid: str = SID) -> None:
    await csms.wait_for(sid, "BootNotification", timeout=20)
    await until(lambda: gw.endpoints[sid].booted.is_set(), 20)


async def status_of(csms: CsmsServer, evse: int, status: str, after: int,
                    sid: str = SID) -> None:
    await csms.wait_for(sid, "StatusNotification",
                        lambda p: p["evseId"] == evse and p["connectorStatus"] == status,
                        after=after, timeout=20)


def events(csms: CsmsServer, after: int = -1, sid: str = SID) -> list[dict[str, Any]]:
    return [e for m in csms.of(sid, "NotifyEvent") if m.seq > after
            for e in m.payload["eventData"]]


async def test_change_availability_station_evse_and_scheduled(
        gateway_factory: GatewayFactory, csms: CsmsServer, sim: SimulatorThread) -> None:
    gw = await gateway_factory(1, ocpp="2.0.1")
    await booted(gw, csms)
    await status_of(csms, 2, "Available", -1)

    after = csms.last_seq()
    r = await csms.call(SID, "ChangeAvailability", {"operationalStatus": "Inoperative",
                                                    "evse": {"id": 2}})
    assert r == {"status": "Accepted"}
    await status_of(csms, 2, "Unavailable", after)
    # Unavailable EVSE: a remote start there is refused.
    r = await csms.call(SID, "RequestStartTransaction", {
        "idToken": {"idToken": "TAG-A", "type": "ISO14443"}, "remoteStartId": 1, "evseId": 2})
    assert r["status"] == "Rejected"

    after = csms.last_seq()
    r = await csms.call(SID, "ChangeAvailability", {"operationalStatus": "Operative",
                                                    "evse": {"id": 2, "connectorId": 1}})
    assert r == {"status": "Accepted"}
    await status_of(csms, 2, "Available", after)

    for bad in ({"id": 3}, {"id": 1, "connectorId": 2}):
        r = await csms.call(SID, "ChangeAvailability", {"operationalStatus": "Inoperative",
                                                        "evse": bad})
        assert r["status"] == "Rejected"

    # The whole station while a session runs: Scheduled, applied when the session ends.
    after = csms.last_seq()
    r = await csms.call(SID, "RequestStartTransaction", {
        "idToken": {"idToken": "TAG-A", "type": "ISO14443"}, "remoteStartId": 2, "evseId": 1})
    assert r["status"] == "Accepted"
    started = await csms.wait_for(SID, "TransactionEvent", lambda p: p["eventType"] == "Started",
                                  after=after, timeout=20)
    r = await csms.call(SID, "ChangeAvailability", {"operationalStatus": "Inoperative"})
    assert r == {"status": "Scheduled"}
    assert gw.stations[SID].operative[0]  # the session goes on meanwhile
    after = csms.last_seq()
    tx_id = started.payload["transactionInfo"]["transactionId"]
    r = await csms.call(SID, "RequestStopTransaction", {"transactionId": tx_id})
    assert r == {"status": "Accepted"}
    await status_of(csms, 1, "Unavailable", after)
    await status_of(csms, 2, "Unavailable", after)
    assert not gw.stations[SID].operative[0]

    after = csms.last_seq()
    r = await csms.call(SID, "ChangeAvailability", {"operationalStatus": "Operative"})
    assert r == {"status": "Accepted"}
    await status_of(csms, 1, "Available", after)


async def test_trip_raises_and_clears_notify_event(
        gateway_factory: GatewayFactory, csms: CsmsServer, sim: SimulatorThread) -> None:
    gw = await gateway_factory(2, ocpp="mixed")  # DEMO-01 1.6, DEMO-02 2.0.1
    sid201 = "DEMO-02"
    await booted(gw, csms, "DEMO-01")
    await booted(gw, csms, sid201)
    assert events(csms, sid=sid201) == []  # nothing tripped: nothing reported

    after = csms.last_seq()
    sim.force_temperature(60.0)
    raised = await csms.wait_for(sid201, "NotifyEvent", after=after, timeout=20)
    report = alarms.ALARMS["over_temperature"]
    (event,) = raised.payload["eventData"]
    assert raised.payload["seqNo"] == 0 and raised.payload["tbc"] is False
    assert event["component"] == {"name": report.component}
    assert event["variable"] == {"name": report.variable}
    assert event["trigger"] == "Alerting"
    assert event["eventNotificationType"] == "HardWiredNotification"
    assert event["techCode"] == report.vendor_error_code
    assert float(event["actualValue"]) >= 55.0  # the cell temperature that tripped it
    assert "cleared" not in event
    await status_of(csms, 1, "Faulted", after, sid201)
    # The 1.6 endpoint reports the same cause from the same table row, as its error code.
    fault16 = await csms.wait_for("DEMO-01", "StatusNotification",
                                  lambda p: p["status"] == "Faulted", after=after, timeout=20)
    assert fault16.payload["errorCode"] == report.error_code
    assert csms.of("DEMO-01", "NotifyEvent") == []

    after = csms.last_seq()
    sim.force_temperature(None)
    cleared = await csms.wait_for(sid201, "NotifyEvent", after=after, timeout=30)
    (event2,) = cleared.payload["eventData"]
    assert event2["cleared"] is True
    assert (event2["component"], event2["variable"]) == (event["component"], event["variable"])
    assert event2["eventId"] != event["eventId"]
    await status_of(csms, 1, "Available", after, sid201)


async def test_pcs_in_local_mode_is_a_power_converter_problem_until_writes_go_through(
        gateway_factory: GatewayFactory, csms: CsmsServer, sim: SimulatorThread) -> None:
    gw = await gateway_factory(1, ocpp="2.0.1")
    await booted(gw, csms)
    r = await csms.call(SID, "RequestStartTransaction", {
        "idToken": {"idToken": "TAG-A", "type": "ISO14443"}, "remoteStartId": 1, "evseId": 1})
    assert r["status"] == "Accepted"
    await until(lambda: sim.written.setpoint_w == 150_000)

    after = csms.last_seq()
    sim.set_local_mode(True)  # the PCS refuses every write (Modbus exception), reads are served
    raised = await csms.wait_for(SID, "NotifyEvent", after=after, timeout=20)
    report = alarms.ALARMS["pcs_write_fault"]
    (event,) = raised.payload["eventData"]
    assert event["techCode"] == report.vendor_error_code == "PcsWriteFault"
    assert event["component"] == {"name": "PowerConverter"}
    assert event["variable"] == {"name": "Problem"} and event["actualValue"] == "true"
    await status_of(csms, 1, "Faulted", after)

    after = csms.last_seq()
    sim.set_local_mode(False)
    cleared = await csms.wait_for(SID, "NotifyEvent", after=after, timeout=20)
    (event2,) = cleared.payload["eventData"]
    assert event2["cleared"] is True and event2["techCode"] == "PcsWriteFault"
    await status_of(csms, 1, "Occupied", after)
    await until(lambda: sim.written.setpoint_w == 150_000)
    assert not [m for m in csms.of(SID, "TransactionEvent") if m.payload["eventType"] == "Ended"]


async def test_pcs_link_lost_while_offline_is_delivered_after_reconnect(
        gateway_factory: GatewayFactory, csms: CsmsServer, sim: SimulatorThread) -> None:
    gw = await gateway_factory(1, ocpp="2.0.1", pcs_timeout_ms=300)
    await booted(gw, csms)
    await until(lambda: gw.endpoints[SID].ctx.journal.outbox.depth(SID) == 0, 20)
    # Reconnect attempts 1-2 s apart instead of the default 3-13 s: the same back-off rule,
    # less waiting for the CSMS's return below.
    settings = gw.stations[SID].settings
    settings.set("retry_backoff_wait_minimum_s", "1")
    settings.set("retry_backoff_random_range_s", "1")
    # The CSMS goes away; the PCS link is lost and comes back while nobody listens.
    port = csms.port
    await csms.stop()
    await until(lambda: not gw.endpoints[SID].connected.is_set(), 20)
    sim.set_silent(True)
    await until(lambda: not gw.view.link_up, 10)
    sim.set_silent(False)
    await until(lambda: gw.view.link_up and not gw.view.trip_causes, 20)
    journal = gw.journal
    assert journal is not None
    queued = [e for p in journal.outbox.queued_payloads(SID, "NotifyEvent") for e in p["eventData"]]
    assert [e.get("cleared", False) for e in queued] == [False, True]
    assert {e["techCode"] for e in queued} == {"PcsLinkLost"}

    await csms.start(port=port)
    await until(lambda: len(events(csms)) == 2, 60)
    delivered = events(csms)
    assert [e["techCode"] for e in delivered] == ["PcsLinkLost", "PcsLinkLost"]
    assert [e.get("cleared", False) for e in delivered] == [False, True]
    assert delivered[0]["component"] == {"name": "PowerConverter"}
    assert delivered[0]["timestamp"] <= delivered[1]["timestamp"]
