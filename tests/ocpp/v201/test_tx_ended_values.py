"""J02 end to end: the values sampled during a transaction (SampledDataCtrlr.TxEndedInterval,
AlignedDataCtrlr.TxEndedInterval) travel in its Ended event, also when a crash ended it."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

from gateway_process import killed_at_exit, one_endpoint_config
from waiting import until

from bess_gateway.config import load_config
from bess_gateway.demo.csms import CsmsServer
from bess_gateway.domain import metering
from bess_gateway.domain.timefmt import parse_iso
from bess_gateway.domain.transaction_facts import KEPT, KeptSamples
from bess_gateway.gateway import Gateway
from bess_gateway.ocpp.v201 import device_model
from bess_gateway.sim.server import SimulatorThread
from tests.conftest import GatewayFactory
from tests.ocpp.v201.test_transactions_e2e import SID, booted, start

REGISTER = "Energy.Active.Import.Register"  # connector 1, discharge_as = "import"


async def set_vars(csms: CsmsServer, sid: str, component: str, **values: str) -> None:
    resp = await csms.call(sid, "SetVariables", {"setVariableData": [
        {"component": {"name": component}, "variable": {"name": k}, "attributeValue": v}
        for k, v in values.items()]})
    assert [r["attributeStatus"] for r in resp["setVariableResult"]] == ["Accepted"] * len(values)


def kept_rows(gw: Gateway, sid: str, context: str) -> int:
    """How many samples of `context` the running session on EVSE 1 has kept so far."""
    tx = gw.stations[sid].transactions.get(1)
    series = tx.facts.kept.series.get(context) if tx is not None else None
    return 0 if series is None else len(series.rows)


def journaled_rows(journal: Path) -> int:
    """Periodic samples the open transactions' records hold on disk (read-only)."""
    db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT data FROM transactions").fetchall()
    except sqlite3.OperationalError:
        return 0  # not created yet
    finally:
        db.close()
    return sum(len(((json.loads(d).get(KEPT) or {}).get(metering.PERIODIC) or {})
                   .get("rows", [])) for (d,) in rows)


def contexts(mv: dict[str, Any]) -> set[str]:
    return {sv["context"] for sv in mv["sampledValue"]}


def register(mv: dict[str, Any]) -> float:
    return next(sv["value"] for sv in mv["sampledValue"] if sv["measurand"] == REGISTER)


async def test_interval_0_ends_with_the_end_value_only(gateway_factory: GatewayFactory,
                                                       csms: CsmsServer,
                                                       sim: SimulatorThread) -> None:
    gw = await gateway_factory(1, ocpp="2.0.1")
    await booted(gw, csms)
    resp = await csms.call(SID, "GetVariables", {"getVariableData": [
        {"component": {"name": c}, "variable": {"name": "TxEndedInterval"}}
        for c in ("SampledDataCtrlr", "AlignedDataCtrlr")]})
    assert [r["attributeValue"] for r in resp["getVariableResult"]] == ["0", "0"]
    tid = (await start(csms))["transactionInfo"]["transactionId"]
    after = csms.last_seq()
    # Periodic Updated events flow (1 s), none of them is kept for the end.
    await csms.wait_for(SID, "TransactionEvent", lambda p: p["triggerReason"] ==
                        "MeterValuePeriodic", after=after, timeout=15)
    assert (await csms.call(SID, "RequestStopTransaction", {"transactionId": tid}))[
        "status"] == "Accepted"
    ended = (await csms.wait_for(SID, "TransactionEvent", lambda p: p["eventType"] == "Ended",
                                 after=after, timeout=15)).payload
    assert [contexts(mv) for mv in ended["meterValue"]] == [{"Transaction.End"}]


async def test_ended_event_carries_periodic_and_clock_samples(gateway_factory: GatewayFactory,
                                                              csms: CsmsServer,
                                                              sim: SimulatorThread) -> None:
    gw = await gateway_factory(1, ocpp="2.0.1")
    await booted(gw, csms)
    await set_vars(csms, SID, "SampledDataCtrlr", TxEndedInterval="1",
                   TxEndedMeasurands=f"{REGISTER},Power.Active.Import,SoC")
    await set_vars(csms, SID, "AlignedDataCtrlr", TxEndedInterval="1",
                   TxEndedMeasurands=REGISTER)
    started = await start(csms)
    tid = started["transactionInfo"]["transactionId"]
    await until(lambda: sim.state.measured_w > 140_000, 15)
    # Two more samples kept once the power flows: the last one saw it.
    n0 = kept_rows(gw, SID, "Sample.Periodic")
    await until(lambda: kept_rows(gw, SID, "Sample.Periodic") >= max(3, n0 + 2)
                and kept_rows(gw, SID, "Sample.Clock") >= 2, 20)
    after = csms.last_seq()
    assert (await csms.call(SID, "RequestStopTransaction", {"transactionId": tid}))[
        "status"] == "Accepted"
    ended = (await csms.wait_for(SID, "TransactionEvent", lambda p: p["eventType"] == "Ended",
                                 after=after, timeout=15)).payload
    mvs = ended["meterValue"]
    kinds = [contexts(mv) for mv in mvs]
    # Transaction.Begin first, Transaction.End last, the kept samples between, each one context.
    assert kinds[0] == {"Transaction.Begin"} and kinds[-1] == {"Transaction.End"}
    middle = mvs[1:-1]
    assert sum(k == {"Sample.Periodic"} for k in kinds) >= 3
    assert sum(k == {"Sample.Clock"} for k in kinds) >= 2
    assert all(len(k) == 1 for k in kinds)
    # In time order, between the start and the stop.
    times = [parse_iso(mv["timestamp"]) for mv in mvs]
    assert times == sorted(times)
    assert times[0] == parse_iso(started["timestamp"])
    assert times[-1] == parse_iso(ended["timestamp"])
    # Measurands: TxEndedMeasurands for Begin/periodic/End, AlignedDataCtrlr's for clock values.
    for mv in mvs:
        names = {sv["measurand"] for sv in mv["sampledValue"]}
        if contexts(mv) == {"Sample.Clock"}:
            assert names == {REGISTER}
        elif contexts(mv) == {"Sample.Periodic"}:
            assert names == {REGISTER, "Power.Active.Import", "SoC"}
    # The register only grows, from the Started value to the Ended one.
    registers = [register(mv) for mv in mvs]
    assert registers == sorted(registers) and registers[-1] > registers[0]
    assert registers[0] == started["meterValue"][0]["sampledValue"][0]["value"]
    # The power measured while the session ran.
    assert max(sv["value"] for mv in middle for sv in mv["sampledValue"]
               if sv["measurand"] == "Power.Active.Import") > 100_000
    tx = csms.transactions[tid]
    assert tx.meter_stop is not None and tx.meter_stop == registers[-1]


