"""The simulator's grid meter over real Modbus TCP (pymodbus client on loopback).

Expected readings are computed here from the inputs: the hub load the test chose and the PCS
power read back from the PCS's own registers; energies from power x time of the steps."""

from __future__ import annotations

import asyncio
import io
import os
import re
import sys

import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException

from bess_gateway.sim import sunspec
from bess_gateway.sim.grid_meter import GridMeter
from bess_gateway.sim.hub_load import ConstantLoad, StepLoad
from bess_gateway.sim.profiles import load_profile
from bess_gateway.sim.server import Simulator, SimulatorThread, serve

from .helpers import eventually

PCS = load_profile("generic")


def i32(hi: int, lo: int) -> int:
    v = hi << 16 | lo
    return v - (1 << 32) if v & 0x8000_0000 else v


def u64(words: list[int]) -> int:
    v = 0
    for w in words:
        v = v << 16 | w
    return v


def s16(w: int) -> int:
    return w - 0x10000 if w & 0x8000 else w


async def connect(port: int) -> AsyncModbusTcpClient:
    c = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=0.5, retries=0)
    assert await c.connect()
    return c


async def read(c: AsyncModbusTcpClient, address: int, count: int) -> list[int]:
    rr = await c.read_holding_registers(address, count=count, device_id=1)
    assert not rr.isError(), rr
    return list(rr.registers)


async def generic_reading(c: AsyncModbusTcpClient) -> tuple[int, int, int]:
    """(W, Wh imported, Wh exported) decoded by design.md section 8's table."""
    w = await read(c, 0, 10)
    return i32(w[0], w[1]), u64(w[2:6]), u64(w[6:10])


async def pcs_measured_w(c: AsyncModbusTcpClient) -> int:
    w = await read(c, PCS["measured_w"].address, 2)
    return i32(w[0], w[1])


async def discharge(sim: Simulator, pc: AsyncModbusTcpClient, watts: int, seconds: float,
                    dt: float = 0.5) -> None:
    """Command the PCS over Modbus and step, rewriting the watchdog as a gateway does."""
    for n in range(round(seconds / dt)):
        words = [1, *PCS["setpoint_w"].encode(watts), n & 0xFFFF, 0]
        assert not (await pc.write_registers(0, words, device_id=1)).isError()
        sim.step(dt)


async def test_generic_meter_reads_hub_load_minus_battery_and_integrates_energy() -> None:
    hub_w = 300_000
    meter = GridMeter(ConstantLoad(hub_w))
    async with Simulator(autotick=False, grid_meter=meter) as sim:
        assert sim.grid_meter_port not in (0, sim.port)
        mc, pc = await connect(sim.grid_meter_port), await connect(sim.port)
        try:
            for _ in range(36):
                sim.step(1.0)
            # Battery idle: the meter reads the hub; 300 kW for 36 s = 3000 Wh imported.
            assert await pcs_measured_w(pc) == 0
            assert await generic_reading(mc) == (hub_w, 3000, 0)

            # The battery discharges 500 kW: 200 kW flow back to the grid.
            await discharge(sim, pc, 500_000, 5.0)
            battery = await pcs_measured_w(pc)
            assert battery == 500_000
            w, imported, exported = await generic_reading(mc)
            assert w == hub_w - battery == -200_000
            await discharge(sim, pc, 500_000, 18.0)
            w2, imported2, exported2 = await generic_reading(mc)
            assert w2 == -200_000
            assert imported2 == imported  # nothing imported while exporting
            # 200 kW for 18 s = 1000 Wh (registers count whole Wh: +-1 for the fraction).
            assert abs((exported2 - exported) - 1000) <= 1
        finally:
            mc.close()
            pc.close()


async def test_meter_refuses_writes_and_unknown_addresses() -> None:
    async with Simulator(autotick=False, grid_meter=GridMeter(ConstantLoad(1000))) as sim:
        c = await connect(sim.grid_meter_port)
        try:
            assert (await c.write_registers(0, [1, 2], device_id=1)).isError()
            assert (await c.read_holding_registers(8, count=4, device_id=1)).isError()
            assert (await generic_reading(c))[0] == 1000  # the refused write changed nothing
        finally:
            c.close()


