"""Issue 13 item 4: a CSMS whose answers to non-transaction messages break the schema.

StatusNotification answered with {"status": "Accepted"} (1.6 StatusNotification.conf is empty;
2.0.1 StatusNotificationResponse has no such field) and Heartbeat answered without currentTime.
The endpoint keeps its link: it goes on sending, the bad answers are counted per action
(bess_ocpp_calls_sent_outcome{outcome="invalid"}) and logged once per action and error kind, not
once per answer. The demo CSMS (the `ocpp` library) on loopback, the real simulator; both
versions."""

from __future__ import annotations

import logging

import pytest
from conftest import GatewayFactory
from waiting import booted, until

from bess_gateway.demo.csms import CsmsServer
from bess_gateway.gateway import Gateway
from bess_gateway.sim.server import SimulatorThread

HEARTBEATS = 4  # the window: this many heartbeats, one a second, answered wrongly


def invalid(gw: Gateway, sid: str, action: str) -> float:
    assert gw.metrics is not None
    value = gw.metrics.registry.get_sample_value(
        "bess_ocpp_calls_sent_outcome_total",
        {"endpoint": sid, "action": action, "outcome": "invalid"})
    return value or 0.0


@pytest.mark.parametrize("ocpp", ["1.6", "2.0.1"])
async def test_answers_off_the_schema_keep_the_link_and_are_counted(
        caplog: pytest.LogCaptureFixture, gateway_factory: GatewayFactory, csms: CsmsServer,
        ocpp: str) -> None:
    # caplog first: fixtures tear down in reverse, so the gateway's file logs restore the
    # logger level they found before caplog restores its own (else the level leaks on).
    caplog.set_level(logging.DEBUG, logger="bess_gateway")
    csms.policy.heartbeat_interval = 1  # the heartbeats are the test's clock
    csms.policy.answers = {"StatusNotification": {"status": "Accepted"}, "Heartbeat": {}}
    gw = await gateway_factory(1, ocpp=ocpp, metrics_listen="127.0.0.1:0")
    (sid,) = await booted(gw, csms)
    key = "connectorId" if ocpp == "1.6" else "evseId"
    status = "status" if ocpp == "1.6" else "connectorStatus"
    start = csms.last_seq()

    # Statuses still go out after wrong answers: a change is reported, and only once.
    assert gw.stations[sid].set_availability(1, False) == "Accepted"

    def changed() -> int | None:
        return next((m.seq for m in csms.of(sid, "StatusNotification") if m.seq > start
                     and m.payload[key] == 1 and m.payload[status] == "Unavailable"), None)

    def window_over() -> bool:
        seq = changed()
        return seq is not None and len(
            [m for m in csms.of(sid, "Heartbeat") if m.seq > seq]) >= HEARTBEATS

    # A reconnect ends the wait at once (it is what the test is about); so does the window.
    await csms.wait_until(lambda: csms.connections > 1 or window_over(),
                          timeout=HEARTBEATS * 5 + 20)

    ep = gw.endpoints[sid]
    assert csms.connections == 1 and ep.connects == 1  # never a reconnect
    assert ep.ctx.online
    unavailable = [m for m in csms.of(sid, "StatusNotification")
                   if m.payload[key] == 1 and m.payload[status] == "Unavailable"]
    assert len(unavailable) == 1  # an off-schema answer is an answer: no resend
    # Every answer so far was off the schema, and each is counted (the last heartbeat's answer
    # may still be on its way when the CSMS has recorded the CALL).
    await until(lambda: invalid(gw, sid, "Heartbeat") >= len(csms.of(sid, "Heartbeat")) - 1, 5)
    await until(lambda: invalid(gw, sid, "StatusNotification")
                == len(csms.of(sid, "StatusNotification")), 5)
    assert ep.ctx.rpc is not None
    stats = ep.ctx.rpc.stats
    # The window's last heartbeat may have been recorded by the CSMS before its answer reached
    # us: wait for it rather than race it.
    await until(lambda: stats.answers_invalid["Heartbeat"] >= HEARTBEATS, 5)
    # Logged once per action and error kind (the two answers break their schemas differently).
    warned = [r.getMessage() for r in caplog.records
              if r.levelno >= logging.WARNING and "invalid" in r.getMessage()
              and "response from peer" in r.getMessage()]
    assert len([w for w in warned if "Heartbeat" in w]) == 1, warned
    assert len([w for w in warned if "StatusNotification" in w]) == 1, warned


async def test_an_off_schema_answer_to_a_charging_limit_report_keeps_the_link(
        gateway_factory: GatewayFactory, csms: CsmsServer, sim: SimulatorThread) -> None:
    # 2.0.1 NotifyChargingLimit comes from a connection-long job like the heartbeat's.
    csms.policy.heartbeat_interval = 1
    csms.policy.answers = {"NotifyChargingLimit": {"status": "Accepted"}}
    gw = await gateway_factory(1, ocpp="2.0.1", metrics_listen="127.0.0.1:0")
    (sid,) = await booted(gw, csms)
    after = csms.last_seq()
    sim.force_temperature(54.0)  # the BMS derates both EVSEs below the session maximum

    def window_over() -> bool:
        notes = [m for m in csms.of(sid, "NotifyChargingLimit") if m.seq > after]
        return len({m.payload["evseId"] for m in notes}) == 2 and len(
            [m for m in csms.of(sid, "Heartbeat") if m.seq > notes[-1].seq]) >= HEARTBEATS

    await csms.wait_until(lambda: csms.connections > 1 or window_over(),
                          timeout=HEARTBEATS * 5 + 20)
    assert csms.connections == 1 and gw.endpoints[sid].connects == 1
    # Each EVSE's limit was reported once: the answer, off the schema as it is, was an answer.
    assert sorted(m.payload["evseId"] for m in csms.of(sid, "NotifyChargingLimit")) == [1, 2]
    assert invalid(gw, sid, "NotifyChargingLimit") == 2
