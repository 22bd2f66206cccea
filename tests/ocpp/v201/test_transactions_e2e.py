"""2.0.1 E Transactions end to end: the demo CSMS (``ocpp.v201``) drives the gateway on loopback,
the real PCS simulator moves power, the journal is a real SQLite file."""

from __future__ import annotations

import sqlite3
import uuid
from typing import Any

from waiting import until

from bess_gateway.demo.csms import CsmsServer
from bess_gateway.domain.station import StopReason
from bess_gateway.endpoint.link import Backoff
from bess_gateway.gateway import Gateway
from bess_gateway.ocpp.v201 import transactions
from bess_gateway.sim.server import SimulatorThread
from tests.conftest import GatewayFactory

SID = "DEMO-01"
TOKEN = {"idToken": "TAG-201", "type": "ISO14443"}


async def booted(gw: Gateway, csms: CsmsServer) -> None:
    await csms.wait_for(SID, "StatusNotification", lambda p: p["evseId"] == 2, timeout=30)
    await until(lambda: gw.endpoints[SID].ctx.online, 15)


async def start(csms: CsmsServer, evse: int = 1, remote_start_id: int = 7,
                token: dict[str, str] = TOKEN) -> dict[str, Any]:
    """RequestStartTransaction and the Started event that follows it."""
    after = csms.last_seq()
    r = await csms.call(SID, "RequestStartTransaction",
                        {"idToken": token, "remoteStartId": remote_start_id, "evseId": evse})
    assert r == {"status": "Accepted"}
    m = await csms.wait_for(SID, "TransactionEvent", lambda p: p["eventType"] == "Started",
                            after=after, timeout=15)
    return m.payload


def events(csms: CsmsServer, tid: str, *, resends: bool = False) -> list[dict[str, Any]]:
    """The transaction's events as received; without `resends`, a message received again
    under the same message id (its answer was lost with the socket) counts once."""
    seen: set[str] = set()
    out = []
    for m in csms.of(SID, "TransactionEvent"):
        if m.payload["transactionInfo"]["transactionId"] != tid:
            continue
        if m.unique_id in seen and not resends:
            continue
        seen.add(m.unique_id)
        out.append(m.payload)
    return out


def assert_contiguous(evs: list[dict[str, Any]]) -> None:
    """seqNo 0, 1, 2, ... in the order received, Started first, at most one Ended, last."""
    assert [e["seqNo"] for e in evs] == list(range(len(evs)))
    assert evs[0]["eventType"] == "Started"
    kinds = [e["eventType"] for e in evs]
    assert kinds.count("Started") == 1 and kinds.count("Ended") <= 1
    if "Ended" in kinds:
        assert kinds[-1] == "Ended"


