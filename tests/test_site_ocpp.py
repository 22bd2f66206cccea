"""What the CSMS sees of the site's energy management (issue 14), end to end: the suite's CSMS
over WebSocket, the real simulator over Modbus TCP, a Modbus TCP grid meter reading the hub's
load minus the simulated battery's power, SQLite.

- 2.0.1: a session the site holds back -> NotifyChargingLimit with chargingLimitSource "EMS"
  (isGridCritical while the connection's hard limit binds), GetCompositeSchedule includes the
  site's limit, ClearedChargingLimit "EMS" once it lets go;
- 1.6: a charge session the site cuts to 0 -> StatusNotification SuspendedEVSE (and Charging
  again after), Power.Offered in MeterValues once the CSMS selects it.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from waiting import booted, until

from bess_gateway.config import ControlConfig, PcsConfig, SiteConfig
from bess_gateway.demo.csms import CsmsServer
from bess_gateway.demo.run import demo_config
from bess_gateway.gateway import Gateway
from bess_gateway.ops.metrics import MetricsServer
from bess_gateway.sim.server import SimulatorThread
from tests.test_site_loop import GridMeter

IMPORT_MAX_KW = 800.0
# The site law aims the hard limit this much inside it ([site] grid_limit_margin_pct, default).
LIMIT_MARGIN_PCT = SiteConfig().grid_limit_margin_pct
IMPORT_AIM_W = IMPORT_MAX_KW * 1000.0 * (1.0 - LIMIT_MARGIN_PCT / 100.0)


class SimHub:
    """The hub's load (W); the meter reads load - the simulator battery's measured power."""

    def __init__(self, sim: SimulatorThread, load_w: float) -> None:
        self.sim = sim
        self.load_w = load_w

    def words(self) -> dict[int, int]:
        grid = int(self.load_w - self.sim.state.measured_w)
        hi, lo = struct.unpack(">HH", struct.pack(">i", grid))
        return {0: hi, 1: lo, **{a: 0 for a in range(2, 10)}}


SiteGateway = Callable[..., Awaitable[tuple[Gateway, SimHub]]]


@pytest.fixture
async def site_gateway(tmp_path: Path, sim: SimulatorThread,
                       csms: CsmsServer) -> AsyncIterator[SiteGateway]:
    started: list[Gateway] = []
    meters: list[GridMeter] = []

    async def make(ocpp: str, load_w: float) -> tuple[Gateway, SimHub]:
        hub = SimHub(sim, load_w)
        meter = GridMeter(hub.words)
        meters.append(meter)
        cfg = demo_config(tmp_path / "var", csms.url, sim.port, 1, sample_s=1, ocpp=ocpp)
        cfg = dataclasses.replace(
            cfg, control=ControlConfig(),
            pcs=dataclasses.replace(PcsConfig(), port=sim.port, timeout_ms=400),
            site=SiteConfig(grid_meter=f"127.0.0.1:{meter.port}",
                            grid_import_max_kw=IMPORT_MAX_KW))
        gw = Gateway(cfg)
        await gw.start()
        started.append(gw)
        return gw, hub

    yield make
    for gw in started:
        await gw.stop(drain_s=0)
    for meter in meters:
        meter.close()


def site_limit(gw: Gateway, sid: str, connector: int) -> float | None:
    site: dict[str, Any] = gw.core.snapshot().get("site") or {}
    return (site.get("curtailed") or {}).get(gw.stations[sid].meter_id(connector))


async def test_201_the_site_limit_is_an_ems_limit(site_gateway: SiteGateway,
                                                  csms: CsmsServer) -> None:
    # 700 kW of load on an 800 kW connection: a charge session (EVSE 2, 150 kW) gets the 100 kW
    # left, less the margin the law keeps under the limit.
    gw, hub = await site_gateway("2.0.1", 700_000.0)
    (sid,) = await booted(gw, csms)
    after = csms.last_seq()
    r = await csms.call(sid, "RequestStartTransaction", {
        "idToken": {"idToken": "TAG-1", "type": "Central"}, "remoteStartId": 1, "evseId": 2})
    assert r["status"] == "Accepted"
    m = await csms.wait_for(sid, "NotifyChargingLimit", lambda p: p["evseId"] == 2,
                            after=after, timeout=20)
    assert m.payload["chargingLimit"] == {"chargingLimitSource": "EMS", "isGridCritical": True}
    limit = m.payload["chargingSchedule"][0]["chargingSchedulePeriod"][0]["limit"]
    assert limit == pytest.approx(IMPORT_AIM_W - 700_000, abs=2_000)
    # /status and /metrics say why (the status page and scripts read these).
    await until(lambda: "grid_import_max" in gw.core.snapshot()["site"]["constraints"])
    server = MetricsServer(gw)
    status = server.status()
    assert status["site"]["grid_valid"] and "grid_import_max" in status["site"]["constraints"]
    text = server.metrics_text().decode()
    assert 'bess_site_constraint_active{constraint="grid_import_max"} 1.0' in text
    assert "bess_site_grid_w " in text and "bess_site_grid_valid 1.0" in text
    # The composite schedule of EVSE 2 says what the site allows now.
    await until(lambda: site_limit(gw, sid, 2) is not None)
    r = await csms.call(sid, "GetCompositeSchedule",
                        {"evseId": 2, "duration": 60, "chargingRateUnit": "W"})
    first = r["schedule"]["chargingSchedulePeriod"][0]["limit"]
    assert first == pytest.approx(IMPORT_AIM_W - 700_000, abs=2_000)
    # The load falls: the site lets go, and says so once.
    after = csms.last_seq()
    hub.load_w = 400_000.0
    m = await csms.wait_for(sid, "ClearedChargingLimit", lambda p: p["evseId"] == 2,
                            after=after, timeout=20)
    assert m.payload == {"chargingLimitSource": "EMS", "evseId": 2}
    r = await csms.call(sid, "GetCompositeSchedule",
                        {"evseId": 2, "duration": 60, "chargingRateUnit": "W"})
    assert r["schedule"]["chargingSchedulePeriod"][0]["limit"] == 150_000.0


async def test_16_a_charge_session_cut_to_zero_is_suspended_evse(
        site_gateway: SiteGateway, csms: CsmsServer) -> None:
    gw, hub = await site_gateway("1.6", 700_000.0)
    (sid,) = await booted(gw, csms)
    r = await csms.call(sid, "ChangeConfiguration", {
        "key": "MeterValuesSampledData",
        "value": "Energy.Active.Import.Register,Power.Active.Import,Power.Offered"})
    assert r == {"status": "Accepted"}
    after = csms.last_seq()
    r = await csms.call(sid, "RemoteStartTransaction", {"idTag": "TAG-1", "connectorId": 2})
    assert r == {"status": "Accepted"}
    await csms.wait_for(sid, "StartTransaction", after=after, timeout=20)
    # MeterValues carry what the gateway offers the session: what the site leaves it under its
    # aim (100 kW to the limit, less the margin).

    def offered(p: dict[str, Any]) -> float | None:
        for mv in p.get("meterValue", []):
            for v in mv["sampledValue"]:
                if v.get("measurand") == "Power.Offered":
                    return float(v["value"])
        return None

    m = await csms.wait_for(sid, "MeterValues",
                            lambda p: p.get("connectorId") == 2 and offered(p) is not None
                            and abs((offered(p) or 0.0) - (IMPORT_AIM_W - 700_000)) <= 2_000,
                            after=after, timeout=20)
    assert m.payload["connectorId"] == 2
    # 900 kW of load: the charge session goes to 0 (the battery discharges the rest).
    after = csms.last_seq()
    hub.load_w = 900_000.0
    await csms.wait_for(sid, "StatusNotification",
                        lambda p: p["connectorId"] == 2 and p["status"] == "SuspendedEVSE",
                        after=after, timeout=20)
    await until(lambda: gw.core.snapshot()["setpoint_w"] > 50_000, 20)
    m = await csms.wait_for(sid, "MeterValues",
                            lambda p: p.get("connectorId") == 2 and offered(p) == 0.0,
                            after=after, timeout=20)
    # It gets its power back when the load falls.
    after = csms.last_seq()
    hub.load_w = 400_000.0
    await csms.wait_for(sid, "StatusNotification",
                        lambda p: p["connectorId"] == 2 and p["status"] == "Charging",
                        after=after, timeout=20)
