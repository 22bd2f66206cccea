"""`discharge_as` (issue 13 item 14): connector 1's own energy and power go out as Import (the
default: Home Assistant's integration, arthexis and ocpp-csms read only the Import register) or
as Export, in 1.6 MeterValues/StopTransaction and 2.0.1 TransactionEvents; meterStart/meterStop
are the connector's own register either way. Real simulator, real CSMS, the config path."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from waiting import until

from bess_gateway.config import Config, ConfigError, PcsConfig, load_config
from bess_gateway.demo.csms import CsmsServer
from bess_gateway.demo.run import demo_config
from bess_gateway.domain.metering import readings
from bess_gateway.domain.station import MeterSample
from bess_gateway.domain.timefmt import parse_iso
from bess_gateway.gateway import Gateway
from bess_gateway.sim.server import SimulatorThread

SID = "DEMO-01"
OTHER = {"import": "export", "export": "import"}


@pytest.fixture
async def start_gateway(tmp_path: Path, sim: SimulatorThread,
                        csms: CsmsServer) -> AsyncIterator[Callable[..., Any]]:
    running: list[Gateway] = []

    async def make(ocpp: str, discharge_as: str) -> Gateway:
        cfg: Config = demo_config(tmp_path / "var", csms.url, sim.port, 1, sample_s=1, ocpp=ocpp)
        cfg = dataclasses.replace(
            cfg, pcs=dataclasses.replace(PcsConfig(), port=sim.port, timeout_ms=400),
            endpoints=tuple(dataclasses.replace(e, discharge_as=discharge_as)
                            for e in cfg.endpoints))
        gw = Gateway(cfg)
        await gw.start()
        running.append(gw)
        return gw

    yield make
    for gw in running:
        await gw.stop(drain_s=0)


def names(values: list[dict[str, Any]]) -> set[str]:
    return {v["measurand"] for v in values}


def register(values: list[dict[str, Any]], measurand: str) -> float:
    (value,) = [float(v["value"]) for v in values if v["measurand"] == measurand]
    return value


@pytest.mark.parametrize("discharge_as", ["import", "export"])
async def test_16_connector_1_names_its_energy_as_configured(
        start_gateway: Callable[..., Any], csms: CsmsServer, discharge_as: str) -> None:
    word, other = discharge_as.capitalize(), OTHER[discharge_as].capitalize()
    await start_gateway("1.6", discharge_as)
    await csms.wait_for(SID, "BootNotification", timeout=20)
    after = csms.last_seq()
    await csms.call(SID, "RemoteStartTransaction", {"idTag": "T1", "connectorId": 1})
    start = (await csms.wait_for(SID, "StartTransaction", after=after)).payload
    tx = await csms.wait_until(lambda: next(
        (t for t in csms.transactions.values() if t.meter_stop is None), None))
    mv = await csms.wait_for(SID, "MeterValues", lambda p: p.get("transactionId") == tx.id and
                             register(p["meterValue"][0]["sampledValue"],
                                      f"Energy.Active.{word}.Register") > start["meterStart"],
                             after=after, timeout=15)
    values = mv.payload["meterValue"][0]["sampledValue"]
    assert {f"Energy.Active.{word}.Register", f"Power.Active.{word}",
            f"Current.{word}"} <= names(values)
    assert not any(other in n for n in names(values))
    stop_at = csms.last_seq()
    await csms.call(SID, "RemoteStopTransaction", {"transactionId": tx.id})
    stop = (await csms.wait_for(SID, "StopTransaction", after=stop_at)).payload
    # The stop's register is meterStop, named as the samples were.
    end = stop["transactionData"][-1]["sampledValue"]
    assert register(end, f"Energy.Active.{word}.Register") == stop["meterStop"]
    assert stop["meterStop"] > start["meterStart"]


@pytest.mark.parametrize("discharge_as", ["import", "export"])
async def test_201_evse_1_names_its_energy_as_configured(
        start_gateway: Callable[..., Any], csms: CsmsServer, discharge_as: str) -> None:
    word, other = discharge_as.capitalize(), OTHER[discharge_as].capitalize()
    gw = await start_gateway("2.0.1", discharge_as)
    await csms.wait_for(SID, "StatusNotification", lambda p: p["evseId"] == 2, timeout=30)
    await until(lambda: gw.endpoints[SID].ctx.online, 15)
    after = csms.last_seq()
    await csms.call(SID, "RequestStartTransaction", {
        "idToken": {"idToken": "T1", "type": "ISO14443"}, "remoteStartId": 3, "evseId": 1})
    started = (await csms.wait_for(SID, "TransactionEvent", lambda p: p["eventType"] == "Started",
                                   after=after, timeout=15)).payload
    tid = started["transactionInfo"]["transactionId"]
    assert names(started["meterValue"][0]["sampledValue"]) == {f"Energy.Active.{word}.Register"}
    upd = await csms.wait_for(SID, "TransactionEvent",
                              lambda p: p["triggerReason"] == "MeterValuePeriodic", timeout=15)
    values = upd.payload["meterValue"][0]["sampledValue"]
    assert f"Power.Active.{word}" in names(values)
    assert not any(other in n for n in names(values))
    stop_at = csms.last_seq()
    await csms.call(SID, "RequestStopTransaction", {"transactionId": tid})
    ended = (await csms.wait_for(SID, "TransactionEvent", lambda p: p["eventType"] == "Ended",
                                 after=stop_at, timeout=15)).payload
    tx = csms.transactions[tid]
    end = [sv for mv in ended["meterValue"] for sv in mv["sampledValue"]
           if sv.get("context") == "Transaction.End"]
    assert register(end, f"Energy.Active.{word}.Register") == tx.meter_stop
    assert tx.meter_stop > tx.meter_start


def test_readings_follow_the_sample_flow() -> None:
    sample = MeterSample(timestamp=parse_iso("2026-01-01T00:00:00Z"), connector=1,
                         energy_wh=1234.7, power_w=5000.0, current_a=7.0, voltage_v=None,
                         soc_pct=None, temperature_c=None, flow="Import")
    both = ["Energy.Active.Import.Register", "Energy.Active.Export.Register",
            "Power.Active.Import", "Power.Active.Export"]
    assert [(r.measurand, r.value) for r in readings(sample, both)] == [
        ("Energy.Active.Import.Register", 1234.0), ("Power.Active.Import", 5000.0)]
    exported = dataclasses.replace(sample, flow="Export")
    assert [r.measurand for r in readings(exported, both)] == [
        "Energy.Active.Export.Register", "Power.Active.Export"]


def test_check_config_validates_discharge_as(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    base = '[[endpoint]]\nid = "A"\ncsms_url = "ws://127.0.0.1:9000/ocpp"\n'
    path.write_text(base)
    assert load_config(path).endpoints[0].discharge_as == "import"  # the default
    path.write_text(base + 'discharge_as = "export"\n')
    assert load_config(path).endpoints[0].discharge_as == "export"
    path.write_text(base + 'discharge_as = "both"\n')
    with pytest.raises(ConfigError, match="discharge_as") as err:
        load_config(path)
    assert '"import" or "export"' in str(err.value)
