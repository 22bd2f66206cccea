"""2.0.1 TransactionEvent Updated with triggerReason ChargingRateChanged: the rule (pure) and end
to end against the demo CSMS (ocpp.v201), the real simulator and a real SQLite journal."""

from __future__ import annotations

from typing import Any

import pytest
from waiting import booted, until

from bess_gateway.demo.csms import CsmsServer
from bess_gateway.ocpp.v201 import smart_charging
from bess_gateway.ocpp.v201.smart_charging import rate_changed
from bess_gateway.sim.server import SimulatorThread
from tests.ocpp.v201.test_smart_charging201_e2e import accepted, profile, start_tx


@pytest.mark.parametrize(("rate", "reported", "expected"), [
    (150_000.0, 150_000.0, False),  # unchanged
    (136_000.0, 150_000.0, False),  # 9.3 % of the last report: inside the band
    (134_000.0, 150_000.0, True),  # 10.7 %
    (166_000.0, 150_000.0, True),  # up as well as down
    (0.0, 150_000.0, False),  # suspended: a charging-state change, not a rate
    (50_000.0, 0.0, False),  # resumed: likewise
])
def test_a_rate_change_counts_when_beyond_the_significance(rate: float, reported: float,
                                                           expected: bool) -> None:
    assert rate_changed(rate, reported, 0.10) is expected


def test_a_slow_drift_reports_once_per_significant_move_not_per_step() -> None:
    """Compared with the last reported rate: 1 % steps down from 150 kW report at every
    move beyond 10 % of what was last reported, not at every step."""
    reported = 150_000.0
    sent = []
    for step in range(1, 40):
        rate = 150_000.0 * (1 - 0.01 * step)
        if rate_changed(rate, reported, 0.10):
            sent.append(round(rate))
            reported = rate
    assert sent == [133_500, 120_000, 106_500, 94_500]


def rate_events(csms: CsmsServer, sid: str, tid: str) -> list[dict[str, Any]]:
    return [m.payload for m in csms.of(sid, "TransactionEvent")
            if m.payload["transactionInfo"]["transactionId"] == tid
            and m.payload["triggerReason"] == "ChargingRateChanged"]


def offered(event: dict[str, Any]) -> float:
    (mv,) = event["meterValue"]
    (sv,) = [v for v in mv["sampledValue"] if v["measurand"] == "Power.Offered"]
    assert sv["unitOfMeasure"] == {"unit": "W"} and sv["context"] == "Other"
    return float(sv["value"])


async def test_a_profile_that_moves_the_rate_is_reported_once_per_significant_move(
        gateway_factory, csms: CsmsServer, sim: SimulatorThread) -> None:
    gw = await gateway_factory(1, ocpp="2.0.1")
    (sid,) = await booted(gw, csms)
    ep = gw.endpoints[sid]
    st = gw.stations[sid]
    tid = await start_tx(csms, sid, 1)
    await until(lambda: sim.written.setpoint_w == 150_000, 20)
    tx = st.transactions[1]
    # The first rate the watch sees is the baseline: a start is no rate change.
    await until(lambda: tx.facts.rate_reported_w == 150_000.0, 20)
    assert rate_events(csms, sid, tid) == []

    # A TxProfile at 50 kW: one Updated event with the new rate.
    after = csms.last_seq()
    await accepted(csms, sid, 1, profile(1, 50_000.0, purpose="TxProfile", transactionId=tid))
    m = await csms.wait_for(sid, "TransactionEvent",
                            lambda p: p["triggerReason"] == "ChargingRateChanged",
                            after=after, timeout=20)
    assert m.payload["eventType"] == "Updated"
    assert offered(m.payload) == 50_000.0

    # 47 kW is 6 % below the rate last reported: inside the band, nothing is sent. One pass of
    # the real check on the state the watch reads decides it, whenever the watch itself runs.
    await accepted(csms, sid, 1, profile(1, 47_000.0, purpose="TxProfile", transactionId=tid))
    await until(lambda: st.view.allocation(st.meter_id(1)) == 47_000.0, 20)
    await smart_charging.check_rates(ep.ctx)
    assert tx.facts.rate_reported_w == 50_000.0
    assert [offered(e) for e in rate_events(csms, sid, tid)] == [50_000.0]

    # 20 kW: beyond the band measured from 50 kW (the last report, not 47 kW).
    after = csms.last_seq()
    await accepted(csms, sid, 1, profile(1, 20_000.0, purpose="TxProfile", transactionId=tid))
    await csms.wait_for(sid, "TransactionEvent",
                        lambda p: p["triggerReason"] == "ChargingRateChanged",
                        after=after, timeout=20)
    assert [offered(e) for e in rate_events(csms, sid, tid)] == [50_000.0, 20_000.0]
    await until(lambda: sim.written.setpoint_w == 20_000, 20)

    # Its seqNo continues the transaction's: every event once, in order, no gap.
    assert await csms.call(sid, "RequestStopTransaction", {"transactionId": tid}) == {
        "status": "Accepted"}
    await csms.wait_for(sid, "TransactionEvent", lambda p: p["eventType"] == "Ended",
                        timeout=20)
    seen: set[str] = set()
    seqs = []
    for msg in csms.of(sid, "TransactionEvent"):
        if msg.payload["transactionInfo"]["transactionId"] == tid and msg.unique_id not in seen:
            seen.add(msg.unique_id)
            seqs.append(msg.payload["seqNo"])
    assert seqs == list(range(len(seqs)))


async def test_a_lower_significance_reports_a_smaller_move(
        gateway_factory, csms: CsmsServer, sim: SimulatorThread) -> None:
    """SmartChargingCtrlr.LimitChangeSignificance set by the CSMS decides the band."""
    gw = await gateway_factory(1, ocpp="2.0.1")
    (sid,) = await booted(gw, csms)
    r = await csms.call(sid, "SetVariables", {"setVariableData": [{
        "component": {"name": "SmartChargingCtrlr"},
        "variable": {"name": "LimitChangeSignificance"}, "attributeValue": "2"}]})
    assert r["setVariableResult"][0]["attributeStatus"] == "Accepted"
    st = gw.stations[sid]
    tid = await start_tx(csms, sid, 2)
    await until(lambda: st.transactions[2].facts.rate_reported_w == 150_000.0, 20)
    after = csms.last_seq()
    # 5 % down: beyond 2 %.
    await accepted(csms, sid, 2, profile(1, 142_500.0, purpose="TxProfile", transactionId=tid))
    m = await csms.wait_for(sid, "TransactionEvent",
                            lambda p: p["triggerReason"] == "ChargingRateChanged",
                            after=after, timeout=20)
    assert offered(m.payload) == 142_500.0
