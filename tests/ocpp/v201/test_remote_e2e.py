"""2.0.1 F Remote control end to end: RequestStart/Stop, UnlockConnector, TriggerMessage."""

from __future__ import annotations

from waiting import until

from bess_gateway.demo.csms import CsmsServer
from bess_gateway.sim.server import SimulatorThread
from tests.conftest import GatewayFactory
from tests.ocpp.v201.test_transactions_e2e import SID, TOKEN, booted, start

# 2.0.1 MessageTriggerEnumType
TRIGGERABLE = ("BootNotification", "LogStatusNotification", "FirmwareStatusNotification",
               "Heartbeat", "MeterValues", "SignChargingStationCertificate", "SignV2GCertificate",
               "StatusNotification", "TransactionEvent", "SignCombinedCertificate",
               "PublishFirmwareStatusNotification")


async def test_unlock_connector(gateway_factory: GatewayFactory, csms: CsmsServer,
                                sim: SimulatorThread) -> None:
    gw = await gateway_factory(1, ocpp="2.0.1")
    await booted(gw, csms)
    for evse, connector in ((3, 1), (1, 2)):
        r = await csms.call(SID, "UnlockConnector", {"evseId": evse, "connectorId": connector})
        assert r["status"] == "UnknownConnector"
    assert (await csms.call(SID, "UnlockConnector", {"evseId": 1, "connectorId": 1}))[
        "status"] == "Unlocked"
    await start(csms, evse=1)
    await until(lambda: sim.written.setpoint_w == 150_000, 15)
    # An authorized session holds the (virtual) connector: not unlocked, not ended (F05.FR.02).
    r = await csms.call(SID, "UnlockConnector", {"evseId": 1, "connectorId": 1})
    assert r["status"] == "OngoingAuthorizedTransaction"
    assert 1 in gw.stations[SID].transactions and sim.written.setpoint_w == 150_000
    assert (await csms.call(SID, "UnlockConnector", {"evseId": 2, "connectorId": 1}))[
        "status"] == "Unlocked"


async def test_trigger_messages(gateway_factory: GatewayFactory, csms: CsmsServer,
                                sim: SimulatorThread) -> None:
    gw = await gateway_factory(1, ocpp="2.0.1")
    await booted(gw, csms)
    ctx = gw.endpoints[SID].ctx

    async def trigger(message: str, evse: dict[str, int] | None = None) -> str:
        payload: dict[str, object] = {"requestedMessage": message}
        if evse is not None:
            payload["evse"] = evse
        return str((await csms.call(SID, "TriggerMessage", payload))["status"])

    # Already accepted: a BootNotification is not sent again (F06.FR.17).
    boots = len(csms.of(SID, "BootNotification"))
    assert await trigger("BootNotification") == "Rejected"

    after = csms.last_seq()
    assert await trigger("Heartbeat") == "Accepted"
    await csms.wait_for(SID, "Heartbeat", after=after)

    after = csms.last_seq()
    assert await trigger("StatusNotification", {"id": 2, "connectorId": 1}) == "Accepted"
    m = await csms.wait_for(SID, "StatusNotification", after=after)
    assert m.payload["evseId"] == 2 and m.payload["connectorStatus"] == "Available"

    after = csms.last_seq()
    assert await trigger("MeterValues", {"id": 2}) == "Accepted"
    m = await csms.wait_for(SID, "MeterValues", after=after)
    assert m.payload["evseId"] == 2
    values = m.payload["meterValue"][0]["sampledValue"]
    assert values and all(v["context"] == "Trigger" for v in values)
    # AlignedDataCtrlr.Measurands (default: the energy registers), the charge EVSE's own
    assert {v["measurand"] for v in values} == {"Energy.Active.Import.Register"}
    assert values[0]["unitOfMeasure"] == {"unit": "Wh"}

    # No transaction: nothing to report.
    assert await trigger("TransactionEvent") == "Rejected"
    assert await trigger("MeterValues", {"id": 7}) == "Rejected"

    started = await start(csms, evse=1)
    tid = started["transactionInfo"]["transactionId"]
    after = csms.last_seq()
    assert await trigger("TransactionEvent", {"id": 1}) == "Accepted"
    m = await csms.wait_for(SID, "TransactionEvent", lambda p: p["triggerReason"] == "Trigger",
                            after=after)
    assert m.payload["eventType"] == "Updated"
    assert m.payload["transactionInfo"]["transactionId"] == tid
    assert m.payload["meterValue"][0]["sampledValue"][0]["context"] == "Trigger"
    assert await trigger("TransactionEvent", {"id": 2}) == "Rejected"

    # What no block sends is NotImplemented.
    unowned = [t for t in TRIGGERABLE if t not in ctx.triggers and t not in (
        "BootNotification", "MeterValues", "TransactionEvent")]
    for message in unowned:
        assert await trigger(message) == "NotImplemented"
    assert len(csms.of(SID, "BootNotification")) == boots


async def test_remote_start_refused_by_authorization(gateway_factory: GatewayFactory,
                                                     csms: CsmsServer,
                                                     sim: SimulatorThread) -> None:
    """AuthorizeRemoteStart: the answer is Accepted, then Authorize says Blocked: no session,
    no TransactionEvent, the EVSE is Available again."""
    gw = await gateway_factory(1, ocpp="2.0.1")
    await booted(gw, csms)
    gw.stations[SID].settings.set("authorize_remote_tx", "true")
    csms.policy.blocked_id_tags = {"BAD"}
    after = csms.last_seq()
    r = await csms.call(SID, "RequestStartTransaction",
                        {"idToken": {"idToken": "BAD", "type": "ISO14443"}, "remoteStartId": 5,
                         "evseId": 1})
    assert r == {"status": "Accepted"}
    await csms.wait_for(SID, "Authorize", after=after)
    st = gw.stations[SID]
    await until(lambda: 1 not in st.preparing, 15)
    assert str(st.status(1).status) == "Available" and not st.transactions
    assert not [m for m in csms.of(SID, "TransactionEvent") if m.seq > after]
    assert sim.written.setpoint_w == 0
    # The same request with a good token starts.
    started = await start(csms, evse=1, token=TOKEN)
    assert started["idToken"] == TOKEN
