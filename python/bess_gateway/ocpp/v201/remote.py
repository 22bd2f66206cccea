"""2.0.1 F Remote control: RequestStart/StopTransaction, UnlockConnector, TriggerMessage.

The start and stop themselves are the shared session sequencing (``v201.transactions`` over
``bess_gateway.endpoint.sessions``); this module decides the answers.

- RequestStartTransaction answers before the session starts (the TransactionEvent Started must
  follow the answer, F01), so its transactionId is never known in the answer: a virtual connector
  has no transaction running before authorization (no cable plugged in first).
- UnlockConnector: a virtual connector has no lock; with a session on the EVSE the answer is
  OngoingAuthorizedTransaction (F05.FR.02: the session is not ended), else Unlocked.
- TriggerMessage: BootNotification is Rejected once accepted (F06.FR.17); MeterValues,
  TransactionEvent and StatusNotification are built here (MeterValues: AlignedDataCtrlr.Measurands;
  TransactionEvent: SampledDataCtrlr.TxUpdatedMeasurands); any other message a block registered
  in ``ctx.triggers`` (LogStatusNotification, FirmwareStatusNotification, ...) is sent by it.
"""

from __future__ import annotations

import logging
from typing import Any

from bess_gateway.domain.station import StopReason
from bess_gateway.endpoint import sessions
from bess_gateway.endpoint.link import Context
from bess_gateway.ocpp.rpc import Reply
from bess_gateway.ocpp.v201 import metering, smart_charging, transactions
from bess_gateway.ocpp.v201.status import CONNECTOR_ID, V21_CONNECTOR, connector_of
from bess_gateway.ocpp.v201.status import evses as all_evses

log = logging.getLogger("bess_gateway.ocpp.v201")

REJECTED = {"status": "Rejected"}


def handlers(ctx: Context) -> dict[str, Any]:
    st = ctx.station

    async def request_start(p: dict[str, Any]) -> Any:
        id_token = p["idToken"]
        token = str(id_token["idToken"])
        evse = p.get("evseId")
        if evse is None:
            connector = V21_CONNECTOR if ctx.version == "2.1" else st.pick_connector(token)
        else:
            connector = connector_of(ctx, evse) or None
        if not ctx.accepted or connector is None or st.refusal(connector, token) is not None:
            return REJECTED
        profile = p.get("chargingProfile")
        # Its TxProfile limits the session from its first cycle; a profile we cannot take
        # refuses the start (F01.FR.08..12, shared with 1.6 through smart charging).
        if profile is not None and not smart_charging.accept_start_profile(ctx, connector,
                                                                           profile):
            return REJECTED
        sessions.prepare(ctx, connector)

        async def after() -> None:
            tx = await transactions.start_session(ctx, connector, id_token, p["remoteStartId"])
            if tx is None and profile is not None:
                smart_charging.start_failed(ctx, connector)

        def unsent() -> None:  # the CSMS never heard Accepted: no start follows
            st.unprepare(connector)
            if profile is not None:
                smart_charging.start_failed(ctx, connector)

        return Reply({"status": "Accepted"}, after, unsent)

    async def request_stop(p: dict[str, Any]) -> Any:
        tx = st.find(str(p["transactionId"]))
        if tx is None:
            return REJECTED
        transactions.stop_session(ctx, tx.connector, StopReason.REMOTE)
        return {"status": "Accepted"}

    async def unlock(p: dict[str, Any]) -> Any:
        evse = connector_of(ctx, p["evseId"])
        if not evse or p["connectorId"] != CONNECTOR_ID:
            return {"status": "UnknownConnector"}
        if evse in st.transactions:
            return {"status": "OngoingAuthorizedTransaction"}
        return {"status": "Unlocked"}

    async def trigger(p: dict[str, Any]) -> Any:
        message = p["requestedMessage"]
        wire_evse = (p.get("evse") or {}).get("id")
        evse = None if wire_evse is None else connector_of(ctx, wire_evse)
        if wire_evse is not None and evse is None:
            return REJECTED
        evse = evse or None  # 0: the station as a whole; else the domain connector
        if message == "BootNotification" and ctx.accepted:
            return REJECTED
        if message == "TransactionEvent":
            return transactions.trigger_transaction_events(ctx, evse) or REJECTED
        if message == "MeterValues":
            # The most recent values of AlignedDataCtrlr.Measurands (as libocpp does); Rejected
            # when the EVSE has none of them.
            measurands = st.settings.items("meter_values_aligned_data")
            evses = [e for e in (all_evses(ctx) if evse is None else (evse,))
                     if metering.has_values(
                         metering.evse_meter_value(ctx, st.sample(e), measurands, ""))]
            if not evses:
                return REJECTED

            async def meter_values() -> None:
                for e in evses:
                    await metering.send_meter_values(ctx, e, "Trigger", measurands)

            return Reply({"status": "Accepted"}, meter_values)
        sender = ctx.triggers.get(message)
        if sender is None:
            return {"status": "NotImplemented"}

        async def send() -> None:
            await sender(evse)

        return Reply({"status": "Accepted"}, send)

    return {
        "RequestStartTransaction": request_start,
        "RequestStopTransaction": request_stop,
        "UnlockConnector": unlock,
        "TriggerMessage": trigger,
    }
