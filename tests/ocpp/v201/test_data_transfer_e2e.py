"""2.0.1 P DataTransfer end to end: the vendor message 1.6 answers too, from the same code."""

from __future__ import annotations

import orjson
from waiting import until

from bess_gateway.demo.csms import CsmsServer
from bess_gateway.domain.battery_status import MESSAGE_ID, VENDOR_ID
from tests.conftest import GatewayFactory


async def test_battery_status_same_in_both_versions(gateway_factory: GatewayFactory,
                                                    csms: CsmsServer) -> None:
    gw = await gateway_factory(2, ocpp="mixed")  # DEMO-01 1.6, DEMO-02 2.0.1
    for sid in ("DEMO-01", "DEMO-02"):
        await csms.wait_for(sid, "BootNotification", timeout=20)
        await until(lambda s=sid: gw.endpoints[s].booted.is_set(), 20)
    await until(lambda: gw.view.snapshot.get("soc_pct") is not None, 10)

    answers = {}
    for sid in ("DEMO-01", "DEMO-02"):
        r = await csms.call(sid, "DataTransfer", {"vendorId": VENDOR_ID, "messageId": MESSAGE_ID})
        assert r["status"] == "Accepted"
        answers[sid] = orjson.loads(r["data"])
    for data in answers.values():
        assert set(data) >= {"soc_pct", "setpoint_w", "link_up", "cycles", "trip_causes"}
        assert 0.0 < data["soc_pct"] <= 100.0
        assert data["link_up"] is True and data["trip_causes"] == []
    assert abs(answers["DEMO-01"]["soc_pct"] - answers["DEMO-02"]["soc_pct"]) < 1.0


async def test_unknown_vendor_and_message(gateway_factory: GatewayFactory,
                                          csms: CsmsServer) -> None:
    gw = await gateway_factory(1, ocpp="2.0.1")
    await csms.wait_for("DEMO-01", "BootNotification", timeout=20)
    await until(lambda: gw.endpoints["DEMO-01"].booted.is_set(), 20)
    r = await csms.call("DEMO-01", "DataTransfer", {"vendorId": "com.example", "messageId": "X"})
    assert r == {"status": "UnknownVendorId"}
    r = await csms.call("DEMO-01", "DataTransfer", {"vendorId": VENDOR_ID, "messageId": "Nope"})
    assert r == {"status": "UnknownMessageId"}
    r = await csms.call("DEMO-01", "DataTransfer", {"vendorId": VENDOR_ID})
    assert r == {"status": "UnknownMessageId"}
