"""The simulator over real Modbus TCP (pymodbus client on loopback)."""

import asyncio
import io
import math

import pytest
from pymodbus.client import AsyncModbusTcpClient, ModbusTcpClient
from pymodbus.exceptions import ModbusException, ModbusIOException

from bess_gateway.sim import sunspec
from bess_gateway.sim.battery import Alarm, PcsState
from bess_gateway.sim.profiles import load_profile
from bess_gateway.sim.regmap import RegisterMapError
from bess_gateway.sim.server import DEFAULT_LOCAL_POWER_W, Simulator, SimulatorThread, serve

from .helpers import eventually, eventually_sync

MAP = load_profile("generic")


def command_words(run: int, setpoint_w: int, watchdog: int, fault_reset: int = 0) -> list[int]:
    return [run, *MAP["setpoint_w"].encode(setpoint_w), watchdog, fault_reset]


@pytest.fixture
async def sim():
    s = Simulator()
    await s.start()
    try:
        yield s
    finally:
        await s.stop()


@pytest.fixture
async def client(sim):
    c = AsyncModbusTcpClient("127.0.0.1", port=sim.port, timeout=0.3, retries=0)
    assert await c.connect()
    try:
        yield c
    finally:
        c.close()


async def read_block(client) -> dict[str, float]:
    rr = await client.read_holding_registers(100, count=28, device_id=1)
    assert not rr.isError(), rr
    return MAP.decode_block(100, rr.registers)


async def test_listens_on_a_free_port(sim):
    assert sim.port > 0
    assert sim.host == "127.0.0.1"


async def test_read_block_decodes_to_plausible_values(client):
    m = await read_block(client)
    assert m["pcs_state"] == PcsState.STANDBY
    assert m["measured_w"] == 0
    assert m["ac_voltage_v"] == 400.0
    assert m["ac_frequency_hz"] == 50.0
    assert 600 <= m["dc_voltage_v"] <= 900
    assert m["soc_pct"] == 50.0
    assert 0 < m["soh_pct"] <= 100
    assert m["cell_temp_min_c"] <= 25.0 <= m["cell_temp_max_c"]
    assert 2500 <= m["cell_v_min_mv"] <= m["cell_v_max_mv"] <= 3650
    assert m["bms_max_discharge_w"] == m["bms_max_charge_w"] == 600_000
    assert m["alarm_bits"] == 0
    assert m["energy_discharged_wh"] == m["energy_charged_wh"] == 0


async def test_run_and_setpoint_move_measured_power(sim, client):
    wr = await client.write_registers(0, command_words(1, 100_000, 1), device_id=1)
    assert not wr.isError(), wr
    m = await eventually(lambda: read_block(client), lambda m: m["measured_w"] > 95_000)
    assert m["pcs_state"] == PcsState.RUNNING
    assert m["dc_current_a"] > 0
    assert m["ac_current_a"] == pytest.approx(m["measured_w"] / (math.sqrt(3) * 400), abs=0.1)

    written = sim.written
    assert (written.run, written.setpoint_w, written.watchdog) == (1, 100_000, 1)
    assert written.write_count == 1
    [(t, setpoint)] = sim.setpoint_writes()
    assert setpoint == 100_000
    assert t == written.last_write_t

    await client.write_registers(0, command_words(1, -50_000, 2), device_id=1)
    m = await eventually(lambda: read_block(client), lambda m: m["measured_w"] < -45_000)
    assert m["dc_current_a"] < 0
    assert [w for _, w in sim.setpoint_writes()] == [100_000, -50_000]


async def test_silent_drops_requests_but_keeps_the_connection(sim, client):
    assert (await read_block(client))["pcs_state"] == PcsState.STANDBY
    sim.set_silent(True)
    with pytest.raises(ModbusIOException):
        await client.read_holding_registers(100, count=28, device_id=1)
    # Writes are dropped too: nothing reaches the PCS while it is silent.
    with pytest.raises(ModbusIOException):
        await client.write_registers(0, command_words(1, 10_000, 1), device_id=1)
    assert sim.written.write_count == 0
    assert sim.dropped_requests == 2
    assert client.connected
    assert sim.connections == 1

    sim.set_silent(False)
    m = await read_block(client)
    assert m["pcs_state"] == PcsState.STANDBY


