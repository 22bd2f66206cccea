"""2.0.1 K Smart Charging end to end: the demo CSMS (ocpp.v201) over WebSocket, the real simulator
over Modbus TCP, SQLite. Profiles move the core's allocations and the setpoint the PCS receives;
the battery's own derating is reported with NotifyChargingLimit."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from waiting import booted, until

from bess_gateway.demo.csms import CsmsServer
from bess_gateway.gateway import Gateway
from bess_gateway.sim.server import SimulatorThread

_remote_ids = itertools.count(1)


def token(text: str) -> dict[str, str]:
    return {"idToken": text, "type": "Central"}


async def start_tx(csms: CsmsServer, sid: str, evse: int, tag: str = "TAG-1",
                   **extra: Any) -> str:
    after = csms.last_seq()
    r = await csms.call(sid, "RequestStartTransaction",
                        {"idToken": token(tag), "remoteStartId": next(_remote_ids),
                         "evseId": evse, **extra})
    assert r["status"] == "Accepted"
    m = await csms.wait_for(sid, "TransactionEvent", lambda p: p["eventType"] == "Started",
                            after=after, timeout=20)
    return str(m.payload["transactionInfo"]["transactionId"])


def ts(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def profile(pid: int, limit: float, *, purpose: str = "TxDefaultProfile", stack: int = 0,
            kind: str = "Absolute", unit: str = "W", start: datetime | None = None,
            periods: list[tuple[int, float]] | None = None, schedule_id: int | None = None,
            **extra: Any) -> dict[str, Any]:
    schedule: dict[str, Any] = {
        "id": pid * 10 if schedule_id is None else schedule_id,
        "chargingRateUnit": unit,
        "chargingSchedulePeriod": [{"startPeriod": s, "limit": lim}
                                   for s, lim in (periods or [(0, limit)])],
    }
    if kind != "Relative":
        schedule["startSchedule"] = ts(start or datetime.now(UTC) - timedelta(minutes=1))
    if "duration" in extra:
        schedule["duration"] = extra.pop("duration")
    return {"id": pid, "stackLevel": stack, "chargingProfilePurpose": purpose,
            "chargingProfileKind": kind, "chargingSchedule": [schedule], **extra}


async def set_profile(csms: CsmsServer, sid: str, evse: int, p: dict[str, Any]) -> dict[str, Any]:
    return await csms.call(sid, "SetChargingProfile", {"evseId": evse, "chargingProfile": p})


async def accepted(csms: CsmsServer, sid: str, evse: int, p: dict[str, Any]) -> None:
    r = await set_profile(csms, sid, evse, p)
    assert r == {"status": "Accepted"}, r


async def rejected_for(csms: CsmsServer, sid: str, evse: int, p: dict[str, Any]) -> str:
    r = await set_profile(csms, sid, evse, p)
    assert r["status"] == "Rejected", r
    return str(r["statusInfo"]["reasonCode"])


def alloc(gw: Gateway, sid: str, evse: int) -> float | None:
    return gw.core.snapshot()["allocations"].get(gw.stations[sid].meter_id(evse))


async def test_tx_default_limits_the_pcs_and_clear_restores_it(
        gateway_factory, csms: CsmsServer, sim: SimulatorThread) -> None:
    gw = await gateway_factory(1, ocpp="2.0.1")
    (sid,) = await booted(gw, csms)
    await start_tx(csms, sid, 1)
    await until(lambda: sim.written.setpoint_w == 150_000, 20)

    await accepted(csms, sid, 1, profile(7, 40_000.0))
    await until(lambda: alloc(gw, sid, 1) == 40_000.0)
    await until(lambda: sim.written.setpoint_w == 40_000)
    await until(lambda: sim.state.measured_w < 45_000)

    assert await csms.call(sid, "ClearChargingProfile", {"chargingProfileId": 7}) == {
        "status": "Accepted"}
    assert await csms.call(sid, "ClearChargingProfile", {"chargingProfileId": 7}) == {
        "status": "Unknown"}
    await until(lambda: alloc(gw, sid, 1) == 150_000.0)
    await until(lambda: sim.written.setpoint_w == 150_000)


async def test_tx_profiles_name_their_transaction(
        gateway_factory, csms: CsmsServer, sim: SimulatorThread) -> None:
    gw = await gateway_factory(1, ocpp="2.0.1")
    (sid,) = await booted(gw, csms)
    # K01.FR.03: a TxProfile without transactionId; one whose transaction is not running.
    assert await rejected_for(csms, sid, 2, profile(1, 30_000.0, purpose="TxProfile")) == \
        "MissingParam"
    assert await rejected_for(csms, sid, 2, profile(1, 30_000.0, purpose="TxProfile",
                                                    transactionId="nope")) == "TxNotFound"

    tx_id = await start_tx(csms, sid, 2)
    assert await rejected_for(csms, sid, 1, profile(1, 1.0, purpose="TxProfile",
                                                    transactionId=tx_id)) == "TxNotFound"
    assert await rejected_for(csms, sid, 0, profile(1, 1.0, purpose="TxProfile",
                                                    transactionId=tx_id)) == "InvalidValue"
    # A TxProfile overrules a TxDefaultProfile of any stack level.
    await accepted(csms, sid, 2, profile(4, 60_000.0, stack=9))
    await until(lambda: alloc(gw, sid, 2) == 60_000.0)
    await accepted(csms, sid, 2, profile(3, 30_000.0, purpose="TxProfile", transactionId=tx_id))
    await until(lambda: alloc(gw, sid, 2) == 30_000.0)
    await until(lambda: sim.written.setpoint_w == -30_000)
    # Two TxProfiles of one transaction at one stack level compete (K01.FR.39).
    assert await rejected_for(csms, sid, 2, profile(5, 1.0, purpose="TxProfile",
                                                    transactionId=tx_id)) == "DuplicateProfile"

    # The TxProfile ends with its transaction; the TxDefaultProfile stays.
    after = csms.last_seq()
    assert (await csms.call(sid, "RequestStopTransaction", {"transactionId": tx_id}))[
        "status"] == "Accepted"
    await csms.wait_for(sid, "TransactionEvent", lambda p: p["eventType"] == "Ended",
                        after=after)
    assert await csms.call(sid, "ClearChargingProfile", {"chargingProfileId": 3}) == {
        "status": "Unknown"}
    assert await csms.call(sid, "ClearChargingProfile", {"chargingProfileId": 4}) == {
        "status": "Accepted"}


async def test_request_start_with_a_relative_tx_profile(
        gateway_factory, csms: CsmsServer, sim: SimulatorThread) -> None:
    gw = await gateway_factory(1, ocpp="2.0.1")
    (sid,) = await booted(gw, csms)
    relative = profile(8, 0.0, purpose="TxProfile", kind="Relative",
                       periods=[(0, 25_000.0), (3600, 100_000.0)])
    tx_id = await start_tx(csms, sid, 1, "T-REL", chargingProfile=relative)
    # The session never runs above its TxProfile: its first allocation is already 25 kW.
    await until(lambda: alloc(gw, sid, 1) is not None)
    assert alloc(gw, sid, 1) == 25_000.0
    await until(lambda: sim.written.setpoint_w == 25_000)
    assert max(w for _, w in sim.setpoint_writes()) <= 25_000
    # Reported with the transaction it belongs to.
    await csms.call(sid, "GetChargingProfiles", {"requestId": 3, "chargingProfile": {
        "chargingProfilePurpose": "TxProfile"}})
    report = await csms.wait_for(sid, "ReportChargingProfiles", lambda p: p["requestId"] == 3)
    assert report.payload["chargingProfile"][0]["transactionId"] == tx_id

    # A start's profile must be a TxProfile.
    r = await csms.call(sid, "RequestStartTransaction", {
        "idToken": token("T-X"), "remoteStartId": 99, "evseId": 2,
        "chargingProfile": profile(9, 1.0)})
    assert r["status"] == "Rejected"
    assert 2 not in gw.stations[sid].transactions


async def test_station_max_profile_caps_both_evses_together(
        gateway_factory, csms: CsmsServer, sim: SimulatorThread) -> None:
    gw = await gateway_factory(2, ocpp="2.0.1")
    a, b = await booted(gw, csms)
    await start_tx(csms, a, 1)
    await start_tx(csms, a, 2, "TAG-2")
    await start_tx(csms, b, 1, "TAG-3")
    await until(lambda: alloc(gw, a, 1) == 150_000.0 and alloc(gw, a, 2) == 150_000.0, 20)

    assert await rejected_for(csms, a, 1, profile(
        1, 1.0, purpose="ChargingStationMaxProfile")) == "InvalidValue"
    await accepted(csms, a, 0, profile(1, 80_000.0, purpose="ChargingStationMaxProfile"))
    await until(lambda: alloc(gw, a, 1) == 40_000.0 and alloc(gw, a, 2) == 40_000.0)
    assert alloc(gw, b, 1) == 150_000.0  # another endpoint is not capped
    await accepted(csms, a, 1, profile(2, 10_000.0))
    await until(lambda: alloc(gw, a, 1) == 10_000.0 and alloc(gw, a, 2) == 70_000.0)
    await until(lambda: sim.written.setpoint_w == 90_000)  # 10 + 150 - 70


async def test_2_0_1_refusals_name_2_0_1_purposes(gateway_factory, csms: CsmsServer) -> None:
    """statusInfo speaks 2.0.1: ChargingStationMaxProfile, never 1.6's ChargePointMaxProfile."""
    gw = await gateway_factory(1, ocpp="2.0.1")
    (sid,) = await booted(gw, csms)
    refusals = [await set_profile(csms, sid, 0, profile(
                    1, 1.0, purpose="ChargingStationMaxProfile", kind="Relative")),
                await set_profile(csms, sid, 1, profile(
                    2, 1.0, purpose="ChargingStationMaxProfile"))]
    for r in refusals:
        assert r["status"] == "Rejected", r
        info = r["statusInfo"]["additionalInfo"]
        assert "ChargingStationMaxProfile" in info and "ChargePoint" not in info, info


