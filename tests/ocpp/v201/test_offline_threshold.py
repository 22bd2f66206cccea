"""2.0.1 OCPPCommCtrlr.OfflineThreshold: after a short outage only the EVSEs whose status changed
meanwhile are reported; after one longer than the threshold, every EVSE. The demo CSMS
(ocpp.v201) on loopback, its socket cut as a network failure would; the real simulator."""

from __future__ import annotations

import asyncio

from waiting import booted, until

from bess_gateway.demo.csms import CsmsServer
from bess_gateway.endpoint.link import Backoff
from bess_gateway.gateway import Gateway


async def set_threshold(csms: CsmsServer, sid: str, seconds: int) -> None:
    r = await csms.call(sid, "SetVariables", {"setVariableData": [{
        "component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "OfflineThreshold"},
        "attributeValue": str(seconds)}]})
    assert r["setVariableResult"][0]["attributeStatus"] == "Accepted"


async def reported(csms: CsmsServer, sid: str, last: int = 2) -> None:
    """Every status of the boot was sent and answered: after the last target's
    StatusNotification, a triggered Heartbeat can only leave once that CALL was answered
    (one outstanding CALL at a time)."""
    key = "evseId" if csms.stations[sid].version == "2.0.1" else "connectorId"
    await csms.wait_for(sid, "StatusNotification", lambda p: p[key] == last, timeout=20)
    after = csms.last_seq()
    assert (await csms.call(sid, "TriggerMessage", {"requestedMessage": "Heartbeat"}))[
        "status"] == "Accepted"
    await csms.wait_for(sid, "Heartbeat", after=after, timeout=20)


async def outage(gw: Gateway, csms: CsmsServer, sid: str, *, longer_than_s: float = 0.0) -> int:
    """Cut the link; while it is down, EVSE 1 is made Unavailable (the operator); back after at
    least `longer_than_s` offline. Returns the CSMS's last seq before the reconnect."""
    ep = gw.endpoints[sid]
    await reported(csms, sid)
    ep.backoff = Backoff(0.05, 0.05)
    csms.policy.passwords = {}  # every reconnect is refused: the station stays offline
    await csms.drop(sid)
    await until(lambda: not ep.ctx.online, 15)
    assert gw.stations[sid].set_availability(1, False) == "Accepted"
    loop = asyncio.get_running_loop()
    # The endpoint's own measure of the outage decides; wait until it is past the threshold.
    await until(lambda: ep._offline_since is not None
                and loop.time() - ep._offline_since > longer_than_s, 30)
    after = csms.last_seq()
    csms.policy.passwords = None
    await csms.wait_for(sid, "BootNotification", after=after, timeout=30)
    return after


def statuses(csms: CsmsServer, sid: str, after: int) -> list[tuple[int, str]]:
    return [(m.payload["evseId"], m.payload["connectorStatus"])
            for m in csms.received
            if m.seq > after and m.station == sid and m.action == "StatusNotification"]


async def test_a_short_outage_reports_only_what_changed(gateway_factory,
                                                        csms: CsmsServer) -> None:
    gw = await gateway_factory(1, ocpp="2.0.1")
    (sid,) = await booted(gw, csms)
    await set_threshold(csms, sid, 3600)
    after = await outage(gw, csms, sid)
    await csms.wait_for(sid, "StatusNotification", lambda p: p["evseId"] == 1, after=after)
    # A later change of EVSE 2 marks the end of the reconnect's pass (the reporter walks
    # the EVSEs in order and sends the next pass only after it).
    gw.stations[sid].set_availability(2, False)
    await csms.wait_for(sid, "StatusNotification",
                        lambda p: p["evseId"] == 2 and p["connectorStatus"] == "Unavailable",
                        after=after)
    assert statuses(csms, sid, after) == [(1, "Unavailable"), (2, "Unavailable")]


async def test_an_outage_beyond_the_threshold_reports_every_evse(gateway_factory,
                                                                 csms: CsmsServer) -> None:
    gw = await gateway_factory(1, ocpp="2.0.1")
    (sid,) = await booted(gw, csms)
    await set_threshold(csms, sid, 1)
    after = await outage(gw, csms, sid, longer_than_s=1.5)
    await csms.wait_for(sid, "StatusNotification", lambda p: p["evseId"] == 2, after=after)
    assert statuses(csms, sid, after) == [(1, "Unavailable"), (2, "Available")]


async def test_a_status_lost_with_the_link_is_sent_again(gateway_factory,
                                                         csms: CsmsServer) -> None:
    """A short outage that swallowed a StatusNotification: it was never answered, so the
    reconnect sends it although the threshold was not reached."""
    gw = await gateway_factory(1, ocpp="2.0.1")
    (sid,) = await booted(gw, csms)
    await set_threshold(csms, sid, 3600)
    ep = gw.endpoints[sid]
    await reported(csms, sid)
    ep.backoff = Backoff(0.05, 0.05)
    # The CSMS stops answering (the socket stays open): the next status hangs in flight.
    csms.policy.passwords = {}
    station = csms.stations[sid]
    station._connection.transport.pause_reading()
    gw.stations[sid].set_availability(2, False)
    await until(lambda: (r := ep._last_status.get(2)) is not None and r.status == "Unavailable")
    await csms.drop(sid)
    await until(lambda: not ep.ctx.online, 15)
    after = csms.last_seq()
    csms.policy.passwords = None
    await csms.wait_for(sid, "StatusNotification", lambda p: p["evseId"] == 2, after=after,
                        timeout=30)
    assert statuses(csms, sid, after) == [(2, "Unavailable")]


async def test_1_6_reports_every_connector_after_any_outage(gateway_factory,
                                                            csms: CsmsServer) -> None:
    """1.6 has no OfflineThreshold: every reconnect reports connectors 0, 1 and 2."""
    gw = await gateway_factory(1, ocpp="1.6")
    (sid,) = await booted(gw, csms)
    ep = gw.endpoints[sid]
    await reported(csms, sid)
    ep.backoff = Backoff(0.05, 0.05)
    await csms.drop(sid)
    await until(lambda: not ep.ctx.online, 15)
    after = csms.last_seq()
    await csms.wait_for(sid, "StatusNotification", lambda p: p["connectorId"] == 2, after=after,
                        timeout=30)
    got = [(m.payload["connectorId"], m.payload["status"]) for m in csms.received
           if m.seq > after and m.station == sid and m.action == "StatusNotification"]
    assert got == [(0, "Available"), (1, "Available"), (2, "Available")]
