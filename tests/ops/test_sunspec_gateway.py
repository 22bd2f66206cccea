"""The gateway commanding a SunSpec PCS end to end: the simulator's `sunspec` profile over Modbus
TCP, a gateway with `pcs.profile = "sunspec"`, and the real CSMS over WebSocket.

The control core finds the models itself (marker, model walk, scale factors), so these tests
only tell it the profile name; the simulator's own layout is used to check what it wrote.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pymodbus.client import AsyncModbusTcpClient
from waiting import until

from bess_gateway.config import PcsConfig
from bess_gateway.demo.csms import CsmsServer
from bess_gateway.demo.run import demo_config
from bess_gateway.gateway import Gateway
from bess_gateway.sim import sunspec
from bess_gateway.sim.server import DEFAULT_LOCAL_POWER_W, SimulatorThread


@pytest.fixture
def sim() -> Iterator[SimulatorThread]:
    """This module's PCS speaks SunSpec; conftest's fixtures build on it unchanged."""
    with SimulatorThread(profile="sunspec") as s:
        yield s


@pytest.fixture
def sunspec_sim(sim: SimulatorThread) -> SimulatorThread:
    return sim


SunSpecGateway = Callable[..., Awaitable[Gateway]]


@pytest.fixture
def sunspec_gateway(gateway_factory: Callable[..., Awaitable[Gateway]]) -> SunSpecGateway:
    """The shared gateway factory, with one endpoint and `pcs.profile = "sunspec"`."""

    async def make(**kw: Any) -> Gateway:
        return await gateway_factory(1, pcs_profile="sunspec", **kw)

    return make


def point(sim: SimulatorThread, ref: str) -> Any:
    """One point as the simulator holds it now, decoded with its scale factor."""
    mid, name = ref.split(".", 1)
    model = sunspec.models()[int(mid)]
    p = model.point(name)
    words = sim.registers(sunspec.layout()[int(mid)] + p.offset, p.size)
    sf = sunspec.scale_factors().get(int(mid), {}).get(p.sf) if p.sf else None
    return sunspec.decode_point(p, words, sf)


async def booted(gw: Gateway, csms: CsmsServer) -> str:
    (sid,) = gw.endpoints
    await csms.wait_for(sid, "BootNotification", timeout=20)
    await until(lambda: gw.endpoints[sid].booted.is_set(), 20)
    return sid


async def start_tx(csms: CsmsServer, sid: str, connector: int) -> int:
    after = csms.last_seq()
    r = await csms.call(sid, "RemoteStartTransaction", {"idTag": "TAG-1", "connectorId": connector})
    assert r == {"status": "Accepted"}
    await csms.wait_for(sid, "StartTransaction", after=after)
    tx = await csms.wait_until(lambda: next(
        (t for t in csms.transactions.values()
         if t.station == sid and t.meter_stop is None and t.connector == connector), None))
    return tx.id


def sampled(payload: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {sv.get("measurand", "Energy.Active.Import.Register"): sv
            for mv in payload["meterValue"] for sv in mv["sampledValue"]}


async def test_remote_start_drives_wset_and_meter_values_carry_soc(
        sunspec_gateway: SunSpecGateway, csms: CsmsServer, sunspec_sim: SimulatorThread) -> None:
    gw = await sunspec_gateway()
    sid = await booted(gw, csms)
    snap = gw.core.snapshot()
    assert snap["link_up"] and not snap["tripped"], snap
    assert snap["pcs_error"] is None
    # Decoded with the discovered scale factors: SoC from 713, DC voltage and BMS limits from 802.
    assert snap["soc_pct"] == pytest.approx(sunspec_sim.state.soc_pct, abs=0.2)
    assert snap["dc_voltage_v"] == pytest.approx(sunspec_sim.state.dc_voltage_v, abs=1.0)
    assert snap["bms_max_discharge_w"] == pytest.approx(sunspec_sim.state.bms_max_discharge_w,
                                                        abs=100)
    state = sunspec_sim.state
    for key, tolerance in (("soh_pct", 0.2), ("ac_voltage_v", 0.2), ("ac_frequency_hz", 0.02),
                           ("cell_v_max_mv", 1.0), ("cell_v_min_mv", 1.0),
                           ("bms_max_charge_w", 100)):
        assert snap[key] == pytest.approx(getattr(state, key), abs=tolerance), key
    # Running at 0 W (701.InvSt RUNNING) once the first writes are in: with no session the
    # gateway holds WSet = 0 with WSetEna = 1, never WSetEna = 0, the inverter's own mode.
    await until(lambda: gw.core.snapshot()["pcs_state"] == 2)
    assert point(sunspec_sim, "704.WSetEna") == 1 and point(sunspec_sim, "704.WSet") == 0
    # Cell temperatures are not in these models: absent, never a made-up value.
    assert "cell_temp_max_c" not in snap and "cell_temp_min_c" not in snap
    # The PCS-side reversion was set up at connect: 0 W after WSetRvrtTms without a new WSet.
    assert point(sunspec_sim, "704.WSetRvrt") == 0
    assert point(sunspec_sim, "704.WSetRvrtTms") == 1  # 2 x 400 ms, rounded up to whole seconds
    assert point(sunspec_sim, "704.WSetEnaRvrt") == 1

    tx_id = await start_tx(csms, sid, 1)
    await until(lambda: sunspec_sim.written.setpoint_w == 150_000)
    assert point(sunspec_sim, "704.WSetEna") == 1 and point(sunspec_sim, "704.WSetMod") == 1
    await until(lambda: sunspec_sim.state.measured_w > 140_000)
    await csms.wait_for(sid, "StatusNotification",
                        lambda p: p["connectorId"] == 1 and p["status"] == "Charging")
    hb = point(sunspec_sim, "802.CtrlHb")
    await until(lambda: point(sunspec_sim, "802.CtrlHb") != hb)  # the heartbeat moves
    assert not sunspec_sim.reverted
    snap = gw.core.snapshot()
    assert snap["pcs_state"] == 2  # running, from 701.InvSt RUNNING
    assert snap["ac_current_a"] == pytest.approx(sunspec_sim.state.ac_current_a, rel=0.1)
    assert snap["dc_current_a"] == pytest.approx(sunspec_sim.state.dc_current_a, rel=0.1)

    await until(lambda: len([m for m in csms.of(sid, "MeterValues")
                             if m.payload.get("transactionId") == tx_id]) >= 2, 15)
    last = [m.payload for m in csms.of(sid, "MeterValues")
            if m.payload.get("transactionId") == tx_id][-1]
    values = sampled(last)
    assert float(values["SoC"]["value"]) == pytest.approx(point(sunspec_sim, "713.SoC"), abs=0.5)
    assert float(values["Power.Active.Import"]["value"]) > 100_000
    # No cell temperature in these SunSpec models: the measurand is left out, not sent as 0.
    assert "Temperature" not in values and "Voltage" in values
    assert float(values["Voltage"]["value"]) == pytest.approx(point(sunspec_sim, "701.LLV"),
                                                              abs=1.0)

    after = csms.last_seq()
    await csms.call(sid, "RemoteStopTransaction", {"transactionId": tx_id})
    stop = (await csms.wait_for(sid, "StopTransaction", after=after)).payload
    assert stop["meterStop"] > 0  # metered from 701.TotWhInj
    await until(lambda: sunspec_sim.written.setpoint_w == 0)


async def test_charge_direction_writes_negative_wset(
        sunspec_gateway: SunSpecGateway, csms: CsmsServer, sunspec_sim: SimulatorThread) -> None:
    gw = await sunspec_gateway()
    sid = await booted(gw, csms)
    await start_tx(csms, sid, 2)
    await until(lambda: sunspec_sim.written.setpoint_w == -150_000)
    await until(lambda: sunspec_sim.state.measured_w < -140_000)


async def test_alarm_faults_to_zero_then_resets(
        sunspec_gateway: SunSpecGateway, csms: CsmsServer, sunspec_sim: SimulatorThread) -> None:
    gw = await sunspec_gateway()
    sid = await booted(gw, csms)
    await start_tx(csms, sid, 1)
    await until(lambda: sunspec_sim.written.setpoint_w == 150_000)

    after = csms.last_seq()
    sunspec_sim.force_alarm_bits(1 << 0)  # cell over-voltage: 802.Evt1 bit 9 on the wire
    await csms.wait_for(sid, "StatusNotification",
                        lambda p: p["connectorId"] == 1 and p["status"] == "Faulted", after=after)
    assert sunspec_sim.written.setpoint_w == 0
    causes = gw.core.snapshot()["trip_causes"]
    assert "cell_over_voltage" in causes and "pcs_fault_state" in causes  # 802.State FAULT

    # Alarm gone, fault still latched in the PCS: the gateway writes 802.AlmRst and resumes.
    after = csms.last_seq()
    sunspec_sim.clear_forced_alarms()
    await csms.wait_for(sid, "StatusNotification",
                        lambda p: p["connectorId"] == 1 and p["status"] == "Charging",
                        after=after, timeout=15)
    assert sunspec_sim.written.fault_reset_writes >= 1
    await until(lambda: sunspec_sim.written.setpoint_w == 150_000)


async def test_link_loss_faults_pcs_reverts_then_rediscovers(
        sunspec_gateway: SunSpecGateway, csms: CsmsServer, sunspec_sim: SimulatorThread) -> None:
    gw = await sunspec_gateway(pcs_timeout_ms=300)
    sid = await booted(gw, csms)
    await start_tx(csms, sid, 1)
    await until(lambda: sunspec_sim.written.setpoint_w == 150_000)
    connects = gw.core.snapshot()["pcs_connects"]

    after = csms.last_seq()
    sunspec_sim.set_silent(True)
    fault = await csms.wait_for(sid, "StatusNotification",
                                lambda p: p["connectorId"] == 1 and p["status"] == "Faulted",
                                after=after)
    assert fault.payload["vendorErrorCode"] == "PcsLinkLost"
    # Nobody rewrites WSet: the PCS falls back to WSetRvrt = 0 W on its own (WSetRvrtTms = 1 s).
    await until(lambda: sunspec_sim.reverted, 5)
    await until(lambda: abs(sunspec_sim.state.measured_w) < 1.0)

    sunspec_sim.clear_setpoint_writes()
    after = csms.last_seq()
    sunspec_sim.set_silent(False)
    await csms.wait_for(sid, "StatusNotification",
                        lambda p: p["connectorId"] == 1 and p["status"] == "Charging",
                        after=after, timeout=15)
    await until(lambda: sunspec_sim.written.setpoint_w == 150_000)
    # A new connection, so the layout was discovered and the reversion written again; the first
    # WSet after the link came back is 0, then it ramps.
    assert gw.core.snapshot()["pcs_connects"] > connects
    assert sunspec_sim.setpoint_writes()[0][1] == 0
    assert not sunspec_sim.reverted


async def test_gateway_holds_zero_with_wsetena_on_where_wsetena_off_runs_the_local_setting(
        sunspec_gateway: SunSpecGateway, csms: CsmsServer, sunspec_sim: SimulatorThread) -> None:
    """The difference issue 11 is about: "not running" written as WSetEna = 0 would leave a real
    model-704 inverter running at its own local setting; the gateway holds WSet = 0 instead."""
    gw = await sunspec_gateway()
    await booted(gw, csms)
    # Long enough for a PCS in its own mode to show it (time constant 0.2 s): 20 cycles.
    writes = gw.core.snapshot()["writes"]
    await until(lambda: gw.core.snapshot()["writes"] >= writes + 20)
    assert point(sunspec_sim, "704.WSetEna") == 1 and point(sunspec_sim, "704.WSet") == 0
    assert not sunspec_sim.local_control
    assert abs(sunspec_sim.state.measured_w) < 1.0
    assert abs(gw.core.snapshot()["measured_w"]) < 100  # 701.W, W_SF = 2

    # The gateway's final write at stop is "not running" too: still WSetEna = 1, WSet = 0.
    await gw.stop(drain_s=0)
    assert not gw.core.snapshot()["running"]
    assert point(sunspec_sim, "704.WSetEna") == 1 and point(sunspec_sim, "704.WSet") == 0
    assert abs(sunspec_sim.state.measured_w) < 1.0

    # What WSetEna = 0 does to the same device: it runs at its local setting, WSet = 0 or not.
    enable = sunspec.layout()[704] + sunspec.models()[704].point("WSetEna").offset
    client = AsyncModbusTcpClient("127.0.0.1", port=sunspec_sim.port)
    assert await client.connect()
    try:
        wr = await client.write_registers(enable, [0], device_id=1)
        assert not wr.isError(), wr
    finally:
        client.close()
    assert point(sunspec_sim, "704.WSet") == 0
    await until(lambda: sunspec_sim.state.measured_w > 0.95 * DEFAULT_LOCAL_POWER_W, 5)
    assert sunspec_sim.local_control


async def test_device_without_sunspec_marker_is_a_lost_link_with_a_reason(
        tmp_path: Path, csms: CsmsServer) -> None:
    # The generic simulator has no "SunS" marker: the core never commands it.
    with SimulatorThread() as sim:
        await _never_commands(tmp_path, csms, sim)


async def _never_commands(tmp_path: Path, csms: CsmsServer, sim: SimulatorThread) -> None:
    cfg = demo_config(tmp_path / "var", csms.url, sim.port, 1, sample_s=1)
    cfg = dataclasses.replace(cfg, pcs=dataclasses.replace(
        PcsConfig(), port=sim.port, timeout_ms=300, profile="sunspec"))
    gw = Gateway(cfg)
    await gw.start()
    try:
        snap = await until(lambda: (s := gw.core.snapshot())["pcs_error"] and s, 5)
        assert "SunS" in snap["pcs_error"]
        assert not snap["link_up"] and "pcs_link_lost" in snap["trip_causes"]
        assert sim.written.write_count == 0
    finally:
        async with asyncio.timeout(10):
            await gw.stop(drain_s=0)


async def test_register_map_file_is_refused_clearly(tmp_path: Path, csms: CsmsServer) -> None:
    cfg = demo_config(tmp_path / "var", csms.url, 1, 1)
    cfg = dataclasses.replace(cfg, pcs=dataclasses.replace(
        PcsConfig(), profile=str(tmp_path / "map.toml")))
    with pytest.raises(RuntimeError, match="register-map files are not supported"):
        await Gateway(cfg).start()
