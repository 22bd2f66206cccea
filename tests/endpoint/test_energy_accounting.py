"""Energy a transaction reports equals what the PCS registers counted while it had the power:
its ramp-down after a stop, and what flowed while the PCS link was lost, included.
Real gateway, real simulator, real CSMS (the crash case is in test_crash_recovery.py)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

from conftest import GatewayFactory
from gateway_process import killed_at_exit, one_endpoint_config
from waiting import until

from bess_gateway.config import load_config
from bess_gateway.demo.csms import CsmsServer, Received
from bess_gateway.gateway import Gateway
from bess_gateway.sim.server import SimulatorThread

# meterStart/meterStop are whole Wh and so are the PCS registers: each end may be off by one.
ROUNDING_WH = 2.0


def pcs_idle(sim: SimulatorThread) -> bool:
    return abs(sim.state.measured_w) < 1.0


async def start_discharge(csms: CsmsServer, sim: SimulatorThread) -> tuple[Received, int]:
    await csms.wait_for("DEMO-01", "StatusNotification", lambda p: p["connectorId"] == 2)
    after = csms.last_seq()
    r = await csms.call("DEMO-01", "RemoteStartTransaction", {"idTag": "T", "connectorId": 1})
    assert r["status"] == "Accepted"
    start = await csms.wait_for("DEMO-01", "StartTransaction", after=after)
    tx = await csms.wait_until(lambda: next(iter(csms.transactions.values()), None))
    await until(lambda: sim.written.setpoint_w == 150_000)
    return start, int(tx.id)


async def stop_and_settle(csms: CsmsServer, sim: SimulatorThread, tx_id: int) -> Received:
    after = csms.last_seq()
    r = await csms.call("DEMO-01", "RemoteStopTransaction", {"transactionId": tx_id})
    assert r["status"] == "Accepted"
    stop = await csms.wait_for("DEMO-01", "StopTransaction", after=after)
    await until(lambda: pcs_idle(sim))
    return stop


async def test_a_stopped_session_owns_its_ramp_down(
        gateway_factory: GatewayFactory, sim: SimulatorThread, csms: CsmsServer) -> None:
    gw = await gateway_factory(1)
    await until(lambda: pcs_idle(sim))
    e0 = sim.state.energy_discharged_wh
    start, tx_id = await start_discharge(csms, sim)
    await until(lambda: sim.state.energy_discharged_wh - e0 > 100.0)
    stop = await stop_and_settle(csms, sim, tx_id)
    flowed = sim.state.energy_discharged_wh - e0
    billed = stop.payload["meterStop"] - start.payload["meterStart"]
    # Without the ramp-down (150 kW to 0 at 300 kW/s, then the PCS's response) the stop would
    # miss ~18 Wh.
    assert abs(billed - flowed) <= ROUNDING_WH, (billed, flowed)
    snap = gw.core.snapshot()  # type: ignore[union-attr]
    # The registers count whole Wh: the last one can tick after the flow it completes has
    # ended, with no session left to own it (seen once in 20 loaded runs: exactly 1.0).
    assert snap["unattributed_wh"]["discharge"] <= 1.0


async def test_energy_during_a_lost_pcs_link_goes_to_the_session(
        gateway_factory: GatewayFactory, sim: SimulatorThread, csms: CsmsServer) -> None:
    gw = await gateway_factory(1)
    await until(lambda: pcs_idle(sim))
    e0 = sim.state.energy_discharged_wh
    start, tx_id = await start_discharge(csms, sim)
    await until(lambda: sim.state.energy_discharged_wh - e0 > 20.0)
    # The PCS stops answering: it runs on until its watchdog (2 s) takes it to 0 W by itself.
    sim.set_silent(True)
    await csms.wait_for("DEMO-01", "StatusNotification",
                        lambda p: p["connectorId"] == 1 and p["status"] == "Faulted")
    await until(lambda: pcs_idle(sim), 10)
    silent_wh = sim.state.energy_discharged_wh - e0
    sim.set_silent(False)
    # The session is still open and resumes once the link is back.
    await until(lambda: sim.written.setpoint_w == 150_000, 10)
    stop = await stop_and_settle(csms, sim, tx_id)
    flowed = sim.state.energy_discharged_wh - e0
    billed = stop.payload["meterStop"] - start.payload["meterStart"]
    assert flowed > silent_wh > 20.0
    assert abs(billed - flowed) <= ROUNDING_WH, (billed, flowed)
    # Whole-Wh registers, as above.
    assert gw.core.snapshot()["unattributed_wh"]["discharge"] <= 1.0  # type: ignore[union-attr]


async def test_each_direction_owns_its_own_register(
        gateway_factory: GatewayFactory, sim: SimulatorThread, csms: CsmsServer) -> None:
    """Two endpoints discharging at once, then one stops: the books of both close exactly."""
    await gateway_factory(2)
    await until(lambda: pcs_idle(sim))
    for ep in ("DEMO-01", "DEMO-02"):
        await csms.wait_for(ep, "StatusNotification", lambda p: p["connectorId"] == 2)
    e0 = sim.state.energy_discharged_wh
    for ep in ("DEMO-01", "DEMO-02"):
        r = await csms.call(ep, "RemoteStartTransaction", {"idTag": "T", "connectorId": 1})
        assert r["status"] == "Accepted"
    txs = await csms.wait_until(lambda: list(csms.transactions.values())
                                if len(csms.transactions) == 2 else None)
    await until(lambda: sim.written.setpoint_w == 300_000)
    await until(lambda: sim.state.energy_discharged_wh - e0 > 60.0)
    for tx in txs:
        r = await csms.call(tx.station, "RemoteStopTransaction", {"transactionId": tx.id})
        assert r["status"] == "Accepted"
        await asyncio.sleep(0.3)  # the second stops while the first's power ramps down
    await csms.wait_until(lambda: all(t.meter_stop is not None for t in txs))
    await until(lambda: pcs_idle(sim))
    flowed = sim.state.energy_discharged_wh - e0
    billed = sum(t.meter_stop - t.meter_start for t in txs if t.meter_stop is not None)
    assert abs(billed - flowed) <= 2 * ROUNDING_WH, (billed, flowed)


async def test_a_stopped_201_transaction_owns_its_ramp_down(
        gateway_factory: GatewayFactory, sim: SimulatorThread, csms: CsmsServer) -> None:
    """2.0.1: the Ended event's Transaction.End register includes the ramp-down after the stop,
    and it is the event's only version (one unique id, the register patched before the send)."""
    gw = await gateway_factory(1, ocpp="2.0.1")
    await csms.wait_for("DEMO-01", "StatusNotification", lambda p: p["evseId"] == 2)
    await until(lambda: pcs_idle(sim))
    e0 = sim.state.energy_discharged_wh
    after = csms.last_seq()
    r = await csms.call("DEMO-01", "RequestStartTransaction", {
        "idToken": {"idToken": "T", "type": "Central"}, "evseId": 1, "remoteStartId": 1})
    assert r["status"] == "Accepted"
    started = await csms.wait_for("DEMO-01", "TransactionEvent",
                                  lambda p: p["eventType"] == "Started", after=after)
    tx_id = started.payload["transactionInfo"]["transactionId"]
    await until(lambda: sim.written.setpoint_w == 150_000)
    await until(lambda: sim.state.energy_discharged_wh - e0 > 100.0)
    after = csms.last_seq()
    r = await csms.call("DEMO-01", "RequestStopTransaction", {"transactionId": tx_id})
    assert r["status"] == "Accepted"
    await csms.wait_for("DEMO-01", "TransactionEvent", lambda p: p["eventType"] == "Ended",
                        after=after)
    await until(lambda: pcs_idle(sim))
    tx = csms.transactions[tx_id]
    assert tx.meter_stop is not None
    flowed = sim.state.energy_discharged_wh - e0
    billed = tx.meter_stop - tx.meter_start
    # Without the hold the Ended event would carry the register at the stop (~18 Wh short).
    assert abs(billed - flowed) <= ROUNDING_WH, (billed, flowed)
    ended = [m for m in csms.of("DEMO-01", "TransactionEvent") if m.payload["eventType"] == "Ended"]
    assert len(ended) == 1
    sv = ended[0].payload["meterValue"][0]["sampledValue"]
    assert [s["value"] for s in sv if s["measurand"] == "Energy.Active.Import.Register"] == [
        float(tx.meter_stop)]
    # Whole-Wh registers, as above.
    assert gw.core.snapshot()["unattributed_wh"]["discharge"] <= 1.0  # type: ignore[union-attr]