def test_keeping_is_bounded_and_evenly_thinned() -> None:
    """A 12 h session at 10 s: at most MAX_KEPT samples kept, evenly spaced, in time order."""
    from bess_gateway.domain.station import MeterSample

    store = KeptSamples()
    t0 = 1_700_000_000.0
    for i in range(12 * 360):
        s = MeterSample(timestamp=datetime.fromtimestamp(t0 + 10 * i).astimezone(),
                        connector=1, energy_wh=1000.0 + i, power_w=150_000.0, current_a=200.0,
                        voltage_v=750.0, soc_pct=80.0, temperature_c=25.0)
        metering.keep(store, metering.PERIODIC, s)
    kept = metering.kept(store, 1)
    assert metering.MAX_KEPT // 2 < len(kept) <= metering.MAX_KEPT
    steps = {round(b.timestamp.timestamp() - a.timestamp.timestamp())
             for (_, a), (_, b) in pairwise(kept)}
    assert len(steps) == 1  # evenly spaced
    assert kept[0][1].energy_wh == 1000.0


def test_stop_message_is_thinned_to_its_byte_budget() -> None:
    """Begin and End stay; the intermediate values are halved until the message fits."""
    values = [("Transaction.Begin", "b")] + [("Sample.Periodic", f"p{i}") for i in range(100)]

    def size(vs: list[tuple[str, str]]) -> int:
        return 1000 * len(vs)

    fitted = metering.fit(values, size, fixed=lambda v: v[0] == "Transaction.Begin",
                          budget=20_000)
    assert fitted[0] == ("Transaction.Begin", "b")
    assert size(fitted) <= 20_000
    assert len(fitted) >= 10  # halved, not emptied
    idx = [int(v[1][1:]) for v in fitted[1:]]
    assert len({b - a for a, b in pairwise(idx)}) == 1
    # The default budget is what the device model advertises as BytesPerMessage.
    assert metering.STOP_MESSAGE_BYTES == device_model.MAX_BYTES_PER_MESSAGE


async def test_kept_values_survive_a_crash(tmp_path: Path, sim: SimulatorThread,
                                           csms: CsmsServer) -> None:
    """SIGKILL mid-session: the Ended (PowerLoss) the restarted gateway sends still carries the
    samples kept before the crash (they live in the transaction's journal record)."""
    sid = "KEEP-201"
    cfg_path = one_endpoint_config(tmp_path, sim.port, csms.url, sid, ocpp_version="2.0.1",
                                   sample_interval_s=1)
    async with killed_at_exit(cfg_path):
        await csms.wait_for(sid, "StatusNotification", lambda p: p["evseId"] == 2, timeout=30)
        await set_vars(csms, sid, "SampledDataCtrlr", TxEndedInterval="1")
        after = csms.last_seq()
        r = await csms.call(sid, "RequestStartTransaction",
                            {"idToken": {"idToken": "TAG", "type": "ISO14443"},
                             "remoteStartId": 5, "evseId": 1})
        assert r["status"] == "Accepted"
        started = await csms.wait_for(sid, "TransactionEvent",
                                      lambda p: p["eventType"] == "Started", after=after)
        tid = started.payload["transactionInfo"]["transactionId"]
        await until(lambda: sim.written.setpoint_w == 150_000)
        # Killed once three samples are committed to the journal.
        await until(lambda: journaled_rows(tmp_path / "var" / "journal.sqlite") >= 3, 20)

    await until(lambda: abs(sim.state.measured_w) < 1.0 and sim.state.pcs_state != 2, 15)
    gw = Gateway(load_config(cfg_path))
    await gw.start()
    try:
        ended = (await csms.wait_for(sid, "TransactionEvent",
                                     lambda p: p["eventType"] == "Ended", timeout=30)).payload
        assert ended["transactionInfo"]["transactionId"] == tid
        assert ended["transactionInfo"]["stoppedReason"] == "PowerLoss"
        mvs = ended["meterValue"]
        kinds = [contexts(mv) for mv in mvs]
        assert kinds[0] == {"Transaction.Begin"} and kinds[-1] == {"Transaction.End"}
        assert sum(k == {"Sample.Periodic"} for k in kinds) >= 2
        times = [parse_iso(mv["timestamp"]) for mv in mvs]
        assert times == sorted(times)
        registers = [register(mv) for mv in mvs]
        assert registers == sorted(registers) and registers[-1] > registers[0]
    finally:
        await gw.stop(drain_s=0)