async def test_forced_alarm_shows_fault_state_and_bits(sim, client):
    await client.write_registers(0, command_words(1, 100_000, 1), device_id=1)
    await eventually(lambda: read_block(client), lambda m: m["measured_w"] > 50_000)

    sim.force_alarm_bits(Alarm.GRID_FAULT | Alarm.INSULATION_FAULT)
    m = await read_block(client)
    assert m["pcs_state"] == PcsState.FAULT
    assert MAP.alarm_names(int(m["alarm_bits"])) == ["insulation_fault", "grid_fault"]
    await eventually(lambda: read_block(client), lambda m: abs(m["measured_w"]) < 1_000)

    sim.clear_forced_alarms()
    m = await read_block(client)
    assert m["alarm_bits"] == 0 and m["pcs_state"] == PcsState.FAULT  # latched

    await client.write_registers(0, command_words(1, 100_000, 2, fault_reset=1), device_id=1)
    m = await eventually(lambda: read_block(client), lambda m: m["pcs_state"] != PcsState.FAULT)
    assert m["pcs_state"] == PcsState.RUNNING
    assert sim.written.fault_reset_writes == 1
    # The reset register clears itself once acted upon.
    assert sim.registers(4, 1) == [0]


async def test_forced_temperature_and_soc_are_visible(sim, client):
    sim.force_temperature(52.5)
    sim.force_soc(99.0)
    m = await read_block(client)
    assert m["cell_temp_max_c"] == m["cell_temp_min_c"] == 52.5
    assert m["soc_pct"] == 99.0
    assert m["bms_max_discharge_w"] == 300_000
    assert m["bms_max_charge_w"] == 120_000
    sim.force_temperature(None)
    m = await read_block(client)
    assert m["cell_temp_max_c"] < 30


async def test_raw_points_can_be_pinned_and_released(sim, client):
    sim.force_raw("soc_pct", [1005])  # 100.5 %: a value no battery can have
    sim.force_raw("cell_temp_max_c", [0x8000])  # the usual i16 "not available" sentinel
    m = await read_block(client)
    assert m["soc_pct"] == 100.5
    assert m["cell_temp_max_c"] == -3276.8
    await asyncio.sleep(0.1)  # model ticks republish; the pins hold
    assert (await read_block(client))["soc_pct"] == 100.5
    sim.force_raw("soc_pct", None)
    sim.force_raw("cell_temp_max_c", None)
    m = await read_block(client)
    assert m["soc_pct"] == 50.0
    assert 0 < m["cell_temp_max_c"] < 30
    with pytest.raises(KeyError):
        sim.force_raw("no_such_point", [1])
    with pytest.raises(ValueError):
        sim.force_raw("energy_discharged_wh", [1])  # a u64 is four words


async def test_watchdog_revert_with_injected_time():
    # autotick off: the test owns time, so the 2 s expiry needs no waiting.
    async with Simulator(autotick=False) as sim:
        c = AsyncModbusTcpClient("127.0.0.1", port=sim.port, timeout=0.5, retries=0)
        assert await c.connect()
        try:
            await c.write_registers(0, command_words(1, 200_000, 7), device_id=1)
            assert sim.step(1.9).pcs_state is PcsState.RUNNING
            s = sim.step(0.2)
            assert s.pcs_state is PcsState.STANDBY and s.target_w == 0
            assert (await read_block(c))["pcs_state"] == PcsState.STANDBY
            await c.write_registers(3, [8], device_id=1)  # the gateway is back
            assert sim.step(0.1).pcs_state is PcsState.RUNNING
        finally:
            c.close()


async def test_writes_to_measurements_and_gaps_are_refused(client):
    rr = await client.write_registers(101, [0, 1], device_id=1)
    assert rr.isError() and rr.exception_code == 2  # ILLEGAL_ADDRESS
    rr = await client.read_holding_registers(0, count=101, device_id=1)
    assert rr.isError() and rr.exception_code == 2
    rr = await client.read_input_registers(100, count=2, device_id=1)
    assert rr.isError() and rr.exception_code == 1  # ILLEGAL_FUNCTION
    rr = await client.read_holding_registers(0, count=5, device_id=1)
    assert rr.registers == [0, 0, 0, 0, 0]


async def test_any_unit_id_is_answered(client):
    rr = await client.read_holding_registers(100, count=1, device_id=7)
    assert rr.registers == [PcsState.STANDBY]


async def test_stop_closes_connections():
    sim = Simulator()
    await sim.start()
    c = AsyncModbusTcpClient("127.0.0.1", port=sim.port, timeout=0.3, retries=0)
    assert await c.connect()
    await eventually(_async(lambda: sim.connections), lambda n: n == 1)
    await sim.stop()
    try:
        assert sim.connections == 0
        await eventually(_async(lambda: c.connected), lambda up: not up)
        with pytest.raises(ModbusException):
            await c.read_holding_registers(100, count=1, device_id=1)
    finally:
        c.close()


def test_unsupported_profile_is_a_clear_error():
    with pytest.raises(RegisterMapError, match="supported profiles: generic, sunspec"):
        Simulator(profile="modbus-x")