async def test_2_0_1_refusals_say_why(gateway_factory, csms: CsmsServer) -> None:
    gw = await gateway_factory(1, ocpp="2.0.1")
    (sid,) = await booted(gw, csms)
    now = datetime.now(UTC)
    assert await rejected_for(csms, sid, 3, profile(1, 1.0)) == "UnknownEvse"
    assert await rejected_for(csms, sid, 0, profile(
        1, 1.0, purpose="ChargingStationExternalConstraints")) == "InvalidValue"
    no_start = profile(1, 1.0)
    del no_start["chargingSchedule"][0]["startSchedule"]
    assert await rejected_for(csms, sid, 1, no_start) == "InvalidSchedule"  # K01.FR.40
    rel = profile(1, 1.0, kind="Relative")
    rel["chargingSchedule"][0]["startSchedule"] = ts(now)
    assert await rejected_for(csms, sid, 1, rel) == "InvalidSchedule"  # K01.FR.41
    two = profile(1, 1.0)
    two["chargingSchedule"].append({**two["chargingSchedule"][0], "id": 2})
    assert await rejected_for(csms, sid, 1, two) == "InvalidSchedule"
    assert await rejected_for(csms, sid, 1, profile(1, 1.0, stack=11)) == "InvalidStackLevel"
    assert await rejected_for(csms, sid, 1, profile(
        1, 0.0, periods=[(0, 1.0), (0, 2.0)])) == "InvalidSchedule"

    # Same purpose, stack level and EVSE: overlapping validity competes (K01.FR.06), disjoint
    # validity does not, and the same id replaces.
    await accepted(csms, sid, 1, profile(10, 5_000.0, stack=2, validTo=ts(now + timedelta(
        hours=1))))
    assert await rejected_for(csms, sid, 1, profile(11, 6_000.0, stack=2)) == "DuplicateProfile"
    await accepted(csms, sid, 1, profile(11, 6_000.0, stack=2,
                                         validFrom=ts(now + timedelta(hours=1))))
    await accepted(csms, sid, 1, profile(10, 7_000.0, stack=2, validTo=ts(now + timedelta(
        hours=1))))
    # A TxDefaultProfile on the station and one on an EVSE at one stack level (K01.FR.52/53).
    assert await rejected_for(csms, sid, 0, profile(12, 1_000.0, stack=2)) == "DuplicateProfile"
    await accepted(csms, sid, 0, profile(12, 1_000.0, stack=3))
    assert await rejected_for(csms, sid, 2, profile(13, 1_000.0, stack=3)) == "DuplicateProfile"
    assert len(gw.stations[sid].transactions) == 0


