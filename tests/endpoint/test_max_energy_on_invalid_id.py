"""MaxEnergyOnInvalidId for both versions (one rule in sessions.id_invalidated and the station):
the demo CSMS answers the start with a Blocked idTag/idToken, StopTransactionOnInvalidId /
StopTxOnInvalidId is false, so the session keeps delivering until its allowance (counted from its
start, on the connector's real meter) is used up, then it is held at 0 W: SuspendedEVSE, the
transaction stays open until the CSMS ends it. The simulator moves the real power."""

from __future__ import annotations

from typing import Any

import pytest
from waiting import until

from bess_gateway.demo.csms import CsmsServer
from bess_gateway.gateway import Gateway
from bess_gateway.sim.server import SimulatorThread
from tests.conftest import GatewayFactory

SID = "DEMO-01"
TAG = "STOLEN-01"
ALLOWANCE_WH = 5


async def configure(csms: CsmsServer, ocpp: str, stop: bool, allowance: int) -> None:
    """Through the CSMS, in each version's terms (1.6 keys, 2.0.1 TxCtrlr variables)."""
    if ocpp == "1.6":
        for key, value in (("StopTransactionOnInvalidId", str(stop).lower()),
                           ("MaxEnergyOnInvalidId", str(allowance))):
            r = await csms.call(SID, "ChangeConfiguration", {"key": key, "value": value})
            assert r == {"status": "Accepted"}, key
        return
    r = await csms.call(SID, "SetVariables", {"setVariableData": [
        {"component": {"name": "TxCtrlr"}, "variable": {"name": name}, "attributeValue": value}
        for name, value in (("StopTxOnInvalidId", str(stop).lower()),
                            ("MaxEnergyOnInvalidId", str(allowance)))]})
    assert [x["attributeStatus"] for x in r["setVariableResult"]] == ["Accepted", "Accepted"]


async def remote_start(csms: CsmsServer, ocpp: str) -> None:
    if ocpp == "1.6":
        r = await csms.call(SID, "RemoteStartTransaction", {"idTag": TAG, "connectorId": 1})
    else:
        r = await csms.call(SID, "RequestStartTransaction", {
            "idToken": {"idToken": TAG, "type": "ISO14443"}, "remoteStartId": 3, "evseId": 1})
    assert r == {"status": "Accepted"}


async def booted(gw: Gateway, csms: CsmsServer) -> None:
    await csms.wait_for(SID, "BootNotification", timeout=20)
    await until(lambda: gw.endpoints[SID].ctx.online, 20)


def ended(csms: CsmsServer, ocpp: str) -> list[dict[str, Any]]:
    if ocpp == "1.6":
        return [m.payload for m in csms.of(SID, "StopTransaction")]
    return [m.payload for m in csms.of(SID, "TransactionEvent")
            if m.payload["eventType"] == "Ended"]


@pytest.mark.parametrize("ocpp", ["1.6", "2.0.1"])
async def test_invalid_id_delivers_its_allowance_then_suspends(
        ocpp: str, gateway_factory: GatewayFactory, csms: CsmsServer,
        sim: SimulatorThread) -> None:
    gw = await gateway_factory(1, ocpp=ocpp)
    await booted(gw, csms)
    st = gw.stations[SID]
    assert gw.core is not None
    await configure(csms, ocpp, stop=False, allowance=ALLOWANCE_WH)
    csms.policy.blocked_id_tags = {TAG}
    after = csms.last_seq()
    await remote_start(csms, ocpp)
    tx = await until(lambda: st.transactions.get(1), 15)
    # The CSMS's verdict arrived (the start's answer) and set the allowance from the start.
    await until(lambda: tx.facts.energy_cap_wh is not None, 15)
    assert tx.facts.energy_cap_wh == tx.meter_start_wh + ALLOWANCE_WH
    # Real power flows until the connector's meter has counted the allowance...
    await until(lambda: tx.facts.energy_limited, 60)
    meter_id = st.meter_id(1)
    assert gw.core.meter(meter_id)["energy_wh"] - tx.meter_start_wh >= ALLOWANCE_WH
    # ... then the session is held at 0 W and the PCS is told so; it stays open.
    await until(lambda: gw.core is not None and gw.core.meter(meter_id)["allocated_w"] == 0, 15)
    await until(lambda: sim.written.setpoint_w == 0, 15)
    assert st.transactions.get(1) is tx
    if ocpp == "1.6":
        await csms.wait_for(SID, "StatusNotification",
                            lambda p: p["connectorId"] == 1 and p["status"] == "SuspendedEVSE",
                            after=after, timeout=15)
    else:
        upd = await csms.wait_for(
            SID, "TransactionEvent",
            lambda p: p["eventType"] == "Updated"
            and p["transactionInfo"].get("chargingState") == "SuspendedEVSE",
            after=after, timeout=15)
        assert upd.payload["triggerReason"] == "ChargingStateChanged"
    assert ended(csms, ocpp) == []
    # No more energy flows to the suspended session: its register stops moving. Once the PCS
    # has ramped down, that is: the meter's power_w is its share of the allocation, 0 from the
    # suspension on, while the ramp-down's tail (~10 Wh from 150 kW) still counts as its energy.
    await until(lambda: abs(sim.state.measured_w) < 1.0, 15)
    await csms.call(SID, "TriggerMessage", {"requestedMessage": "Heartbeat"})  # a round trip
    held_at = gw.core.meter(meter_id)["energy_wh"]  # read after the last of the tail
    await csms.call(SID, "TriggerMessage", {"requestedMessage": "Heartbeat"})  # a round trip
    assert gw.core.meter(meter_id)["energy_wh"] == pytest.approx(held_at, abs=1.0)
    # The CSMS ends it as usual.
    if ocpp == "1.6":
        assert tx.transaction_id is not None
        r = await csms.call(SID, "RemoteStopTransaction",
                            {"transactionId": int(tx.transaction_id)})
    else:
        r = await csms.call(SID, "RequestStopTransaction",
                            {"transactionId": tx.transaction_id})
    assert r == {"status": "Accepted"}
    await until(lambda: 1 not in st.transactions, 15)
    await until(lambda: ended(csms, ocpp), 30)
    reason = (ended(csms, ocpp)[0]["reason"] if ocpp == "1.6"
              else ended(csms, ocpp)[0]["transactionInfo"]["stoppedReason"])
    assert reason == "Remote"