async def test_remote_start_updates_and_remote_stop(gateway_factory: GatewayFactory,
                                                    csms: CsmsServer,
                                                    sim: SimulatorThread) -> None:
    gw = await gateway_factory(1, ocpp="2.0.1")
    await booted(gw, csms)
    started = await start(csms, evse=1, remote_start_id=41)
    tid = started["transactionInfo"]["transactionId"]
    # A random UUID (version 4) made here: no counter that tells how busy the station is.
    assert uuid.UUID(tid).version == 4 and str(uuid.UUID(tid)) == tid
    assert started["seqNo"] == 0
    assert started["triggerReason"] == "RemoteStart"
    assert started["transactionInfo"]["remoteStartId"] == 41
    assert started["transactionInfo"]["chargingState"] == "Charging"
    assert started["idToken"] == TOKEN
    assert started["evse"] == {"id": 1, "connectorId": 1}
    assert "offline" not in started
    begin = started["meterValue"][0]["sampledValue"]
    assert {(v["measurand"], v["context"], v["unitOfMeasure"]["unit"]) for v in begin} == {
        ("Energy.Active.Import.Register", "Transaction.Begin", "Wh")}
    await until(lambda: sim.written.setpoint_w == 150_000, 15)

    # Periodic Updated events (TxUpdatedInterval = 1 s here) with the sampled measurands.
    upd = await csms.wait_for(SID, "TransactionEvent",
                              lambda p: p["triggerReason"] == "MeterValuePeriodic", timeout=15)
    values = {v["measurand"]: v for v in upd.payload["meterValue"][0]["sampledValue"]}
    assert values["Power.Active.Import"]["unitOfMeasure"]["unit"] == "W"
    assert values["SoC"]["unitOfMeasure"]["unit"] == "Percent"
    assert "Power.Active.Export" not in values  # discharge_as = "import", the default
    assert "Temperature" not in values  # not a 2.0.1 measurand
    assert all(v["context"] == "Sample.Periodic" for v in values.values())

    status = await csms.call(SID, "GetTransactionStatus", {"transactionId": tid})
    assert status["ongoingIndicator"] is True

    after = csms.last_seq()
    r = await csms.call(SID, "RequestStopTransaction", {"transactionId": tid})
    assert r == {"status": "Accepted"}
    ended = (await csms.wait_for(SID, "TransactionEvent", lambda p: p["eventType"] == "Ended",
                                 after=after, timeout=15)).payload
    assert ended["triggerReason"] == "RemoteStop"
    assert ended["transactionInfo"]["stoppedReason"] == "Remote"
    assert ended["meterValue"][0]["sampledValue"][0]["context"] == "Transaction.End"
    await until(lambda: sim.written.setpoint_w == 0, 15)
    tx = csms.transactions[tid]
    assert tx.meter_stop is not None and tx.meter_stop > tx.meter_start >= 0
    assert_contiguous(events(csms, tid))

    # The CSMS records the Ended before its answer reaches us; until then it is still queued.
    await until(lambda: gw.journal is not None and gw.journal.outbox.depth(SID) == 0, 15)
    status = await csms.call(SID, "GetTransactionStatus", {"transactionId": tid})
    assert status == {"ongoingIndicator": False, "messagesInQueue": False}
    assert await csms.call(SID, "GetTransactionStatus", {}) == {"messagesInQueue": False}
    # Unknown transaction: nothing to stop.
    r = await csms.call(SID, "RequestStopTransaction", {"transactionId": tid})
    assert r == {"status": "Rejected"}


async def test_charge_evse_and_refusals(gateway_factory: GatewayFactory, csms: CsmsServer,
                                        sim: SimulatorThread) -> None:
    gw = await gateway_factory(1, ocpp="2.0.1")
    await booted(gw, csms)
    started = await start(csms, evse=2, remote_start_id=1)
    assert started["evse"]["id"] == 2
    assert started["meterValue"][0]["sampledValue"][0]["measurand"] == \
        "Energy.Active.Import.Register"
    await until(lambda: sim.written.setpoint_w == -150_000, 15)
    # The EVSE is busy: a second start there is refused; an unknown EVSE too.
    for evse in (2, 9):
        r = await csms.call(SID, "RequestStartTransaction",
                            {"idToken": TOKEN, "remoteStartId": 2, "evseId": evse})
        assert r == {"status": "Rejected"}
    # Two sessions with different ids, one per direction.
    other = await start(csms, evse=1, remote_start_id=3)
    assert other["transactionInfo"]["transactionId"] != \
        started["transactionInfo"]["transactionId"]


