"""1.6 Smart Charging end to end: the real CSMS over WebSocket, the real simulator over Modbus TCP,
SQLite. Profiles move the core's allocations and the setpoint the PCS receives."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from waiting import booted, until

from bess_gateway.demo.csms import CsmsServer
from bess_gateway.gateway import Gateway
from bess_gateway.sim.server import SimulatorThread


async def start_tx(csms: CsmsServer, sid: str, connector: int, tag: str = "TAG-1") -> int:
    after = csms.last_seq()
    r = await csms.call(sid, "RemoteStartTransaction", {"idTag": tag, "connectorId": connector})
    assert r == {"status": "Accepted"}
    await csms.wait_for(sid, "StartTransaction", after=after)
    tx = await csms.wait_until(lambda: next(
        (t for t in csms.transactions.values()
         if t.station == sid and t.meter_stop is None and t.connector == connector), None))
    return tx.id


def ts(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def profile(pid: int, limit: float, *, purpose: str = "TxDefaultProfile", stack: int = 0,
            kind: str = "Absolute", unit: str = "W", start: datetime | None = None,
            periods: list[tuple[int, float]] | None = None, **extra: Any) -> dict[str, Any]:
    schedule: dict[str, Any] = {
        "chargingRateUnit": unit,
        "chargingSchedulePeriod": [{"startPeriod": s, "limit": lim}
                                   for s, lim in (periods or [(0, limit)])],
    }
    if kind == "Absolute":
        schedule["startSchedule"] = ts(start or datetime.now(UTC) - timedelta(minutes=1))
    elif start is not None:
        schedule["startSchedule"] = ts(start)
    for key in ("duration",):
        if key in extra:
            schedule[key] = extra.pop(key)
    return {"chargingProfileId": pid, "stackLevel": stack, "chargingProfilePurpose": purpose,
            "chargingProfileKind": kind, "chargingSchedule": schedule, **extra}


async def set_profile(csms: CsmsServer, sid: str, connector: int, p: dict[str, Any]) -> str:
    r = await csms.call(sid, "SetChargingProfile", {"connectorId": connector,
                                                    "csChargingProfiles": p})
    return str(r["status"])


def alloc(gw: Gateway, sid: str, connector: int) -> float | None:
    return gw.core.snapshot()["allocations"].get(gw.stations[sid].meter_id(connector))


async def test_tx_default_lowers_a_running_session_and_clear_restores_it(
        gateway_factory, csms: CsmsServer, sim: SimulatorThread) -> None:
    gw = await gateway_factory(1)
    (sid,) = await booted(gw, csms)
    await start_tx(csms, sid, 1)
    await until(lambda: sim.written.setpoint_w == 150_000)

    # A TxDefault arriving during the transaction applies to it at once: the first cycle that
    # starts after the answer already allocates the new limit and lowers the written setpoint.
    assert await set_profile(csms, sid, 1, profile(7, 40_000.0)) == "Accepted"
    cycles = gw.core.snapshot()["cycles"]
    await until(lambda: gw.core.snapshot()["cycles"] >= cycles + 2)
    snap = gw.core.snapshot()
    assert snap["allocations"][gw.stations[sid].meter_id(1)] == 40_000.0
    assert snap["last_write"] is not None and snap["last_write"]["setpoint_w"] < 150_000
    await until(lambda: sim.written.setpoint_w == 40_000)
    await until(lambda: sim.state.measured_w < 45_000)

    r = await csms.call(sid, "ClearChargingProfile", {"id": 7})
    assert r == {"status": "Accepted"}
    assert await csms.call(sid, "ClearChargingProfile", {"id": 7}) == {"status": "Unknown"}
    await until(lambda: alloc(gw, sid, 1) == 150_000.0)
    await until(lambda: sim.written.setpoint_w == 150_000)


async def test_tx_profile_needs_its_transaction(
        gateway_factory, csms: CsmsServer, sim: SimulatorThread) -> None:
    gw = await gateway_factory(1)
    (sid,) = await booted(gw, csms)
    tx_profile = profile(1, 30_000.0, purpose="TxProfile")
    assert await set_profile(csms, sid, 1, tx_profile) == "Rejected"
    assert await set_profile(csms, sid, 0, profile(2, 1.0, purpose="TxProfile")) == "Rejected"

    tx_id = await start_tx(csms, sid, 2)
    assert await set_profile(csms, sid, 1, tx_profile) == "Rejected"  # no transaction there
    wrong = profile(3, 30_000.0, purpose="TxProfile", transactionId=tx_id + 100)
    assert await set_profile(csms, sid, 2, wrong) == "Rejected"
    right = profile(3, 30_000.0, purpose="TxProfile", transactionId=tx_id)
    # A TxProfile overrules a TxDefault of any stack level.
    assert await set_profile(csms, sid, 2, profile(4, 60_000.0, stack=9)) == "Accepted"
    await until(lambda: alloc(gw, sid, 2) == 60_000.0)
    assert await set_profile(csms, sid, 2, right) == "Accepted"
    await until(lambda: alloc(gw, sid, 2) == 30_000.0)
    await until(lambda: sim.written.setpoint_w == -30_000)

    # The TxProfile ends with its transaction; the TxDefault stays.
    await csms.call(sid, "RemoteStopTransaction", {"transactionId": tx_id})
    await until(lambda: 2 not in gw.stations[sid].transactions)
    assert await csms.call(sid, "ClearChargingProfile", {"id": 3}) == {"status": "Unknown"}
    assert await csms.call(sid, "ClearChargingProfile", {"id": 4}) == {"status": "Accepted"}


async def test_charge_point_max_caps_the_sessions_of_one_endpoint(
        gateway_factory, csms: CsmsServer, sim: SimulatorThread) -> None:
    gw = await gateway_factory(2)
    a, b = await booted(gw, csms)
    await start_tx(csms, a, 1)
    await start_tx(csms, a, 2)
    await start_tx(csms, b, 1)
    await until(lambda: alloc(gw, a, 1) == 150_000.0 and alloc(gw, a, 2) == 150_000.0)

    assert await set_profile(csms, a, 1, profile(1, 1.0, purpose="ChargePointMaxProfile")) \
        == "Rejected"  # only on connector 0
    cp_max = profile(1, 80_000.0, purpose="ChargePointMaxProfile")
    assert await set_profile(csms, a, 0, cp_max) == "Accepted"
    # Discharge and charge through the endpoint count together: 40 kW each.
    await until(lambda: alloc(gw, a, 1) == 40_000.0 and alloc(gw, a, 2) == 40_000.0)
    # The other endpoint is not capped: its session keeps 150 kW.
    assert alloc(gw, b, 1) == 150_000.0

    # A TxDefault below the endpoint's share leaves the rest to the other session.
    assert await set_profile(csms, a, 1, profile(2, 10_000.0)) == "Accepted"
    await until(lambda: alloc(gw, a, 1) == 10_000.0 and alloc(gw, a, 2) == 70_000.0)
    await until(lambda: sim.written.setpoint_w == 90_000)  # 10 + 150 - 70


async def test_recurring_and_relative_profiles_apply(
        gateway_factory, csms: CsmsServer, sim: SimulatorThread) -> None:
    gw = await gateway_factory(1)
    (sid,) = await booted(gw, csms)
    now = datetime.now(UTC)
    # Daily, anchored a day and an hour ago: the second hour of today's occurrence is in force.
    daily = profile(5, 0.0, kind="Recurring", recurrencyKind="Daily",
                    start=now - timedelta(days=1, hours=1),
                    periods=[(0, 90_000.0), (1800, 55_000.0)], duration=7200)
    assert await set_profile(csms, sid, 0, daily) == "Accepted"
    assert await set_profile(csms, sid, 0, profile(6, 1.0, kind="Recurring")) == "Rejected"

    # Relative, through RemoteStart: 25 kW for the first hour of the session.
    relative = profile(8, 0.0, purpose="TxProfile", kind="Relative",
                       periods=[(0, 25_000.0), (3600, 100_000.0)])
    after = csms.last_seq()
    r = await csms.call(sid, "RemoteStartTransaction",
                        {"idTag": "T-REL", "connectorId": 1, "chargingProfile": relative})
    assert r == {"status": "Accepted"}
    await csms.wait_for(sid, "StartTransaction", after=after)
    # The session never runs above the TxProfile: its first allocation is already 25 kW.
    await until(lambda: alloc(gw, sid, 1) is not None)
    assert alloc(gw, sid, 1) == 25_000.0
    await until(lambda: sim.written.setpoint_w == 25_000)
    assert max(w for _, w in sim.setpoint_writes()) <= 25_000

    # The recurring TxDefault decides on the other connector.
    await start_tx(csms, sid, 2, "T-2")
    await until(lambda: alloc(gw, sid, 2) == 55_000.0)

    # A RemoteStart's profile must be a TxProfile without a transaction id.
    r = await csms.call(sid, "RemoteStartTransaction",
                        {"idTag": "T-X", "connectorId": 1, "chargingProfile": profile(9, 1.0)})
    assert r == {"status": "Rejected"}


async def test_get_composite_schedule_in_w_and_a(
        gateway_factory, csms: CsmsServer, sim: SimulatorThread) -> None:
    gw = await gateway_factory(1)
    (sid,) = await booted(gw, csms)
    await until(lambda: "limit_discharge_w" in gw.stations[sid].view.snapshot)
    # No profile: the battery's own limit (and the session maximum) is the schedule.
    r = await csms.call(sid, "GetCompositeSchedule", {"connectorId": 1, "duration": 600})
    physical = min(150_000.0, gw.stations[sid].view.snapshot["limit_discharge_w"])
    assert r["status"] == "Accepted"
    assert r["chargingSchedule"]["chargingSchedulePeriod"] == [
        {"startPeriod": 0, "limit": pytest.approx(physical, abs=0.1)}]

    # 32 A on 3 phases at 230 V = 22 080 W, then 16 A after 10 minutes.
    amps = profile(3, 0.0, unit="A", periods=[(0, 32.0), (600, 16.0)])
    assert await set_profile(csms, sid, 1, amps) == "Accepted"
    cp_max = profile(4, 20_000.0, purpose="ChargePointMaxProfile",
                     start=datetime.now(UTC) + timedelta(minutes=30))
    assert await set_profile(csms, sid, 0, cp_max) == "Accepted"

    r = await csms.call(sid, "GetCompositeSchedule",
                        {"connectorId": 1, "duration": 3600, "chargingRateUnit": "W"})
    assert r["status"] == "Accepted" and r["connectorId"] == 1
    sched = r["chargingSchedule"]
    assert sched["chargingRateUnit"] == "W" and sched["duration"] == 3600
    periods = sched["chargingSchedulePeriod"]
    assert [p["limit"] for p in periods] == [22_080.0, 11_040.0]
    assert 500 <= periods[1]["startPeriod"] <= 600

    r = await csms.call(sid, "GetCompositeSchedule",
                        {"connectorId": 1, "duration": 3600, "chargingRateUnit": "A"})
    periods = r["chargingSchedule"]["chargingSchedulePeriod"]
    assert [(p["limit"], p["numberPhases"]) for p in periods] == [(32.0, 3), (16.0, 3)]

    # The endpoint (connector 0): the ChargePointMaxProfile from its start in 30 minutes.
    r = await csms.call(sid, "GetCompositeSchedule", {"connectorId": 0, "duration": 3600})
    periods = r["chargingSchedule"]["chargingSchedulePeriod"]
    assert periods[-1]["limit"] == 20_000.0 and 1700 <= periods[-1]["startPeriod"] <= 1800

    # Duration 0: the limit now.
    r = await csms.call(sid, "GetCompositeSchedule", {"connectorId": 1, "duration": 0})
    assert r["chargingSchedule"]["chargingSchedulePeriod"] == [{"startPeriod": 0,
                                                                "limit": 22_080.0}]
    r = await csms.call(sid, "GetCompositeSchedule", {"connectorId": 3, "duration": 60})
    assert r == {"status": "Rejected"}
    # A request longer than a week is answered for a week, and says so.
    r = await csms.call(sid, "GetCompositeSchedule", {"connectorId": 1, "duration": 2**31 - 1})
    assert r["chargingSchedule"]["duration"] == 7 * 86_400

    # A single-phase profile (16 A on 1 phase = 3 680 W) is reported on 1 phase, not 3.
    single = profile(5, 16.0, unit="A", stack=1)
    single["chargingSchedule"]["chargingSchedulePeriod"][0]["numberPhases"] = 1
    assert await set_profile(csms, sid, 1, single) == "Accepted"
    r = await csms.call(sid, "GetCompositeSchedule",
                        {"connectorId": 1, "duration": 60, "chargingRateUnit": "A"})
    assert r["chargingSchedule"]["chargingSchedulePeriod"] == [
        {"startPeriod": 0, "limit": 16.0, "numberPhases": 1}]


async def test_stack_level_and_installed_limits(gateway_factory, csms: CsmsServer) -> None:
    gw = await gateway_factory(1)
    (sid,) = await booted(gw, csms)
    keys = ["ChargeProfileMaxStackLevel", "ChargingScheduleAllowedChargingRateUnit",
            "ChargingScheduleMaxPeriods", "MaxChargingProfilesInstalled",
            "SupportedFeatureProfiles"]
    conf = await csms.call(sid, "GetConfiguration", {"key": keys})
    values = {k["key"]: k["value"] for k in conf["configurationKey"]}
    assert values["ChargeProfileMaxStackLevel"] == "10"
    assert values["ChargingScheduleAllowedChargingRateUnit"] == "Current,Power"
    assert values["ChargingScheduleMaxPeriods"] == "48"
    assert values["MaxChargingProfilesInstalled"] == "20"
    assert "SmartCharging" in values["SupportedFeatureProfiles"].split(",")
    assert (await csms.call(sid, "ChangeConfiguration",
                            {"key": "ChargeProfileMaxStackLevel", "value": "50"}))["status"] \
        == "Rejected"

    assert await set_profile(csms, sid, 1, profile(1, 1_000.0, stack=11)) == "Rejected"
    too_many = profile(1, 0.0, periods=[(i * 60, 1_000.0) for i in range(49)])
    assert await set_profile(csms, sid, 1, too_many) == "Rejected"
    for i in range(20):
        connector, stack = divmod(i, 10)
        assert await set_profile(csms, sid, connector + 1,
                                 profile(100 + i, 1_000.0, stack=stack)) == "Accepted"
    assert await set_profile(csms, sid, 0, profile(200, 1_000.0)) == "Rejected"
    # Replacing (same id, or same purpose + stack level + connector) still fits.
    assert await set_profile(csms, sid, 1, profile(100, 2_000.0, stack=0)) == "Accepted"
    assert await set_profile(csms, sid, 1, profile(300, 2_000.0, stack=1)) == "Accepted"
    assert len(gw.stations[sid].transactions) == 0
    # Clear by purpose and stack level (any connector).
    r = await csms.call(sid, "ClearChargingProfile",
                        {"chargingProfilePurpose": "TxDefaultProfile", "stackLevel": 9})
    assert r == {"status": "Accepted"}
    assert await set_profile(csms, sid, 0, profile(200, 1_000.0)) == "Accepted"
    r = await csms.call(sid, "ClearChargingProfile", {})
    assert r == {"status": "Accepted"}
    r = await csms.call(sid, "ClearChargingProfile", {"connectorId": 1})
    assert r == {"status": "Unknown"}


async def test_profiles_survive_a_restart(gateway_factory, csms: CsmsServer,
                                          sim: SimulatorThread, tmp_path) -> None:
    data = tmp_path / "persist"
    gw = await gateway_factory(1, data_dir=data)
    (sid,) = await booted(gw, csms)
    assert await set_profile(csms, sid, 0, profile(1, 50_000.0)) == "Accepted"
    assert await set_profile(csms, sid, 0, profile(
        2, 30_000.0, purpose="ChargePointMaxProfile")) == "Accepted"
    await start_tx(csms, sid, 2)
    assert await set_profile(csms, sid, 2, profile(3, 5_000.0, purpose="TxProfile")) \
        == "Accepted"
    await gw.stop(drain_s=0)

    gw2 = await gateway_factory(1, data_dir=data)
    await booted(gw2, csms)
    await until(lambda: gw2.endpoints[sid].booted.is_set())
    r = await csms.call(sid, "GetCompositeSchedule", {"connectorId": 1, "duration": 60})
    assert r["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"] == 30_000.0
    await start_tx(csms, sid, 1)
    await until(lambda: alloc(gw2, sid, 1) == 30_000.0)
    await until(lambda: sim.written.setpoint_w == 30_000)
    assert await csms.call(sid, "ClearChargingProfile", {"id": 2}) == {"status": "Accepted"}
    await until(lambda: alloc(gw2, sid, 1) == 50_000.0)
    # The TxProfile ended with its transaction at the stop; it does not come back.
    assert await csms.call(sid, "ClearChargingProfile", {"id": 3}) == {"status": "Unknown"}
    assert [d["id"] for d, _ in gw2.journal.profiles.charging_profiles(sid)] == [1]


async def test_relative_profiles_limit_without_a_transaction(
        gateway_factory, csms: CsmsServer) -> None:
    """1.6: a Relative schedule starts at a point the station chooses, "such as the start of a
    Transaction"; with none it runs from its installation, for a TxDefaultProfile and for the
    endpoint's ChargePointMaxProfile alike."""
    gw = await gateway_factory(1)
    (sid,) = await booted(gw, csms)
    await until(lambda: "limit_discharge_w" in gw.stations[sid].view.snapshot)
    default = profile(1, 0.0, kind="Relative", periods=[(0, 30_000.0), (3600, 10_000.0)])
    assert await set_profile(csms, sid, 1, default) == "Accepted"
    cap = profile(2, 0.0, purpose="ChargePointMaxProfile", kind="Relative",
                  periods=[(0, 40_000.0), (3600, 20_000.0)])
    assert await set_profile(csms, sid, 0, cap) == "Accepted"
    assert not gw.stations[sid].transactions

    r = await csms.call(sid, "GetCompositeSchedule", {"connectorId": 1, "duration": 7200})
    periods = r["chargingSchedule"]["chargingSchedulePeriod"]
    assert [p["limit"] for p in periods] == [30_000.0, 10_000.0]
    assert 3590 <= periods[1]["startPeriod"] <= 3600
    r = await csms.call(sid, "GetCompositeSchedule", {"connectorId": 0, "duration": 7200})
    periods = r["chargingSchedule"]["chargingSchedulePeriod"]
    assert [p["limit"] for p in periods] == [40_000.0, 20_000.0]
