"""A stopped session's final register, read once the power it had has stopped flowing.

After a stop the setpoint ramps down and the PCS follows over about a second; the control core
keeps counting that energy on the stopped session's meter while it settles (docs/control.md).
A version layer journals its stop message at once (with the register at the stop) and `track`s
it; the message is held in the outbox (`hold`, its Policy's hold) until `resolve` has written the
final register into it. The meter saves name the stops still waiting, so after a crash the
restart writes the register saved last into them (gateway.py); what flowed after that save goes
to the sessions still open.

Each version says once how its stop message carries the register (`StopFormat`, registered by
action when its transactions module loads): 1.6 StopTransaction meterStop and its Transaction.End
register, 2.0.1 TransactionEvent Ended's Transaction.End register sampledValue.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bess_gateway.domain.station import Transaction
from bess_gateway.endpoint.link import Context
from bess_gateway.journal import Journal, OutboxItem

log = logging.getLogger("bess_gateway.endpoint.settling")

# A PCS that never settles exactly on its setpoint, or a link lost while settling, must not hold
# a stop message for ever: after this the register as it is then is final.
SETTLE_MAX_S = 10.0
_KEY = "settling"


@dataclass(frozen=True, slots=True)
class StopFormat:
    """How one version's stop message carries the session's final register."""

    action: str
    # True for the stop message among the action's payloads (2.0.1: the Ended event only).
    is_stop: Callable[[dict[str, Any]], bool]
    # The register the message carries now (None: it carries none), and writing the final one.
    register: Callable[[dict[str, Any]], int | None]
    set_register: Callable[[dict[str, Any], int], None]


_FORMATS: dict[str, StopFormat] = {}


def register_format(fmt: StopFormat) -> None:
    _FORMATS[fmt.action] = fmt


def _format_of(action: str, payload: dict[str, Any]) -> StopFormat | None:
    fmt = _FORMATS.get(action)
    return fmt if fmt is not None and fmt.is_stop(payload) else None


def stop_register(action: str, payload: dict[str, Any]) -> tuple[bool, int | None]:
    """(whether the message is a stop message, the register it carries if it carries one)."""
    fmt = _format_of(action, payload)
    return (False, None) if fmt is None else (True, fmt.register(payload))


def patch_stop(journal: Journal, endpoint_id: str, local_id: str, final: int) -> None:
    """Write `final` into the queued stop message of `local_id`, whatever its version."""
    for fmt in _FORMATS.values():

        def rewrite(payload: dict[str, Any], fmt: StopFormat = fmt) -> bool:
            if not fmt.is_stop(payload):
                return False
            fmt.set_register(payload, final)
            return True

        journal.rewrite_queued(endpoint_id, local_id, fmt.action, rewrite)


def queued_register(journal: Journal, endpoint_id: str, local_id: str) -> int | None:
    """The register in the still-queued stop message of `local_id` (None: none queued)."""
    for fmt in _FORMATS.values():
        for payload in journal.queued_of(endpoint_id, local_id, fmt.action):
            if fmt.is_stop(payload):
                return fmt.register(payload)
    return None


def hold(ctx: Context, item: OutboxItem) -> bool:
    """outbox.Policy.hold: a stop message waits until its meter has settled; the final register
    is written into the journal and into `item` (what is sent, and any resend, carries it)."""
    fmt = _format_of(item.action, item.payload)
    if fmt is None:
        return False
    wait, final = waiting(ctx, item.local_tx_id)
    if final is not None:
        fmt.set_register(item.payload, final)
    return wait


@dataclass(frozen=True, slots=True)
class _Pending:
    connector: int
    meter_stop_wh: int
    deadline: float


def track(ctx: Context, tx: Transaction) -> None:
    """`tx` has just stopped and its stop message is journaled with `tx.meter_stop_wh`."""
    assert tx.meter_stop_wh is not None
    pending: dict[str, _Pending] = ctx.extra.setdefault(_KEY, {})
    pending[tx.local_id] = _Pending(tx.connector, tx.meter_stop_wh,
                                    time.monotonic() + SETTLE_MAX_S)
    ctx.journal.raise_meter_floor(ctx.endpoint_id, tx.connector, tx.meter_stop_wh)
    # The connector shows Finishing until the CSMS has the stop message (`delivered`): its
    # Available must not overtake the stop, which waits here for the settled register.
    ctx.station.hold_finishing(tx.local_id, tx.connector)


def delivered(ctx: Context, item: OutboxItem) -> None:
    """The CSMS answered `item` (outbox.Policy.answered): a stop message ends Finishing."""
    if _format_of(item.action, item.payload) is not None:
        ctx.station.finished(item.local_tx_id)


def pending(ctx: Context) -> list[tuple[str, int, int]]:
    """(local id, connector, meterStop as journaled) of the stops still waiting."""
    items: dict[str, _Pending] = ctx.extra.get(_KEY) or {}
    return [(local_id, p.connector, p.meter_stop_wh) for local_id, p in items.items()]


def waiting(ctx: Context, local_id: str | None) -> tuple[bool, int | None]:
    """(True while the stop of `local_id` waits for its final register, the final register if
    it was written just now: the caller's copy of the message needs it too)."""
    pending: dict[str, _Pending] | None = ctx.extra.get(_KEY)
    if not pending or local_id not in pending:
        return False, None
    final = resolve(ctx, only=local_id).get(local_id)  # type: ignore[arg-type]
    return local_id in pending, final


def resolve(ctx: Context, only: str | None = None) -> dict[str, int]:
    """Write the final register of every tracked stop whose meter has settled; returns those
    written (local id -> register)."""
    pending: dict[str, _Pending] | None = ctx.extra.get(_KEY)
    done: dict[str, int] = {}
    if not pending:
        return done
    st = ctx.station
    for local_id, p in list(pending.items()):
        if only is not None and local_id != only:
            continue
        newer = st.transactions.get(p.connector)
        if newer is not None:
            # A new session took the meter over (its start ended the tail): the register it
            # started at is where this one ended.
            final = newer.meter_start_wh
        else:
            meter = st.core.meter(st.meter_id(p.connector))
            if (meter["active"] or meter["settling"]) and time.monotonic() < p.deadline:
                continue
            final = math.floor(float(meter["energy_wh"]))
        del pending[local_id]
        if final > p.meter_stop_wh:
            patch_stop(ctx.journal, ctx.endpoint_id, local_id, final)
            ctx.journal.raise_meter_floor(ctx.endpoint_id, p.connector, final)
            done[local_id] = final
            log.debug("%s: session %s final register %d Wh (+%d Wh after the stop)",
                      ctx.endpoint_id, local_id[:8], final, final - p.meter_stop_wh)
    return done
