"""2.0.1 E Transactions: the domain's sessions as TransactionEvent Started / Updated / Ended.

The sequencing (authorize, durable record and queued start in one commit before power, power off
then queued end) is ``bess_gateway.endpoint.sessions``, shared with 1.6; this module only says what
2.0.1
sends.

- transactionId: the session's random local id as a UUID (uuid4: no sequence that leaks usage);
  known before the CSMS hears of it, so RequestStop, GetTransactionStatus and recovery use it.
- seqNo: per transaction from 0, kept in the transaction's journal record (its ``data``), written
  in the same commit as the event that used it, so a restart continues it without gap or repeat.
- offline: set on every event generated while no accepted connection exists.
- Ended carries the register at the stop and is held in the outbox until the ramp-down after
  it has been metered to the session (bess_gateway.endpoint.settling, shared with 1.6), which then
  writes
  the final register into its Transaction.End energy sampledValue.
- Started and Ended are always journaled first (outbox, delivered in order with
  MessageAttempts/MessageAttemptInterval = the 1.6 TransactionMessageAttempts/RetryInterval
  settings); periodic and clock-aligned Updated go out directly while the link is up and nothing
  is queued, and queue otherwise (they are generated offline too: the sampler runs without a link).
- TxStartPoint / TxStopPoint (TxCtrlr) for a virtual connector (docs/ocpp201.md): Authorized and
  PowerPathClosed are the same instant here (the session is authorized, then the core gets the
  session at once; there is no cable); EnergyTransfer is the first measured power. As a stop
  point, EnergyTransfer also ends the transaction when the session is suspended (no power).
"""

from __future__ import annotations

import logging
import math
import uuid
from typing import Any

import orjson

from bess_gateway.domain.station import (
    DISCHARGE_CONNECTOR,
    ConnectorStatus,
    MeterSample,
    StopReason,
    Transaction,
)
from bess_gateway.domain.timefmt import iso
from bess_gateway.domain.transaction_facts import KeptSamples, TxFacts
from bess_gateway.endpoint import outbox, sessions, settling
from bess_gateway.endpoint.link import Context
from bess_gateway.journal import OutboxItem, Retention, TxRecord
from bess_gateway.ocpp.framing import new_unique_id
from bess_gateway.ocpp.rpc import Reply
from bess_gateway.ocpp.v201 import authorization, metering
from bess_gateway.ocpp.v201.status import CONNECTOR_ID, V21_CONNECTOR, evse_of

log = logging.getLogger("bess_gateway.ocpp.v201")

TX_ACTIONS = frozenset({"TransactionEvent"})

# Domain stop reason -> (2.0.1 stoppedReason, triggerReason of the Ended event)
ENDED: dict[StopReason, tuple[str, str]] = {
    StopReason.LOCAL: ("Local", "StopAuthorized"),
    StopReason.REMOTE: ("Remote", "RemoteStop"),
    StopReason.DEAUTHORIZED: ("DeAuthorized", "Deauthorized"),
    StopReason.HARD_RESET: ("ImmediateReset", "ResetCommand"),
    StopReason.SOFT_RESET: ("ImmediateReset", "ResetCommand"),
    StopReason.REBOOT: ("Reboot", "AbnormalCondition"),
    StopReason.POWER_LOSS: ("PowerLoss", "AbnormalCondition"),
    StopReason.UNLOCK_COMMAND: ("Other", "UnlockCommand"),
    StopReason.OTHER: ("Other", "AbnormalCondition"),
}
SAMPLED_CONTEXTS = frozenset({"Sample.Periodic", "Sample.Clock"})
CHARGING = "Charging"
SUSPENDED = "SuspendedEVSE"


def transaction_id(local_id: str) -> str:
    """The 2.0.1 transactionId of a session: its uuid4 local id in canonical form (36 chars)."""
    return str(uuid.UUID(hex=local_id))


def _points(ctx: Context, name: str) -> list[str]:
    return ctx.station.settings.items(name) or ["PowerPathClosed"]


def _starts_at_begin(ctx: Context) -> bool:
    return any(p in ("Authorized", "PowerPathClosed") for p in _points(ctx, "tx_start_point"))


