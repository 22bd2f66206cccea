"""A stopped session's final register, read once the power it had has stopped flowing.

After a stop the setpoint ramps down and the PCS follows over about a second; the control core
keeps counting that energy on the stopped session's meter while it settles (docs/control.md).
A version layer journals its stop message at once (with the register at the stop) and `track`s
it; the message is held in the outbox (`hold`, its Policy's hold) until `resolve` has written the
final register into it. The meter saves name the stops still waiting, so after a crash the
restart writes the register saved last into them (gateway.py); what flowed after that save goes
to the sessions still open.

Each version says once how its stop message carries the register (`StopFormat`), and its
endpoint hands those formats to its `Settling` at construction: 1.6 StopTransaction meterStop and
its Transaction.End register, 2.0.1 TransactionEvent Ended's Transaction.End register
sampledValue. `Settling` (one per endpoint, in its services) keeps the stops still waiting.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from bess_gateway.domain.station import Station, Transaction
from bess_gateway.journal import Journal, OutboxItem

log = logging.getLogger("bess_gateway.endpoint.settling")

# A PCS that never settles exactly on its setpoint, or a link lost while settling, must not hold
# a stop message for ever: after this the register as it is then is final.
SETTLE_MAX_S = 10.0


@dataclass(frozen=True, slots=True)
class StopFormat:
    """How one version's stop message carries the session's final register."""

    action: str
    # True for the stop message among the action's payloads (2.0.1: the Ended event only).
    is_stop: Callable[[dict[str, Any]], bool]
    # The register the message carries now (None: it carries none), and writing the final one.
    register: Callable[[dict[str, Any]], int | None]
    set_register: Callable[[dict[str, Any], int], None]


def patch_stop(journal: Journal, endpoint_id: str, local_id: str, final: int,
               formats: Iterable[StopFormat]) -> None:
    """Write `final` into the queued stop message of `local_id`, in whichever of `formats` it
    is (the gateway's crash path passes every version's: the journal may hold another's)."""
    for fmt in formats:

        def rewrite(payload: dict[str, Any], fmt: StopFormat = fmt) -> bool:
            if not fmt.is_stop(payload):
                return False
            fmt.set_register(payload, final)
            return True

        journal.outbox.rewrite_queued(endpoint_id, local_id, fmt.action, rewrite)


@dataclass(frozen=True, slots=True)
class _Pending:
    connector: int
    meter_stop_wh: int
    deadline: float


class Settling:
    """One endpoint's stops waiting for their final register, in its version's stop formats."""

    def __init__(self, station: Station, journal: Journal,
                 formats: Iterable[StopFormat]) -> None:
        self.station = station
        self.journal = journal
        self.endpoint_id = station.endpoint_id
        self.formats: dict[str, StopFormat] = {f.action: f for f in formats}
        self._pending: dict[str, _Pending] = {}  # local id -> the stop waiting for its meter

    def format_of(self, action: str, payload: dict[str, Any]) -> StopFormat | None:
        fmt = self.formats.get(action)
        return fmt if fmt is not None and fmt.is_stop(payload) else None

    def stop_register(self, action: str, payload: dict[str, Any]) -> tuple[bool, int | None]:
        """(whether the message is a stop message, the register it carries if it carries one)."""
        fmt = self.format_of(action, payload)
        return (False, None) if fmt is None else (True, fmt.register(payload))

    def patch_stop(self, local_id: str, final: int) -> None:
        """Write `final` into the queued stop message of `local_id`."""
        patch_stop(self.journal, self.endpoint_id, local_id, final, self.formats.values())

    def queued_register(self, local_id: str) -> int | None:
        """The register in the still-queued stop message of `local_id` (None: none queued)."""
        for fmt in self.formats.values():
            for payload in self.journal.outbox.queued_of(self.endpoint_id, local_id, fmt.action):
                if fmt.is_stop(payload):
                    return fmt.register(payload)
        return None

    def hold(self, item: OutboxItem) -> bool:
        """outbox.Policy.hold: a stop message waits until its meter has settled; the final
        register is written into the journal and into `item` (what is sent, and any resend,
        carries it)."""
        fmt = self.format_of(item.action, item.payload)
        if fmt is None:
            return False
        wait, final = self.waiting(item.local_tx_id)
        if final is not None:
            fmt.set_register(item.payload, final)
        return wait

    def track(self, tx: Transaction) -> None:
        """`tx` has just stopped and its stop message is journaled with `tx.meter_stop_wh`."""
        assert tx.meter_stop_wh is not None
        self._pending[tx.local_id] = _Pending(tx.connector, tx.meter_stop_wh,
                                              time.monotonic() + SETTLE_MAX_S)
        self.journal.meters.raise_meter_floor(self.endpoint_id, tx.connector, tx.meter_stop_wh)
        # The connector shows Finishing until the CSMS has the stop message (`delivered`): its
        # Available must not overtake the stop, which waits here for the settled register.
        self.station.hold_finishing(tx.local_id, tx.connector)

    def delivered(self, item: OutboxItem) -> None:
        """The CSMS answered `item` (outbox.Policy.answered): a stop message ends Finishing."""
        if self.format_of(item.action, item.payload) is not None:
            self.station.finished(item.local_tx_id)

    def pending(self) -> list[tuple[str, int, int]]:
        """(local id, connector, meterStop as journaled) of the stops still waiting."""
        return [(local_id, p.connector, p.meter_stop_wh)
                for local_id, p in self._pending.items()]

    def waiting(self, local_id: str | None) -> tuple[bool, int | None]:
        """(True while the stop of `local_id` waits for its final register, the final register
        if it was written just now: the caller's copy of the message needs it too)."""
        if local_id is None or local_id not in self._pending:
            return False, None
        final = self.resolve(only=local_id).get(local_id)
        return local_id in self._pending, final

    def resolve(self, only: str | None = None) -> dict[str, int]:
        """Write the final register of every tracked stop whose meter has settled; returns
        those written (local id -> register)."""
        done: dict[str, int] = {}
        if not self._pending:
            return done
        st = self.station
        for local_id, p in list(self._pending.items()):
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
            del self._pending[local_id]
            if final > p.meter_stop_wh:
                self.patch_stop(local_id, final)
                self.journal.meters.raise_meter_floor(self.endpoint_id, p.connector, final)
                done[local_id] = final
                log.debug("%s: session %s final register %d Wh (+%d Wh after the stop)",
                          self.endpoint_id, local_id[:8], final, final - p.meter_stop_wh)
        return done