@pytest.mark.parametrize("ocpp", ["1.6", "2.0.1"])
async def test_zero_allowance_suspends_at_once_and_stop_on_invalid_id_still_stops(
        ocpp: str, gateway_factory: GatewayFactory, csms: CsmsServer,
        sim: SimulatorThread) -> None:
    """MaxEnergyOnInvalidId 0 (the default): energy transfer stops as soon as the verdict
    comes. With StopTransactionOnInvalidId true the allowance does not matter: the session
    ends DeAuthorized."""
    gw = await gateway_factory(1, ocpp=ocpp)
    await booted(gw, csms)
    st = gw.stations[SID]
    assert gw.core is not None
    await configure(csms, ocpp, stop=False, allowance=0)
    csms.policy.blocked_id_tags = {TAG}
    await remote_start(csms, ocpp)
    tx = await until(lambda: st.transactions.get(1), 15)
    await until(lambda: tx.facts.energy_limited, 15)
    assert tx.facts.energy_cap_wh == tx.meter_start_wh
    await until(lambda: gw.core is not None
                and gw.core.meter(st.meter_id(1))["allocated_w"] == 0, 15)
    assert st.transactions.get(1) is tx and ended(csms, ocpp) == []

    # StopTransactionOnInvalidId true: the next invalid session ends, allowance or not.
    await configure(csms, ocpp, stop=True, allowance=1000)
    if ocpp == "1.6":
        assert tx.transaction_id is not None
        await csms.call(SID, "RemoteStopTransaction", {"transactionId": int(tx.transaction_id)})
    else:
        await csms.call(SID, "RequestStopTransaction", {"transactionId": tx.transaction_id})
    await until(lambda: 1 not in st.transactions and 1 not in st.preparing, 15)
    await until(lambda: len(ended(csms, ocpp)) == 1, 30)
    await remote_start(csms, ocpp)
    await until(lambda: len(ended(csms, ocpp)) == 2, 30)
    last = ended(csms, ocpp)[-1]
    reason = last["reason"] if ocpp == "1.6" else last["transactionInfo"]["stoppedReason"]
    assert reason == "DeAuthorized"


async def test_a_later_verdict_never_raises_an_allowance(
        gateway_factory: GatewayFactory, csms: CsmsServer, sim: SimulatorThread) -> None:
    """The station's rule itself: an allowance only ever shrinks; none without a session."""
    gw = await gateway_factory(1, ocpp="1.6")
    await booted(gw, csms)
    st = gw.stations[SID]
    assert gw.core is not None
    await remote_start(csms, "1.6")  # the tag is valid: the session runs unlimited
    tx = await until(lambda: st.transactions.get(1), 15)
    await until(lambda: sim.written.setpoint_w > 0, 15)
    assert tx.facts.energy_cap_wh is None
    assert not st.limit_energy(2, 5)  # no session on the charge connector
    assert st.limit_energy(1, 1_000_000)
    assert st.limit_energy(1, 2_000_000)
    assert tx.facts.energy_cap_wh == tx.meter_start_wh + 1_000_000
    assert st.energy_limits_pending() and not tx.facts.energy_limited
    assert st.limit_energy(1, 0)  # used up already: held at once
    assert tx.facts.energy_cap_wh == tx.meter_start_wh and tx.facts.energy_limited
    assert not st.energy_limits_pending()
    await until(lambda: sim.written.setpoint_w == 0, 15)
    # The allowance is journaled with the open transaction (crash recovery sees it).
    assert gw.journal is not None
    rec = next(r for r in gw.journal.transactions.open_transactions(SID)
               if r.local_id == tx.local_id)
    assert rec.data["energy_cap_wh"] == tx.meter_start_wh and rec.data["energy_limited"]
