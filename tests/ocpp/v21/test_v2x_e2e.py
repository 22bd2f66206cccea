"""2.1 end to end: the demo CSMS on ocpp.v21 (which validates every CALL we send against the 2.1
schemas; the suite also schema-checks every frame before it leaves), the real simulator over
Modbus TCP, SQLite. One bidirectional EVSE; V2X setpoints move the PCS both ways within limits.
2.1 signs (design.md section 9): + setpoint charges the battery = PCS setpoint negative."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from waiting import booted, until

from bess_gateway.demo.csms import CsmsServer
from bess_gateway.gateway import Gateway
from bess_gateway.sim.server import SimulatorThread

_remote_ids = itertools.count(1)


def token(text: str) -> dict[str, str]:
    return {"idToken": text, "type": "Central"}


async def start_tx(csms: CsmsServer, sid: str, **extra: Any) -> dict[str, Any]:
    after = csms.last_seq()
    r = await csms.call(sid, "RequestStartTransaction",
                        {"idToken": token("TAG-1"), "remoteStartId": next(_remote_ids),
                         "evseId": 1, **extra})
    assert r["status"] == "Accepted", r
    m = await csms.wait_for(sid, "TransactionEvent", lambda p: p["eventType"] == "Started",
                            after=after, timeout=20)
    return m.payload


def ts(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def v2x_profile(pid: int, periods: list[dict[str, Any]], *, purpose: str = "TxDefaultProfile",
                stack: int = 0, **extra: Any) -> dict[str, Any]:
    return {"id": pid, "stackLevel": stack, "chargingProfilePurpose": purpose,
            "chargingProfileKind": "Absolute",
            "chargingSchedule": [{"id": pid, "chargingRateUnit": "W",
                                  "startSchedule": ts(datetime.now(UTC) - timedelta(minutes=1)),
                                  "chargingSchedulePeriod": periods}], **extra}


async def set_profile(csms: CsmsServer, sid: str, evse: int, p: dict[str, Any]) -> dict[str, Any]:
    return await csms.call(sid, "SetChargingProfile", {"evseId": evse, "chargingProfile": p})


def net_alloc(gw: Gateway, sid: str) -> float:
    """The core's net target for the station, PCS sign (+ discharge)."""
    allocs = gw.core.snapshot()["allocations"]
    st = gw.stations[sid]
    return allocs.get(st.meter_id(1), 0.0) - allocs.get(st.meter_id(2), 0.0)


async def test_boot_status_and_one_bidirectional_evse(gateway_factory, csms: CsmsServer) -> None:
    gw = await gateway_factory(1, ocpp="2.1")
    (sid,) = await booted(gw, csms)
    assert csms.stations[sid].version == "2.1"
    status = await csms.wait_for(sid, "StatusNotification")
    assert status.payload["evseId"] == 1 and status.payload["connectorStatus"] == "Available"
    await csms.wait_until(lambda: len(csms.of(sid, "StatusNotification")) >= 1)
    assert {m.payload["evseId"] for m in csms.of(sid, "StatusNotification")} == {1}
    # There is no EVSE 2 on a 2.1 station.
    r = await csms.call(sid, "RequestStartTransaction",
                        {"idToken": token("T"), "remoteStartId": 99, "evseId": 2})
    assert r["status"] == "Rejected"


async def test_plain_transaction_charges_and_reports_both_registers(
        gateway_factory, csms: CsmsServer, sim: SimulatorThread) -> None:
    gw = await gateway_factory(1, ocpp="2.1")
    (sid,) = await booted(gw, csms)
    started = await start_tx(csms, sid)
    assert started["evse"] == {"id": 1, "connectorId": 1}
    measurands = {sv["measurand"] for mv in started["meterValue"] for sv in mv["sampledValue"]}
    assert {"Energy.Active.Import.Register", "Energy.Active.Export.Register"} <= measurands
    # ChargingOnly (no profile): the battery charges at the session maximum.
    await until(lambda: sim.written.setpoint_w == -150_000, 20)
    tx_id = started["transactionInfo"]["transactionId"]
    after = csms.last_seq()
    assert (await csms.call(sid, "RequestStopTransaction", {"transactionId": tx_id}))[
        "status"] == "Accepted"
    ended = await csms.wait_for(sid, "TransactionEvent", lambda p: p["eventType"] == "Ended",
                                after=after, timeout=20)
    end_values = {sv["measurand"]: sv["value"] for mv in ended.payload["meterValue"]
                  for sv in mv["sampledValue"] if sv["context"] == "Transaction.End"}
    begin_values = {sv["measurand"]: sv["value"] for mv in started["meterValue"]
                    for sv in mv["sampledValue"]}
    assert end_values["Energy.Active.Import.Register"] > \
        begin_values["Energy.Active.Import.Register"]
    await until(lambda: sim.written.setpoint_w == 0, 20)


