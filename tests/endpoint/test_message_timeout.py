"""How long our CALLs wait for an answer is its own setting: 2.0.1 OCPPCommCtrlr.MessageTimeout
and the 1.6 vendor key MessageTimeout. 1.6 ConnectionTimeOut and 2.0.1 TxCtrlr.EVConnectionTimeOut
are the cable timeout and leave it alone (the three used to share one setting)."""

from __future__ import annotations

from typing import Any

from conftest import GatewayFactory
from waiting import booted, until

from bess_gateway.demo.csms import CsmsServer
from bess_gateway.gateway import Gateway


def call_timeout(gw: Gateway, sid: str) -> float | None:
    rpc = gw.endpoints[sid].ctx.rpc
    return None if rpc is None else rpc.call_timeout


async def test_16_message_timeout_is_not_the_cable_timeout(
        gateway_factory: GatewayFactory, csms: CsmsServer) -> None:
    gw = await gateway_factory(1)
    (sid,) = await booted(gw, csms)
    assert call_timeout(gw, sid) == 60.0

    r = await csms.call(sid, "ChangeConfiguration", {"key": "ConnectionTimeOut", "value": "120"})
    assert r["status"] == "Accepted"
    assert call_timeout(gw, sid) == 60.0

    r = await csms.call(sid, "ChangeConfiguration", {"key": "MessageTimeout", "value": "7"})
    assert r["status"] == "Accepted"
    await until(lambda: call_timeout(gw, sid) == 7.0)  # the live connection, not only the next
    r = await csms.call(sid, "ChangeConfiguration", {"key": "MessageTimeout", "value": "1"})
    assert r["status"] == "Rejected"  # below 5 s
    conf = await csms.call(sid, "GetConfiguration",
                           {"key": ["ConnectionTimeOut", "MessageTimeout"]})
    values = {k["key"]: k["value"] for k in conf["configurationKey"]}
    assert values == {"ConnectionTimeOut": "120", "MessageTimeout": "7"}

    # A new connection takes the message timeout too, not the cable timeout.
    connects = gw.endpoints[sid].connects
    await csms.drop(sid)
    await until(lambda: gw.endpoints[sid].connects > connects and gw.endpoints[sid].booted.is_set(),
                30)
    assert call_timeout(gw, sid) == 7.0


def _set(component: str, variable: str, value: str) -> dict[str, Any]:
    return {"component": {"name": component}, "variable": {"name": variable},
            "attributeValue": value}


async def test_201_message_timeout_is_not_the_ev_connection_timeout(
        gateway_factory: GatewayFactory, csms: CsmsServer) -> None:
    gw = await gateway_factory(1, ocpp="2.0.1")
    (sid,) = await booted(gw, csms)
    r = await csms.call(sid, "SetVariables", {"setVariableData": [
        _set("TxCtrlr", "EVConnectionTimeOut", "120")]})
    assert r["setVariableResult"][0]["attributeStatus"] == "Accepted"
    assert call_timeout(gw, sid) == 60.0

    timeout = {"name": "MessageTimeout", "instance": "Default"}
    r = await csms.call(sid, "SetVariables", {"setVariableData": [
        {**_set("OCPPCommCtrlr", "MessageTimeout", "9"), "variable": timeout}]})
    assert r["setVariableResult"][0]["attributeStatus"] == "Accepted"
    await until(lambda: call_timeout(gw, sid) == 9.0)
    got = await csms.call(sid, "GetVariables", {"getVariableData": [
        {"component": {"name": "TxCtrlr"}, "variable": {"name": "EVConnectionTimeOut"}},
        {"component": {"name": "OCPPCommCtrlr"}, "variable": timeout}]})
    assert [v["attributeValue"] for v in got["getVariableResult"]] == ["120", "9"]
    assert gw.stations[sid].settings.int("message_timeout_s") == 9
