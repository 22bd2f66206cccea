"""2.0.1 H Reservation: ReserveNow, CancelReservation, and ReservationStatusUpdate (Expired,
Removed).

A translation onto the rules 1.6 uses (domain/reservations.py and Station: who may reserve what,
the refusal order, the power hold-back in the core, which start uses a reservation) and the
shared glue (bess_gateway.endpoint.reservation_service: journal store, restore, the expiry timer).

2.0.1 specifics, as decided here:
- A reservation names its EVSE. Without evseId it is Rejected (ReservationCtrlr.NonEvseSpecific
  is false in v201/device_model.py): the discharge EVSE (1) and the charge EVSE (2) move power
  in opposite directions, so "any EVSE" would not say which power to hold back. The same
  choice as 1.6's refusal of connector 0 (ReserveConnectorZeroSupported false).
- idToken and groupIdToken are kept as the domain's idTag and parent idTag: their `idToken`
  text, hashed (the same text the transaction layer starts sessions with). A token whose group
  the local list or cache knows uses a reservation made for that group (H03 / C09 GroupId).
- connectorType is not checked: each EVSE has its one connector, whatever the EV plugs in.
- An expired reservation is reported (ReservationStatusUpdate Expired) through the journal's
  outbox, so a report due while the CSMS is unreachable is sent after the reconnect. A used
  reservation is reported by the TransactionEvent that carries its reservationId; a cancelled
  one by the CancelReservation answer.
- Removed: the station ends a reservation when its EVSE (or the whole station) is made
  Inoperative (ChangeAvailability, at once or when a Scheduled change applies): the EVSE can
  no longer serve it, so it stops holding power back, and ReservationStatusUpdate Removed goes
  through the outbox like Expired. A fault (trip, PCS link lost) does not remove it: trips
  clear by themselves and the EVSE reports Faulted meanwhile; the CSMS may cancel.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from bess_gateway.domain.reservations import Reservation
from bess_gateway.domain.timefmt import parse_iso
from bess_gateway.endpoint.link import Context
from bess_gateway.endpoint.reservation_service import ExpiryTimer
from bess_gateway.endpoint.reservation_service import attach as attach_store
from bess_gateway.journal import JournalError, Retention
from bess_gateway.ocpp.framing import new_unique_id
from bess_gateway.ocpp.v201.status import connector_of

log = logging.getLogger("bess_gateway.ocpp.v201")

def token_text(id_token: dict[str, Any]) -> str:
    """The domain idTag of a 2.0.1 IdTokenType (what the journal hashes)."""
    return str(id_token["idToken"])


def attach(ctx: Context) -> ExpiryTimer:
    """Wire the endpoint's reservations (once, when the endpoint is built)."""

    def report(status: str) -> Callable[[list[Reservation]], None]:
        def queue(gone: list[Reservation]) -> None:
            for r in gone:
                try:
                    ctx.journal.outbox.enqueue(ctx.endpoint_id, "ReservationStatusUpdate",
                                        {"reservationId": r.reservation_id,
                                         "reservationUpdateStatus": status},
                                        None, new_unique_id(), Retention.EXPENDABLE)
                except JournalError as exc:
                    log.error("%s: reservation %d %s not queued: %s", ctx.endpoint_id,
                              r.reservation_id, status, exc)
            ctx.outbox_wake.set()

        return queue

    return attach_store(ctx, report("Expired"), report("Removed"))


def _answer(status: str, reason: str | None = None, info: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {"status": status}
    if reason is not None:
        out["statusInfo"] = {"reasonCode": reason, "additionalInfo": info[:512]}
    return out


def handlers(ctx: Context) -> dict[str, Any]:
    st = ctx.station

    async def reserve_now(p: dict[str, Any]) -> dict[str, Any]:
        evse = p.get("evseId")
        if evse is None:
            return _answer("Rejected", "InvalidValue",
                           "a reservation names its EVSE (1 discharge, 2 charge)")
        try:
            expiry = parse_iso(p["expiryDateTime"])
        except ValueError:
            return _answer("Rejected", "InvalidValue", "unreadable expiryDateTime")
        group = p.get("groupIdToken")
        connector = connector_of(ctx, int(evse))
        if not connector:
            return _answer("Rejected", "UnknownEvse", f"no EVSE {evse}")
        try:
            status = st.reserve(int(p["id"]), connector, token_text(p["idToken"]), expiry,
                                None if group is None else token_text(group))
        except JournalError as exc:
            # Not durable means not promised: the station is unchanged.
            log.error("%s: reservation not stored (%s); rejected", ctx.endpoint_id, exc)
            return _answer("Rejected", "InternalError", "the reservation could not be stored")
        return {"status": str(status)}

    async def cancel_reservation(p: dict[str, Any]) -> dict[str, Any]:
        found = st.cancel_reservation(int(p["reservationId"]))
        return {"status": "Accepted" if found else "Rejected"}

    return {"ReserveNow": reserve_now, "CancelReservation": cancel_reservation}
