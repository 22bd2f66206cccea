"""2.0.1 B Provisioning end to end: device model, reports, boot states, Reset, network profiles.

Against the demo CSMS (the `ocpp` library's v201 server) on loopback, the real simulator and a
real journal; every frame the gateway sends is schema-checked (conftest).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
from ocpp.exceptions import OCPPError

from bess_gateway.demo.csms import CsmsServer
from bess_gateway.journal import Journal
from bess_gateway.ocpp.v201 import device_model
from tests.conftest import GatewayFactory
from tests.waiting import until

SID = "DEMO-01"


def comp(name: str, evse: int | None = None, connector: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name}
    if evse is not None:
        out["evse"] = {"id": evse} if connector is None else {"id": evse, "connectorId": connector}
    return out


def var(name: str, instance: str | None = None) -> dict[str, Any]:
    return {"name": name} if instance is None else {"name": name, "instance": instance}


Item = tuple[dict[str, Any], dict[str, Any]] | dict[str, Any]
SetItem = tuple[dict[str, Any], dict[str, Any], str] | dict[str, Any]


async def get(csms: CsmsServer, *items: Item) -> list[dict[str, Any]]:
    data = [i if isinstance(i, dict) else {"component": i[0], "variable": i[1]} for i in items]
    resp = await csms.call(SID, "GetVariables", {"getVariableData": data})
    return resp["getVariableResult"]


async def set_(csms: CsmsServer, *items: SetItem) -> list[dict[str, Any]]:
    data = [i if isinstance(i, dict) else
            {"component": i[0], "variable": i[1], "attributeValue": i[2]} for i in items]
    resp = await csms.call(SID, "SetVariables", {"setVariableData": data})
    return resp["setVariableResult"]


async def booted(csms: CsmsServer, after: int = -1) -> None:
    await csms.wait_for(SID, "StatusNotification", after=after, timeout=20)


async def test_get_variables_every_status(gateway_factory: GatewayFactory,
                                          csms: CsmsServer) -> None:
    gw = await gateway_factory(1, ocpp="2.0.1")
    await booted(csms)
    await until(lambda: gw.view.snapshot.get("soc_pct") is not None, 20)
    r = await get(
        csms,
        (comp("OCPPCommCtrlr"), var("HeartbeatInterval")),
        (comp("NoSuchCtrlr"), var("HeartbeatInterval")),
        (comp("OCPPCommCtrlr"), var("NoSuchVariable")),
        {"component": comp("OCPPCommCtrlr"), "variable": var("HeartbeatInterval"),
         "attributeType": "Target"},
        (comp("SecurityCtrlr"), var("BasicAuthPassword")),
        # MessageAttempts exists only with its instance (B06.FR.15)
        (comp("OCPPCommCtrlr"), var("MessageAttempts")),
        (comp("OCPPCommCtrlr"), var("MessageAttempts", "TransactionEvent")),
        (comp("EVSE", 1), var("AvailabilityState")),
        (comp("Connector", 2, 1), var("AvailabilityState")),
        (comp("EVSE", 3), var("AvailabilityState")),
        (comp("BatteryBank"), var("SoC")),
        (comp("BatteryBank"), var("Temperature", "Max")),
        (comp("AuthCtrlr"), var("AuthorizeRemoteStart")),
    )
    statuses = [x["attributeStatus"] for x in r]
    assert statuses == ["Accepted", "UnknownComponent", "UnknownVariable",
                        "NotSupportedAttributeType", "Rejected", "UnknownVariable", "Accepted",
                        "Accepted", "Accepted", "UnknownComponent", "Accepted", "Accepted",
                        "Accepted"]
    # the CSMS's boot interval (60 s) became the heartbeat setting
    assert r[0]["attributeValue"] == "60" and r[0]["attributeType"] == "Actual"
    assert "attributeValue" not in r[1] and "attributeValue" not in r[4]
    assert r[4]["attributeStatusInfo"]["reasonCode"] == "WriteOnly"
    assert r[6]["attributeValue"] == "3"  # transaction_message_attempts default
    assert r[7]["attributeValue"] == "Available" and r[8]["attributeValue"] == "Available"
    assert r[7]["component"] == comp("EVSE", 1)  # echoed (B06.FR.02)
    soc = float(r[10]["attributeValue"])
    assert abs(soc - float(gw.view.snapshot["soc_pct"])) < 1.0
    assert float(r[11]["attributeValue"]) == pytest.approx(
        float(gw.view.snapshot["cell_temp_max_c"]), abs=1.0)
    assert r[12]["attributeValue"] == "false"


async def test_set_variables_every_status_and_persistence(
        gateway_factory: GatewayFactory, csms: CsmsServer, tmp_path: Path) -> None:
    data_dir = tmp_path / "persist"
    gw = await gateway_factory(1, ocpp="2.0.1", data_dir=data_dir)
    await booted(csms)
    r = await set_(
        csms,
        (comp("OCPPCommCtrlr"), var("HeartbeatInterval"), "120"),
        (comp("OCPPCommCtrlr"), var("HeartbeatInterval"), "0"),  # would spin: refused
        (comp("ClockCtrlr"), var("DateTime"), "2020-01-01T00:00:00Z"),  # ReadOnly
        (comp("NoSuchCtrlr"), var("Enabled"), "true"),
        (comp("AuthCtrlr"), var("NoSuchVariable"), "true"),
        {"component": comp("AuthCtrlr"), "variable": var("LocalPreAuthorize"),
         "attributeValue": "true", "attributeType": "MaxSet"},
        (comp("OCPPCommCtrlr"), var("NetworkConfigurationPriority"), "0"),
        (comp("AuthCtrlr"), var("LocalPreAuthorize"), "true"),
        (comp("SampledDataCtrlr"), var("TxUpdatedMeasurands"), "SoC,Voltage"),
        (comp("SampledDataCtrlr"), var("TxUpdatedMeasurands"), "SoC,Bogus"),
        (comp("SecurityCtrlr"), var("BasicAuthPassword"), "short"),
    )
    assert [x["attributeStatus"] for x in r] == [
        "Accepted", "Rejected", "Rejected", "UnknownComponent", "UnknownVariable",
        "NotSupportedAttributeType", "RebootRequired", "Accepted", "Accepted", "Rejected",
        "Rejected"]
    assert r[2]["attributeStatusInfo"]["reasonCode"] == "ReadOnly"
    assert r[1]["attributeStatusInfo"]["reasonCode"] == "InvalidValue"
    # the same domain setting is what 1.6 and the link use
    assert gw.stations[SID].settings.int("heartbeat_interval_s") == 120
    ep = gw.endpoints[SID]
    assert ep.heartbeat_s == 120
    g = await get(csms, (comp("OCPPCommCtrlr"), var("HeartbeatInterval")),
                  (comp("SampledDataCtrlr"), var("TxUpdatedMeasurands")))
    assert [x["attributeValue"] for x in g] == ["120", "SoC,Voltage"]

    # A restart on the same data_dir keeps every ReadWrite value. The CSMS's boot interval
    # would overwrite the heartbeat, so it sends none this time.
    await gw.stop(drain_s=0)
    csms.policy.heartbeat_interval = 0
    after = csms.last_seq()
    await gateway_factory(1, ocpp="2.0.1", data_dir=data_dir)
    await booted(csms, after)
    g = await get(csms, (comp("OCPPCommCtrlr"), var("HeartbeatInterval")),
                  (comp("AuthCtrlr"), var("LocalPreAuthorize")),
                  (comp("SampledDataCtrlr"), var("TxUpdatedMeasurands")))
    assert [x["attributeValue"] for x in g] == ["120", "true", "SoC,Voltage"]


async def test_too_many_items_is_a_callerror(gateway_factory: GatewayFactory,
                                             csms: CsmsServer) -> None:
    await gateway_factory(1, ocpp="2.0.1")
    await booted(csms)
    items = [{"component": comp("OCPPCommCtrlr"), "variable": var("HeartbeatInterval")}] * 65
    reply = await csms.send_raw(SID, orjson.dumps(
        [2, "too-many", "GetVariables", {"getVariableData": items}]).decode(), "too-many")
    assert reply[0] == 4 and reply[2] == "OccurrenceConstraintViolation"
    with pytest.raises(OCPPError):
        await csms.call(SID, "SetVariables", {"setVariableData": [
            {"component": comp("OCPPCommCtrlr"), "variable": var("HeartbeatInterval"),
             "attributeValue": "60"}] * 65})
    # 64 items are fine
    r = await get(csms, *([(comp("OCPPCommCtrlr"), var("HeartbeatInterval"))] * 64))
    assert len(r) == 64


def _reports(csms: CsmsServer, request_id: int, after: int) -> list[dict[str, Any]]:
    return [m.payload for m in csms.of(SID, "NotifyReport")
            if m.seq > after and m.payload["requestId"] == request_id]


async def _whole_report(csms: CsmsServer, request_id: int, after: int) -> list[dict[str, Any]]:
    parts = await until(lambda: (p := _reports(csms, request_id, after)) and not p[-1]["tbc"]
                        and p, 20)
    assert [p["seqNo"] for p in parts] == list(range(len(parts)))
    assert all(p["tbc"] for p in parts[:-1])
    return parts


async def test_base_reports_in_parts(gateway_factory: GatewayFactory, csms: CsmsServer,
                                     tmp_path: Path) -> None:
    data_dir = tmp_path / "report"
    data_dir.mkdir()
    # ItemsPerMessage is ReadOnly to a CSMS; an operator stores a smaller one in the journal.
    journal = Journal(data_dir / "journal.sqlite")
    journal.settings.put_setting(SID, "items_per_message_getreport", "10")
    journal.close()
    await gateway_factory(1, ocpp="2.0.1", data_dir=data_dir)
    await booted(csms)
    total = len(device_model.table())

    after = csms.last_seq()
    r = await csms.call(SID, "GetBaseReport", {"requestId": 7, "reportBase": "FullInventory"})
    assert r["status"] == "Accepted"
    parts = await _whole_report(csms, 7, after)
    assert all(len(p["reportData"]) <= 10 for p in parts)
    assert len(parts) == -(-total // 10)
    rows = [d for p in parts for d in p["reportData"]]
    assert len(rows) == total
    by_name = {(d["component"]["name"], d["variable"]["name"],
                d["component"].get("evse", {}).get("id"), d["variable"].get("instance")): d
               for d in rows}
    hb = by_name[("OCPPCommCtrlr", "HeartbeatInterval", None, None)]
    assert hb["variableAttribute"][0]["value"] == "60"
    assert hb["variableAttribute"][0]["mutability"] == "ReadWrite"
    assert hb["variableCharacteristics"] == {"dataType": "integer", "unit": "s",
                                             "minLimit": 1, "maxLimit": 86400,
                                             "supportsMonitoring": False}
    power = by_name[("EVSE", "Power", 1, None)]
    assert power["variableCharacteristics"]["maxLimit"] <= 150_000
    pw = by_name[("SecurityCtrlr", "BasicAuthPassword", None, None)]
    assert "value" not in pw["variableAttribute"][0]
    for controller in ("OCPPCommCtrlr", "TxCtrlr", "DeviceDataCtrlr", "ClockCtrlr",
                       "SecurityCtrlr", "SampledDataCtrlr", "AlignedDataCtrlr", "AuthCtrlr",
                       "SmartChargingCtrlr", "ReservationCtrlr", "BatteryBank"):
        assert any(k[0] == controller for k in by_name), controller

    after = csms.last_seq()
    r = await csms.call(SID, "GetBaseReport",
                        {"requestId": 8, "reportBase": "ConfigurationInventory"})
    assert r["status"] == "Accepted"
    rows = [d for p in await _whole_report(csms, 8, after) for d in p["reportData"]]
    assert rows and all(d["variableAttribute"][0]["mutability"] != "ReadOnly" for d in rows)
    assert any(d["variable"]["name"] == "LocalPreAuthorize" for d in rows)

    after = csms.last_seq()
    r = await csms.call(SID, "GetBaseReport", {"requestId": 9, "reportBase": "SummaryInventory"})
    assert r["status"] == "Accepted"
    rows = [d for p in await _whole_report(csms, 9, after) for d in p["reportData"]]
    states = {(d["component"]["name"], d["component"].get("evse", {}).get("id")):
              d["variableAttribute"][0].get("value")
              for d in rows if d["variable"]["name"] == "AvailabilityState"}
    assert states[("EVSE", 1)] == "Available" and states[("EVSE", 2)] == "Available"

    # GetReport: a component's variables, a criterion, and nothing matching.
    after = csms.last_seq()
    r = await csms.call(SID, "GetReport", {"requestId": 10, "componentVariable": [
        {"component": comp("EVSE", 2)}]})
    assert r["status"] == "Accepted"
    rows = [d for p in await _whole_report(csms, 10, after) for d in p["reportData"]]
    assert rows and all(d["component"] == comp("EVSE", 2) for d in rows)
    r = await csms.call(SID, "GetReport", {"requestId": 11, "componentCriteria": ["Problem"]})
    assert r["status"] == "EmptyResultSet"  # nothing tripped
    r = await csms.call(SID, "GetReport", {"requestId": 12, "componentVariable": [
        {"component": comp("NoSuchCtrlr")}]})
    assert r["status"] == "EmptyResultSet"


async def test_boot_pending_then_accepted(gateway_factory: GatewayFactory,
                                          csms: CsmsServer) -> None:
    csms.policy.boot_status = "Pending"
    csms.policy.heartbeat_interval = 1  # the retry interval while Pending
    await gateway_factory(1, ocpp="2.0.1")
    await csms.wait_for(SID, "BootNotification")
    # While Pending the CSMS configures the station; the station answers...
    r = await set_(csms, (comp("AuthCtrlr"), var("LocalPreAuthorize"), "true"))
    assert r[0]["attributeStatus"] == "Accepted"
    g = await get(csms, (comp("AuthCtrlr"), var("LocalPreAuthorize")))
    assert g[0]["attributeValue"] == "true"
    after = csms.last_seq()
    assert (await csms.call(SID, "GetBaseReport", {"requestId": 1,
                                                   "reportBase": "SummaryInventory"})
            )["status"] == "Accepted"
    await _whole_report(csms, 1, after)
    # ... and retries its boot, sending nothing else of its own.
    await csms.wait_for(SID, "BootNotification", after=after, timeout=10)
    sent = {m.action for m in csms.received if m.station == SID}
    assert sent == {"BootNotification", "NotifyReport"}

    csms.policy.boot_status = "Accepted"
    csms.policy.heartbeat_interval = 60
    await booted(csms)
    boot_seqs = [m.seq for m in csms.of(SID, "BootNotification")]
    first_status = csms.of(SID, "StatusNotification")[0].seq
    assert first_status > boot_seqs[-1]
    assert len(boot_seqs) >= 2


async def test_boot_rejected_sends_nothing_but_boots(gateway_factory: GatewayFactory,
                                                     csms: CsmsServer) -> None:
    csms.policy.boot_status = "Rejected"
    csms.policy.heartbeat_interval = 1
    await gateway_factory(1, ocpp="2.0.1")
    await until(lambda: len(csms.of(SID, "BootNotification")) >= 3, 20)
    assert {m.action for m in csms.received if m.station == SID} == {"BootNotification"}
    csms.policy.boot_status = "Accepted"
    csms.policy.heartbeat_interval = 60
    await booted(csms)


async def test_reset(gateway_factory: GatewayFactory, csms: CsmsServer) -> None:
    await gateway_factory(1, ocpp="2.0.1")
    await booted(csms)
    r = await csms.call(SID, "Reset", {"type": "Immediate", "evseId": 1})
    assert r["status"] == "Rejected"
    for kind in ("Immediate", "OnIdle"):  # OnIdle with no session: at once
        after = csms.last_seq()
        r = await csms.call(SID, "Reset", {"type": kind})
        assert r["status"] == "Accepted"
        boot = await csms.wait_for(SID, "BootNotification", after=after, timeout=20)
        assert boot.payload["reason"] == "RemoteReset"
        await booted(csms, boot.seq)


async def test_reset_on_idle_waits_for_the_session(gateway_factory: GatewayFactory,
                                                   csms: CsmsServer) -> None:
    gw = await gateway_factory(1, ocpp="2.0.1")
    await booted(csms)
    await until(lambda: gw.view.snapshot.get("soc_pct") is not None, 20)
    r = await csms.call(SID, "RequestStartTransaction", {
        "idToken": {"idToken": "TAG-1", "type": "Central"}, "evseId": 1, "remoteStartId": 1})
    assert r["status"] == "Accepted"
    station = gw.stations[SID]
    await until(lambda: 1 in station.transactions, 20)
    after = csms.last_seq()
    r = await csms.call(SID, "Reset", {"type": "OnIdle"})
    assert r["status"] == "Scheduled"
    tx_id = station.transactions[1].transaction_id
    assert tx_id is not None
    assert not [m for m in csms.of(SID, "BootNotification") if m.seq > after]
    r = await csms.call(SID, "RequestStopTransaction", {"transactionId": tx_id})
    assert r["status"] == "Accepted"
    boot = await csms.wait_for(SID, "BootNotification", after=after, timeout=20)
    assert boot.payload["reason"] == "RemoteReset"
    ended = [m for m in csms.of(SID, "TransactionEvent")
             if m.payload["eventType"] == "Ended" and m.seq < boot.seq]
    assert ended, "the session ended before the reset"


async def test_set_network_profile_and_migrate(gateway_factory: GatewayFactory,
                                               csms: CsmsServer) -> None:
    other = CsmsServer()
    await other.start()
    try:
        await _migrate(gateway_factory, csms, other)
    finally:
        async with asyncio.timeout(10):
            await other.stop()


def _profile(url: str, level: int = 0, version: str = "OCPP20") -> dict[str, Any]:
    return {"ocppVersion": version, "ocppTransport": "JSON", "ocppCsmsUrl": url,
            "messageTimeout": 30, "securityProfile": level, "ocppInterface": "Wired0"}


async def _migrate(gateway_factory: GatewayFactory, csms: CsmsServer,
                   other: CsmsServer) -> None:
    await gateway_factory(1, ocpp="2.0.1")
    await booted(csms)
    call = csms.call
    assert (await call(SID, "SetNetworkProfile", {
        "configurationSlot": 0, "connectionData": _profile(other.url)}))["status"] == "Rejected"
    assert (await call(SID, "SetNetworkProfile", {
        "configurationSlot": 1, "connectionData": _profile(other.url, version="OCPP16")}
    ))["status"] == "Rejected"
    assert (await call(SID, "SetNetworkProfile", {
        "configurationSlot": 2, "connectionData": _profile("ws://127.0.0.1:1", level=2)}
    ))["status"] == "Rejected"  # profile 2 needs wss://
    assert (await call(SID, "SetNetworkProfile", {
        "configurationSlot": 1, "connectionData": _profile(other.url)}))["status"] == "Accepted"
    # a slot nothing listens on, tried first: the endpoint falls back along the priority list
    assert (await call(SID, "SetNetworkProfile", {
        "configurationSlot": 2, "connectionData": _profile("ws://127.0.0.1:9")}
    ))["status"] == "Accepted"
    r = await set_(csms,
                   (comp("OCPPCommCtrlr"), var("NetworkConfigurationPriority"), "2,1,0"),
                   (comp("OCPPCommCtrlr"), var("NetworkConfigurationPriority"), "1,1"),
                   (comp("OCPPCommCtrlr"), var("NetworkProfileConnectionAttempts"), "1"),
                   (comp("OCPPCommCtrlr"), var("RetryBackOffWaitMinimum"), "1"),
                   (comp("OCPPCommCtrlr"), var("RetryBackOffRandomRange"), "0"))
    assert [x["attributeStatus"] for x in r] == ["RebootRequired", "Rejected", "Accepted",
                                                 "Accepted", "Accepted"]
    # Nothing changes before the Reset ...
    g = await get(csms, (comp("OCPPCommCtrlr"), var("ActiveNetworkProfile")))
    assert g[0]["attributeValue"] == "0"
    assert (await call(SID, "Reset", {"type": "Immediate"}))["status"] == "Accepted"
    # ... after it, slot 2 fails once and slot 1 (the other CSMS) takes the station.
    boot = await other.wait_for(SID, "BootNotification", timeout=30)
    assert boot.payload["reason"] == "RemoteReset"
    await other.wait_for(SID, "StatusNotification", timeout=20)
    resp = await other.call(SID, "GetVariables", {"getVariableData": [
        {"component": comp("OCPPCommCtrlr"), "variable": var("ActiveNetworkProfile")}]})
    assert resp["getVariableResult"][0]["attributeValue"] == "1"