def charging_state(ctx: Context, connector: int) -> str:
    """Charging while the core lets the session's power flow, SuspendedEVSE otherwise. On
    2.1's bidirectional EVSE power flowing either way is Charging (energy transfer): the
    discharge leg's allocation counts too."""
    st = ctx.station
    status = st.status(connector).status
    if status == ConnectorStatus.SUSPENDED_EVSE and ctx.version == "2.1" \
            and connector == V21_CONNECTOR:
        leg = st.view.allocation(st.meter_id(DISCHARGE_CONNECTOR))
        if leg is not None and leg > 0.0:
            return CHARGING
    return CHARGING if status == ConnectorStatus.CHARGING else SUSPENDED


# -- events ------------------------------------------------------------------------------------
def _next_seq(tx: Transaction) -> int:
    seq = tx.facts.seq_no
    tx.facts.seq_no = seq + 1
    return seq


def _event(ctx: Context, tx: Transaction, event_type: str, trigger: str, timestamp: str, *,
           meter: dict[str, Any] | None = None, info: dict[str, Any] | None = None,
           **top: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "eventType": event_type,
        "timestamp": timestamp,
        "triggerReason": trigger,
        "seqNo": _next_seq(tx),
        "transactionInfo": {"transactionId": tx.transaction_id, **(info or {})},
    }
    if not ctx.online:
        payload["offline"] = True
    if meter is not None and metering.has_values(meter):
        payload["meterValue"] = [meter]
    payload.update(top)
    return payload


def _queue_started(ctx: Context, tx: Transaction, trigger: str) -> None:
    """Journal the Started event (and the seqNo it used, in the same commit)."""
    st = ctx.station
    sample = st.sample(tx.connector)
    # At the start point power is (about to be) flowing: at begin the core has not even been
    # given the session yet, so the connector's status cannot tell.
    state = CHARGING
    info: dict[str, Any] = {"chargingState": state}
    if tx.facts.remote_start_id is not None:
        info["remoteStartId"] = tx.facts.remote_start_id
    top: dict[str, Any] = {
        "idToken": {"idToken": tx.id_tag, "type": tx.facts.token_type or "Central"},
        "evse": {"id": evse_of(ctx, tx.connector), "connectorId": CONNECTOR_ID},
    }
    if tx.facts.reservation_id is not None:
        top["reservationId"] = tx.facts.reservation_id
    meter = metering.evse_meter_value(ctx, sample, st.settings.items("tx_started_measurands"),
                                 "Transaction.Begin")
    # At begin: the session's start; a deferred start (EnergyTransfer): the sample that saw power.
    at = tx.started_at if tx.facts.is_started else sample.timestamp
    payload = _event(ctx, tx, "Started", trigger, iso(at), meter=meter, info=info, **top)
    tx.facts.started = True
    tx.facts.charging_state = state
    with ctx.journal.atomic():
        sessions.enqueue(ctx, "TransactionEvent", payload, tx)
        st.record(tx)


async def start_session(ctx: Context, connector: int, id_token: dict[str, Any],
                        remote_start_id: int | None = None) -> Transaction | None:
    """The part of a start that may talk to the CSMS; runs after RequestStart was answered."""

    async def authorized() -> bool:
        return await authorization.authorize_start(ctx, id_token)

    def queue_start(tx: Transaction) -> None:
        tx.transaction_id = transaction_id(tx.local_id)
        tx.facts.token_type = str(id_token.get("type", "Central"))
        if remote_start_id is not None:
            tx.facts.remote_start_id = remote_start_id
        if _starts_at_begin(ctx):
            _queue_started(ctx, tx, "RemoteStart")
        else:
            # TxStartPoint EnergyTransfer: the transaction starts at the first measured power.
            tx.facts.started = False
            ctx.station.record(tx)

    return await sessions.start(ctx, connector, str(id_token["idToken"]), authorized=authorized,
                                queue_start=queue_start)