async def test_central_setpoint_discharges_within_discharge_limit_and_idle_stops(
        gateway_factory, csms: CsmsServer, sim: SimulatorThread) -> None:
    gw = await gateway_factory(1, ocpp="2.1")
    (sid,) = await booted(gw, csms)
    started = await start_tx(csms, sid)
    tx_id = started["transactionInfo"]["transactionId"]
    # -60 kW setpoint (discharge) inside a -40 kW dischargeLimit: 40 kW to the grid.
    r = await set_profile(csms, sid, 1, v2x_profile(
        5, [{"startPeriod": 0, "operationMode": "CentralSetpoint", "setpoint": -60_000.0,
             "dischargeLimit": -40_000.0}], purpose="TxProfile", transactionId=tx_id))
    assert r == {"status": "Accepted"}, r
    await until(lambda: net_alloc(gw, sid) == 40_000.0, 10)
    await until(lambda: sim.written.setpoint_w == 40_000, 20)
    # Discharging is energy transfer: the transaction stays Charging (not SuspendedEVSE).
    assert not [m for m in csms.of(sid, "TransactionEvent")
                if m.payload["transactionInfo"].get("chargingState") == "SuspendedEVSE"]
    # +30 kW setpoint (charge) inside limit 100 kW.
    r = await set_profile(csms, sid, 1, v2x_profile(
        5, [{"startPeriod": 0, "operationMode": "CentralSetpoint", "setpoint": 30_000.0,
             "limit": 100_000.0}], purpose="TxProfile", transactionId=tx_id))
    assert r == {"status": "Accepted"}, r
    await until(lambda: sim.written.setpoint_w == -30_000, 20)

    comp = await csms.call(sid, "GetCompositeSchedule", {"evseId": 1, "duration": 60,
                                                         "chargingRateUnit": "W"})
    assert comp["status"] == "Accepted"
    first = comp["schedule"]["chargingSchedulePeriod"][0]
    assert first["operationMode"] == "CentralSetpoint" and first["setpoint"] == 30_000.0
    assert first["limit"] == 100_000.0 and first["dischargeLimit"] <= 0

    after = csms.last_seq()
    r = await set_profile(csms, sid, 1, v2x_profile(
        5, [{"startPeriod": 0, "operationMode": "Idle"}], purpose="TxProfile",
        transactionId=tx_id))
    assert r == {"status": "Accepted"}, r
    await until(lambda: sim.written.setpoint_w == 0, 20)
    # 2.1 tells the CSMS the mode changed (CentralSetpoint -> Idle), and Idle is no transfer.
    changed = await csms.wait_for(
        sid, "TransactionEvent", lambda p: p["triggerReason"] == "OperationModeChanged",
        after=after, timeout=10)
    assert changed.payload["transactionInfo"]["operationMode"] == "Idle"
    await csms.wait_for(
        sid, "TransactionEvent",
        lambda p: p["transactionInfo"].get("chargingState") == "SuspendedEVSE", after=after,
        timeout=10)


async def test_profiles_breaking_the_operation_mode_tables_are_rejected(
        gateway_factory, csms: CsmsServer) -> None:
    gw = await gateway_factory(1, ocpp="2.1")
    (sid,) = await booted(gw, csms)

    async def reason(evse: int, p: dict[str, Any]) -> str:
        r = await set_profile(csms, sid, evse, p)
        assert r["status"] == "Rejected", r
        assert r["statusInfo"]["additionalInfo"]
        return str(r["statusInfo"]["reasonCode"])

    # 2.1 part 2: a ChargingStationMaxProfile allows ChargingOnly only.
    assert await reason(0, v2x_profile(1, [{"startPeriod": 0, "operationMode": "CentralSetpoint",
                                            "setpoint": 1000.0}],
                                       purpose="ChargingStationMaxProfile")) == "InvalidSchedule"
    # CentralSetpoint requires a setpoint; ChargingOnly a limit.
    assert await reason(1, v2x_profile(2, [{"startPeriod": 0,
                                            "operationMode": "CentralSetpoint"}])) == \
        "InvalidSchedule"
    assert await reason(1, v2x_profile(3, [{"startPeriod": 0}])) == "InvalidSchedule"
    # Frequency modes: not offered by this PCS, said clearly.
    for mode in ("CentralFrequency", "LocalFrequency"):
        r = await set_profile(csms, sid, 1, v2x_profile(
            4, [{"startPeriod": 0, "operationMode": mode, "setpoint": 0.0}]))
        assert r["status"] == "Rejected"
        assert "frequency" in r["statusInfo"]["additionalInfo"]
    # A well-formed one is accepted.
    assert (await set_profile(csms, sid, 1, v2x_profile(
        6, [{"startPeriod": 0, "operationMode": "CentralSetpoint", "setpoint": -5000.0}])))[
        "status"] == "Accepted"


async def test_mixed_gateway_runs_all_three_versions(gateway_factory, csms: CsmsServer) -> None:
    gw = await gateway_factory(3, ocpp="mixed")
    ids = await booted(gw, csms)
    assert sorted(csms.stations[s].version for s in ids) == ["1.6", "2.0.1", "2.1"]


