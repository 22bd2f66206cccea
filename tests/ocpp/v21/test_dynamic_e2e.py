"""2.1 K28 dynamic profiles and Q11/Q12 offline validity, end to end: the demo CSMS on ocpp.v21,
the real simulator over Modbus TCP, SQLite. What the PCS is written is the judge."""

from __future__ import annotations

from typing import Any

import pytest
from waiting import booted, until

from bess_gateway.demo.csms import CsmsServer
from bess_gateway.sim.server import SimulatorThread
from v21.test_v2x_e2e import set_profile, start_tx


def dynamic_profile(pid: int, period: dict[str, Any], *, stack: int = 1,
                    purpose: str = "TxDefaultProfile", **extra: Any) -> dict[str, Any]:
    return {"id": pid, "stackLevel": stack, "chargingProfilePurpose": purpose,
            "chargingProfileKind": "Dynamic",
            "chargingSchedule": [{"id": pid, "chargingRateUnit": "W",
                                  "chargingSchedulePeriod": [{"startPeriod": 0, **period}]}],
            **extra}


def idle_default(pid: int = 1) -> dict[str, Any]:
    """What the battery falls back to once a profile lapses: 0 W (stack 0)."""
    return dynamic_profile(pid, {"operationMode": "Idle"}, stack=0) | {
        "chargingProfileKind": "Relative"}


async def test_update_dynamic_schedule_moves_the_setpoint(
        gateway_factory, csms: CsmsServer, sim: SimulatorThread) -> None:
    gw = await gateway_factory(1, ocpp="2.1")
    (sid,) = await booted(gw, csms)
    await start_tx(csms, sid)
    r = await set_profile(csms, sid, 1, dynamic_profile(
        7, {"operationMode": "CentralSetpoint", "setpoint": -20_000.0}))
    assert r == {"status": "Accepted"}, r
    await until(lambda: sim.written.setpoint_w == 20_000, 20)

    r = await csms.call(sid, "UpdateDynamicSchedule", {
        "chargingProfileId": 7, "scheduleUpdate": {"setpoint": 35_000.0, "limit": 25_000.0}})
    assert r == {"status": "Accepted"}, r
    await until(lambda: sim.written.setpoint_w == -25_000, 20)  # +35 kW capped by limit 25

    # The updated values are what GetChargingProfiles reports, with the update time.
    after = csms.last_seq()
    r = await csms.call(sid, "GetChargingProfiles", {"requestId": 3, "chargingProfile": {
        "chargingProfileId": [7]}})
    assert r["status"] == "Accepted"
    report = await csms.wait_for(sid, "ReportChargingProfiles", after=after)
    (reported,) = report.payload["chargingProfile"]
    assert reported["chargingProfileKind"] == "Dynamic" and "dynUpdateTime" in reported
    assert reported["chargingSchedule"][0]["chargingSchedulePeriod"] == [
        {"startPeriod": 0, "operationMode": "CentralSetpoint", "setpoint": 35_000.0,
         "limit": 25_000.0}]

    # Unknown profile, a profile that is not Dynamic, an update breaking the mode rules.
    r = await csms.call(sid, "UpdateDynamicSchedule", {
        "chargingProfileId": 99, "scheduleUpdate": {"setpoint": 1.0}})
    assert r["status"] == "Rejected"
    assert (await set_profile(csms, sid, 1, idle_default(8)))["status"] == "Accepted"
    r = await csms.call(sid, "UpdateDynamicSchedule", {
        "chargingProfileId": 8, "scheduleUpdate": {"setpoint": 1.0}})
    assert r["status"] == "Rejected" and r["statusInfo"]["reasonCode"] == "InvalidProfile"
    r = await csms.call(sid, "UpdateDynamicSchedule", {
        "chargingProfileId": 7, "scheduleUpdate": {"setpointReactive": 1.0}})
    assert r["status"] == "Rejected" and r["statusInfo"]["reasonCode"] == "InvalidSchedule"
    await until(lambda: sim.written.setpoint_w == -25_000, 5)  # unchanged


async def test_station_pulls_every_dyn_update_interval(
        gateway_factory, csms: CsmsServer, sim: SimulatorThread) -> None:
    gw = await gateway_factory(1, ocpp="2.1")
    (sid,) = await booted(gw, csms)
    await start_tx(csms, sid)
    csms.policy.dynamic_schedule_update = {"setpoint": -30_000.0}
    r = await set_profile(csms, sid, 1, dynamic_profile(
        7, {"operationMode": "CentralSetpoint", "setpoint": -10_000.0}, dynUpdateInterval=2))
    assert r == {"status": "Accepted"}, r
    await until(lambda: sim.written.setpoint_w == 10_000, 20)
    pull = await csms.wait_for(sid, "PullDynamicScheduleUpdate", timeout=10)
    assert pull.payload == {"chargingProfileId": 7}
    await until(lambda: sim.written.setpoint_w == 30_000, 20)
    # And again an interval later (not in a burst).
    second = await csms.wait_for(sid, "PullDynamicScheduleUpdate", after=pull.seq, timeout=10)
    assert second.at - pull.at >= 1.5  # a lower bound: a slow machine only makes it longer


@pytest.mark.parametrize("invalid_after", [False, True])
async def test_setpoint_ends_max_offline_duration_after_the_link(
        gateway_factory, csms: CsmsServer, sim: SimulatorThread, invalid_after: bool) -> None:
    gw = await gateway_factory(1, ocpp="2.1")
    (sid,) = await booted(gw, csms)
    await start_tx(csms, sid)
    assert (await set_profile(csms, sid, 1, idle_default()))["status"] == "Accepted"
    r = await set_profile(csms, sid, 1, dynamic_profile(
        7, {"operationMode": "CentralSetpoint", "setpoint": -40_000.0}, maxOfflineDuration=2,
        invalidAfterOfflineDuration=invalid_after))
    assert r == {"status": "Accepted"}, r
    await until(lambda: sim.written.setpoint_w == 40_000, 20)

    await csms.stop()  # the link goes down and stays down (reconnects find no server)
    await until(lambda: not gw.endpoints[sid].ctx.online, 10)
    await until(lambda: sim.written.setpoint_w == 40_000, 1)  # still inside the 2 s
    await until(lambda: sim.written.setpoint_w == 0, 10)  # then the Idle default decides
    # invalidAfterOfflineDuration: gone for good (checked every second while offline);
    # otherwise it stays for the next link.
    installed = gw.endpoints[sid].ctx.services.smart_charging.installed.profiles
    if invalid_after:
        await until(lambda: 7 not in installed, 5)
    else:
        assert 7 in installed
