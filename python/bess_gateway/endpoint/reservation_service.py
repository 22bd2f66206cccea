"""Reservations of one endpoint, whatever its OCPP version: the journal as their store, the
station's one expiry timer, and the idTag-parent lookup the domain rules ask for.

The rules (who may reserve what, expiry, which start uses a reservation, the power hold-back) are
in domain/reservations.py and Station; the 1.6 and 2.0.1 layers (v16/reservation.py,
v201/reservation.py) only parse, answer and report, and call `attach` once per endpoint.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime

from bess_gateway.domain.reservations import Reservation
from bess_gateway.domain.station import Station
from bess_gateway.domain.timefmt import iso, parse_iso
from bess_gateway.endpoint.link import Context
from bess_gateway.journal import Journal, JournalError, ReservationRecord

log = logging.getLogger(__name__)


class JournalReservations:
    """The journal as the station's reservation store (idTags only as keyed hashes)."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def save_reservation(self, endpoint_id: str, reservation: Reservation) -> None:
        self.journal.reservations.put_reservation(ReservationRecord(
            endpoint_id=endpoint_id,
            reservation_id=reservation.reservation_id,
            connector=reservation.connector,
            id_tag_hash=reservation.id_tag_hash,
            expiry=iso(reservation.expiry),
            parent_hash=reservation.parent_id_tag_hash,
        ))

    def drop_reservation(self, endpoint_id: str, reservation_id: int) -> None:
        self.journal.reservations.delete_reservation(endpoint_id, reservation_id)

    def load(self, endpoint_id: str) -> list[Reservation]:
        out: list[Reservation] = []
        for rec in self.journal.reservations.reservations(endpoint_id):
            try:
                expiry = parse_iso(rec.expiry)
            except ValueError:
                log.error("%s: reservation %d has a bad expiry %r; dropped", endpoint_id,
                          rec.reservation_id, rec.expiry)
                self.journal.reservations.delete_reservation(endpoint_id, rec.reservation_id)
                continue
            out.append(Reservation(rec.reservation_id, rec.connector, rec.id_tag_hash, expiry,
                                   rec.parent_hash))
        return out


class ExpiryTimer:
    """The station's one timer: armed for the earliest deadline, re-armed when that changes.

    A timer handle rather than a task: nothing to lose or leak, and it runs whether or not the
    CSMS link is up (an expired reservation must release its power even offline).
    """

    def __init__(self, station: Station, loop: asyncio.AbstractEventLoop,
                 on_expired: Callable[[list[Reservation]], None] | None = None) -> None:
        self.station = station
        self.loop = loop
        self.on_expired = on_expired
        self._handle: asyncio.TimerHandle | None = None
        self._armed_for: datetime | None = None

    def sync(self) -> None:
        """Called on every station change; cheap when the earliest deadline is unchanged."""
        deadline = self.station.reservations.next_expiry()
        if deadline == self._armed_for:
            return
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._armed_for = deadline
        if deadline is not None:
            delay = max(0.0, (deadline - self.station.now()).total_seconds())
            self._handle = self.loop.call_later(delay, self._fire)

    def _fire(self) -> None:
        self._handle = None
        self._armed_for = None
        try:
            gone = self.station.expire_reservations()
            if gone and self.on_expired is not None:
                self.on_expired(gone)
        except Exception:
            log.exception("%s: reservation expiry failed", self.station.endpoint_id)
        # A wall clock that ran slow fires early: re-arming covers what has not expired yet.
        self.sync()

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


def parent_lookup(ctx: Context) -> Callable[[str], str | None]:
    """An idTag's parent (hashes) per the local list, else the authorization cache, when on."""

    def parent_of(tag_hash: str) -> str | None:
        settings = ctx.station.settings
        journal = ctx.journal
        entry = None
        if settings.bool("local_auth_list_enabled"):
            entry = journal.auth.auth_list_entry(ctx.endpoint_id, tag_hash)
        if entry is None and settings.bool("authorization_cache_enabled"):
            entry = journal.auth.auth_cache_entry(ctx.endpoint_id, tag_hash)
        return None if entry is None else entry.parent_hash

    return parent_of


def remove_inoperative(st: Station) -> list[Reservation]:
    """End the reservations whose connector (or the whole station) is inoperative now.

    A connector made Unavailable (ChangeAvailability) cannot serve its reservation, so it should
    not hold power back for it either. Faults do not count: a trip clears by itself, and the
    reservation is still good once it has (Faulted wins in the status meanwhile).
    """
    gone = [r for r in st.reservations.all()
            if not (st.operative[0] and st.operative.get(r.connector, True))]
    for r in gone:
        st.cancel_reservation(r.reservation_id)
        log.info("%s: reservation %d removed: connector %d made inoperative", st.endpoint_id,
                 r.reservation_id, r.connector)
    return gone


def attach(ctx: Context,
           on_expired: Callable[[list[Reservation]], None] | None = None,
           on_removed: Callable[[list[Reservation]], None] | None = None) -> ExpiryTimer:
    """Wire reservations for one endpoint: durable store, restored reservations, expiry timer.

    Called once when the endpoint is built (inside the running loop), before it connects, so a
    reservation restored from the journal holds its power from the start. `on_expired` hears of
    the reservations the timer ended, and of those that expired while the gateway was down
    (2.0.1 reports them; 1.6 has no message for it). With `on_removed`, a reservation whose
    connector is made inoperative ends (`remove_inoperative`) and is passed to it (2.0.1
    ReservationStatusUpdate Removed); without, it outlives the change (1.6 could not say so).
    """
    st = ctx.station
    st.parent_of = parent_lookup(ctx)
    store = JournalReservations(ctx.journal)
    try:
        restored = store.load(ctx.endpoint_id)
    except JournalError as exc:
        log.error("%s: reservations could not be read (%s); starting without", ctx.endpoint_id,
                  exc)
        restored = []
    kept = st.use_reservation_store(store, restored)
    if kept:
        log.info("%s: %d reservation(s) restored", ctx.endpoint_id, len(kept))
    now = st.now()
    lapsed = [r for r in restored if r not in kept and r.expiry <= now]
    if lapsed and on_expired is not None:
        on_expired(lapsed)
    timer = ExpiryTimer(st, asyncio.get_running_loop(), on_expired)
    st.on_change(timer.sync)
    timer.sync()
    if on_removed is not None:
        report_removed = on_removed

        def check_operative() -> None:
            # Cheap on every change; cancel_reservation's own change finds nothing left.
            gone = remove_inoperative(st)
            if gone:
                report_removed(gone)

        st.on_change(check_operative)
    return timer