async def test_offline_events_queue_in_order_with_the_offline_flag(
        gateway_factory: GatewayFactory, csms: CsmsServer, sim: SimulatorThread) -> None:
    gw = await gateway_factory(1, ocpp="2.0.1")
    await booted(gw, csms)
    ep = gw.endpoints[SID]
    ep.backoff = Backoff(0.05, 0.05)  # keep the test short; same rule
    started = await start(csms)
    tid = started["transactionInfo"]["transactionId"]
    await csms.wait_for(SID, "TransactionEvent",
                        lambda p: p["triggerReason"] == "MeterValuePeriodic", timeout=15)

    csms.policy.passwords = {}  # every reconnect is refused: the station stays offline
    await csms.drop(SID)
    await until(lambda: not ep.ctx.online, 15)
    journal = gw.journal
    assert journal is not None
    # Sampling goes on offline: the Updated events queue in the journal.
    await until(lambda: len(journal.outbox.queued_payloads(SID, "TransactionEvent")) >= 2, 20)
    # A local stop while offline (operator): the Ended queues behind them.
    transactions.stop_session(ep.ctx, 1, StopReason.LOCAL)
    await until(lambda: sim.written.setpoint_w == 0, 15)
    queued = journal.outbox.queued_payloads(SID, "TransactionEvent")
    assert queued[-1]["eventType"] == "Ended"
    # One sample may have been made online and failed to leave with the socket: it queued
    # without the flag; everything made after the link was gone carries it.
    flags = [bool(q.get("offline")) for q in queued]
    assert flags == sorted(flags) and flags.count(True) >= 2
    received_before = len(events(csms, tid, resends=True))

    csms.policy.passwords = None
    ended = await csms.wait_for(SID, "TransactionEvent", lambda p: p["eventType"] == "Ended",
                                timeout=30)
    assert ended.payload["transactionInfo"]["stoppedReason"] == "Local"
    assert ended.payload["triggerReason"] == "StopAuthorized"
    await until(lambda: journal.outbox.depth(SID) == 0, 15)
    evs = events(csms, tid)
    assert_contiguous(evs)  # every event once, in order, no seqNo gap
    # At most the one in flight when the socket went was received twice (same message id).
    assert len(events(csms, tid, resends=True)) - len(evs) <= 1
    late = events(csms, tid, resends=True)[received_before:]
    # Exactly what had queued, in its order, with its flag.
    assert [(e["seqNo"], e.get("offline")) for e in late] == [
        (q["seqNo"], q.get("offline")) for q in queued]
    assert all("offline" not in e for e in evs[:2])


async def test_queued_started_keeps_no_clear_id_token(gateway_factory: GatewayFactory,
                                                      csms: CsmsServer,
                                                      sim: SimulatorThread) -> None:
    """A Started event waiting in the outbox carries the idToken sealed, never in clear."""
    gw = await gateway_factory(1, ocpp="2.0.1")
    await booted(gw, csms)
    ep = gw.endpoints[SID]
    token = {"idToken": "SECRET-TOKEN-0042", "type": "eMAID"}
    ep.ctx.station.prepare(1)
    # Not connected as far as the session knows: the start and its events only queue.
    ep.backoff = Backoff(0.05, 0.05)
    csms.policy.passwords = {}
    await csms.drop(SID)
    await until(lambda: not ep.ctx.online, 15)
    tx = await transactions.start_session(ep.ctx, 1, token, None)
    assert tx is not None
    assert gw.journal is not None
    gw.journal.flush()
    raw = sqlite3.connect(gw.journal.path).execute("SELECT payload FROM outbox").fetchall()
    assert raw and not any("SECRET-TOKEN-0042" in text for (text,) in raw)
    queued = gw.journal.outbox.queued_payloads(SID, "TransactionEvent")
    assert queued[0]["idToken"] == token and queued[0]["offline"] is True
    csms.policy.passwords = None
    started = await csms.wait_for(SID, "TransactionEvent", lambda p: p["eventType"] == "Started",
                                  timeout=30)
    assert started.payload["idToken"] == token
    assert "remoteStartId" not in started.payload["transactionInfo"]


async def test_invalid_id_token_in_the_answer_stops_the_session(
        gateway_factory: GatewayFactory, csms: CsmsServer, sim: SimulatorThread) -> None:
    """TxCtrlr.StopTxOnInvalidId: the CSMS answers Started with a Blocked idTokenInfo."""
    gw = await gateway_factory(1, ocpp="2.0.1")
    await booted(gw, csms)
    csms.policy.blocked_id_tags = {"STOLEN"}
    started = await start(csms, token={"idToken": "STOLEN", "type": "ISO14443"})
    tid = started["transactionInfo"]["transactionId"]
    ended = await csms.wait_for(SID, "TransactionEvent", lambda p: p["eventType"] == "Ended",
                                timeout=15)
    assert ended.payload["transactionInfo"]["transactionId"] == tid
    assert ended.payload["transactionInfo"]["stoppedReason"] == "DeAuthorized"
    assert ended.payload["triggerReason"] == "Deauthorized"
    await until(lambda: not gw.stations[SID].transactions and sim.written.setpoint_w == 0, 15)
    assert_contiguous(events(csms, tid))


