"""1.6 transactions: remote start/stop, unlock, periodic meter values and the journaled outbox.

Every StartTransaction and StopTransaction is written to the journal's outbox before it is sent,
and the outbox is delivered strictly in order, so a lost link or a crash loses no transaction.
Sampled MeterValues skip the journal while the link is up and the outbox is empty (a sample is
cheap to lose, a journal write per sample is not cheap at 1000 endpoints); they queue otherwise.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from bess_gateway.domain.station import CONNECTORS, StopReason, Transaction
from bess_gateway.domain.timefmt import iso
from bess_gateway.domain.transaction_facts import KeptSamples
from bess_gateway.endpoint import outbox, sessions, settling
from bess_gateway.endpoint.connection_security import notification_refused
from bess_gateway.journal import OutboxItem, Retention, set_meter_stop
from bess_gateway.ocpp.rpc import Reply
from bess_gateway.ocpp.v16 import authorization, smart_charging
from bess_gateway.ocpp.v16.context import Context
from bess_gateway.ocpp.v16.meter import meter_value

log = logging.getLogger("bess_gateway.ocpp.v16")

TX_ACTIONS = ("StartTransaction", "StopTransaction", "MeterValues")
SAMPLED_CONTEXTS = frozenset({"Sample.Periodic", "Sample.Clock"})


def _tx_id(tx: Transaction) -> int | None:
    return None if tx.transaction_id is None else int(tx.transaction_id)


enqueue = sessions.enqueue


# -- starting and stopping -------------------------------------------------------------------
async def start_session(ctx: Context, connector: int, id_tag: str) -> Transaction | None:
    """The part of a start that may talk to the CSMS; runs after RemoteStart was answered."""
    async def authorized() -> bool:
        return not ctx.station.settings.bool("authorize_remote_tx") or \
            await authorization.authorized(ctx, id_tag)

    def queue_start(tx: Transaction) -> None:
        payload = {
            "connectorId": connector,
            "idTag": id_tag,
            "meterStart": tx.meter_start_wh,
            "timestamp": iso(tx.started_at),
        }
        if tx.facts.reservation_id is not None:
            payload["reservationId"] = tx.facts.reservation_id
        enqueue(ctx, "StartTransaction", payload, tx)

    return await sessions.start(ctx, connector, id_tag, authorized=authorized,
                                queue_start=queue_start)


def stop_session(ctx: Context, connector: int, reason: StopReason) -> Transaction | None:
    """Power off the connector's session and queue its StopTransaction (journal first)."""
    st = ctx.station

    def queue_stop(tx: Transaction) -> None:
        assert tx.meter_stop_wh is not None and tx.stopped_at is not None
        assert tx.end_sample is not None
        sample = tx.end_sample
        measurands = st.settings.items("stop_txn_sampled_data")
        payload: dict[str, Any] = {
            "transactionId": _tx_id(tx),
            "meterStop": tx.meter_stop_wh,
            "timestamp": iso(tx.stopped_at),
            "reason": str(reason),
        }
        end = [meter_value(sample, measurands, "Transaction.End")] if measurands else []
        kept = stop_values(ctx, tx.facts.kept, tx.connector, payload, end)
        if kept or end:
            payload["transactionData"] = kept + end
        enqueue(ctx, "StopTransaction", payload, tx)
        # meterStop becomes final once the ramp-down has been counted.
        ctx.services.settling.track(tx)

    return sessions.stop(ctx, connector, reason, queue_stop)


