"""A gateway SIGKILLed mid-session: the PCS watchdog stops the battery, and the restarted gateway
ends the open transaction as PowerLoss. Real process, real simulator, real CSMS, real SQLite."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from waiting import until

from bess_gateway.config import load_config
from bess_gateway.demo.csms import CsmsServer
from bess_gateway.gateway import Gateway
from bess_gateway.sim.server import SimulatorThread


async def test_sigkill_then_restart_ends_transaction_as_power_loss(
        tmp_path: Path, sim: SimulatorThread, csms: CsmsServer) -> None:
    cfg_path = tmp_path / "gateway.toml"
    cfg_path.write_text(f"""
[gateway]
data_dir = "{tmp_path / 'var'}"
metrics_listen = ""

[pcs]
port = {sim.port}

[[endpoint]]
id = "CRASH-01"
csms_url = "{csms.url}"
meter_sample_interval_s = 1
""")
    log = (tmp_path / "gateway.log").open("w")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bess_gateway", "run", "--config", str(cfg_path),
        stdout=log, stderr=subprocess.STDOUT)
    try:
        await csms.wait_for("CRASH-01", "StatusNotification", lambda p: p["connectorId"] == 2,
                            timeout=30)
        after = csms.last_seq()
        r = await csms.call("CRASH-01", "RemoteStartTransaction",
                            {"idTag": "TAG", "connectorId": 1})
        assert r["status"] == "Accepted"
        start = await csms.wait_for("CRASH-01", "StartTransaction", after=after)
        tx = await csms.wait_until(lambda: next(iter(csms.transactions.values()), None))
        await until(lambda: sim.written.setpoint_w == 150_000)
        await csms.wait_for("CRASH-01", "MeterValues",
                            lambda p: p.get("transactionId") == tx.id)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        async with asyncio.timeout(10):
            await proc.wait()
        log.close()

    # Nobody writes the watchdog any more: the PCS goes to 0 W by itself within ~2 s.
    await until(lambda: abs(sim.state.measured_w) < 1.0 and sim.state.pcs_state != 2, 15)
    assert csms.transactions[tx.id].meter_stop is None

    gw = Gateway(load_config(cfg_path))
    await gw.start()
    try:
        stop = await csms.wait_for("CRASH-01", "StopTransaction", timeout=30)
        assert stop.payload["transactionId"] == tx.id
        assert stop.payload["reason"] == "PowerLoss"
        assert stop.payload["meterStop"] >= start.payload["meterStart"]
        # Exactly one end for the transaction, and no session came back to life.
        await asyncio.sleep(0.5)
        assert len(csms.of("CRASH-01", "StopTransaction")) == 1
        assert not gw.stations["CRASH-01"].transactions
        assert sim.written.setpoint_w == 0
    finally:
        await gw.stop(drain_s=0)
