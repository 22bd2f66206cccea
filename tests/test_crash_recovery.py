"""A gateway SIGKILLed mid-session: the PCS watchdog stops the battery, and the restarted gateway
ends the open transaction as PowerLoss. Real process, real simulator, real CSMS, real SQLite."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway_process import killed_at_exit, one_endpoint_config
from waiting import until

from bess_gateway.config import load_config
from bess_gateway.demo.csms import CsmsServer
from bess_gateway.gateway import Gateway
from bess_gateway.sim.server import SimulatorThread


async def test_sigkill_then_restart_ends_transaction_as_power_loss(
        tmp_path: Path, sim: SimulatorThread, csms: CsmsServer) -> None:
    cfg_path = one_endpoint_config(tmp_path, sim.port, csms.url, "CRASH-01", sample_interval_s=1)
    async with killed_at_exit(cfg_path):
        await csms.wait_for("CRASH-01", "StatusNotification", lambda p: p["connectorId"] == 2,
                            timeout=30)
        e0 = sim.state.energy_discharged_wh
        after = csms.last_seq()
        r = await csms.call("CRASH-01", "RemoteStartTransaction",
                            {"idTag": "TAG", "connectorId": 1})
        assert r["status"] == "Accepted"
        start = await csms.wait_for("CRASH-01", "StartTransaction", after=after)
        tx = await csms.wait_until(lambda: next(iter(csms.transactions.values()), None))
        await until(lambda: sim.written.setpoint_w == 150_000)
        await csms.wait_for("CRASH-01", "MeterValues",
                            lambda p: p.get("transactionId") == tx.id)
        # Past a meter save (every second), so the kill lands between two of them.
        await until(lambda: sim.state.energy_discharged_wh - e0 > 100.0)

    # Nobody writes the watchdog any more: the PCS goes to 0 W by itself within ~2 s.
    await until(lambda: abs(sim.state.measured_w) < 1.0 and sim.state.pcs_state != 2, 15)
    assert csms.transactions[tx.id].meter_stop is None

    gw = Gateway(load_config(cfg_path))
    await gw.start()
    try:
        stop = await csms.wait_for("CRASH-01", "StopTransaction", timeout=30)
        assert stop.payload["transactionId"] == tx.id
        assert stop.payload["reason"] == "PowerLoss"
        # Everything the PCS delivered is the transaction's: up to the last meter save, and
        # what flowed from there to the kill and on until the PCS watchdog stopped it (~2 s at
        # 150 kW, ~100 Wh), attributed at the restart from the PCS registers.
        flowed = sim.state.energy_discharged_wh - e0
        billed = stop.payload["meterStop"] - start.payload["meterStart"]
        assert flowed > 150.0
        assert abs(billed - flowed) <= 2.0, (billed, flowed)
        # Exactly one end for the transaction, and no session came back to life.
        await asyncio.sleep(0.5)
        assert len(csms.of("CRASH-01", "StopTransaction")) == 1
        assert not gw.stations["CRASH-01"].transactions
        assert sim.written.setpoint_w == 0
    finally:
        await gw.stop(drain_s=0)


async def test_sigkill_then_restart_ends_201_transaction_as_power_loss(
        tmp_path: Path, sim: SimulatorThread, csms: CsmsServer) -> None:
    """The 2.0.1 twin: the restarted gateway sends TransactionEvent Ended (PowerLoss) with the
    restored energy register and the next seqNo of the transaction, once."""
    cfg_path = one_endpoint_config(tmp_path, sim.port, csms.url, "CRASH-02",
                                   ocpp_version="2.0.1", sample_interval_s=1)
    sid = "CRASH-02"
    async with killed_at_exit(cfg_path):
        await csms.wait_for(sid, "StatusNotification", lambda p: p["evseId"] == 2, timeout=30)
        after = csms.last_seq()
        r = await csms.call(sid, "RequestStartTransaction",
                            {"idToken": {"idToken": "TAG", "type": "ISO14443"},
                             "remoteStartId": 9, "evseId": 1})
        assert r["status"] == "Accepted"
        started = await csms.wait_for(sid, "TransactionEvent",
                                      lambda p: p["eventType"] == "Started", after=after)
        tid = started.payload["transactionInfo"]["transactionId"]
        await until(lambda: sim.written.setpoint_w == 150_000)
        await csms.wait_for(sid, "TransactionEvent", lambda p: p["seqNo"] >= 2, after=after)

    await until(lambda: abs(sim.state.measured_w) < 1.0 and sim.state.pcs_state != 2, 15)
    tx = csms.transactions[tid]
    assert tx.meter_stop is None
    seen = [e["seqNo"] for e in tx.events]

    gw = Gateway(load_config(cfg_path))
    await gw.start()
    try:
        ended = await csms.wait_for(sid, "TransactionEvent", lambda p: p["eventType"] == "Ended",
                                    timeout=30)
        info = ended.payload["transactionInfo"]
        assert info["transactionId"] == tid and info["stoppedReason"] == "PowerLoss"
        assert ended.payload["triggerReason"] == "AbnormalCondition"
        assert ended.payload["offline"] is True  # made before any connection
        # seqNo goes on from the journal: after every one the CSMS saw, none repeated.
        assert ended.payload["seqNo"] > max(seen)
        assert tx.meter_stop is not None and tx.meter_stop > tx.meter_start
        await until(lambda: gw.endpoints[sid].ctx.online, 15)
        await asyncio.sleep(0.5)
        ends = [m for m in csms.of(sid, "TransactionEvent") if m.payload["eventType"] == "Ended"]
        assert len(ends) == 1
        seqs = [e["seqNo"] for e in tx.events]
        assert seqs == sorted(set(seqs))
        assert not gw.stations[sid].transactions
        assert sim.written.setpoint_w == 0
    finally:
        await gw.stop(drain_s=0)


async def test_sigkill_right_after_an_answer_keeps_what_the_answer_promised(
        tmp_path: Path, sim: SimulatorThread, csms: CsmsServer) -> None:
    """RemoteStop answered Accepted means the stop is on disk (group commit, journal.py): a kill
    the moment the answer arrives must still end the transaction as Remote, not PowerLoss."""
    cfg_path = one_endpoint_config(tmp_path, sim.port, csms.url, "CRASH-03", sample_interval_s=60)
    # SIGKILLed the moment the block ends: no time for a timed commit
    async with killed_at_exit(cfg_path):
        await csms.wait_for("CRASH-03", "StatusNotification", lambda p: p["connectorId"] == 2,
                            timeout=30)
        r = await csms.call("CRASH-03", "RemoteStartTransaction",
                            {"idTag": "TAG", "connectorId": 1})
        assert r["status"] == "Accepted"
        tx = await csms.wait_until(lambda: next(iter(csms.transactions.values()), None))
        await until(lambda: sim.written.setpoint_w == 150_000)
        # Settle the StartTransaction's own writes (its ack, the id patch) first: this test is
        # about the stop alone.
        await asyncio.sleep(1.5)
        after = csms.last_seq()
        r = await csms.call("CRASH-03", "RemoteStopTransaction", {"transactionId": tx.id})
        assert r["status"] == "Accepted"

    gw = Gateway(load_config(cfg_path))
    await gw.start()
    try:
        await csms.wait_for("CRASH-03", "StopTransaction", after=after, timeout=30)
        await asyncio.sleep(0.5)
        stops = [m.payload for m in csms.of("CRASH-03", "StopTransaction")]
        assert stops and all(s["transactionId"] == tx.id for s in stops)
        # Sent again after the restart if its ack was lost with the kill; never a PowerLoss.
        assert {s["reason"] for s in stops} == {"Remote"}
    finally:
        await gw.stop(drain_s=0)
