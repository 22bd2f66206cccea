"""Issue 13 item 13: the status a session's end leads to reaches the CSMS after the session's
stop message (which waits for the settled register), and 2.0.1 reports one Occupied per
session. The real simulator (its ramp-down is what the stop waits for) and the real CSMS."""

from __future__ import annotations

from waiting import until

from bess_gateway.demo.csms import CsmsServer
from bess_gateway.sim.server import SimulatorThread
from tests.conftest import GatewayFactory

SID = "DEMO-01"


async def test_16_available_follows_the_stop_transaction(
        gateway_factory: GatewayFactory, csms: CsmsServer, sim: SimulatorThread) -> None:
    gw = await gateway_factory(1)
    await csms.wait_for(SID, "StatusNotification", lambda p: p["connectorId"] == 2, timeout=20)
    await until(lambda: gw.endpoints[SID].booted.is_set(), 20)
    start = csms.last_seq()
    await csms.call(SID, "RemoteStartTransaction", {"idTag": "T1", "connectorId": 1})
    await csms.wait_for(SID, "StatusNotification",
                        lambda p: p["connectorId"] == 1 and p["status"] == "Charging", after=start)
    tx = await csms.wait_until(lambda: next(
        (t for t in csms.transactions.values() if t.meter_stop is None), None))
    await until(lambda: sim.state.measured_w > 100_000, 15)  # a ramp-down to wait for
    stop_at = csms.last_seq()
    await csms.call(SID, "RemoteStopTransaction", {"transactionId": tx.id})
    available = await csms.wait_for(
        SID, "StatusNotification", lambda p: p["connectorId"] == 1 and p["status"] == "Available",
        after=stop_at, timeout=20)
    stop = await csms.wait_for(SID, "StopTransaction", after=stop_at)
    assert stop.seq < available.seq
    statuses = [m.payload["status"] for m in csms.of(SID, "StatusNotification")
                if m.seq > stop_at and m.payload["connectorId"] == 1]
    # 1.6: a session that has ended but whose connector is not free yet is Finishing.
    assert statuses == ["Finishing", "Available"]


async def test_201_one_occupied_per_session_and_available_after_ended(
        gateway_factory: GatewayFactory, csms: CsmsServer, sim: SimulatorThread) -> None:
    gw = await gateway_factory(1, ocpp="2.0.1")
    await csms.wait_for(SID, "StatusNotification", lambda p: p["evseId"] == 2, timeout=30)
    await until(lambda: gw.endpoints[SID].ctx.online, 15)
    start = csms.last_seq()
    await csms.call(SID, "RequestStartTransaction", {
        "idToken": {"idToken": "T1", "type": "ISO14443"}, "remoteStartId": 9, "evseId": 1})
    started = await csms.wait_for(SID, "TransactionEvent", lambda p: p["eventType"] == "Started",
                                  after=start, timeout=15)
    tid = started.payload["transactionInfo"]["transactionId"]
    await until(lambda: sim.state.measured_w > 100_000, 15)
    stop_at = csms.last_seq()
    await csms.call(SID, "RequestStopTransaction", {"transactionId": tid})
    available = await csms.wait_for(
        SID, "StatusNotification",
        lambda p: p["evseId"] == 1 and p["connectorStatus"] == "Available", after=stop_at,
        timeout=20)
    ended = await csms.wait_for(SID, "TransactionEvent", lambda p: p["eventType"] == "Ended",
                                after=stop_at)
    assert ended.seq < available.seq
    statuses = [m.payload["connectorStatus"] for m in csms.of(SID, "StatusNotification")
                if m.seq > start and m.payload["evseId"] == 1]
    assert statuses == ["Occupied", "Available"]  # Preparing -> Charging is no 2.0.1 change