async def walk_sunspec(c: AsyncModbusTcpClient) -> list[tuple[int, int, int]]:
    """(model id, address of its ID, L) along the chain, as a SunSpec client discovers it."""
    assert tuple(await read(c, 40000, 2)) == (0x5375, 0x6E53)  # "SunS"
    chain = []
    addr = 40002
    while True:
        mid, length = await read(c, addr, 2)
        if mid == 0xFFFF:
            assert length == 0
            return chain
        chain.append((mid, addr, length))
        addr += 2 + length


@pytest.mark.parametrize("model", [201, 202, 203, 204])
async def test_sunspec_meter_chain_and_values(model: int) -> None:
    hub_w = 412_300
    meter = GridMeter(ConstantLoad(hub_w), profile="sunspec", model=model)
    async with Simulator(autotick=False, grid_meter=meter) as sim:
        c = await connect(sim.grid_meter_port)
        try:
            chain = await walk_sunspec(c)
            # Common model (L = 66 in the SunSpec definition), one meter model (L = 105), end.
            assert [(m, n) for m, _, n in chain] == [(1, 66), (model, 105)]
            common = await read(c, chain[0][1], 68)
            mn = b"".join(w.to_bytes(2, "big") for w in common[2:18]).rstrip(b"\0")
            assert mn == b"bess-gateway"
            for _ in range(72):
                sim.step(1.0)  # 72 s at 412.3 kW = 8246 Wh
            body = await read(c, chain[1][1], 107)
            pt = sunspec.models()[model].point

            def raw(name: str) -> list[int]:
                p = pt(name)
                return body[p.offset : p.offset + p.size]

            w_sf = s16(raw("W_SF")[0])
            assert s16(raw("W")[0]) * 10.0 ** w_sf == pytest.approx(hub_w, abs=10.0 ** w_sf / 2)
            wh_sf = s16(raw("TotWh_SF")[0])
            imp = raw("TotWhImp")
            assert (imp[0] << 16 | imp[1]) * 10.0 ** wh_sf == pytest.approx(8246, abs=1)
            exp = raw("TotWhExp")
            assert exp == [0, 0]
            hz = s16(raw("Hz")[0]) * 10.0 ** s16(raw("Hz_SF")[0])
            assert hz == pytest.approx(50.0)
            phases = {201: 1, 202: 2, 203: 3, 204: 3}[model]
            for i, ph in enumerate("ABC"):
                if i < phases:
                    assert s16(raw(f"Wph{ph}")[0]) * 10.0 ** w_sf == pytest.approx(
                        hub_w / phases, abs=10.0 ** w_sf)
                else:
                    assert raw(f"Wph{ph}") == [0x8000]  # int16 "not implemented"
        finally:
            c.close()


async def test_sunspec_meter_reads_export_negative_and_saturates_off_the_sentinel() -> None:
    meter = GridMeter(ConstantLoad(-5_000_000), profile="sunspec")  # beyond int16 at W_SF = 2
    async with Simulator(autotick=False, grid_meter=meter) as sim:
        c = await connect(sim.grid_meter_port)
        try:
            (_, at, _), = [x for x in await walk_sunspec(c) if x[0] == 203]
            p = sunspec.models()[203].point("W")
            (w,) = await read(c, at + p.offset, 1)
            assert s16(w) == -32767  # clamped, never -32768 ("not implemented")
        finally:
            c.close()


async def test_fault_injection_sentinel_and_silence() -> None:
    async with Simulator(autotick=False, grid_meter=GridMeter(ConstantLoad(50_000))) as sim:
        meter = sim.grid_meter
        assert meter is not None
        c = await connect(sim.grid_meter_port)
        try:
            meter.force_words(0, [0x8000, 0x0000])
            sim.step(0.1)  # pinned words survive the meter's own updates
            assert (await read(c, 0, 2)) == [0x8000, 0]
            meter.force_words(0, None)
            assert (await generic_reading(c))[0] == 50_000
            meter.set_silent(True)
            with pytest.raises(ModbusIOException):
                await c.read_holding_registers(0, count=2, device_id=1)
            assert meter.dropped_requests == 1
            assert c.connected
            meter.set_silent(False)
            assert (await generic_reading(c))[0] == 50_000
        finally:
            c.close()