def stop_session(ctx: Context, connector: int, reason: StopReason,
                 trigger: str | None = None) -> Transaction | None:
    """Power off the connector's session and queue its Ended event (journal first)."""
    st = ctx.station

    def queue_stop(tx: Transaction) -> None:
        if not tx.facts.is_started:
            return  # it never reached TxStartPoint: the CSMS knows of no transaction to end
        assert tx.end_sample is not None and tx.stopped_at is not None
        stopped, default_trigger = ENDED.get(reason, ("Other", "AbnormalCondition"))
        meter = metering.evse_meter_value(ctx, tx.end_sample,
                                          st.settings.items("stop_txn_sampled_data"),
                                          "Transaction.End")
        payload = _event(ctx, tx, "Ended", trigger or default_trigger, iso(tx.stopped_at),
                         meter=meter, info={"stoppedReason": stopped, "chargingState": "Idle"})
        _add_kept(ctx, tx.facts.kept, tx.connector, payload)
        sessions.enqueue(ctx, "TransactionEvent", payload, tx)
        # Its register becomes final once the ramp-down has been counted.
        ctx.services.settling.track(tx)

    return sessions.stop(ctx, connector, reason, queue_stop)


async def send_updated(ctx: Context, tx: Transaction, trigger: str, *,
                       context: str | None = None, measurands: list[str] | None = None,
                       info: dict[str, Any] | None = None,
                       extra_values: list[dict[str, Any]] | None = None) -> None:
    """An Updated event now (meter values of `context` when given, then `extra_values`:
    sampledValues the sample does not hold); direct or queued."""
    st = ctx.station
    if st.transactions.get(tx.connector) is not tx or not tx.facts.is_started:
        return
    sample = st.sample(tx.connector)
    meter = None
    if context is not None:
        meter = metering.evse_meter_value(ctx, sample, measurands or [], context)
        meter["sampledValue"].extend(extra_values or [])
    payload = _event(ctx, tx, "Updated", trigger, iso(sample.timestamp), meter=meter, info=info)
    st.record(tx)  # the seqNo it used; committed before the event leaves (rpc before_send)
    # Over the outbox's disk budget, queued periodic/aligned values may be thinned (the
    # CSMS sees a seqNo gap); Started, Ended and state changes never are.
    retention = Retention.THIN if context in SAMPLED_CONTEXTS else Retention.ALWAYS
    await sessions.send_or_queue(ctx, "TransactionEvent", payload, tx, retention=retention)


async def _watch_states(ctx: Context) -> None:
    """Per wake: deferred starts (TxStartPoint EnergyTransfer) and ChargingStateChanged."""
    st = ctx.station
    for tx in list(st.transactions.values()):
        if st.transactions.get(tx.connector) is not tx:
            continue
        if not tx.facts.is_started:
            if st.sample(tx.connector).power_w > 0:
                _queue_started(ctx, tx, "ChargingStateChanged")
            continue
        state = charging_state(ctx, tx.connector)
        if state == tx.facts.charging_state:
            continue
        tx.facts.charging_state = state
        if state == SUSPENDED and "EnergyTransfer" in _points(ctx, "tx_stop_point"):
            stop_session(ctx, tx.connector, StopReason.OTHER, "ChargingStateChanged")
            continue
        await send_updated(ctx, tx, "ChargingStateChanged", info={"chargingState": state})


async def sampler(ctx: Context) -> None:
    """Sample.Periodic Updated events every TxUpdatedInterval (the 1.6 MeterValueSampleInterval
    setting) with TxUpdatedMeasurands, and charging-state changes. Runs with or without a link."""
    settings = ctx.station.settings

    async def send(tx: Transaction) -> None:
        await send_updated(ctx, tx, "MeterValuePeriodic", context="Sample.Periodic",
                           measurands=settings.items("meter_values_sampled_data"))

    await sessions.sample_loop(ctx, lambda: settings.int("meter_sample_interval_s"), send,
                               each_turn=lambda: _watch_states(ctx))


async def aligned(ctx: Context) -> None:
    """Clock-aligned values (AlignedDataCtrlr.Interval/Measurands): an Updated event per
    session, MeterValues for idle EVSEs with SendDuringIdle."""
    st = ctx.station

    async def send() -> None:
        measurands = st.settings.items("meter_values_aligned_data")
        if not measurands:
            return
        for tx in list(st.transactions.values()):
            await send_updated(ctx, tx, "MeterValueClock", context="Sample.Clock",
                               measurands=measurands)
        await metering.send_idle_aligned(ctx)

    await sessions.aligned_loop(ctx, send)


def _add_kept(ctx: Context, store: KeptSamples, connector: int,
              payload: dict[str, Any]) -> None:
    """Put the samples kept for the Ended event (TxEndedInterval) before its Transaction.End
    value."""
    end = payload.get("meterValue", [])

    def size(kept: list[dict[str, Any]]) -> int:
        return len(orjson.dumps({**payload, "meterValue": kept + end}))

    kept = sessions.kept_meter_values(ctx, store, connector, metering.meter_value, size)
    if kept:
        payload["meterValue"] = kept + end