async def test_get_charging_profiles_reports_in_parts(gateway_factory, csms: CsmsServer) -> None:
    gw = await gateway_factory(1, ocpp="2.0.1")
    (sid,) = await booted(gw, csms)
    r = await csms.call(sid, "GetChargingProfiles", {"requestId": 1, "chargingProfile": {}})
    assert r["status"] == "NoProfiles"

    await accepted(csms, sid, 0, profile(1, 80_000.0, purpose="ChargingStationMaxProfile",
                                         schedule_id=77))
    for stack in range(11):  # 11 on EVSE 1: a message of 10 and one of 1
        await accepted(csms, sid, 1, profile(100 + stack, 1_000.0 * (stack + 1), stack=stack))
    await accepted(csms, sid, 2, profile(200, 2_000.0, unit="A", periods=[(0, 16.0)]))

    after = csms.last_seq()
    r = await csms.call(sid, "GetChargingProfiles", {"requestId": 5, "chargingProfile": {}})
    assert r == {"status": "Accepted"}
    await csms.wait_for(sid, "ReportChargingProfiles",
                        lambda p: p["requestId"] == 5 and not p["tbc"], after=after)
    parts = [m.payload for m in csms.of(sid, "ReportChargingProfiles") if m.seq > after]
    assert [(p["evseId"], len(p["chargingProfile"]), p["tbc"]) for p in parts] == [
        (0, 1, True), (1, 10, True), (1, 1, True), (2, 1, False)]
    assert all(p["chargingLimitSource"] == "CSO" for p in parts)
    station_max = parts[0]["chargingProfile"][0]
    assert station_max["chargingProfilePurpose"] == "ChargingStationMaxProfile"
    assert station_max["chargingSchedule"][0]["id"] == 77
    assert station_max["chargingSchedule"][0]["chargingSchedulePeriod"] == [
        {"startPeriod": 0, "limit": 80_000.0}]
    amps = parts[3]["chargingProfile"][0]["chargingSchedule"][0]
    assert amps["chargingRateUnit"] == "A"

    # Criteria: an EVSE (0 = the station-wide ones), ids, purpose + stack, sources.
    async def ids_reported(request_id: int, payload: dict[str, Any]) -> list[int]:
        after = csms.last_seq()
        r = await csms.call(sid, "GetChargingProfiles", {"requestId": request_id, **payload})
        if r["status"] == "NoProfiles":
            return []
        await csms.wait_for(sid, "ReportChargingProfiles",
                            lambda p: p["requestId"] == request_id and not p["tbc"], after=after)
        return [cp["id"] for m in csms.of(sid, "ReportChargingProfiles") if m.seq > after
                for cp in m.payload["chargingProfile"]]

    assert await ids_reported(6, {"evseId": 0, "chargingProfile": {}}) == [1]
    assert await ids_reported(7, {"chargingProfile": {"chargingProfileId": [105, 200, 9]}}) == [
        105, 200]
    assert await ids_reported(12, {"evseId": 1, "chargingProfile": {
        "chargingProfileId": [105, 200]}}) == [105]
    assert await ids_reported(8, {"evseId": 1, "chargingProfile": {
        "chargingProfilePurpose": "TxDefaultProfile", "stackLevel": 3}}) == [103]
    assert await ids_reported(9, {"chargingProfile": {"chargingLimitSource": ["EMS", "SO"]}}) \
        == []
    assert await ids_reported(10, {"chargingProfile": {"chargingLimitSource": ["CSO"],
                                                       "chargingProfilePurpose": "TxProfile"}}) \
        == []

    # ClearChargingProfile by criteria.
    r = await csms.call(sid, "ClearChargingProfile", {"chargingProfileCriteria": {
        "evseId": 1, "chargingProfilePurpose": "TxDefaultProfile"}})
    assert r == {"status": "Accepted"}
    assert await ids_reported(11, {"chargingProfile": {}}) == [1, 200]
    r = await csms.call(sid, "ClearChargingProfile", {"chargingProfileCriteria": {
        "chargingProfilePurpose": "ChargingStationExternalConstraints"}})
    assert r == {"status": "Unknown"}
    assert await csms.call(sid, "ClearChargingProfile", {}) == {"status": "Accepted"}
    assert gw.journal.profiles.charging_profiles(sid) == []


