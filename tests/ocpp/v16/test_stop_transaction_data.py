"""1.6 StopTransaction.transactionData end to end: the Transaction.End value only by default; with
StopTxnIntermediateData the StopTxnSampledData values every MeterValueSampleInterval and the
StopTxnAlignedData values every ClockAlignedDataInterval from the start, also after a crash."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gateway_process import killed_at_exit, one_endpoint_config
from waiting import booted, until

from bess_gateway.config import load_config
from bess_gateway.demo.csms import CsmsServer
from bess_gateway.domain.timefmt import parse_iso
from bess_gateway.gateway import Gateway
from bess_gateway.sim.server import SimulatorThread
from tests.conftest import GatewayFactory
from tests.ocpp.v16.test_endpoint_e2e import start_tx
from tests.ocpp.v201.test_tx_ended_values import journaled_rows, kept_rows

REGISTER = "Energy.Active.Import.Register"  # connector 1, discharge_as = "import"


async def configure(csms: CsmsServer, sid: str, **values: str) -> None:
    for key, value in values.items():
        r = await csms.call(sid, "ChangeConfiguration", {"key": key, "value": value})
        assert r == {"status": "Accepted"}, key


def contexts(mv: dict[str, Any]) -> set[str]:
    return {sv["context"] for sv in mv["sampledValue"]}


def register(mv: dict[str, Any]) -> int:
    return next(int(sv["value"]) for sv in mv["sampledValue"] if sv["measurand"] == REGISTER)


async def stop(csms: CsmsServer, sid: str, tx_id: int) -> dict[str, Any]:
    after = csms.last_seq()
    assert await csms.call(sid, "RemoteStopTransaction", {"transactionId": tx_id}) == {
        "status": "Accepted"}
    return (await csms.wait_for(sid, "StopTransaction", after=after, timeout=15)).payload


async def test_default_stop_carries_the_end_value_only(gateway_factory: GatewayFactory,
                                                       csms: CsmsServer,
                                                       sim: SimulatorThread) -> None:
    gw = await gateway_factory(1)
    (sid,) = await booted(gw, csms)
    conf = await csms.call(sid, "GetConfiguration", {"key": ["StopTxnIntermediateData"]})
    assert conf["configurationKey"] == [
        {"key": "StopTxnIntermediateData", "readonly": False, "value": "false"}]
    tx_id = await start_tx(csms, sid, 1)
    await csms.wait_for(sid, "MeterValues", lambda p: p.get("transactionId") == tx_id,
                        timeout=15)
    payload = await stop(csms, sid, tx_id)
    assert [contexts(mv) for mv in payload["transactionData"]] == [{"Transaction.End"}]
    assert register(payload["transactionData"][0]) == payload["meterStop"]


async def test_stop_carries_sampled_and_aligned_values(gateway_factory: GatewayFactory,
                                                       csms: CsmsServer,
                                                       sim: SimulatorThread) -> None:
    gw = await gateway_factory(1)  # MeterValueSampleInterval 1 s
    (sid,) = await booted(gw, csms)
    await configure(csms, sid, StopTxnIntermediateData="true",
                    StopTxnSampledData=f"{REGISTER},Power.Active.Import",
                    StopTxnAlignedData=REGISTER, ClockAlignedDataInterval="1")
    after = csms.last_seq()
    tx_id = await start_tx(csms, sid, 1)
    start = (await csms.wait_for(sid, "StartTransaction", after=after)).payload
    await until(lambda: sim.written.setpoint_w == 150_000)
    await until(lambda: kept_rows(gw, sid, "Sample.Periodic") >= 3
                and kept_rows(gw, sid, "Sample.Clock") >= 2, 20)
    payload = await stop(csms, sid, tx_id)

    data = payload["transactionData"]
    kinds = [contexts(mv) for mv in data]
    assert kinds[0] == {"Transaction.Begin"} and kinds[-1] == {"Transaction.End"}
    assert sum(k == {"Sample.Periodic"} for k in kinds) >= 3
    assert sum(k == {"Sample.Clock"} for k in kinds) >= 2
    assert all(len(k) == 1 for k in kinds)
    # In time order from the start to the stop; the Begin and End registers are meterStart and
    # meterStop, the ones between grow from one to the other.
    times = [parse_iso(mv["timestamp"]) for mv in data]
    assert times == sorted(times)
    assert times[0] == parse_iso(start["timestamp"])
    assert times[-1] == parse_iso(payload["timestamp"])
    registers = [register(mv) for mv in data]
    assert registers == sorted(registers)
    assert registers[0] == start["meterStart"] and registers[-1] == payload["meterStop"]
    assert registers[-1] > registers[0]
    for mv in data:
        names = {sv["measurand"] for sv in mv["sampledValue"]}
        assert names == ({REGISTER} if contexts(mv) == {"Sample.Clock"}
                         else {REGISTER, "Power.Active.Import"})
        assert all(sv["format"] == "Raw" for sv in mv["sampledValue"])
    # The CSMS took the stop (schema-valid) and billed meterStop.
    tx = csms.transactions[tx_id]
    assert tx.meter_stop == payload["meterStop"]


async def test_kept_values_survive_a_crash(tmp_path: Path, sim: SimulatorThread,
                                           csms: CsmsServer) -> None:
    """SIGKILL mid-session: the PowerLoss StopTransaction of the restarted gateway carries the
    values kept before the crash (the transaction's journal record)."""
    sid = "KEEP-16"
    cfg_path = one_endpoint_config(tmp_path, sim.port, csms.url, sid, sample_interval_s=1)
    async with killed_at_exit(cfg_path):
        await csms.wait_for(sid, "StatusNotification", lambda p: p["connectorId"] == 2,
                            timeout=30)
        await configure(csms, sid, StopTxnIntermediateData="true")
        after = csms.last_seq()
        tx_id = await start_tx(csms, sid, 1)
        start = (await csms.wait_for(sid, "StartTransaction", after=after)).payload
        await until(lambda: sim.written.setpoint_w == 150_000)
        await until(lambda: journaled_rows(tmp_path / "var" / "journal.sqlite") >= 3, 20)

    await until(lambda: abs(sim.state.measured_w) < 1.0 and sim.state.pcs_state != 2, 15)
    gw = Gateway(load_config(cfg_path))
    await gw.start()
    try:
        payload = (await csms.wait_for(sid, "StopTransaction", timeout=30)).payload
        assert payload["transactionId"] == tx_id and payload["reason"] == "PowerLoss"
        data = payload["transactionData"]
        kinds = [contexts(mv) for mv in data]
        assert kinds[0] == {"Transaction.Begin"}
        assert kinds[1:] == [{"Sample.Periodic"}] * (len(kinds) - 1) and len(kinds) >= 4
        times = [parse_iso(mv["timestamp"]) for mv in data]
        assert times == sorted(times) and times[-1] <= parse_iso(payload["timestamp"])
        registers = [register(mv) for mv in data]
        assert registers[0] == start["meterStart"]
        assert registers == sorted(registers) and registers[-1] <= payload["meterStop"]
    finally:
        await gw.stop(drain_s=0)