async def keep_ended_values(ctx: Context) -> None:
    """Keep each transaction's samples for its Ended event: every SampledDataCtrlr.
    TxEndedInterval from its start and at AlignedDataCtrlr.TxEndedInterval clock-aligned
    instants (J02), once it has started (TxStartPoint)."""
    settings = ctx.station.settings
    await sessions.keep_loop(ctx, lambda: settings.int("tx_ended_interval_s"),
                             lambda: settings.int("aligned_tx_ended_interval_s"),
                             active=lambda tx: tx.facts.is_started)


# -- delivery ----------------------------------------------------------------------------------
def _prepare(ctx: Context, item: OutboxItem) -> dict[str, Any] | None:
    return dict(item.payload)


def _answered(ctx: Context, item: OutboxItem, payload: dict[str, Any],
              resp: dict[str, Any]) -> None:
    """TransactionEventResponse: cache the idTokenInfo; a token not Accepted ends the session
    or limits its energy (E05: StopTxOnInvalidId, MaxEnergyOnInvalidId; sessions.py)."""
    ctx.services.settling.delivered(item)
    info = resp.get("idTokenInfo")
    token = payload.get("idToken")
    if item.action != "TransactionEvent" or not isinstance(info, dict):
        return
    if isinstance(token, dict):
        authorization.remember(ctx, token, info)
    st = ctx.station
    tx = next((t for t in st.transactions.values() if t.local_id == item.local_tx_id), None)
    if tx is None or info.get("status") == "Accepted":
        return
    log.info("%s: transaction %s: idToken %s by the CSMS", ctx.endpoint_id,
             tx.transaction_id, info.get("status"))
    sessions.id_invalidated(
        ctx, tx, lambda: stop_session(ctx, tx.connector, StopReason.DEAUTHORIZED))


def _end_registers(payload: dict[str, Any],
                   measurand: str | None = None) -> list[dict[str, Any]]:
    """The energy register sampledValues of an Ended event's Transaction.End meter value (of
    one `measurand` when given)."""
    return [sv for mv in payload.get("meterValue") or [] for sv in mv.get("sampledValue") or []
            if sv.get("context") == "Transaction.End"
            and str(sv.get("measurand", "")).startswith("Energy.Active.")
            and str(sv.get("measurand", "")).endswith(".Register")
            and (measurand is None or sv.get("measurand") == measurand)
            and (sv.get("unitOfMeasure") or {}).get("unit", "Wh") == "Wh"
            and not (sv.get("unitOfMeasure") or {}).get("multiplier")]


def _end_register(payload: dict[str, Any]) -> int | None:
    found = _end_registers(payload)
    return math.floor(float(found[0]["value"])) if found else None


def set_end_register(payload: dict[str, Any], wh: int,
                      measurand: str | None = None) -> None:
    """Write the session's final register: the measurand `_end_register` read (the first one;
    2.1's Ended also carries the other direction's register, which is not this session's)."""
    found = _end_registers(payload)
    if not found:
        return
    for sv in _end_registers(payload, measurand or str(found[0]["measurand"])):
        sv["value"] = float(int(wh))  # whole Wh, as metering writes registers


# The Ended event's register becomes final once the ramp-down has been counted (the endpoint
# gives this to its Settling).
STOP_FORMAT = settling.StopFormat(
    "TransactionEvent", is_stop=lambda p: p.get("eventType") == "Ended",
    register=_end_register, set_register=set_end_register)

def _is_started(item: OutboxItem) -> bool:
    return item.action == "TransactionEvent" and item.payload.get("eventType") == "Started"


def _started_facts(item: OutboxItem) -> tuple[int | None, int | None]:
    evse = (item.payload.get("evse") or {}).get("id")
    begin = [sv for mv in item.payload.get("meterValue") or []
             for sv in mv.get("sampledValue") or []
             if sv.get("context") == "Transaction.Begin"
             and str(sv.get("measurand", "")).startswith("Energy.Active.")
             and str(sv.get("measurand", "")).endswith(".Register")
             and (sv.get("unitOfMeasure") or {}).get("unit", "Wh") == "Wh"
             and not (sv.get("unitOfMeasure") or {}).get("multiplier")]
    return (None if evse is None else int(evse),
            math.floor(float(begin[0]["value"])) if begin else None)