async def test_step_profile_follows_simulator_time() -> None:
    load = StepLoad(((0.0, 100_000.0), (10.0, 700_000.0), (20.0, 200_000.0)))
    async with Simulator(autotick=False, grid_meter=GridMeter(load)) as sim:
        c = await connect(sim.grid_meter_port)
        try:
            seen = []
            for _ in range(25):
                sim.step(1.0)
                seen.append((round(sim.state.t_s), (await generic_reading(c))[0]))
            expected = [(t, 100_000 if t < 10 else 700_000 if t < 20 else 200_000)
                        for t in range(1, 26)]
            assert seen == expected
        finally:
            c.close()


def test_thread_steps_the_load_at_runtime_and_logs_what_the_meter_read() -> None:
    sim = SimulatorThread(grid_meter=GridMeter(ConstantLoad(200_000)))
    sim.start()
    try:
        t_set = sim.set_hub_load(950_000)
        asyncio.run(_await_meter(sim.grid_meter_port, 950_000))
        after = sim.meter_readings(since=t_set)
        assert after and after[-1].load_w == 950_000 and after[-1].grid_w == 950_000
        assert all(r.t >= t_set for r in after)
        sim.set_hub_load(None)
        asyncio.run(_await_meter(sim.grid_meter_port, 200_000))
    finally:
        sim.stop()


async def _await_meter(port: int, watts: int) -> None:
    c = await connect(port)
    try:
        await eventually(lambda: generic_reading(c), lambda r: r[0] == watts)
    finally:
        c.close()


async def test_serve_console_steps_the_load() -> None:
    out = io.StringIO()
    r, w = os.pipe()
    control = os.fdopen(r, "r")
    meter = GridMeter(ConstantLoad(250_000))
    task = asyncio.create_task(serve("127.0.0.1", 0, status_interval_s=0.05, out=out,
                                     grid_meter=meter, control=control))
    try:
        text = await eventually(_async(out.getvalue), lambda t: "grid meter" in t)
        port = int(re.search(r"grid meter \(generic map\) listening on 127\.0\.0\.1:(\d+)",
                             text).group(1))
        await _await_meter(port, 250_000)
        os.write(w, b"load 900\n")
        await _await_meter(port, 900_000)
        os.write(w, b"load profile\nbogus\n")
        await _await_meter(port, 250_000)
        await eventually(_async(out.getvalue), lambda t: "unknown command 'bogus'" in t)
        assert "hub load held at 900 kW" in out.getvalue()
    finally:
        os.close(w)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        control.close()


async def test_sim_command_serves_the_meter_and_takes_load_commands_on_stdin() -> None:
    """`bess-gateway sim` as a process: the meter's port is printed, stdin steps the load."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bess_gateway", "sim", "--port", "0", "--hub-load",
        "constant:120", "--grid-meter-profile", "sunspec", "--grid-meter-model", "201",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        async with asyncio.timeout(20):
            port = 0
            while not port:
                line = (await proc.stdout.readline()).decode()
                assert line, "sim exited"
                m = re.search(r"grid meter \(SunSpec models 1 \+ 201\) listening on [\d.]+:(\d+)",
                              line)
                port = int(m.group(1)) if m else 0
            c = await connect(port)
            try:
                (_, at, _), = [x for x in await walk_sunspec(c) if x[0] == 201]
                off = sunspec.models()[201].point("W").offset

                async def watts() -> int:
                    return s16((await read(c, at + off, 1))[0]) * 100  # W_SF = 2

                await eventually(watts, lambda v: v == 120_000, timeout_s=5)
                proc.stdin.write(b"load 640\n")
                await proc.stdin.drain()
                await eventually(watts, lambda v: v == 640_000, timeout_s=5)
            finally:
                c.close()
    finally:
        proc.terminate()
        await proc.wait()


def _async(fn):
    async def probe():
        return fn()

    return probe