async def test_get_composite_schedule_in_w_and_a(gateway_factory, csms: CsmsServer) -> None:
    gw = await gateway_factory(1, ocpp="2.0.1")
    (sid,) = await booted(gw, csms)
    await until(lambda: "limit_discharge_w" in gw.stations[sid].view.snapshot)
    r = await csms.call(sid, "GetCompositeSchedule", {"evseId": 1, "duration": 600})
    physical = min(150_000.0, gw.stations[sid].view.snapshot["limit_discharge_w"])
    assert r["status"] == "Accepted"
    assert r["schedule"]["evseId"] == 1 and r["schedule"]["duration"] == 600
    assert r["schedule"]["chargingSchedulePeriod"] == [
        {"startPeriod": 0, "limit": pytest.approx(physical, abs=0.1)}]

    # 32 A on 3 phases at 230 V = 22 080 W, then 16 A after 10 minutes.
    await accepted(csms, sid, 1, profile(3, 0.0, unit="A", periods=[(0, 32.0), (600, 16.0)]))
    await accepted(csms, sid, 0, profile(4, 20_000.0, purpose="ChargingStationMaxProfile",
                                         start=datetime.now(UTC) + timedelta(minutes=30)))
    r = await csms.call(sid, "GetCompositeSchedule",
                        {"evseId": 1, "duration": 3600, "chargingRateUnit": "W"})
    sched = r["schedule"]
    assert sched["chargingRateUnit"] == "W"
    periods = sched["chargingSchedulePeriod"]
    assert [p["limit"] for p in periods] == [22_080.0, 11_040.0]
    assert 500 <= periods[1]["startPeriod"] <= 600

    r = await csms.call(sid, "GetCompositeSchedule",
                        {"evseId": 1, "duration": 3600, "chargingRateUnit": "A"})
    periods = r["schedule"]["chargingSchedulePeriod"]
    assert [(p["limit"], p["numberPhases"]) for p in periods] == [(32.0, 3), (16.0, 3)]

    r = await csms.call(sid, "GetCompositeSchedule", {"evseId": 0, "duration": 3600})
    periods = r["schedule"]["chargingSchedulePeriod"]
    assert periods[-1]["limit"] == 20_000.0 and 1700 <= periods[-1]["startPeriod"] <= 1800

    r = await csms.call(sid, "GetCompositeSchedule", {"evseId": 3, "duration": 60})
    assert r["status"] == "Rejected" and r["statusInfo"]["reasonCode"] == "UnknownEvse"
    r = await csms.call(sid, "GetCompositeSchedule", {"evseId": 1, "duration": 2**31 - 1})
    assert r["schedule"]["duration"] == 7 * 86_400


