"""`bess-gateway probe` against the real simulator, in both profiles, and the sunspec profile's
command path (WSetEna/WSet/CtrlHb written over Modbus TCP move the simulated PCS)."""

from __future__ import annotations

import asyncio
import json

import pytest
from pymodbus.client import AsyncModbusTcpClient
from waiting import until

from bess_gateway.cli import main
from bess_gateway.sim import sunspec
from bess_gateway.sim.server import SimulatorThread
from bess_gateway.tools.probe import probe


@pytest.fixture
def sunspec_sim():
    with SimulatorThread(profile="sunspec") as s:
        yield s


def test_probe_finds_sunspec_models_with_scale_factors(sunspec_sim: SimulatorThread) -> None:
    found = probe("127.0.0.1", sunspec_sim.port)
    assert found["protocol"] == "sunspec" and found["base"] == 40000
    by_id = {m["id"]: m for m in found["models"]}
    assert list(by_id) == [1, 701, 702, 704, 713, 802]
    assert by_id[1]["points"]["Mn"] == "bess-gateway"
    assert by_id[701]["length"] == 153 and by_id[802]["length"] == 62
    state = sunspec_sim.state
    assert by_id[713]["points"]["SoC"] == pytest.approx(state.soc_pct, abs=0.1)
    assert by_id[802]["points"]["SoH"] == pytest.approx(state.soh_pct, abs=0.1)
    assert by_id[802]["points"]["V"] == pytest.approx(state.dc_voltage_v, abs=0.1)
    assert by_id[802]["points"]["WDisChaRteMax"] == pytest.approx(state.bms_max_discharge_w,
                                                                  abs=100)
    assert by_id[702]["points"]["WMaxRtg"] == 600_000
    assert by_id[701]["points"]["InvSt"] == 7  # STANDBY
    assert "WSetRvrtTms" in by_id[704]["points"]


def test_probe_reads_the_generic_map(sim: SimulatorThread) -> None:
    found = probe("127.0.0.1", sim.port)
    assert found["protocol"] == "generic"
    assert found["pcs_state"] == "standby"
    assert found["values"]["soc_pct"] == pytest.approx(sim.state.soc_pct, abs=0.1)
    assert found["alarms"] == []
    sim.force_alarm_bits(1 << 2)
    assert "over_temperature" in probe("127.0.0.1", sim.port)["alarms"]


def test_probe_command_line(sunspec_sim: SimulatorThread, capsys) -> None:
    assert main(["probe", f"127.0.0.1:{sunspec_sim.port}"]) == 0
    text = capsys.readouterr().out
    assert "SunSpec, base address 40000" in text and "model 713" in text
    assert main(["probe", "--json", f"127.0.0.1:{sunspec_sim.port}"]) == 0
    assert json.loads(capsys.readouterr().out)["protocol"] == "sunspec"


def test_probe_of_nothing_fails_cleanly(capsys) -> None:
    assert main(["probe", "127.0.0.1:1"]) == 1
    assert "cannot connect" in capsys.readouterr().err


async def test_sunspec_sim_follows_wset_and_reports_alarms(sunspec_sim: SimulatorThread) -> None:
    where = sunspec.layout()
    m704, m802, m701 = (sunspec.models()[i] for i in (704, 802, 701))
    ena = where[704] + m704.point("WSetEna").offset
    wset = where[704] + m704.point("WSet").offset
    hb = where[802] + m802.point("CtrlHb").offset
    w = where[701] + m701.point("W").offset
    evt1 = where[802] + m802.point("Evt1").offset
    client = AsyncModbusTcpClient("127.0.0.1", port=sunspec_sim.port)
    await client.connect()
    try:
        watchdog = 0

        async def command() -> None:
            nonlocal watchdog
            watchdog += 1
            await client.write_registers(hb, [watchdog], device_id=1)
            await client.write_registers(wset, [0, 50_000], device_id=1)  # int32, WSet_SF 0
            await client.write_registers(ena, [1], device_id=1)

        async def measured() -> float:
            await command()
            rr = await client.read_holding_registers(w, count=1, device_id=1)
            raw = rr.registers[0]
            return (raw - 0x10000 if raw & 0x8000 else raw) * 100  # W_SF = 2

        await command()
        await until(lambda: sunspec_sim.written.setpoint_w == 50_000, 5)
        assert sunspec_sim.written.run == 1
        await until(lambda: sunspec_sim.state.measured_w > 45_000, 10)
        # The W register is in 100 W steps (W_SF 2, rounded): with the state at 45.02 kW it
        # reads 45.0 kW. It is read again (with the heartbeat) until the ramp shows in it.
        async with asyncio.timeout(10):
            while await measured() <= 45_000:
                await asyncio.sleep(0.05)
        sunspec_sim.force_alarm_bits(1 << 2)  # over_temperature -> 802.Evt1 bit 1
        rr = await client.read_holding_registers(evt1, count=2, device_id=1)
        assert (rr.registers[0] << 16 | rr.registers[1]) & (1 << 1)
    finally:
        client.close()


async def test_sunspec_sim_reverts_wset_after_wsetrvrttms(sunspec_sim: SimulatorThread) -> None:
    """The PCS-side reversion a SunSpec gateway relies on: WSet not rewritten within
    WSetRvrtTms -> the PCS falls back to WSetRvrt (0 W) by itself; WMaxLimPct caps |W|."""
    where = sunspec.layout()
    m704, m802 = sunspec.models()[704], sunspec.models()[802]

    def at(model, name: str) -> int:
        return where[model.id] + model.point(name).offset

    client = AsyncModbusTcpClient("127.0.0.1", port=sunspec_sim.port)
    await client.connect()
    try:
        await client.write_registers(at(m704, "WSetRvrt"), [0, 0], device_id=1)
        await client.write_registers(at(m704, "WSetRvrtTms"), [0, 1], device_id=1)  # 1 s
        await client.write_registers(at(m704, "WMaxLimPct"), [250], device_id=1)  # 25.0 %
        await client.write_registers(at(m704, "WMaxLimPctEna"), [1], device_id=1)
        await client.write_registers(at(m704, "WSet"), [0x0003, 0x0D40], device_id=1)  # 200 kW
        await client.write_registers(at(m704, "WSetEna"), [1], device_id=1)
        hb = 0
        # Keep the heartbeat alive (the battery's own watchdog), but never rewrite WSet.
        for _ in range(200):
            hb += 1
            await client.write_registers(at(m802, "CtrlHb"), [hb], device_id=1)
            if sunspec_sim.state.target_w > 0:
                break
            await asyncio.sleep(0.02)
        assert sunspec_sim.state.target_w == pytest.approx(150_000)  # 25 % of 600 kW
        for _ in range(300):
            hb += 1
            await client.write_registers(at(m802, "CtrlHb"), [hb], device_id=1)
            if sunspec_sim.reverted and sunspec_sim.state.target_w == 0:
                break
            await asyncio.sleep(0.02)
        assert sunspec_sim.reverted and sunspec_sim.state.target_w == 0
    finally:
        client.close()