async def test_start_and_stop_at_energy_transfer(gateway_factory: GatewayFactory,
                                                 csms: CsmsServer,
                                                 sim: SimulatorThread) -> None:
    """TxStartPoint/TxStopPoint EnergyTransfer: the transaction starts at the first measured
    power and ends when the session's power is suspended (a 0 W limit), not at its stop."""
    gw = await gateway_factory(1, ocpp="2.0.1")
    await booted(gw, csms)
    # TxCtrlr's variables are the settings (device model), set by the CSMS.
    r = await csms.call(SID, "GetVariables", {"getVariableData": [
        {"component": {"name": "TxCtrlr"}, "variable": {"name": name}}
        for name in ("TxStartPoint", "TxStopPoint")]})
    assert [v["attributeValue"] for v in r["getVariableResult"]] == ["PowerPathClosed"] * 2
    r = await csms.call(SID, "SetVariables", {"setVariableData": [
        {"attributeValue": "EnergyTransfer", "component": {"name": "TxCtrlr"},
         "variable": {"name": name}} for name in ("TxStartPoint", "TxStopPoint")]})
    assert [v["attributeStatus"] for v in r["setVariableResult"]] == ["Accepted"] * 2
    assert gw.stations[SID].settings.text("tx_start_point") == "EnergyTransfer"
    after = csms.last_seq()
    r = await csms.call(SID, "RequestStartTransaction",
                        {"idToken": TOKEN, "remoteStartId": 77, "evseId": 1})
    assert r == {"status": "Accepted"}
    started = (await csms.wait_for(SID, "TransactionEvent", lambda p: p["eventType"] == "Started",
                                   after=after, timeout=20)).payload
    # By then power flows: the sample that opened it saw it.
    assert gw.stations[SID].sample(1).power_w > 0
    assert started["triggerReason"] == "ChargingStateChanged"
    assert started["seqNo"] == 0 and started["transactionInfo"]["remoteStartId"] == 77
    tid = started["transactionInfo"]["transactionId"]
    r = await csms.call(SID, "SetChargingProfile", {"evseId": 1, "chargingProfile": {
        "id": 12, "stackLevel": 1, "chargingProfilePurpose": "TxProfile",
        "chargingProfileKind": "Relative", "transactionId": tid,
        "chargingSchedule": [{"id": 1, "chargingRateUnit": "W",
                              "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 0}]}]}})
    assert r["status"] == "Accepted"
    ended = (await csms.wait_for(SID, "TransactionEvent", lambda p: p["eventType"] == "Ended",
                                 after=after, timeout=20)).payload
    assert ended["triggerReason"] == "ChargingStateChanged"
    assert ended["transactionInfo"]["stoppedReason"] == "Other"
    await until(lambda: not gw.stations[SID].transactions and sim.written.setpoint_w == 0, 15)
    assert_contiguous(events(csms, tid))


async def test_session_stopped_before_its_start_point_sends_nothing(
        gateway_factory: GatewayFactory, csms: CsmsServer, sim: SimulatorThread) -> None:
    """TxStartPoint EnergyTransfer with a 0 W default limit: the session never transfers energy,
    so no transaction exists for the CSMS; stopping it sends no event."""
    gw = await gateway_factory(1, ocpp="2.0.1")
    await booted(gw, csms)
    ep = gw.endpoints[SID]
    gw.stations[SID].settings.set("tx_start_point", "EnergyTransfer")
    ep.ctx.station.prepare(2)
    # the SoC window or a schedule could hold it at 0 W: here the session is ended at once
    tx = await transactions.start_session(ep.ctx, 2, TOKEN, 5)
    assert tx is not None
    transactions.stop_session(ep.ctx, 2, StopReason.LOCAL)
    await csms.call(SID, "TriggerMessage", {"requestedMessage": "Heartbeat"})
    assert not csms.of(SID, "TransactionEvent")
    assert gw.journal is not None and gw.journal.outbox.depth(SID) == 0
    assert gw.journal.transactions.open_transactions(SID) == []
