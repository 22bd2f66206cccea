"""The control thread dies (a panic, injected through the core's test hook): every connector goes
Faulted at the CSMS, the PCS is left at 0 W, and `run_gateway` exits with 70 (EX_SOFTWARE) so that
systemd (Restart=on-failure) starts a new process, whose recovery ends the sessions the failure
cut. Real simulator over Modbus TCP, real CSMS over WebSocket (a 1.6 and a 2.0.1 endpoint), real
journal.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from pathlib import Path

import pytest
from scripted_csms import booted as scripted_booted
from scripted_csms import scripted_csms
from waiting import booted, until

from bess_gateway import gateway as gateway_module
from bess_gateway.config import Config, PcsConfig
from bess_gateway.demo.csms import CsmsServer
from bess_gateway.demo.run import demo_config
from bess_gateway.domain.alarms import ALARMS
from bess_gateway.gateway import EXIT_SOFTWARE, Gateway
from bess_gateway.sim.server import SimulatorThread

V16, V201 = "DEMO-01", "DEMO-02"  # demo_config(..., ocpp="mixed")
REPORT = ALARMS["control_failed"]


def config(tmp_path: Path, csms: CsmsServer, sim: SimulatorThread) -> Config:
    cfg = demo_config(tmp_path / "var", csms.url, sim.port, 2, sample_s=1, ocpp="mixed")
    return dataclasses.replace(cfg, pcs=dataclasses.replace(PcsConfig(), port=sim.port,
                                                            timeout_ms=400))


async def discharging_on_both(csms: CsmsServer, sim: SimulatorThread) -> None:
    r = await csms.call(V16, "RemoteStartTransaction", {"idTag": "TAG-1", "connectorId": 1})
    assert r["status"] == "Accepted"
    r = await csms.call(V201, "RequestStartTransaction", {
        "idToken": {"idToken": "TAG-2", "type": "ISO14443"}, "remoteStartId": 1, "evseId": 1})
    assert r["status"] == "Accepted"
    await until(lambda: sim.written.setpoint_w == 300_000)


@pytest.fixture
def made(monkeypatch: pytest.MonkeyPatch) -> list[Gateway]:
    """The Gateways run_gateway builds (it makes its own): to reach the core's test hook."""
    out: list[Gateway] = []

    class Recorded(Gateway):
        def __init__(self, cfg: Config) -> None:
            super().__init__(cfg)
            out.append(self)

    monkeypatch.setattr(gateway_module, "Gateway", Recorded)
    return out