async def test_device_model_has_one_bidirectional_evse_and_v2x_ctrlr(
        gateway_factory, csms: CsmsServer) -> None:
    gw = await gateway_factory(1, ocpp="2.1")
    (sid,) = await booted(gw, csms)

    def item(component: str, variable: str, evse: int | None) -> dict[str, Any]:
        comp: dict[str, Any] = {"name": component}
        if evse is not None:
            comp["evse"] = {"id": evse}
        return {"component": comp, "variable": {"name": variable}}

    r = await csms.call(sid, "GetVariables", {"getVariableData": [
        item("V2XChargingCtrlr", "SupportedOperationModes", 1),
        item("V2XChargingCtrlr", "SupportedEnergyTransferModes", 1),
        item("V2XChargingCtrlr", "Enabled", 1),
        item("EVSE", "AvailabilityState", 1),
        item("EVSE", "AvailabilityState", 2),
    ]})
    got = {(x["component"]["name"], x["variable"]["name"], x["component"]["evse"]["id"]):
           (x["attributeStatus"], x.get("attributeValue")) for x in r["getVariableResult"]}
    modes = got[("V2XChargingCtrlr", "SupportedOperationModes", 1)]
    assert modes[0] == "Accepted"
    assert "CentralSetpoint" in str(modes[1]) and "Frequency" not in str(modes[1])
    assert got[("V2XChargingCtrlr", "SupportedEnergyTransferModes", 1)] == ("Accepted", "DC_BPT")
    assert got[("V2XChargingCtrlr", "Enabled", 1)] == ("Accepted", "true")
    assert got[("EVSE", "AvailabilityState", 1)] == ("Accepted", "Available")
    assert got[("EVSE", "AvailabilityState", 2)][0] == "UnknownComponent"


async def test_charging_needs_from_the_battery_limits(
        gateway_factory, csms: CsmsServer, sim: SimulatorThread) -> None:
    gw = await gateway_factory(1, ocpp="2.1")
    (sid,) = await booted(gw, csms)
    await start_tx(csms, sid)
    m = await csms.wait_for(sid, "NotifyEVChargingNeeds", timeout=10)
    needs = m.payload["chargingNeeds"]
    assert m.payload["evseId"] == 1 and needs["requestedEnergyTransfer"] == "DC_BPT"
    snap = gw.core.snapshot()
    v2x = needs["v2xChargingParameters"]
    # The battery's own limits, never above the session maximum (150 kW, design.md).
    assert v2x["maxChargePower"] == round(min(150_000.0, snap["limit_charge_w"]), 1)
    assert v2x["maxDischargePower"] == round(min(150_000.0, snap["limit_discharge_w"]), 1)
    assert needs["dcChargingParameters"]["stateOfCharge"] == round(sim.state.soc_pct)


def _register(event: dict[str, Any], context: str, measurand: str) -> float:
    (value,) = [sv["value"] for mv in event["meterValue"] for sv in mv["sampledValue"]
                if sv["context"] == context and sv["measurand"] == measurand]
    return float(value)


async def test_ended_bills_what_the_pcs_registers_moved_both_ways(
        gateway_factory, csms: CsmsServer, sim: SimulatorThread) -> None:
    """The Ended event's import and export registers each end after their leg's ramp-down
    (bess_gateway.endpoint.settling, v21/export_settling.py): their deltas are what the PCS
    counted."""
    gw = await gateway_factory(1, ocpp="2.1")
    (sid,) = await booted(gw, csms)
    dis0, chg0 = sim.state.energy_discharged_wh, sim.state.energy_charged_wh
    started = await start_tx(csms, sid, chargingProfile={
        "id": 9, "stackLevel": 0, "chargingProfilePurpose": "TxProfile",
        "chargingProfileKind": "Relative",
        "chargingSchedule": [{"id": 9, "chargingRateUnit": "W", "chargingSchedulePeriod": [
            {"startPeriod": 0, "operationMode": "CentralSetpoint", "setpoint": -150_000.0}]}]})
    tx_id = started["transactionInfo"]["transactionId"]
    await until(lambda: sim.state.energy_discharged_wh - dis0 > 30, 20)
    after = csms.last_seq()
    assert (await csms.call(sid, "RequestStopTransaction", {"transactionId": tx_id}))[
        "status"] == "Accepted"
    ended = await csms.wait_for(sid, "TransactionEvent", lambda p: p["eventType"] == "Ended",
                                after=after, timeout=20)
    await until(lambda: sim.written.setpoint_w == 0 and abs(sim.state.measured_w) < 1, 10)
    moved_dis = sim.state.energy_discharged_wh - dis0
    moved_chg = sim.state.energy_charged_wh - chg0
    begin, end = started, ended.payload
    billed_dis = _register(end, "Transaction.End", "Energy.Active.Export.Register") - \
        _register(begin, "Transaction.Begin", "Energy.Active.Export.Register")
    billed_chg = _register(end, "Transaction.End", "Energy.Active.Import.Register") - \
        _register(begin, "Transaction.Begin", "Energy.Active.Import.Register")
    assert moved_dis > 30
    assert abs(billed_dis - moved_dis) <= 1 + 0.01 * moved_dis, (billed_dis, moved_dis)
    assert abs(billed_chg - moved_chg) <= 1 + 0.01 * max(moved_chg, 1), (billed_chg, moved_chg)
