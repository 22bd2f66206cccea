"""PCS and BMS faults seen from the CSMS: the setpoint goes to 0 in the next write (no ramp), each
endpoint reports the fault's own error code, and the session resumes by itself once the
condition clears (no restart). Real gateway, real simulator with fault injection, real CSMS.
(Over-temperature and a silent PCS are in test_endpoint_e2e.py.)"""

from __future__ import annotations

import pytest
from conftest import GatewayFactory
from waiting import until

from bess_gateway.demo.csms import CsmsServer
from bess_gateway.sim.server import SimulatorThread


async def charging_on_both_endpoints(csms: CsmsServer, sim: SimulatorThread) -> None:
    for ep in ("DEMO-01", "DEMO-02"):
        await csms.wait_for(ep, "StatusNotification", lambda p: p["connectorId"] == 2)
        r = await csms.call(ep, "RemoteStartTransaction", {"idTag": "T", "connectorId": 1})
        assert r["status"] == "Accepted"
    await until(lambda: sim.written.setpoint_w == 300_000)


def no_ramp_down(sim: SimulatorThread) -> None:
    """The write after the last full-power one is 0: a trip skips the ramp."""
    writes = [w for _, w in sim.setpoint_writes()]
    i = max(i for i, w in enumerate(writes) if w == 300_000)
    assert writes[i + 1] == 0, writes[i:i + 5]


async def faulted_everywhere(csms: CsmsServer, after: int, error_code: str,
                             vendor_code: str) -> None:
    for ep in ("DEMO-01", "DEMO-02"):
        fault = await csms.wait_for(
            ep, "StatusNotification",
            lambda p: p["connectorId"] == 1 and p["status"] == "Faulted", after=after)
        assert fault.payload["errorCode"] == error_code
        assert fault.payload["vendorErrorCode"] == vendor_code


async def charging_again(csms: CsmsServer, sim: SimulatorThread, after: int) -> None:
    for ep in ("DEMO-01", "DEMO-02"):
        await csms.wait_for(ep, "StatusNotification",
                            lambda p: p["connectorId"] == 1 and p["status"] == "Charging",
                            after=after, timeout=15)
    await until(lambda: sim.written.setpoint_w == 300_000, 10)
    # Both transactions went on: no stop was sent for either.
    assert not csms.of("DEMO-01", "StopTransaction") and not csms.of("DEMO-02", "StopTransaction")


@pytest.mark.parametrize(("point", "words", "cause", "error_code", "vendor_code"), [
    # SoC above 100 %: a reading no battery can give, so none of it is trusted
    ("soc_pct", [1005], "invalid_measurement", "PowerMeterFailure", "InvalidMeasurement"),
    # the i16 "not available" sentinel (-3276.8 C) a BMS sends for a dead sensor
    ("cell_temp_max_c", [0x8000], "invalid_measurement", "PowerMeterFailure",
     "InvalidMeasurement"),
    # PCS state 3 (fault) with no alarm bit set
    ("pcs_state", [3], "pcs_fault_state", "InternalError", "PcsFaultState"),
])
async def test_out_of_range_readings_trip_to_zero_then_recover(
        gateway_factory: GatewayFactory, sim: SimulatorThread, csms: CsmsServer, point: str,
        words: list[int], cause: str, error_code: str, vendor_code: str) -> None:
    gw = await gateway_factory(2)
    await charging_on_both_endpoints(csms, sim)
    after = csms.last_seq()
    sim.force_raw(point, words)
    await faulted_everywhere(csms, after, error_code, vendor_code)
    assert cause in gw.core.snapshot()["trip_causes"]  # type: ignore[union-attr]
    assert sim.written.setpoint_w == 0
    no_ramp_down(sim)

    after = csms.last_seq()
    sim.force_raw(point, None)
    await charging_again(csms, sim, after)


@pytest.mark.parametrize(("bit", "error_code", "vendor_code"), [
    (5, "GroundFailure", "InsulationFault"),
    (0, "OverVoltage", "CellOverVoltage"),
])
async def test_bms_alarm_faults_the_pcs_then_recovers_after_a_fault_reset(
        gateway_factory: GatewayFactory, sim: SimulatorThread, csms: CsmsServer, bit: int,
        error_code: str, vendor_code: str) -> None:
    gw = await gateway_factory(2)
    await charging_on_both_endpoints(csms, sim)
    after = csms.last_seq()
    sim.force_alarm_bits(1 << bit)
    await faulted_everywhere(csms, after, error_code, vendor_code)
    no_ramp_down(sim)
    assert sim.state.pcs_state == 3  # the PCS latched its fault

    after = csms.last_seq()
    before = sim.written.fault_reset_writes
    sim.clear_forced_alarms()
    # The alarm is gone but the PCS stays in fault until the gateway writes a fault reset.
    await until(lambda: sim.written.fault_reset_writes > before, 10)
    await charging_again(csms, sim, after)
    assert not gw.core.snapshot()["tripped"]  # type: ignore[union-attr]
