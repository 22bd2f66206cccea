"""1.6 has no TxBeforeAcceptedEnabled (4.2.1 leaves starts before acceptance to the operator):
the shared setting is offered as a vendor key of that name, default false. While the boot is
Pending a local start (the station API) is refused unless it is true; then StartTransaction and
the session's MeterValues are delivered in order once the boot is Accepted."""

from __future__ import annotations

from waiting import until

from bess_gateway.demo.csms import CsmsServer
from bess_gateway.ocpp.v16 import transactions
from bess_gateway.sim.server import SimulatorThread
from tests.conftest import GatewayFactory

SID = "DEMO-01"
TAG = "LOCAL-CARD-16"


async def test_local_start_while_pending_follows_the_vendor_key(
        gateway_factory: GatewayFactory, csms: CsmsServer, sim: SimulatorThread) -> None:
    csms.policy.boot_status = "Pending"
    csms.policy.heartbeat_interval = 1
    gw = await gateway_factory(1, ocpp="1.6")
    ctx, st = gw.endpoints[SID].ctx, gw.stations[SID]
    await until(lambda: ctx.registration == "Pending", 20)
    r = await csms.call(SID, "ChangeConfiguration",
                        {"key": "AllowOfflineTxForUnknownId", "value": "true"})
    assert r == {"status": "Accepted"}
    got = await csms.call(SID, "GetConfiguration", {"key": ["TxBeforeAcceptedEnabled"]})
    assert got["configurationKey"] == [
        {"key": "TxBeforeAcceptedEnabled", "readonly": False, "value": "false"}]

    st.prepare(1)
    assert await transactions.start_session(ctx, 1, TAG) is None
    assert 1 not in st.transactions and 1 not in st.preparing

    r = await csms.call(SID, "ChangeConfiguration",
                        {"key": "TxBeforeAcceptedEnabled", "value": "true"})
    assert r == {"status": "Accepted"}
    st.prepare(1)
    tx = await transactions.start_session(ctx, 1, TAG)
    assert tx is not None
    journal = gw.journal
    assert journal is not None
    await until(lambda: len(journal.outbox.queued_payloads(SID, "MeterValues")) >= 1, 20)
    assert not csms.of(SID, "StartTransaction")

    csms.policy.boot_status = "Accepted"
    csms.policy.heartbeat_interval = 60
    await until(lambda: ctx.accepted, 20)
    accepted_boot = csms.of(SID, "BootNotification")[-1].seq
    start = await csms.wait_for(SID, "StartTransaction", timeout=20)
    assert start.seq > accepted_boot and start.payload["idTag"] == TAG
    mv = await csms.wait_for(SID, "MeterValues", lambda p: "transactionId" in p, timeout=20)
    assert mv.seq > start.seq
    await until(lambda: tx.transaction_id is not None, 15)
    assert mv.payload["transactionId"] == int(tx.transaction_id)
