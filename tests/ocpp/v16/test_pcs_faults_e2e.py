"""PCS and BMS faults seen from the CSMS: the setpoint goes to 0 in the next write (no ramp), each
endpoint reports the fault's own error code, and the session resumes by itself once the
condition clears (no restart). Real gateway, real simulator with fault injection, real CSMS. A PCS
in local mode refuses the writes themselves: nothing can be written, so only the fault shows.
(Over-temperature and a silent PCS are in test_endpoint_e2e.py.)"""

from __future__ import annotations

import pytest
from conftest import GatewayFactory
from prometheus_client.parser import text_string_to_metric_families
from waiting import until

from bess_gateway.demo.csms import CsmsServer
from bess_gateway.gateway import Gateway
from bess_gateway.sim.server import DEFAULT_LOCAL_POWER_W, SimulatorThread


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
    # the u32 "not available" sentinel for the BMS discharge limit: no limit known is no limit
    # to discharge under, not 4.3 GW of headroom
    ("bms_max_discharge_w", [0xFFFF, 0xFFFF], "invalid_measurement", "PowerMeterFailure",
     "InvalidMeasurement"),
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


def metric_samples(gw: Gateway) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    assert gw.metrics is not None
    return {(m.name, tuple(sorted(m.labels.items()))): m.value
            for family in text_string_to_metric_families(gw.metrics.metrics_text().decode())
            for m in family.samples}


async def test_pcs_in_local_mode_faults_the_connectors_until_writes_go_through_again(
        gateway_factory: GatewayFactory, sim: SimulatorThread, csms: CsmsServer) -> None:
    gw = await gateway_factory(2, metrics_listen="127.0.0.1:0")
    await charging_on_both_endpoints(csms, sim)
    # A write can time out on a loaded machine: count from here.
    failures = gw.core.snapshot()["pcs_write_failures"]  # type: ignore[union-attr]

    after = csms.last_seq()
    sim.set_local_mode(True)  # every write answered with a Modbus exception, reads served
    await faulted_everywhere(csms, after, "InternalError", "PcsWriteFault")
    snap = gw.core.snapshot()  # type: ignore[union-attr]
    assert snap["link_up"] and "pcs_write_fault" in snap["trip_causes"], snap["trip_causes"]
    assert snap["pcs_write_failures"] > failures and snap["pcs_write_error"]
    assert snap["setpoint_w"] == 0
    assert sim.refused_writes > 0
    # Why it is a fault: the PCS runs at its own local setting, not at what the sessions get.
    await until(lambda: abs(sim.state.measured_w - DEFAULT_LOCAL_POWER_W) < 1000)
    got = metric_samples(gw)
    assert got[("bess_pcs_write_failures_total", ())] >= snap["pcs_write_failures"]
    assert got[("bess_trip_cause", (("cause", "pcs_write_fault"),))] == 1
    status = gw.metrics.status()  # type: ignore[union-attr]
    assert status["control"]["pcs_write_failures"] >= snap["pcs_write_failures"]
    assert status["pcs"]["pcs_write_error"]
    assert status["endpoints"][0]["connectors"]["1"] == {"status": "Faulted",
                                                         "cause": "pcs_write_fault"}

    after = csms.last_seq()
    sim.set_local_mode(False)
    await charging_again(csms, sim, after)
    assert "pcs_write_fault" not in gw.core.snapshot()["trip_causes"]  # type: ignore[union-attr]
