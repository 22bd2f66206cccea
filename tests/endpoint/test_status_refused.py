"""Issue 13 item 11: a CSMS that answers StatusNotification with a CALLERROR (NotSupported).

A CALLERROR is a final answer: the status counts as reported (not resent about once a second for
ever), the refusal is logged once, and the next status change still goes out. (A status lost
with the link is still sent again: tests/ocpp/v201/test_offline_threshold.py,
test_a_status_lost_with_the_link_is_sent_again.) The demo CSMS (the `ocpp` library) on
loopback, the real simulator; 1.6 and 2.0.1."""

from __future__ import annotations

import logging

import pytest
from conftest import GatewayFactory
from waiting import booted

from bess_gateway.demo.csms import CsmsServer


def statuses(csms: CsmsServer, sid: str, key: str) -> list[tuple[int, str]]:
    field = "status" if key == "connectorId" else "connectorStatus"
    return [(m.payload[key], m.payload[field]) for m in csms.of(sid, "StatusNotification")]


@pytest.mark.parametrize("ocpp", ["1.6", "2.0.1"])
async def test_a_status_refused_with_a_callerror_is_not_sent_again(
        caplog: pytest.LogCaptureFixture, gateway_factory: GatewayFactory, csms: CsmsServer,
        ocpp: str) -> None:
    # caplog first: fixtures tear down in reverse, so the gateway's file logs restore the
    # logger level they found before caplog restores its own (else the level leaks on).
    caplog.set_level(logging.WARNING, logger="bess_gateway")
    csms.policy.call_errors = {"StatusNotification": "NotSupported"}
    csms.policy.heartbeat_interval = 1  # the heartbeats are the test's clock (below)
    gw = await gateway_factory(1, ocpp=ocpp)
    (sid,) = await booted(gw, csms)
    key, targets = ("connectorId", (0, 1, 2)) if ocpp == "1.6" else ("evseId", (1, 2))
    for target in targets:
        await csms.wait_for(sid, "StatusNotification", lambda p, t=target: p[key] == t,
                            timeout=20)

    # The next change is still reported, although every status so far was refused.
    assert gw.stations[sid].set_availability(1, False) == "Accepted"
    changed = await csms.wait_for(sid, "StatusNotification", lambda p: p[key] == 1 and (
        p.get("status") or p.get("connectorStatus")) == "Unavailable")
    # Three heartbeats later (more than STATUS_RETRY_S twice over), nothing was sent again.
    await csms.wait_until(
        lambda: len([m for m in csms.of(sid, "Heartbeat") if m.seq > changed.seq]) >= 3)
    first = [(t, "Available") for t in targets]
    assert statuses(csms, sid, key) == [*first, (1, "Unavailable")]
    refusals = [r for r in caplog.records
                if "StatusNotification" in r.getMessage() and "NotSupported" in r.getMessage()]
    assert len(refusals) == 1, [r.getMessage() for r in refusals]
