"""TxCtrlr.TxBeforeAcceptedEnabled (B02/B03) end to end: the demo CSMS answers the boot Pending;
a local start (the station API, as a card reader would call it) is refused while the setting is
false and begins while it is true, its TransactionEvents queued and delivered in order once the
boot is Accepted. RequestStartTransaction stays refused while Pending either way."""

from __future__ import annotations

from typing import Any

from waiting import until

from bess_gateway.demo.csms import CsmsServer
from bess_gateway.ocpp.v201 import transactions
from bess_gateway.sim.server import SimulatorThread
from tests.conftest import GatewayFactory

SID = "DEMO-01"
TOKEN = {"idToken": "LOCAL-CARD-7", "type": "ISO14443"}


async def set_tx_ctrlr(csms: CsmsServer, **values: str) -> None:
    r = await csms.call(SID, "SetVariables", {"setVariableData": [
        {"component": {"name": component}, "variable": {"name": name}, "attributeValue": v}
        for key, v in values.items() for component, name in [key.split("_")]]})
    assert all(x["attributeStatus"] == "Accepted" for x in r["setVariableResult"]), r


def events(csms: CsmsServer) -> list[dict[str, Any]]:
    return [m.payload for m in csms.of(SID, "TransactionEvent")]


async def test_local_start_while_pending_follows_tx_before_accepted_enabled(
        gateway_factory: GatewayFactory, csms: CsmsServer, sim: SimulatorThread) -> None:
    csms.policy.boot_status = "Pending"
    csms.policy.heartbeat_interval = 1  # the boot retry interval while Pending
    gw = await gateway_factory(1, ocpp="2.0.1")
    ep = gw.endpoints[SID]
    ctx, st = ep.ctx, gw.stations[SID]
    await until(lambda: ctx.registration == "Pending", 20)
    # While Pending the CSMS may configure the station: an unknown card may start offline, so
    # only TxBeforeAcceptedEnabled decides below.
    await set_tx_ctrlr(csms, AuthCtrlr_OfflineTxForUnknownIdEnabled="true")
    assert st.settings.bool("tx_before_accepted_enabled") is False  # the default

    # false: the local start is refused and nothing is journaled.
    st.prepare(1)
    assert await transactions.start_session(ctx, 1, TOKEN, None) is None
    assert 1 not in st.transactions and 1 not in st.preparing
    assert gw.journal is not None
    assert gw.journal.outbox.queued_payloads(SID, "TransactionEvent") == []
    # A remote start is refused while Pending, whatever the setting (B02: not accepted yet).
    r = await csms.call(SID, "RequestStartTransaction",
                        {"idToken": TOKEN, "remoteStartId": 1, "evseId": 2})
    assert r == {"status": "Rejected"}

    # true: the start begins at once; its events wait in the outbox.
    await set_tx_ctrlr(csms, TxCtrlr_TxBeforeAcceptedEnabled="true")
    st.prepare(1)
    tx = await transactions.start_session(ctx, 1, TOKEN, None)
    assert tx is not None and st.transactions.get(1) is tx
    await until(lambda: sim.written.setpoint_w > 0, 15)  # real power flows while Pending
    # Periodic Updated events (TxUpdatedInterval 1 s) queue behind the Started one.
    journal = gw.journal
    await until(lambda: len(journal.outbox.queued_payloads(SID, "TransactionEvent")) >= 3, 20)
    assert ctx.registration == "Pending" and not ctx.accepted
    assert not events(csms)
    assert {m.action for m in csms.received if m.station == SID} <= {
        "BootNotification", "NotifyReport"}

    csms.policy.boot_status = "Accepted"
    csms.policy.heartbeat_interval = 60
    await until(lambda: ctx.accepted, 20)
    accepted_boot = csms.of(SID, "BootNotification")[-1].seq
    tid = transactions.transaction_id(tx.local_id)
    await until(lambda: len(events(csms)) >= 3, 20)
    received = [m for m in csms.of(SID, "TransactionEvent")]
    # Nothing of the transaction reached the CSMS before the boot was Accepted...
    assert all(m.seq > accepted_boot for m in received)
    # ... and then all of it, in order: Started first, seqNo without gap.
    evs = [m.payload for m in received]
    assert all(e["transactionInfo"]["transactionId"] == tid for e in evs)
    assert evs[0]["eventType"] == "Started" and evs[0]["idToken"] == TOKEN
    assert [e["seqNo"] for e in evs] == list(range(len(evs)))
    assert all(e["eventType"] == "Updated" for e in evs[1:])
