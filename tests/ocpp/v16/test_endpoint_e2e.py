"""OCPP 1.6J end to end: a real CSMS over WebSocket, the real simulator over Modbus TCP, SQLite."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import orjson
import pytest
from waiting import booted, until

from bess_gateway.demo.csms import CsmsServer
from bess_gateway.endpoint.link import Backoff
from bess_gateway.gateway import Gateway
from bess_gateway.ocpp.v16 import config_keys
from bess_gateway.sim.server import SimulatorThread


def energy_of(payload: dict[str, Any], measurand: str) -> int:
    for mv in payload["meterValue"]:
        for sv in mv["sampledValue"]:
            if sv.get("measurand") == measurand:
                return int(sv["value"])
    raise AssertionError(f"{measurand} missing in {payload}")


async def start_tx(csms: CsmsServer, sid: str, connector: int, tag: str = "TAG-1") -> int:
    after = csms.last_seq()
    r = await csms.call(sid, "RemoteStartTransaction", {"idTag": tag, "connectorId": connector})
    assert r == {"status": "Accepted"}
    start = await csms.wait_for(sid, "StartTransaction", after=after)
    assert start.payload["connectorId"] == connector
    # The CSMS records the CALL before its handler creates the transaction: wait for both.
    tx = await csms.wait_until(lambda: next(
        (t for t in csms.transactions.values()
         if t.station == sid and t.meter_stop is None and t.connector == connector), None))
    return tx.id


async def test_boot_sends_status_of_all_connectors(gateway_factory, csms: CsmsServer) -> None:
    gw = await gateway_factory(1)
    (sid,) = await booted(gw, csms)
    boot = csms.of(sid, "BootNotification")[0].payload
    assert boot["chargePointVendor"] == "bess-gateway"
    for c in (0, 1, 2):
        msg = await csms.wait_for(sid, "StatusNotification", lambda p, c=c: p["connectorId"] == c)
        assert msg.payload["status"] == "Available"
        assert msg.payload["errorCode"] == "NoError"


async def test_remote_start_moves_pcs_and_meters_energy(
        gateway_factory, csms: CsmsServer, sim: SimulatorThread) -> None:
    gw = await gateway_factory(1)
    (sid,) = await booted(gw, csms)
    pcs_before = sim.state.energy_discharged_wh
    tx_id = await start_tx(csms, sid, 1)
    start = csms.of(sid, "StartTransaction")[-1].payload
    assert start["meterStart"] >= 0

    # The setpoint ramps to the session's 150 kW and the PCS's measured power follows.
    await until(lambda: sim.written.setpoint_w == 150_000)
    await until(lambda: sim.state.measured_w > 140_000)
    await csms.wait_for(sid, "StatusNotification",
                        lambda p: p["connectorId"] == 1 and p["status"] == "Charging")

    # Periodic MeterValues carry an increasing register (Import: the discharge_as default)
    # and the other measurands.
    await until(lambda: len([m for m in csms.of(sid, "MeterValues")
                             if m.payload.get("transactionId") == tx_id]) >= 3, 15)
    samples = [m.payload for m in csms.of(sid, "MeterValues")
               if m.payload.get("transactionId") == tx_id]
    registers = [energy_of(p, "Energy.Active.Import.Register") for p in samples]
    assert registers == sorted(registers) and registers[-1] > registers[0]
    measurands = {sv["measurand"]: sv for sv in samples[-1]["meterValue"][0]["sampledValue"]}
    assert set(measurands) == {"Voltage", "Current.Import", "Power.Active.Import", "SoC",
                               "Temperature", "Energy.Active.Import.Register"}
    assert measurands["Power.Active.Import"]["unit"] == "W"
    assert float(measurands["Power.Active.Import"]["value"]) > 100_000
    assert measurands["SoC"]["unit"] == "Percent"
    assert measurands["Temperature"]["unit"] == "Celsius"
    assert measurands["Energy.Active.Import.Register"]["context"] == "Sample.Periodic"

    after = csms.last_seq()
    assert await csms.call(sid, "RemoteStopTransaction", {"transactionId": tx_id}) == {
        "status": "Accepted"}
    stop = (await csms.wait_for(sid, "StopTransaction", after=after)).payload
    assert stop["transactionId"] == tx_id
    assert stop["reason"] == "Remote"
    assert stop["meterStop"] >= registers[-1]
    end_reg = energy_of({"meterValue": stop["transactionData"]}, "Energy.Active.Import.Register")
    assert end_reg == stop["meterStop"]
    await until(lambda: abs(sim.state.measured_w) < 1.0)
    await until(lambda: sim.written.setpoint_w == 0)

    # Energy the CSMS was told about = what the PCS registers counted, but for the ramp-down
    # tail after the stop (150 kW -> 0 at 300 kW/s plus the PCS lag: well under 30 Wh).
    billed = stop["meterStop"] - start["meterStart"]
    pcs_delta = sim.state.energy_discharged_wh - pcs_before
    assert billed > 0
    assert pcs_delta - 30 <= billed <= pcs_delta + 1
    reg = gw.core.meter(gw.stations[sid].meter_id(1))["energy_wh"]
    assert stop["meterStop"] <= math.floor(reg)


async def test_charge_connector_charges_the_battery(
        gateway_factory, csms: CsmsServer, sim: SimulatorThread) -> None:
    gw = await gateway_factory(1)
    (sid,) = await booted(gw, csms)
    tx_id = await start_tx(csms, sid, 2)
    await until(lambda: sim.written.setpoint_w == -150_000)
    await until(lambda: sim.state.measured_w < -140_000)
    await until(lambda: any(m.payload.get("transactionId") == tx_id
                            for m in csms.of(sid, "MeterValues")), 10)
    mv = next(m.payload for m in csms.of(sid, "MeterValues")
              if m.payload.get("transactionId") == tx_id)
    kinds = {sv["measurand"] for sv in mv["meterValue"][0]["sampledValue"]}
    assert "Energy.Active.Import.Register" in kinds and "Power.Active.Import" in kinds
    assert not any(k.endswith("Export") or "Export." in k for k in kinds)


async def test_sessions_on_two_endpoints_share_site_limit(
        gateway_factory, csms: CsmsServer, sim: SimulatorThread) -> None:
    gw = await gateway_factory(2, site_max_discharge_kw=200.0)
    a, b = await booted(gw, csms)
    await start_tx(csms, a, 1)
    await start_tx(csms, b, 1)
    # Max-min fair: two sessions capped at 150 kW under a 200 kW site limit get 100 kW each.
    await until(lambda: sim.written.setpoint_w == 200_000)
    allocs = gw.core.snapshot()["allocations"]
    assert allocs[gw.stations[a].meter_id(1)] == pytest.approx(100_000)
    assert allocs[gw.stations[b].meter_id(1)] == pytest.approx(100_000)


async def test_over_temperature_trips_to_zero_then_recovers(
        gateway_factory, csms: CsmsServer, sim: SimulatorThread) -> None:
    gw = await gateway_factory(1)
    (sid,) = await booted(gw, csms)
    await start_tx(csms, sid, 1)
    await until(lambda: sim.written.setpoint_w == 150_000)

    after = csms.last_seq()
    sim.force_temperature(60.0)
    fault = await csms.wait_for(sid, "StatusNotification",
                                lambda p: p["connectorId"] == 1 and p["status"] == "Faulted",
                                after=after)
    assert fault.payload["errorCode"] == "HighTemperature"
    assert sim.written.setpoint_w == 0
    snap = gw.core.snapshot()
    assert snap["tripped"] and "over_temperature" in snap["trip_causes"]
    # A trip is no ramp: the setpoint went from 150 kW to 0 in one write.
    writes = [w for _, w in sim.setpoint_writes()]
    i = max(i for i, w in enumerate(writes) if w == 150_000)
    assert writes[i + 1] == 0

    after = csms.last_seq()
    sim.force_temperature(None)
    await csms.wait_for(sid, "StatusNotification",
                        lambda p: p["connectorId"] == 1 and p["status"] == "Charging",
                        after=after, timeout=15)
    await until(lambda: sim.written.setpoint_w == 150_000)


async def test_pcs_that_stops_answering_faults_then_recovers(
        gateway_factory, csms: CsmsServer, sim: SimulatorThread) -> None:
    gw = await gateway_factory(1, pcs_timeout_ms=300)
    (sid,) = await booted(gw, csms)
    await start_tx(csms, sid, 1)
    await until(lambda: sim.written.setpoint_w == 150_000)

    after = csms.last_seq()
    sim.set_silent(True)
    fault = await csms.wait_for(sid, "StatusNotification",
                                lambda p: p["connectorId"] == 1 and p["status"] == "Faulted",
                                after=after)
    assert fault.payload["vendorErrorCode"] == "PcsLinkLost"
    assert not gw.core.snapshot()["link_up"]

    sim.clear_setpoint_writes()
    after = csms.last_seq()
    sim.set_silent(False)
    await csms.wait_for(sid, "StatusNotification",
                        lambda p: p["connectorId"] == 1 and p["status"] == "Charging",
                        after=after, timeout=15)
    await until(lambda: sim.written.setpoint_w == 150_000)
    # After the link comes back, the first setpoint written is 0, then it ramps.
    assert sim.setpoint_writes()[0][1] == 0


async def test_configuration_rules_and_persistence(gateway_factory, csms: CsmsServer,
                                                   tmp_path) -> None:
    data = tmp_path / "persist"
    gw = await gateway_factory(1, data_dir=data)
    (sid,) = await booted(gw, csms)

    async def change(key: str, value: str) -> str:
        return (await csms.call(sid, "ChangeConfiguration", {"key": key, "value": value}))[
            "status"]

    assert await change("HeartbeatInterval", "0") == "Rejected"
    assert await change("HeartbeatInterval", "86401") == "Rejected"
    assert await change("MeterValueSampleInterval", "301") == "Rejected"
    assert await change("MeterValueSampleInterval", "abc") == "Rejected"
    assert await change("NumberOfConnectors", "3") == "Rejected"
    assert await change("NoSuchKey", "1") == "NotSupported"
    assert await change("MeterValuesSampledData", "SoC,Bogus") == "Rejected"
    # The spec's ranges, not the datasheet's: a day's heartbeat, and 0 = no sampled data.
    assert await change("HeartbeatInterval", "900") == "Accepted"
    assert await change("HeartbeatInterval", "86400") == "Accepted"
    assert gw.endpoints[sid].heartbeat_s == 86400
    assert await change("MeterValueSampleInterval", "0") == "Accepted"
    assert await change("HeartbeatInterval", "45") == "Accepted"
    assert await change("MeterValueSampleInterval", "7") == "Accepted"
    assert await change("AuthorizeRemoteTxRequests", "true") == "Accepted"

    conf = await csms.call(sid, "GetConfiguration", {"key": ["HeartbeatInterval", "Nope"]})
    assert conf["configurationKey"] == [
        {"key": "HeartbeatInterval", "readonly": False, "value": "45"}]
    assert conf["unknownKey"] == ["Nope"]
    everything = await csms.call(sid, "GetConfiguration", {})
    names = {k["key"] for k in everything["configurationKey"]}
    assert {"NumberOfConnectors", "SupportedFeatureProfiles", "MeterValuesSampledData"} <= names

    await gw.stop(drain_s=0)
    gw2 = await gateway_factory(1, data_dir=data)
    await booted(gw2, csms)
    conf = await csms.call(sid, "GetConfiguration", {"key": [
        "HeartbeatInterval", "MeterValueSampleInterval", "AuthorizeRemoteTxRequests"]})
    # Accepted values survive the restart; the heartbeat follows the new BootNotification.conf.
    assert {k["key"]: k["value"] for k in conf["configurationKey"]} == {
        "HeartbeatInterval": str(csms.policy.heartbeat_interval),
        "MeterValueSampleInterval": "7", "AuthorizeRemoteTxRequests": "true"}


async def test_malformed_frames_get_callerror_and_session_goes_on(
        gateway_factory, csms: CsmsServer) -> None:
    gw = await gateway_factory(2)
    a, b = await booted(gw, csms)
    bad_type = '[2,"u-1","RemoteStartTransaction",{"idTag":"T","connectorId":"one"}]'
    reply = await csms.send_raw(a, bad_type, "u-1")
    assert reply[0] == 4 and reply[2] == "TypeConstraintViolation"
    missing = '[2,"u-2","RemoteStartTransaction",{"connectorId":1}]'
    reply = await csms.send_raw(a, missing, "u-2")
    assert reply[0] == 4 and reply[2] == "OccurenceConstraintViolation"
    unknown = '[2,"u-3","MakeCoffee",{}]'
    reply = await csms.send_raw(a, unknown, "u-3")
    assert reply[0] == 4 and reply[2] == "NotImplemented"
    not_json = '[2,"u-4","Heartbeat",{'
    reply = await csms.send_raw(a, not_json, "-1")
    assert reply[0] == 4 and reply[2] in ("FormationViolation", "ProtocolError")
    # The same connection and the other endpoint still work.
    assert (await csms.call(a, "TriggerMessage", {"requestedMessage": "Heartbeat"}))[
        "status"] == "Accepted"
    await csms.wait_for(a, "Heartbeat")
    assert (await csms.call(b, "DataTransfer", {"vendorId": "acme"}))["status"] == \
        "UnknownVendorId"


async def test_unknown_transaction_and_connector(gateway_factory, csms: CsmsServer) -> None:
    gw = await gateway_factory(1)
    (sid,) = await booted(gw, csms)
    assert (await csms.call(sid, "RemoteStopTransaction", {"transactionId": 999}))[
        "status"] == "Rejected"
    assert (await csms.call(sid, "RemoteStartTransaction", {"idTag": "T", "connectorId": 3}))[
        "status"] == "Rejected"
    assert (await csms.call(sid, "UnlockConnector", {"connectorId": 7}))[
        "status"] == "NotSupported"


async def test_unlock_stops_the_session(gateway_factory, csms: CsmsServer,
                                        sim: SimulatorThread) -> None:
    gw = await gateway_factory(1)
    (sid,) = await booted(gw, csms)
    tx_id = await start_tx(csms, sid, 1)
    after = csms.last_seq()
    assert (await csms.call(sid, "UnlockConnector", {"connectorId": 1}))["status"] == "Unlocked"
    stop = await csms.wait_for(sid, "StopTransaction", after=after)
    assert stop.payload["transactionId"] == tx_id
    assert stop.payload["reason"] == "UnlockCommand"
    await until(lambda: sim.written.setpoint_w == 0)


async def test_change_availability_and_scheduled(gateway_factory, csms: CsmsServer) -> None:
    gw = await gateway_factory(1)
    (sid,) = await booted(gw, csms)
    after = csms.last_seq()
    r = await csms.call(sid, "ChangeAvailability", {"connectorId": 2, "type": "Inoperative"})
    assert r["status"] == "Accepted"
    await csms.wait_for(sid, "StatusNotification",
                        lambda p: p["connectorId"] == 2 and p["status"] == "Unavailable",
                        after=after)
    assert (await csms.call(sid, "RemoteStartTransaction", {"idTag": "T", "connectorId": 2}))[
        "status"] == "Rejected"
    tx_id = await start_tx(csms, sid, 1)
    r = await csms.call(sid, "ChangeAvailability", {"connectorId": 1, "type": "Inoperative"})
    assert r["status"] == "Scheduled"
    after = csms.last_seq()
    await csms.call(sid, "RemoteStopTransaction", {"transactionId": tx_id})
    await csms.wait_for(sid, "StatusNotification",
                        lambda p: p["connectorId"] == 1 and p["status"] == "Unavailable",
                        after=after)


async def test_authorize_remote_tx_requests(gateway_factory, csms: CsmsServer,
                                            sim: SimulatorThread) -> None:
    gw = await gateway_factory(1)
    (sid,) = await booted(gw, csms)
    assert (await csms.call(sid, "ChangeConfiguration",
                            {"key": "AuthorizeRemoteTxRequests", "value": "true"}))[
        "status"] == "Accepted"
    csms.policy.blocked_id_tags.add("BAD")
    after = csms.last_seq()
    r = await csms.call(sid, "RemoteStartTransaction", {"idTag": "BAD", "connectorId": 1})
    assert r["status"] == "Accepted"
    await csms.wait_for(sid, "Authorize", lambda p: p["idTag"] == "BAD", after=after)
    await csms.wait_for(sid, "StatusNotification",
                        lambda p: p["connectorId"] == 1 and p["status"] == "Available",
                        after=after)
    assert not csms.of(sid, "StartTransaction")
    tx_id = await start_tx(csms, sid, 1, tag="GOOD")
    assert csms.of(sid, "Authorize")[-1].payload["idTag"] == "GOOD"
    assert tx_id > 0


async def test_boot_pending_holds_requests_until_accepted(gateway_factory,
                                                          csms: CsmsServer) -> None:
    csms.policy.boot_status = "Pending"
    csms.policy.heartbeat_interval = 1
    gw = await gateway_factory(1)
    sid = next(iter(gw.endpoints))
    await csms.wait_for(sid, "BootNotification")
    await until(lambda: len(csms.of(sid, "BootNotification")) >= 2)
    assert not csms.of(sid, "StatusNotification")
    assert gw.endpoints[sid].registration == "Pending"
    csms.policy.boot_status = "Accepted"
    csms.policy.heartbeat_interval = 60
    await csms.wait_for(sid, "StatusNotification")
    assert gw.endpoints[sid].registration == "Accepted"


async def test_soft_reset_stops_session_and_reboots(gateway_factory, csms: CsmsServer,
                                                    sim: SimulatorThread) -> None:
    gw = await gateway_factory(1)
    (sid,) = await booted(gw, csms)
    tx_id = await start_tx(csms, sid, 2)
    await until(lambda: sim.written.setpoint_w < 0)
    boots = len(csms.of(sid, "BootNotification"))
    after = csms.last_seq()
    assert (await csms.call(sid, "Reset", {"type": "Soft"}))["status"] == "Accepted"
    stop = await csms.wait_for(sid, "StopTransaction", after=after)
    assert stop.payload == stop.payload | {"transactionId": tx_id, "reason": "SoftReset"}
    await until(lambda: len(csms.of(sid, "BootNotification")) > boots)
    await until(lambda: sim.written.setpoint_w == 0)
    assert gw.endpoints[sid].connects == 2


async def test_trigger_messages(gateway_factory, csms: CsmsServer) -> None:
    gw = await gateway_factory(1)
    (sid,) = await booted(gw, csms)
    for what in ("BootNotification", "Heartbeat"):
        after = csms.last_seq()
        r = await csms.call(sid, "TriggerMessage", {"requestedMessage": what})
        assert r["status"] == "Accepted"
        await csms.wait_for(sid, what, after=after)
    after = csms.last_seq()
    r = await csms.call(sid, "TriggerMessage",
                        {"requestedMessage": "StatusNotification", "connectorId": 2})
    assert r["status"] == "Accepted"
    await csms.wait_for(sid, "StatusNotification", lambda p: p["connectorId"] == 2, after=after)
    after = csms.last_seq()
    r = await csms.call(sid, "TriggerMessage", {"requestedMessage": "MeterValues",
                                                "connectorId": 1})
    assert r["status"] == "Accepted"
    mv = await csms.wait_for(sid, "MeterValues", after=after)
    assert "transactionId" not in mv.payload
    assert mv.payload["meterValue"][0]["sampledValue"][0]["context"] == "Trigger"
    r = await csms.call(sid, "TriggerMessage", {"requestedMessage": "StatusNotification",
                                                "connectorId": 5})
    assert r["status"] == "Rejected"
    # Firmware Management: no update running -> Idle (tests/ocpp/v16/test_firmware_e2e.py has more).
    after = csms.last_seq()
    r = await csms.call(sid, "TriggerMessage",
                        {"requestedMessage": "FirmwareStatusNotification"})
    assert r["status"] == "Accepted"
    fw = await csms.wait_for(sid, "FirmwareStatusNotification", after=after)
    assert fw.payload == {"status": "Idle"}
    assert (await csms.call(sid, "TriggerMessage", {"requestedMessage": "Heartbeat"}))[
        "status"] == "Accepted"


async def test_fifty_endpoints_boot_at_once(gateway_factory, csms: CsmsServer) -> None:
    gw = await gateway_factory(50)
    ids = await booted(gw, csms)
    assert len(ids) == 50 and len(set(ids)) == 50
    for sid in ids:
        await csms.wait_for(sid, "StatusNotification", lambda p: p["connectorId"] == 2)
    assert csms.connections == 50


async def test_heartbeat_follows_the_boot_interval(gateway_factory, csms: CsmsServer) -> None:
    csms.policy.heartbeat_interval = 1
    gw = await gateway_factory(1)
    (sid,) = await booted(gw, csms)
    await until(lambda: len(csms.of(sid, "Heartbeat")) >= 2, 10)
    beats = [m.at for m in csms.of(sid, "Heartbeat")]
    assert beats[1] - beats[0] > 0.5  # periodic, not a burst


@pytest.mark.parametrize("status", ["Pending", "Rejected"])
async def test_boot_not_accepted_sends_nothing_else(gateway_factory, csms: CsmsServer,
                                                    status: str) -> None:
    csms.policy.boot_status = status
    csms.policy.heartbeat_interval = 1
    gw = await gateway_factory(1)
    sid = next(iter(gw.endpoints))
    await until(lambda: len(csms.of(sid, "BootNotification")) >= 2)
    assert {m.action for m in csms.received if m.station == sid} == {"BootNotification"}
    assert gw.endpoints[sid].registration == status
    # A remote start is refused until the CSMS accepts the station.
    r = await csms.call(sid, "RemoteStartTransaction", {"idTag": "T", "connectorId": 1})
    assert r["status"] == "Rejected"


async def test_reconnects_after_the_socket_drops(gateway_factory, csms: CsmsServer,
                                                 sim: SimulatorThread) -> None:
    gw = await gateway_factory(1)
    (sid,) = await booted(gw, csms)
    tx_id = await start_tx(csms, sid, 1)
    await until(lambda: sim.written.setpoint_w == 150_000)
    gw.endpoints[sid].backoff = Backoff(0.05, 0.05)  # keep the test short; same rule
    boots = len(csms.of(sid, "BootNotification"))
    await csms.drop(sid)
    await until(lambda: len(csms.of(sid, "BootNotification")) > boots, 15)
    # The session kept running through the outage and is still stoppable by its id.
    assert sim.written.setpoint_w == 150_000
    after = csms.last_seq()
    await until(lambda: sid in csms.stations and gw.endpoints[sid].booted.is_set())
    assert (await csms.call(sid, "RemoteStopTransaction", {"transactionId": tx_id}))[
        "status"] == "Accepted"
    await csms.wait_for(sid, "StopTransaction", after=after)


async def test_csms_without_the_ocpp16_subprotocol_is_refused(tmp_path, sim) -> None:
    from websockets.asyncio.server import serve

    seen: list[str | None] = []

    async def handler(ws) -> None:
        seen.append(ws.subprotocol)
        async for _ in ws:
            raise AssertionError("the endpoint must not talk without ocpp1.6")

    async with serve(handler, "127.0.0.1", 0) as server:  # agrees to no subprotocol
        port = server.sockets[0].getsockname()[1]
        from bess_gateway.demo.run import demo_config

        cfg = demo_config(tmp_path, f"ws://127.0.0.1:{port}/ocpp", sim.port, 1)
        gw = Gateway(cfg)
        await gw.start()
        try:
            await until(lambda: len(seen) >= 1)
            await asyncio.sleep(0.2)
            assert not gw.endpoints["DEMO-01"].booted.is_set()
            assert seen[0] is None
        finally:
            await gw.stop(drain_s=0)


async def test_data_transfer_and_clear_cache(gateway_factory, csms: CsmsServer) -> None:
    gw = await gateway_factory(1)
    (sid,) = await booted(gw, csms)
    r = await csms.call(sid, "DataTransfer", {"vendorId": "org.bess-gateway",
                                              "messageId": "BatteryStatus"})
    assert r["status"] == "Accepted"
    import orjson

    data = orjson.loads(r["data"])
    assert 0 < data["soc_pct"] <= 100 and data["link_up"] is True
    r = await csms.call(sid, "DataTransfer", {"vendorId": "org.bess-gateway",
                                              "messageId": "Nope"})
    assert r["status"] == "UnknownMessageId"
    assert (await csms.call(sid, "ClearCache", {}))["status"] == "Accepted"


async def test_get_configuration_beyond_max_keys_is_refused_not_cut(
        gateway_factory, csms: CsmsServer) -> None:
    """GetConfigurationMaxKeys (64): a request naming more is an OccurenceConstraintViolation,
    not an answer that silently leaves keys out; one naming none gets every key."""
    gw = await gateway_factory(1)
    (sid,) = await booted(gw, csms)
    limit = await csms.call(sid, "GetConfiguration", {"key": ["GetConfigurationMaxKeys"]})
    assert limit["configurationKey"][0]["value"] == "64"

    readable = [k for k, v in config_keys.KEYS.items() if not v.write_only]
    wanted = (readable + [f"Vendor{i}" for i in range(64)])[:64]
    at_limit = await csms.call(sid, "GetConfiguration", {"key": wanted})
    answered = [k["key"] for k in at_limit["configurationKey"]] + at_limit.get("unknownKey", [])
    assert answered == wanted

    over = orjson.dumps([2, "gc-65", "GetConfiguration", {"key": [*wanted, "HeartbeatInterval"]}])
    reply = await csms.send_raw(sid, over.decode(), "gc-65")
    assert reply[0] == 4 and reply[2] == "OccurenceConstraintViolation"

    everything = await csms.call(sid, "GetConfiguration", {})
    assert [k["key"] for k in everything["configurationKey"]] == readable
    assert "unknownKey" not in everything
