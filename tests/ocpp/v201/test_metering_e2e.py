"""J Metering end to end: clock-aligned values (2.0.1 AlignedDataCtrlr; the same due-time logic
drives 1.6 ClockAlignedDataInterval) and charging-state changes in TransactionEvents."""

from __future__ import annotations

from datetime import UTC, datetime

from waiting import until

from bess_gateway.demo.csms import CsmsServer
from bess_gateway.sim.server import SimulatorThread
from tests.conftest import GatewayFactory
from tests.ocpp.v201.test_transactions_e2e import SID, booted, start


async def test_aligned_values_in_sessions_and_idle(gateway_factory: GatewayFactory,
                                                   csms: CsmsServer,
                                                   sim: SimulatorThread) -> None:
    gw = await gateway_factory(1, ocpp="2.0.1")
    await booted(gw, csms)
    settings = gw.stations[SID].settings
    settings.set("meter_values_aligned_data", "Energy.Active.Export.Register,"
                 "Energy.Active.Import.Register,SoC")
    settings.set("aligned_data_send_during_idle", "true")
    settings.set("clock_aligned_interval_s", "1")
    # Idle: MeterValues per EVSE, context Sample.Clock, the aligned measurands only.
    for evse, register in ((1, "Energy.Active.Import.Register"),
                           (2, "Energy.Active.Import.Register")):
        m = await csms.wait_for(SID, "MeterValues", lambda p, e=evse: p["evseId"] == e,
                                timeout=15)
        values = m.payload["meterValue"][0]["sampledValue"]
        assert {v["measurand"] for v in values} == {register, "SoC"}
        assert all(v["context"] == "Sample.Clock" for v in values)

    started = await start(csms, evse=1)
    tid = started["transactionInfo"]["transactionId"]
    after = csms.last_seq()
    # In a session: a TransactionEvent Updated (MeterValueClock); the idle EVSE keeps MeterValues.
    m = await csms.wait_for(SID, "TransactionEvent",
                            lambda p: p["triggerReason"] == "MeterValueClock", after=after,
                            timeout=15)
    assert m.payload["transactionInfo"]["transactionId"] == tid
    assert m.payload["meterValue"][0]["sampledValue"][0]["context"] == "Sample.Clock"
    await csms.wait_for(SID, "MeterValues", lambda p: p["evseId"] == 2, after=after)
    later = csms.last_seq()
    await until(lambda: len([x for x in csms.of(SID, "MeterValues") if x.seq > later]) >= 2, 15)
    assert all(x.payload["evseId"] == 2 for x in csms.of(SID, "MeterValues") if x.seq > later)

    # Interval 0: no more aligned values. Once the change is answered any aligned send in
    # flight has been made; three periodic samples later (1 s interval) none has followed.
    settings.set("clock_aligned_interval_s", "0")
    await csms.call(SID, "TriggerMessage", {"requestedMessage": "Heartbeat"})
    mark = csms.last_seq()
    await until(lambda: len([x for x in csms.of(SID, "TransactionEvent") if x.seq > mark and
                             x.payload["triggerReason"] == "MeterValuePeriodic"]) >= 3, 20)
    assert not [x for x in csms.received if x.seq > mark and x.station == SID and (
        x.action == "MeterValues" or x.payload.get("triggerReason") == "MeterValueClock")]


async def test_charging_state_changes(gateway_factory: GatewayFactory, csms: CsmsServer,
                                      sim: SimulatorThread) -> None:
    """The session's power goes to 0 (CSMS limit 0 W on the EVSE) and back: Updated events with
    triggerReason ChargingStateChanged, SuspendedEVSE then Charging."""
    gw = await gateway_factory(1, ocpp="2.0.1")
    await booted(gw, csms)
    started = await start(csms, evse=1)
    tid = started["transactionInfo"]["transactionId"]
    await until(lambda: sim.written.setpoint_w == 150_000, 15)
    after = csms.last_seq()
    r = await csms.call(SID, "SetChargingProfile", {"evseId": 1, "chargingProfile": {
        "id": 11, "stackLevel": 1, "chargingProfilePurpose": "TxProfile",
        "chargingProfileKind": "Absolute", "transactionId": tid,
        "chargingSchedule": [{"id": 1, "chargingRateUnit": "W",
                              "startSchedule": datetime.now(UTC).isoformat(),
                              "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 0}]}]}})
    assert r["status"] == "Accepted"
    m = await csms.wait_for(SID, "TransactionEvent",
                            lambda p: p["triggerReason"] == "ChargingStateChanged",
                            after=after, timeout=20)
    assert m.payload["transactionInfo"]["chargingState"] == "SuspendedEVSE"
    after = m.seq
    r = await csms.call(SID, "ClearChargingProfile", {"chargingProfileId": 11})
    assert r["status"] == "Accepted"
    m = await csms.wait_for(SID, "TransactionEvent",
                            lambda p: p["triggerReason"] == "ChargingStateChanged",
                            after=after, timeout=20)
    assert m.payload["transactionInfo"]["chargingState"] == "Charging"


async def test_aligned_values_16_share_the_logic(gateway_factory: GatewayFactory,
                                                 csms: CsmsServer) -> None:
    """A mixed gateway: 1.6 ClockAlignedDataInterval drives MeterValues (Sample.Clock) per
    connector from the same aligned loop."""
    gw = await gateway_factory(2, ocpp="mixed")
    sid16 = "DEMO-01"
    await csms.wait_for(sid16, "StatusNotification", lambda p: p["connectorId"] == 2, timeout=30)
    await until(lambda: gw.endpoints[sid16].ctx.online, 15)
    r = await csms.call(sid16, "ChangeConfiguration",
                        {"key": "MeterValuesAlignedData", "value": "SoC"})
    assert r["status"] == "Accepted"
    r = await csms.call(sid16, "ChangeConfiguration",
                        {"key": "ClockAlignedDataInterval", "value": "1"})
    assert r["status"] == "Accepted"
    for connector in (1, 2):
        m = await csms.wait_for(sid16, "MeterValues",
                                lambda p, c=connector: p["connectorId"] == c, timeout=15)
        (value,) = m.payload["meterValue"][0]["sampledValue"]
        assert value["measurand"] == "SoC" and value["context"] == "Sample.Clock"
    # The 2.0.1 endpoint of the same gateway sends none (its interval is still 0).
    assert not csms.of("DEMO-02", "MeterValues")