def _saved_as_settling(journal: Path) -> list[list[object]]:
    """The stops the last meter save names as still settling (what a crash leaves to patch)."""
    db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT value FROM meta WHERE key = 'meter_basis'").fetchall()
    except sqlite3.OperationalError:
        return []  # not created yet
    finally:
        db.close()
    return list(json.loads(rows[0][0]).get("settling", [])) if rows else []


async def test_a_201_stop_cut_by_a_crash_while_settling_owns_its_ramp_down(
        tmp_path: Path, sim: SimulatorThread, csms: CsmsServer) -> None:
    """SIGKILL while a 2.0.1 Ended event waits for its meter to settle: the restart writes the
    register the crash left (its ramp-down, and what the PCS ran on until its watchdog) into the
    queued Ended, which the CSMS then gets once."""
    sid = "SETTLE-201"
    cfg_path = one_endpoint_config(tmp_path, sim.port, csms.url, sid, ocpp_version="2.0.1",
                                   sample_interval_s=1)
    async with killed_at_exit(cfg_path):
        await csms.wait_for(sid, "StatusNotification", lambda p: p["evseId"] == 2, timeout=30)
        await until(lambda: pcs_idle(sim))
        e0 = sim.state.energy_discharged_wh
        after = csms.last_seq()
        r = await csms.call(sid, "RequestStartTransaction", {
            "idToken": {"idToken": "T", "type": "Central"}, "evseId": 1, "remoteStartId": 3})
        assert r["status"] == "Accepted"
        started = await csms.wait_for(sid, "TransactionEvent",
                                      lambda p: p["eventType"] == "Started", after=after)
        tid = started.payload["transactionInfo"]["transactionId"]
        await until(lambda: sim.written.setpoint_w == 150_000)
        await until(lambda: sim.state.energy_discharged_wh - e0 > 50.0)
        r = await csms.call(sid, "RequestStopTransaction", {"transactionId": tid})
        assert r["status"] == "Accepted"
        await until(lambda: _saved_as_settling(tmp_path / "var" / "journal.sqlite"), 5)
    # Held: the Ended event had not left when the gateway died.
    assert not [m for m in csms.of(sid, "TransactionEvent") if m.payload["eventType"] == "Ended"]
    await until(lambda: pcs_idle(sim) and sim.state.pcs_state != 2, 15)

    gw = Gateway(load_config(cfg_path))
    await gw.start()
    try:
        await csms.wait_for(sid, "TransactionEvent", lambda p: p["eventType"] == "Ended",
                            timeout=30)
        await until(lambda: gw.endpoints[sid].ctx.online, 15)
        await until(lambda: pcs_idle(sim))
        tx = csms.transactions[tid]
        assert tx.meter_stop is not None and tx.reason == "Remote"
        flowed = sim.state.energy_discharged_wh - e0
        billed = tx.meter_stop - tx.meter_start
        assert abs(billed - flowed) <= ROUNDING_WH, (billed, flowed)
        ended = [m for m in csms.of(sid, "TransactionEvent") if m.payload["eventType"] == "Ended"]
        assert len(ended) == 1
    finally:
        await gw.stop(drain_s=0)