async def test_battery_derating_is_notified_once_and_cleared(
        gateway_factory, csms: CsmsServer, sim: SimulatorThread) -> None:
    gw = await gateway_factory(1, ocpp="2.0.1")
    (sid,) = await booted(gw, csms)
    await start_tx(csms, sid, 1)
    await until(lambda: sim.written.setpoint_w == 150_000, 20)
    assert csms.of(sid, "NotifyChargingLimit") == []

    # 54 C: the BMS derates both directions to 20 % of 600 kW = 120 kW, below the 150 kW the
    # CSMS allows (no profile: the session maximum).
    after = csms.last_seq()
    sim.force_temperature(54.0)
    notes = {}
    for evse in (1, 2):
        m = await csms.wait_for(sid, "NotifyChargingLimit", lambda p, e=evse: p["evseId"] == e,
                                after=after, timeout=20)
        notes[evse] = m.payload
    for p in notes.values():
        assert p["chargingLimit"] == {"chargingLimitSource": "Other", "isGridCritical": False}
        (schedule,) = p["chargingSchedule"]
        assert schedule["chargingRateUnit"] == "W"
        assert schedule["chargingSchedulePeriod"][0]["limit"] == pytest.approx(120_000, rel=0.02)
    await until(lambda: sim.written.setpoint_w <= 121_000)
    # A limit that stays put is not reported again.
    cycles = gw.core.snapshot()["cycles"]
    await until(lambda: gw.core.snapshot()["cycles"] >= cycles + 30, 20)
    assert len([m for m in csms.of(sid, "NotifyChargingLimit") if m.seq > after]) == 2

    # A profile below the battery's limit: the battery no longer limits that EVSE.
    after = csms.last_seq()
    await accepted(csms, sid, 1, profile(1, 50_000.0))
    await csms.wait_for(sid, "ClearedChargingLimit", lambda p: p["evseId"] == 1, after=after,
                        timeout=20)
    sim.force_temperature(None)
    m = await csms.wait_for(sid, "ClearedChargingLimit", lambda p: p["evseId"] == 2, after=after,
                            timeout=20)
    assert m.payload == {"chargingLimitSource": "Other", "evseId": 2}
    await until(lambda: sim.written.setpoint_w == 50_000)