@pytest.mark.parametrize("seen_by", ["event", "snapshot"])
async def test_control_thread_panic_faults_every_connector_then_exits_70(
        tmp_path: Path, csms: CsmsServer, sim: SimulatorThread, made: list[Gateway],
        caplog: pytest.LogCaptureFixture, seen_by: str) -> None:
    cfg = config(tmp_path, csms, sim)
    stop = asyncio.Event()
    run = asyncio.create_task(gateway_module.run_gateway(cfg, stop=stop))
    try:
        gw = await until(lambda: made and len(made[0].endpoints) == 2 and made[0])
        await booted(gw, csms)
        await discharging_on_both(csms, sim)
        assert gw.core is not None
        if seen_by == "snapshot":
            # The control_failed event lost (a full event queue): the snapshot must do.
            gw.core._subscribers.remove(gw._on_core_event)
        after = csms.last_seq()
        with caplog.at_level(logging.CRITICAL, logger="bess_gateway"):
            gw.core._core._inject_panic()
            async with asyncio.timeout(20):
                code = await asyncio.shield(run)
    finally:
        if not run.done():
            stop.set()
            async with asyncio.timeout(20):
                await asyncio.gather(run, return_exceptions=True)

    assert code == EXIT_SOFTWARE == 70
    assert any(r.levelno == logging.CRITICAL and "injected panic" in r.getMessage()
               for r in caplog.records)
    # The thread's last write: 0 W, standby; the PCS follows.
    assert (sim.written.run, sim.written.setpoint_w) == (0, 0)
    await until(lambda: abs(sim.state.measured_w) < 1000)

    # Everything below reached the CSMS (and was answered) before the process exited.
    faulted16 = {m.payload["connectorId"]: m.payload for m in csms.of(V16, "StatusNotification")
                 if m.seq > after and m.payload["status"] == "Faulted"}
    assert sorted(faulted16) == [0, 1, 2]
    for payload in faulted16.values():
        assert payload["errorCode"] == REPORT.error_code == "InternalError"
        assert payload["vendorErrorCode"] == REPORT.vendor_error_code == "ControlLoopFailed"
    faulted201 = {m.payload["evseId"] for m in csms.of(V201, "StatusNotification")
                  if m.seq > after and m.payload["connectorStatus"] == "Faulted"}
    assert faulted201 == {1, 2}
    events = [e for m in csms.of(V201, "NotifyEvent") if m.seq > after
              for e in m.payload["eventData"]]
    assert any(e["techCode"] == "ControlLoopFailed"
               and e["component"] == {"name": REPORT.component}
               and e["variable"] == {"name": REPORT.variable} for e in events), events
    # The sessions were not ended by a core that takes no command: they are left to recovery.
    assert not csms.of(V16, "StopTransaction")
    assert not [m for m in csms.of(V201, "TransactionEvent") if m.payload["eventType"] == "Ended"]

    # What systemd does next: a new process, whose start ends the cut sessions (PowerLoss).
    after = csms.last_seq()
    again = Gateway(cfg)
    await again.start()
    try:
        stop16 = await csms.wait_for(V16, "StopTransaction", after=after, timeout=20)
        assert stop16.payload["reason"] == "PowerLoss"
        ended = await csms.wait_for(V201, "TransactionEvent",
                                    lambda p: p["eventType"] == "Ended", after=after, timeout=20)
        assert ended.payload["transactionInfo"]["stoppedReason"] == "PowerLoss"
        assert again.core is not None and again.core.snapshot()["running"]
        assert not again.stations[V16].transactions and not again.stations[V201].transactions
    finally:
        async with asyncio.timeout(10):
            await again.stop(drain_s=0)


async def test_exit_is_not_held_up_by_a_csms_that_never_confirms(
        tmp_path: Path, sim: SimulatorThread, made: list[Gateway],
        caplog: pytest.LogCaptureFixture) -> None:
    async with scripted_csms() as csms:
        cfg = demo_config(tmp_path / "var", csms.url, sim.port, 1, sample_s=1)
        cfg = dataclasses.replace(cfg, pcs=dataclasses.replace(PcsConfig(), port=sim.port,
                                                                timeout_ms=400))
        stop = asyncio.Event()
        run = asyncio.create_task(gateway_module.run_gateway(cfg, stop=stop))
        try:
            gw = await until(lambda: made and len(made[0].endpoints) == 1 and made[0])
            await scripted_booted(gw)
            # Every status of the boot answered first: one still in flight when the CSMS goes
            # silent would hold the Faulted one behind it (one CALL at a time).
            (ep,) = gw.endpoints.values()
            await until(lambda: all(ep.confirmed_status.get(t) == ep.ctx.station.status(t)
                                    for t in ep.STATUS_TARGETS))
            # No StatusNotification from now on is ever answered (a CALLERROR would be a final
            # answer): none is confirmed.
            csms.script["StatusNotification"] = ["silent"] * 1000
            after = len(csms.received)
            assert gw.core is not None
            gw.core._core._inject_panic()
            async with asyncio.timeout(20):
                code = await asyncio.shield(run)
        finally:
            if not run.done():
                stop.set()
                async with asyncio.timeout(20):
                    await asyncio.gather(run, return_exceptions=True)
        assert code == EXIT_SOFTWARE
        tried = [g.payload for g in csms.received[after:] if g.action == "StatusNotification"]
        assert any(p["status"] == "Faulted" and p["vendorErrorCode"] == "ControlLoopFailed"
                   for p in tried), tried
        assert any("not every CSMS confirmed" in r.getMessage() for r in caplog.records)