def test_simulator_thread_from_synchronous_code():
    with SimulatorThread() as st:
        assert st.port > 0
        client = ModbusTcpClient("127.0.0.1", port=st.port, timeout=1.0, retries=0)
        assert client.connect()
        try:
            client.write_registers(0, command_words(1, 60_000, 1), device_id=1)
            eventually_sync(lambda: st.state.measured_w, lambda w: w > 55_000)
            st.force_alarm_bits(Alarm.EMERGENCY_STOP)
            rr = client.read_holding_registers(100, count=1, device_id=1)
            assert rr.registers == [PcsState.FAULT]
            (t, w) = st.setpoint_writes()[-1]
            assert w == 60_000 and t <= st.loop_time()
            assert st.written.run == 1
        finally:
            client.close()
    assert st.port == 0


def test_simulator_thread_reports_a_busy_port():
    with SimulatorThread() as first:
        second = SimulatorThread()
        with pytest.raises(OSError, match="cannot listen"):
            second.start(port=first.port)


async def test_serve_prints_status_until_cancelled():
    out = io.StringIO()
    task = asyncio.create_task(serve("127.0.0.1", 0, status_interval_s=0.05, out=out))
    try:
        await eventually(_async(out.getvalue), lambda text: "soc=" in text)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    first, second = out.getvalue().splitlines()[:2]
    assert "listening on 127.0.0.1:" in first
    assert "state=standby" in second and "measured=" in second


async def test_serve_rejects_an_unknown_profile():
    with pytest.raises(RegisterMapError, match="unknown profile 'nope'"):
        await serve("127.0.0.1", 0, profile="nope")


def _async(fn):
    async def probe():
        return fn()

    return probe


async def test_local_mode_refuses_writes_serves_reads_and_runs_the_local_setting():
    # autotick off: the test owns time, so "the PCS keeps running for minutes" needs no waiting.
    async with Simulator(autotick=False, local_power_w=30_000) as sim:
        c = AsyncModbusTcpClient("127.0.0.1", port=sim.port, timeout=0.5, retries=0)
        assert await c.connect()
        try:
            await c.write_registers(0, command_words(1, 100_000, 1), device_id=1)
            assert sim.step(2.0).measured_w == pytest.approx(100_000, rel=0.01)

            sim.set_local_mode(True)
            wr = await c.write_registers(0, command_words(1, -50_000, 2), device_id=1)
            assert wr.isError() and wr.exception_code == 4  # SERVER_DEVICE_FAILURE
            assert sim.refused_writes == 1
            assert sim.written.setpoint_w == 100_000 and sim.written.write_count == 1
            # The local setting, not the last command, and no heartbeat keeps it or stops it.
            s = sim.step(120.0)
            assert s.pcs_state is PcsState.RUNNING and s.target_w == 30_000
            assert s.measured_w == pytest.approx(30_000, rel=0.01)
            assert sim.local_control
            m = await read_block(c)  # reads are served as usual
            assert m["measured_w"] == pytest.approx(30_000, abs=100)

            sim.set_local_mode(False)
            wr = await c.write_registers(0, command_words(1, -50_000, 3), device_id=1)
            assert not wr.isError(), wr
            assert sim.step(2.0).measured_w == pytest.approx(-50_000, rel=0.01)
            assert not sim.local_control
        finally:
            c.close()


async def test_sunspec_wsetena_0_hands_the_pcs_to_its_own_mode():
    where = sunspec.layout()
    m704, m802 = sunspec.models()[704], sunspec.models()[802]

    def at(model: sunspec.ModelDef, name: str) -> int:
        return where[model.id] + model.point(name).offset

    async with Simulator(profile="sunspec", autotick=False) as sim:
        c = AsyncModbusTcpClient("127.0.0.1", port=sim.port, timeout=0.5, retries=0)
        assert await c.connect()
        try:
            # Idle as shipped: WSet control on at 0 W, no heartbeat, so standby.
            assert sim.registers(at(m704, "WSetEna"), 1) == [1]
            assert sim.step(5.0).measured_w == 0 and not sim.local_control
            # WSetEna = 1, WSet = 0 with a live heartbeat: running, at 0 W.
            await c.write_registers(at(m704, "WSet"), [0, 0], device_id=1)
            await c.write_registers(at(m802, "CtrlHb"), [1], device_id=1)
            s = sim.step(1.0)
            assert s.pcs_state is PcsState.RUNNING and s.measured_w == 0
            # WSetEna = 0: the inverter's own mode, at its local setting, WSet = 0 or not.
            await c.write_registers(at(m704, "WSetEna"), [0], device_id=1)
            s = sim.step(60.0)
            assert sim.local_control and s.target_w == DEFAULT_LOCAL_POWER_W
            assert s.measured_w == pytest.approx(DEFAULT_LOCAL_POWER_W, rel=0.01)
            await c.write_registers(at(m704, "WSetEna"), [1], device_id=1)
            await c.write_registers(at(m802, "CtrlHb"), [2], device_id=1)
            assert sim.step(2.0).measured_w == pytest.approx(0, abs=50)
        finally:
            c.close()
