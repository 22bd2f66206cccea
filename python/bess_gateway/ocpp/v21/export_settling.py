"""The export register of a 2.1 transaction's Ended event, read once its discharge leg settled.

The 2.1 transaction is a session on the charge connector; `bess_gateway.endpoint.settling` holds
its Ended
event until the charge leg's ramp-down has been metered and writes the final *import* register.
The discharge leg stops at the same moment and ramps down the same way, on its own meter: this
module is the same rule for the *export* register. At the stop the leg's register is recorded
with a deadline (settling.SETTLE_MAX_S); the Ended event is held until that meter is neither
active nor settling (or the deadline passed, or a newer transaction's leg took the meter over:
then the register it started at), and the final value is written into the journaled event and
the item about to be sent. After a crash nothing is pending: the register at the stop stays
(the charge side's rule, gateway.py, covers the import register only).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from bess_gateway.domain.station import DISCHARGE_CONNECTOR
from bess_gateway.endpoint.settling import SETTLE_MAX_S
from bess_gateway.journal import OutboxItem
from bess_gateway.ocpp.v21.context import Context
from bess_gateway.ocpp.v201 import transactions

EXPORT = "Energy.Active.Export.Register"


@dataclass(frozen=True, slots=True)
class ExportPending:
    """A stopped 2.1 transaction's discharge leg: its register at the stop, and until when it
    may settle (monotonic s); kept in V21State.export_pending."""

    at_stop_wh: int
    deadline: float


def track(ctx: Context, local_id: str) -> None:
    """The 2.1 transaction `local_id` just stopped (its discharge leg with it)."""
    st = ctx.station
    wh = math.floor(float(st.core.meter(st.meter_id(DISCHARGE_CONNECTOR))["energy_wh"]))
    ctx.v21.export_pending[local_id] = ExportPending(wh, time.monotonic() + SETTLE_MAX_S)


def leg_started(ctx: Context, local_id: str) -> None:
    """A new transaction's leg takes the meter over: what it starts at ends the older tails."""
    st = ctx.station
    wh = math.floor(float(st.core.meter(st.meter_id(DISCHARGE_CONNECTOR))["energy_wh"]))
    pending = ctx.v21.export_pending
    for other, p in list(pending.items()):
        if other != local_id:
            _write(ctx, other, wh if wh > p.at_stop_wh else None)
            pending.pop(other, None)


def _write(ctx: Context, local_id: str, wh: int | None,
           item: OutboxItem | None = None) -> None:
    if wh is None:
        return

    def rewrite(payload: dict[str, Any]) -> bool:
        if payload.get("eventType") != "Ended":
            return False
        transactions.set_end_register(payload, wh, EXPORT)
        return True

    ctx.journal.outbox.rewrite_queued(ctx.endpoint_id, local_id, "TransactionEvent", rewrite)
    if item is not None:
        rewrite(item.payload)


def hold(ctx: Context, item: OutboxItem) -> bool:
    """outbox.Policy.hold for 2.1: the import register's hold, then the export register's."""
    if ctx.services.settling.hold(item):
        return True
    pending = ctx.v21.export_pending
    p = pending.get(item.local_tx_id or "")
    if p is None or item.payload.get("eventType") != "Ended":
        return False
    st = ctx.station
    meter = st.core.meter(st.meter_id(DISCHARGE_CONNECTOR))
    if (meter["active"] or meter["settling"]) and time.monotonic() < p.deadline:
        return True
    final = math.floor(float(meter["energy_wh"]))
    del pending[item.local_tx_id or ""]
    _write(ctx, item.local_tx_id or "", final if final > p.at_stop_wh else None, item)
    return False
