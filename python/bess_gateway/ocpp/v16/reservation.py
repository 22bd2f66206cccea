"""1.6 Reservation profile: ReserveNow and CancelReservation, translated onto the domain rules.

The rules (who may reserve what, expiry, which start uses a reservation, the power hold-back) are
in domain/reservations.py and Station; the journal store and the expiry timer, shared with 2.0.1,
in bess_gateway.endpoint.reservation_service. This block only parses and answers.
"""

from __future__ import annotations

import logging
from typing import Any

from bess_gateway.domain.timefmt import parse_iso
from bess_gateway.endpoint.reservation_service import ExpiryTimer, JournalReservations, attach
from bess_gateway.journal import JournalError
from bess_gateway.ocpp.v16.context import Context

log = logging.getLogger("bess_gateway.ocpp.v16")

__all__ = ["ExpiryTimer", "JournalReservations", "attach", "handlers"]


def handlers(ctx: Context) -> dict[str, Any]:
    st = ctx.station

    async def reserve_now(p: dict[str, Any]) -> dict[str, Any]:
        try:
            expiry = parse_iso(p["expiryDate"])
        except ValueError:
            return {"status": "Rejected"}
        try:
            status = st.reserve(p["reservationId"], p["connectorId"], p["idTag"], expiry,
                                p.get("parentIdTag"))
        except JournalError as exc:
            # Not durable means not promised: the station is unchanged.
            log.error("%s: reservation not stored (%s); rejected", ctx.endpoint_id, exc)
            return {"status": "Rejected"}
        return {"status": str(status)}

    async def cancel_reservation(p: dict[str, Any]) -> dict[str, Any]:
        found = st.cancel_reservation(p["reservationId"])
        return {"status": "Accepted" if found else "Rejected"}

    return {"ReserveNow": reserve_now, "CancelReservation": cancel_reservation}
