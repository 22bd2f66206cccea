"""2.1 R04 DER control end to end: the demo CSMS on ocpp.v21, the real simulator over Modbus TCP,
the journal on SQLite. LimitMaxDischarge caps what the PCS is written; the grid-support controls
the PCS is not driven for are NotSupported with the reason."""

from __future__ import annotations

from typing import Any

import orjson
from waiting import booted, until

from bess_gateway.demo.csms import CsmsServer
from bess_gateway.sim.server import SimulatorThread
from v21.test_v2x_e2e import set_profile, start_tx, v2x_profile


def limit(cid: str, pct: float, priority: int, **extra: Any) -> dict[str, Any]:
    return {"isDefault": False, "controlId": cid, "controlType": "LimitMaxDischarge",
            "limitMaxDischarge": {"priority": priority, "pctMaxDischargePower": pct, **extra}}


async def test_limit_max_discharge_caps_the_setpoint_and_supersedes(
        gateway_factory, csms: CsmsServer, sim: SimulatorThread) -> None:
    gw = await gateway_factory(1, ocpp="2.1")
    (sid,) = await booted(gw, csms)
    started = await start_tx(csms, sid)
    tx_id = started["transactionInfo"]["transactionId"]
    r = await set_profile(csms, sid, 1, v2x_profile(
        5, [{"startPeriod": 0, "operationMode": "CentralSetpoint", "setpoint": -100_000.0}],
        purpose="TxProfile", transactionId=tx_id))
    assert r == {"status": "Accepted"}, r
    await until(lambda: sim.written.setpoint_w == 100_000, 20)

    # 40 % of the endpoint's rated 150 kW (its session maximum): 60 kW.
    r = await csms.call(sid, "SetDERControl", limit("L1", 40.0, priority=5))
    assert r == {"status": "Accepted"}, r
    start = await csms.wait_for(sid, "NotifyDERStartStop", timeout=10)
    assert start.payload["controlId"] == "L1" and start.payload["started"] is True
    await until(lambda: sim.written.setpoint_w == 60_000, 20)

    # A higher priority (lower number) control supersedes it: 20 % = 30 kW.
    after = csms.last_seq()
    r = await csms.call(sid, "SetDERControl", limit("L2", 20.0, priority=1))
    assert r == {"status": "Accepted", "supersededIds": ["L1"]}, r
    await until(lambda: sim.written.setpoint_w == 30_000, 20)
    stop = await csms.wait_for(sid, "NotifyDERStartStop", lambda p: not p["started"],
                               after=after, timeout=10)
    assert stop.payload["controlId"] == "L1"
    started2 = await csms.wait_for(sid, "NotifyDERStartStop", lambda p: p["started"],
                                   after=after, timeout=10)
    assert started2.payload == {"controlId": "L2", "started": True,
                                "timestamp": started2.payload["timestamp"],
                                "supersededIds": ["L1"]}

    # GetDERControl reports both, L1 flagged superseded.
    after = csms.last_seq()
    assert (await csms.call(sid, "GetDERControl", {"requestId": 4}))["status"] == "Accepted"
    report = await csms.wait_for(sid, "ReportDERControl", after=after)
    flags = {x["id"]: x["isSuperseded"] for x in report.payload["limitMaxDischarge"]}
    assert flags == {"L1": True, "L2": False}

    # Cleared: the setpoint applies in full again.
    r = await csms.call(sid, "ClearDERControl", {"isDefault": False})
    assert r == {"status": "Accepted"}
    await until(lambda: sim.written.setpoint_w == 100_000, 20)
    assert (await csms.call(sid, "ClearDERControl", {"isDefault": False}))["status"] == \
        "NotFound"
    assert (await csms.call(sid, "GetDERControl", {"requestId": 5}))["status"] == "NotFound"


async def test_controls_the_pcs_is_not_driven_for_are_not_supported(
        gateway_factory, csms: CsmsServer) -> None:
    gw = await gateway_factory(1, ocpp="2.1")
    (sid,) = await booted(gw, csms)
    # Raw: the `ocpp` library's case conversion turns fixedPFInject into fixedPfInject.
    frame = orjson.dumps([2, "pf-1", "SetDERControl", {
        "isDefault": True, "controlId": "PF", "controlType": "FixedPFInject",
        "fixedPFInject": {"priority": 0, "displacement": 0.95, "excitation": True}}]).decode()
    reply = await csms.send_raw(sid, frame, "pf-1")
    assert reply[0] == 3, reply
    r = reply[2]
    assert r["status"] == "NotSupported"
    assert r["statusInfo"]["reasonCode"] == "UnsupportedParam"
    assert "FixedPFInject" in r["statusInfo"]["additionalInfo"]
    r = await csms.call(sid, "SetDERControl", {
        "isDefault": True, "controlId": "VV", "controlType": "VoltVar",
        "curve": {"priority": 0, "yUnit": "PctMaxVar",
                  "curveData": [{"x": 95.0, "y": 40.0}, {"x": 105.0, "y": -40.0}]}})
    assert r["status"] == "NotSupported"
    assert (await csms.call(sid, "GetDERControl", {"requestId": 1}))["status"] == "NotFound"


async def test_der_controls_survive_a_restart(gateway_factory, csms: CsmsServer,
                                              tmp_path) -> None:
    gw = await gateway_factory(1, ocpp="2.1", data_dir=tmp_path / "var")
    (sid,) = await booted(gw, csms)
    assert (await csms.call(sid, "SetDERControl", limit("L1", 50.0, priority=0)))[
        "status"] == "Accepted"
    await gw.stop(drain_s=0)
    gw2 = await gateway_factory(1, ocpp="2.1", data_dir=tmp_path / "var")
    await until(lambda: sid in csms.stations and gw2.endpoints[sid].ctx.online, 20)
    after = csms.last_seq()
    assert (await csms.call(sid, "GetDERControl", {"requestId": 2}))["status"] == "Accepted"
    report = await csms.wait_for(sid, "ReportDERControl", after=after)
    assert [x["id"] for x in report.payload["limitMaxDischarge"]] == ["L1"]