POLICY = outbox.Policy(tx_actions=TX_ACTIONS, prepare=_prepare, answered=_answered,
                       hold=lambda ctx, item: ctx.services.settling.hold(item),
                       is_start=_is_started, started=_started_facts,
                       stop=lambda ctx, connector: stop_session(ctx, connector, StopReason.OTHER),
                       # The transaction id is ours: an off-schema answer still says the CSMS
                       # got the event, and its idTokenInfo (optional) is not read.
                       salvage=lambda _item, _answer: {},
                       attempts_setting="transaction_message_attempts",
                       interval_setting="transaction_message_retry_interval_s")


# -- CSMS -> CS --------------------------------------------------------------------------------
def handlers(ctx: Context) -> dict[str, Any]:
    st = ctx.station

    async def get_transaction_status(p: dict[str, Any]) -> Any:
        """E14: whether messages of the transaction (or any) wait, and whether it runs."""
        queued = ctx.journal.outbox.queued_payloads(ctx.endpoint_id, "TransactionEvent")
        tid = p.get("transactionId")
        if tid is None:
            return {"messagesInQueue": bool(queued)}
        mine = any((q.get("transactionInfo") or {}).get("transactionId") == tid for q in queued)
        return {"ongoingIndicator": st.find(str(tid)) is not None, "messagesInQueue": mine}

    return {"GetTransactionStatus": get_transaction_status}


def trigger_transaction_events(ctx: Context, evse: int | None) -> Reply | None:
    """TriggerMessage(TransactionEvent): an Updated event (triggerReason Trigger) for each
    session on the EVSE (all when None); None when there is none (Rejected)."""
    st = ctx.station
    txs = [tx for c, tx in st.transactions.items()
           if (evse is None or c == evse) and tx.facts.is_started]
    if not txs:
        return None

    async def after() -> None:
        for tx in txs:
            await send_updated(ctx, tx, "Trigger", context="Trigger",
                               measurands=st.settings.items("meter_values_sampled_data"))

    return Reply({"status": "Accepted"}, after)


# -- recovery ----------------------------------------------------------------------------------
def recover(ctx: Context, records: list[TxRecord]) -> None:
    """Transactions the journal still holds open were cut by a crash or power loss.

    Each ends now as PowerLoss with the register the core restored (the PCS energy registers)
    and the next seqNo after the last one journaled; its Ended queues behind anything still
    waiting, so the CSMS sees the events in order.
    """
    st = ctx.station
    for rec in records:
        facts = TxFacts.from_dict(rec.data)
        if facts.is_started:
            meter = st.core.meter(st.meter_id(rec.connector))
            stop_wh = max(rec.meter_start_wh, math.floor(float(meter["energy_wh"])))
            now = st.now()
            sample = MeterSample(timestamp=now, connector=rec.connector, energy_wh=stop_wh,
                                 power_w=0.0, current_a=None, voltage_v=None, soc_pct=None,
                                 temperature_c=None, flow=st.flow(rec.connector))
            mv = metering.meter_value(sample, st.settings.items("stop_txn_sampled_data"),
                                      "Transaction.End")
            payload: dict[str, Any] = {
                "eventType": "Ended",
                "timestamp": iso(now),
                "triggerReason": "AbnormalCondition",
                "seqNo": facts.seq_no,
                "offline": True,  # generated before any connection
                "transactionInfo": {
                    "transactionId": rec.transaction_id or transaction_id(rec.local_id),
                    "stoppedReason": "PowerLoss",
                    "chargingState": "Idle",
                },
            }
            if metering.has_values(mv):
                payload["meterValue"] = [mv]
            _add_kept(ctx, facts.kept, rec.connector, payload)  # what was kept before the crash
            ctx.journal.outbox.enqueue(ctx.endpoint_id, "TransactionEvent", payload, rec.local_id,
                                new_unique_id())
            log.warning("%s: transaction %s was open at the last stop; ended as PowerLoss",
                        ctx.endpoint_id, payload["transactionInfo"]["transactionId"])
        ctx.journal.transactions.finish_transaction(ctx.endpoint_id, rec.local_id)
