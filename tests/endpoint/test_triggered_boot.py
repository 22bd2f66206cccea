"""Issue 13 item 10: a CSMS that answers the boot Pending and then accepts the station through
TriggerMessage(BootNotification). The Accepted answer to the triggered boot registers the
endpoint at once, in 1.6 and 2.0.1: statuses go out, a remote start is accepted, the heartbeat
interval is the one of that answer. The demo CSMS (the `ocpp` library) on loopback, the real
simulator."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import GatewayFactory
from waiting import until

from bess_gateway.demo.csms import CsmsServer

PENDING_RETRY_S = 3600  # the endpoint's own boot retry is an hour away: only the trigger counts
ACCEPTED_INTERVAL_S = 45


def remote_start(ocpp: str) -> tuple[str, dict[str, Any]]:
    if ocpp == "1.6":
        return "RemoteStartTransaction", {"idTag": "TAG-1", "connectorId": 1}
    return "RequestStartTransaction", {"idToken": {"idToken": "TAG-1", "type": "ISO14443"},
                                       "remoteStartId": 1, "evseId": 1}


@pytest.mark.parametrize("ocpp", ["1.6", "2.0.1"])
async def test_an_accepted_triggered_boot_registers_the_endpoint_at_once(
        gateway_factory: GatewayFactory, csms: CsmsServer, ocpp: str) -> None:
    csms.policy.boot_status = "Pending"
    csms.policy.heartbeat_interval = PENDING_RETRY_S
    gw = await gateway_factory(1, ocpp=ocpp)
    sid = next(iter(gw.endpoints))
    ep = gw.endpoints[sid]
    await csms.wait_for(sid, "BootNotification", timeout=20)
    await until(lambda: ep.registration == "Pending")
    action, payload = remote_start(ocpp)
    assert (await csms.call(sid, action, payload))["status"] == "Rejected"

    csms.policy.boot_status = "Accepted"
    csms.policy.heartbeat_interval = ACCEPTED_INTERVAL_S
    after = csms.last_seq()
    r = await csms.call(sid, "TriggerMessage", {"requestedMessage": "BootNotification"})
    assert r["status"] == "Accepted"
    await csms.wait_for(sid, "BootNotification", after=after)

    # Every status goes out now, not after the endpoint's own retry an hour later.
    key, targets = ("connectorId", (0, 1, 2)) if ocpp == "1.6" else ("evseId", (1, 2))
    for target in targets:
        await csms.wait_for(sid, "StatusNotification", lambda p, t=target: p[key] == t,
                            after=after)
    assert ep.registration == "Accepted" and ep.ctx.online
    assert len(csms.of(sid, "BootNotification")) == 2  # the first boot and the triggered one
    assert ep.heartbeat_s == ACCEPTED_INTERVAL_S
    assert gw.stations[sid].settings.int("heartbeat_interval_s") == ACCEPTED_INTERVAL_S
    assert (await csms.call(sid, action, payload))["status"] == "Accepted"