async def test_profiles_survive_a_restart_whichever_version(
        gateway_factory, csms: CsmsServer, sim: SimulatorThread, tmp_path) -> None:
    data = tmp_path / "persist"
    gw = await gateway_factory(1, data_dir=data, ocpp="2.0.1")
    (sid,) = await booted(gw, csms)
    await accepted(csms, sid, 0, profile(1, 50_000.0, schedule_id=5))
    await accepted(csms, sid, 0, profile(2, 30_000.0, purpose="ChargingStationMaxProfile"))
    tx_id = await start_tx(csms, sid, 2)
    await accepted(csms, sid, 2, profile(3, 5_000.0, purpose="TxProfile", transactionId=tx_id))
    await gw.stop(drain_s=0)

    # The same data as a 2.0.1 endpoint again: the profiles limit power before any CSMS call.
    gw2 = await gateway_factory(1, data_dir=data, ocpp="2.0.1")
    await booted(gw2, csms)
    r = await csms.call(sid, "GetCompositeSchedule", {"evseId": 1, "duration": 60})
    assert r["schedule"]["chargingSchedulePeriod"][0]["limit"] == 30_000.0
    after = csms.last_seq()
    await csms.call(sid, "GetChargingProfiles", {"requestId": 2, "chargingProfile": {}})
    m = await csms.wait_for(sid, "ReportChargingProfiles", lambda p: p["evseId"] == 0,
                            after=after)
    by_id = {p["id"]: p for p in m.payload["chargingProfile"]}
    assert sorted(by_id) == [1, 2]  # the TxProfile ended with its transaction
    assert by_id[1]["chargingSchedule"][0]["id"] == 5
    await gw2.stop(drain_s=0)

    # And as a 1.6 endpoint: the same stored profiles, in 1.6 terms.
    gw3 = await gateway_factory(1, data_dir=data, ocpp="1.6")
    await booted(gw3, csms)
    r = await csms.call(sid, "GetCompositeSchedule", {"connectorId": 1, "duration": 60})
    assert r["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"] == 30_000.0
    assert await csms.call(sid, "ClearChargingProfile", {"id": 2}) == {"status": "Accepted"}
    r = await csms.call(sid, "GetCompositeSchedule", {"connectorId": 1, "duration": 60})
    assert r["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"] == 50_000.0


async def test_smart_charging_variables(gateway_factory, csms: CsmsServer) -> None:
    gw = await gateway_factory(1, ocpp="2.0.1")
    (sid,) = await booted(gw, csms)
    await accepted(csms, sid, 1, profile(1, 1_000.0))
    names = ["Entries", "LimitChangeSignificance", "ProfileStackLevel", "PeriodsPerSchedule",
             "RateUnit"]
    r = await csms.call(sid, "GetVariables", {"getVariableData": [
        {"component": {"name": "SmartChargingCtrlr"},
         "variable": {"name": n, **({"instance": "ChargingProfiles"} if n == "Entries" else {})}}
        for n in names]})
    values = {x["variable"]["name"]: x.get("attributeValue") for x in r["getVariableResult"]}
    assert values == {"Entries": "1", "LimitChangeSignificance": "10", "ProfileStackLevel": "10",
                      "PeriodsPerSchedule": "48", "RateUnit": "A,W"}
    assert gw.stations[sid].settings.int("limit_change_significance_pct") == 10


async def test_soc_window_limits_only_the_charge_evse(
        gateway_factory, csms: CsmsServer, sim: SimulatorThread) -> None:
    gw = await gateway_factory(1, ocpp="2.0.1")
    (sid,) = await booted(gw, csms)
    await until(lambda: "sub_limits" in gw.stations[sid].view.snapshot, 20)
    after = csms.last_seq()
    # Near full: charging is cut (BMS derating and the protection SoC ceiling), discharge is not.
    sim.force_soc(99.0)
    m = await csms.wait_for(sid, "NotifyChargingLimit", after=after, timeout=20)
    assert m.payload["evseId"] == 2
    limit = m.payload["chargingSchedule"][0]["chargingSchedulePeriod"][0]["limit"]
    subs = gw.stations[sid].view.snapshot["sub_limits"]
    assert limit < 135_000
    assert limit == pytest.approx(min(subs["bms_charge"], subs["soc_charge"],
                                      subs["temperature_charge"]), abs=1_000)
    cycles = gw.core.snapshot()["cycles"]
    await until(lambda: gw.core.snapshot()["cycles"] >= cycles + 20, 20)
    assert [x.payload["evseId"] for x in csms.of(sid, "NotifyChargingLimit")
            if x.seq > after] == [2]