def stop_values(ctx: Context, store: KeptSamples, connector: int, payload: dict[str, Any],
                end: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The kept samples (StopTxnIntermediateData) as transactionData, before `end`."""
    return sessions.kept_meter_values(
        ctx, store, connector, meter_value,
        lambda kept: len(orjson.dumps({**payload, "transactionData": kept + end})))


def _interval(ctx: Context, name: str) -> int:
    """A keeping interval: the spec's MeterValueSampleInterval / ClockAlignedDataInterval, when
    StopTxnIntermediateData is on."""
    s = ctx.station.settings
    return s.int(name) if s.bool("stop_txn_intermediate_data") else 0


async def keep_stop_values(ctx: Context) -> None:
    """Keep each session's samples for its StopTransaction.transactionData."""
    await sessions.keep_loop(ctx, lambda: _interval(ctx, "meter_sample_interval_s"),
                             lambda: _interval(ctx, "clock_aligned_interval_s"))


# -- CSMS -> CP handlers ---------------------------------------------------------------------
def handlers(ctx: Context) -> dict[str, Any]:
    st = ctx.station

    async def remote_start(p: dict[str, Any]) -> Any:
        id_tag = p["idTag"]
        connector = p.get("connectorId")
        if connector is None:
            connector = st.pick_connector(id_tag)
        if not ctx.accepted or connector is None or st.refusal(connector, id_tag) is not None:
            return {"status": "Rejected"}
        profile = p.get("chargingProfile")
        # Its TxProfile is installed for the session about to start, so the session's first
        # cycle already runs under it; a profile we cannot take refuses the start.
        if profile is not None and not smart_charging.accept_start_profile(ctx, connector,
                                                                           profile):
            return {"status": "Rejected"}
        sessions.prepare(ctx, connector)

        async def after() -> None:
            tx = await start_session(ctx, connector, id_tag)
            if tx is None and profile is not None:
                smart_charging.start_failed(ctx, connector)

        def unsent() -> None:  # the CSMS never heard Accepted: no start follows
            st.unprepare(connector)
            if profile is not None:
                smart_charging.start_failed(ctx, connector)

        return Reply({"status": "Accepted"}, after, unsent)

    async def remote_stop(p: dict[str, Any]) -> Any:
        tx = st.find(str(p["transactionId"]))
        if tx is None:
            return {"status": "Rejected"}
        connector = tx.connector
        stop_session(ctx, connector, StopReason.REMOTE)
        return {"status": "Accepted"}

    async def unlock(p: dict[str, Any]) -> Any:
        connector = p["connectorId"]
        if not st.valid_connector(connector):
            return {"status": "NotSupported"}
        # No physical lock on a virtual connector: unlocking means the session ends here.
        if connector in st.transactions:
            stop_session(ctx, connector, StopReason.UNLOCK_COMMAND)
        return {"status": "Unlocked"}

    return {
        "RemoteStartTransaction": remote_start,
        "RemoteStopTransaction": remote_stop,
        "UnlockConnector": unlock,
    }


# -- periodic work ---------------------------------------------------------------------------
async def send_meter_values(ctx: Context, connector: int, context: str,
                            measurands_setting: str = "meter_values_sampled_data") -> None:
    """MeterValues for one connector now; transaction-bound when a session runs there."""
    st = ctx.station
    tx = st.transactions.get(connector)
    sample = st.sample(connector)
    payload: dict[str, Any] = {
        "connectorId": connector,
        "meterValue": [meter_value(sample, st.settings.items(measurands_setting), context)],
    }
    if tx is None:
        await ctx.call("MeterValues", payload)
        return
    payload["transactionId"] = _tx_id(tx)
    # Without the CSMS's transaction id yet, it queues behind its StartTransaction (the id is
    # written into it when the StartTransaction is answered:
    # journal.transactions.patch_transaction_id).
    # Periodic and clock-aligned samples may be thinned when the queue is over its disk budget.
    retention = Retention.THIN if context in SAMPLED_CONTEXTS else Retention.ALWAYS
    await sessions.send_or_queue(ctx, "MeterValues", payload, tx,
                                 direct=tx.transaction_id is not None, retention=retention)


async def sampler(ctx: Context) -> None:
    """Sampled MeterValues every MeterValueSampleInterval for each running session."""

    async def send(tx: Transaction) -> None:
        await send_meter_values(ctx, tx.connector, "Sample.Periodic")

    await sessions.sample_loop(
        ctx, lambda: ctx.station.settings.int("meter_sample_interval_s"), send)


async def aligned(ctx: Context) -> None:
    """Clock-aligned MeterValues (ClockAlignedDataInterval, MeterValuesAlignedData) for every
    connector, with its transaction id when a session runs there."""

    async def send() -> None:
        if not ctx.station.settings.items("meter_values_aligned_data"):
            return
        for connector in CONNECTORS:
            await send_meter_values(ctx, connector, "Sample.Clock", "meter_values_aligned_data")

    await sessions.aligned_loop(ctx, send)


def _prepare(ctx: Context, item: OutboxItem) -> dict[str, Any] | None:
    payload = dict(item.payload)
    # Only transaction messages carry the key; other queued messages (security events) don't.
    if (item.action != "StartTransaction" and "transactionId" in payload
            and payload["transactionId"] is None):
        # No id and not abandoned (outbox/sessions.abandon handle a given-up start): a queue
        # from a version that dropped starts without marking their transactions.
        log.error("%s: dropping %s of a transaction the CSMS never acknowledged",
                  ctx.endpoint_id, item.action)
        return None
    return payload


def _answered(ctx: Context, item: OutboxItem, payload: dict[str, Any],
              resp: dict[str, Any]) -> None:
    ctx.services.settling.delivered(item)
    if item.action == "StartTransaction":
        if isinstance(payload.get("idTag"), str):
            authorization.remember(ctx, ctx.journal.hash_id_tag(payload["idTag"]),
                                   resp.get("idTagInfo"))
        _started(ctx, item.local_tx_id, resp)


def _meter_stop(payload: dict[str, Any]) -> int | None:
    value = payload.get("meterStop")
    return None if value is None else int(value)


# meterStop and the Transaction.End register become final once the ramp-down has been counted
# (the endpoint gives this to its Settling).
STOP_FORMAT = settling.StopFormat(
    "StopTransaction", is_stop=lambda p: "meterStop" in p, register=_meter_stop,
    set_register=set_meter_stop)

ID_TAG_STATUSES = frozenset({"Accepted", "Blocked", "Expired", "Invalid", "ConcurrentTx"})


def _salvage(item: OutboxItem, answer: Any) -> dict[str, Any] | None:
    """An off-schema answer: the CSMS got the message. Only a StartTransaction.conf must give
    something back, the transaction id: without a usable one it is a failed attempt; with one,
    its idTagInfo is kept only if readable (else there is no verdict on the idTag)."""
    if item.action != "StartTransaction":
        return {}
    if not isinstance(answer, dict):
        return None
    tx_id = answer.get("transactionId")
    if not isinstance(tx_id, int) or isinstance(tx_id, bool):
        return None
    info = answer.get("idTagInfo")
    if isinstance(info, dict) and info.get("status") in ID_TAG_STATUSES:
        return {"transactionId": tx_id, "idTagInfo": info}
    return {"transactionId": tx_id}


def _started_facts(item: OutboxItem) -> tuple[int | None, int | None]:
    connector, meter_start = item.payload.get("connectorId"), item.payload.get("meterStart")
    return (None if connector is None else int(connector),
            None if meter_start is None else int(meter_start))


POLICY = outbox.Policy(tx_actions=frozenset(TX_ACTIONS), prepare=_prepare, answered=_answered,
                       hold=lambda ctx, item: ctx.services.settling.hold(item),
                       refused=notification_refused,
                       is_start=lambda item: item.action == "StartTransaction",
                       started=_started_facts,
                       stop=lambda ctx, connector: stop_session(ctx, connector, StopReason.OTHER),
                       salvage=_salvage)


def _started(ctx: Context, local_id: str | None, resp: dict[str, Any]) -> None:
    """StartTransaction.conf: learn the CSMS's transaction id and honour its verdict."""
    tx_id = int(resp["transactionId"])
    if local_id is not None:
        ctx.journal.transactions.patch_transaction_id(ctx.endpoint_id, local_id, tx_id)
    st = ctx.station
    tx = next((t for t in st.transactions.values() if t.local_id == local_id), None)
    if tx is None:
        return  # already stopped; its queued StopTransaction got the id from the patch above
    tx.transaction_id = str(tx_id)
    st.record(tx)
    info = resp.get("idTagInfo")
    if not isinstance(info, dict):
        return  # an off-schema answer whose idTagInfo was unreadable: no verdict (_salvage)
    status = info.get("status")
    if status != "Accepted":
        log.info("%s: %s %s by the CSMS", ctx.endpoint_id,
                 authorization.tag_ref(tx.id_tag_hash), status)
        sessions.id_invalidated(
            ctx, tx, lambda: stop_session(ctx, tx.connector, StopReason.DEAUTHORIZED))