def _meter_save(journal: Path) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    """The last meter save as stored: the connector registers and the PCS basis row."""
    db = sqlite3.connect(journal)
    try:
        return (db.execute("SELECT endpoint_id, connector, energy_wh FROM meters").fetchall(),
                db.execute("SELECT key, value FROM meta WHERE key = 'meter_basis'").fetchall())
    finally:
        db.close()


def _put_meter_save(journal: Path, save: tuple[list[tuple[object, ...]],
                                                list[tuple[object, ...]]]) -> None:
    db = sqlite3.connect(journal)
    try:
        with db:
            db.execute("DELETE FROM meters")
            db.executemany("INSERT INTO meters VALUES (?, ?, ?)", save[0])
            db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", save[1])
    finally:
        db.close()


async def test_a_crash_after_a_delivered_stop_does_not_bill_its_energy_again(
        tmp_path: Path, sim: SimulatorThread, csms: CsmsServer) -> None:
    """The journal as a crash leaves it when it comes after a stop's final meterStop went out
    (and was acknowledged) but before the next meter save: the saved register is older than
    that meterStop. The restart restores the connector to at least the meterStop, so the next
    transaction starts where the last one stopped instead of billing the same Wh again."""
    sid = "FLOOR-16"
    cfg_path = one_endpoint_config(tmp_path, sim.port, csms.url, sid)
    journal = tmp_path / "var" / "journal.sqlite"

    async def start_session() -> Received:
        await csms.wait_for(sid, "StatusNotification",
                            lambda p: p["connectorId"] == 1 and p["status"] == "Available",
                            after=csms.last_seq() - 20)
        after = csms.last_seq()
        r = await csms.call(sid, "RemoteStartTransaction", {"idTag": "T", "connectorId": 1})
        assert r["status"] == "Accepted"
        return await csms.wait_for(sid, "StartTransaction", after=after)

    gw = Gateway(load_config(cfg_path))
    await gw.start()
    try:
        await until(lambda: gw.endpoints[sid].ctx.online, 15)
        await until(lambda: pcs_idle(sim))
        e0 = sim.state.energy_discharged_wh
        await start_session()
        tx = await csms.wait_until(lambda: next(
            (t for t in csms.transactions.values() if t.station == sid), None))
        await until(lambda: sim.state.energy_discharged_wh - e0 > 20.0)
        await until(lambda: any(row[2] > 10.0 for row in _meter_save(journal)[0]))
        old_save = _meter_save(journal)
        saved = max(float(row[2]) for row in old_save[0])  # type: ignore[arg-type]
        # Well past that save before the stop, however late the save came (a busy box): the
        # stop cuts the power in its next write, so little flows after it.
        await until(lambda: sim.state.energy_discharged_wh - e0 > saved + 30.0)
        after = csms.last_seq()
        r = await csms.call(sid, "RemoteStopTransaction", {"transactionId": tx.id})
        assert r["status"] == "Accepted"
        stop = await csms.wait_for(sid, "StopTransaction", after=after)
        await until(lambda: pcs_idle(sim))
    finally:
        await gw.stop(drain_s=0)
    saved_wh = max(float(row[2]) for row in old_save[0])  # type: ignore[arg-type]
    assert stop.payload["meterStop"] >= saved_wh + 20  # the save really is older than the stop
    _put_meter_save(journal, old_save)

    gw = Gateway(load_config(cfg_path))
    await gw.start()
    try:
        await until(lambda: gw.endpoints[sid].ctx.online, 15)
        start = await start_session()
        assert start.payload["meterStart"] == stop.payload["meterStop"]
    finally:
        await gw.stop(drain_s=0)
