"""2.0.1 endpoints against the demo CSMS (the `ocpp` library's v201 server) on loopback."""

from __future__ import annotations

from bess_gateway.demo.csms import CsmsServer
from tests.conftest import GatewayFactory


async def test_boot_status_heartbeat(gateway_factory: GatewayFactory, csms: CsmsServer) -> None:
    await gateway_factory(1, ocpp="2.0.1")
    boot = await csms.wait_for("DEMO-01", "BootNotification")
    assert boot.payload["reason"] == "PowerUp"
    assert boot.payload["chargingStation"]["serialNumber"] == "DEMO-01"
    statuses = {}
    for evse in (1, 2):
        m = await csms.wait_for("DEMO-01", "StatusNotification",
                                lambda p, e=evse: p["evseId"] == e)
        statuses[evse] = m.payload["connectorStatus"]
    assert statuses == {1: "Available", 2: "Available"}
    assert csms.stations["DEMO-01"].version == "2.0.1"


async def test_mixed_gateway(gateway_factory: GatewayFactory, csms: CsmsServer) -> None:
    await gateway_factory(2, ocpp="mixed")
    b16 = await csms.wait_for("DEMO-01", "BootNotification")
    b201 = await csms.wait_for("DEMO-02", "BootNotification")
    assert "chargePointVendor" in b16.payload and "chargingStation" in b201.payload
    assert csms.stations["DEMO-01"].version == "1.6"
    assert csms.stations["DEMO-02"].version == "2.0.1"
