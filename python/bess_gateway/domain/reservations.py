"""Reservations: a connector kept for one idTag until a deadline, with its battery power held back.

Version-agnostic (1.6 ReserveNow/CancelReservation, 2.0.1 ReserveNow/CancelReservation): the
rules live here, the version layers only translate. Time is a parameter (`now`), so tests jump the
clock instead of sleeping; the caller owns the one timer per station that calls `expire(now)`.

Rules (where OCPP leaves a choice, the choice is written here once):
- One reservation per connector. A request whose reservation id is already known *replaces* that
  reservation (OCPP 1.6 section 5.13), even on another connector; a refused replacement leaves the
  old reservation in force.
- Connector 0 ("any connector of the station") is not supported: the two virtual connectors move
  power in opposite directions, so a reservation must name the direction whose power it holds.
- Refusal order: unknown connector or deadline already past -> Rejected; battery faulted or PCS
  link lost -> Faulted; connector made inoperative -> Unavailable; a session, a start in progress
  or another reservation on the connector -> Occupied; the SoC window forbidding that direction
  right now (battery at its floor for a discharge reservation, at its ceiling for a charge one)
  -> Rejected, because the held power could not be delivered.
- The reservation's own idTag uses it; with a parentIdTag, so does any idTag whose parent is that
  parentIdTag (1.6 section 5.13). An idTag's parent is what the local authorization list, else
  the authorization cache, says at the time of the start; an idTag whose parent neither knows is
  treated as having none (no Authorize round-trip is made just to learn a parent).
- idTags are kept only as the journal's keyed hashes, like transactions' idTags.

Hold-back: while a reservation is in force the control core is told to keep one session's worth of
power (`session_max_kw`) of the reservation's direction away from every other session
(`set_hold(meter_id, direction, W)`); the hold ends when the reservation is used (the session then
draws its power in the normal way), cancelled or expires. Energy is not booked in Wh (nobody knows
how much the EV will take); the SoC window is respected by refusing a reservation for a direction
the window forbids at the time, and the core's protection still limits the session that follows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class ReserveStatus(StrEnum):
    # The 1.6 ReservationStatus names; 2.0.1 has Accepted/Faulted/Occupied/Rejected/Unavailable too.
    ACCEPTED = "Accepted"
    FAULTED = "Faulted"
    OCCUPIED = "Occupied"
    REJECTED = "Rejected"
    UNAVAILABLE = "Unavailable"


@dataclass(frozen=True, slots=True)
class Reservation:
    reservation_id: int
    connector: int
    id_tag_hash: str
    expiry: datetime  # timezone-aware
    parent_id_tag_hash: str | None = None


@dataclass(frozen=True, slots=True)
class ConnectorFacts:
    """What the station knows about the connector a reservation asks for, at `now`."""

    exists: bool
    faulted: bool
    operative: bool
    busy: bool  # a session runs or is being started there
    direction_allowed: bool  # the SoC window allows power in this connector's direction


class ReservationBook:
    """The reservations in force at one station (pure: no I/O, no clock of its own)."""

    def __init__(self) -> None:
        self._by_connector: dict[int, Reservation] = {}

    def __len__(self) -> int:
        return len(self._by_connector)

    def all(self) -> list[Reservation]:
        return sorted(self._by_connector.values(), key=lambda r: r.connector)

    def on(self, connector: int) -> Reservation | None:
        return self._by_connector.get(connector)

    def by_id(self, reservation_id: int) -> Reservation | None:
        return next((r for r in self._by_connector.values()
                     if r.reservation_id == reservation_id), None)

    def decide(self, request: Reservation, facts: ConnectorFacts, now: datetime) -> ReserveStatus:
        """The answer to a reservation request; nothing changes (see `put`)."""
        if request.connector == 0 or not facts.exists or request.expiry <= now:
            return ReserveStatus.REJECTED
        if facts.faulted:
            return ReserveStatus.FAULTED
        if not facts.operative:
            return ReserveStatus.UNAVAILABLE
        holder = self._by_connector.get(request.connector)
        if facts.busy or (holder is not None and holder.reservation_id != request.reservation_id):
            return ReserveStatus.OCCUPIED
        if not facts.direction_allowed:
            return ReserveStatus.REJECTED
        return ReserveStatus.ACCEPTED

    def put(self, reservation: Reservation) -> Reservation | None:
        """Add an accepted reservation; returns the one it replaced (same id), if any."""
        old = self.by_id(reservation.reservation_id)
        if old is not None:
            del self._by_connector[old.connector]
        self._by_connector[reservation.connector] = reservation
        return old

    def cancel(self, reservation_id: int) -> Reservation | None:
        found = self.by_id(reservation_id)
        if found is not None:
            del self._by_connector[found.connector]
        return found

    def admits(self, connector: int, id_tag_hash: str | None,
               parent_hash: str | None = None) -> bool:
        """Whether the reservation on this connector is for this idTag (or its parent)."""
        held = self._by_connector.get(connector)
        if held is None or id_tag_hash is None:
            return False
        return held.id_tag_hash == id_tag_hash or (
            held.parent_id_tag_hash is not None and parent_hash == held.parent_id_tag_hash)

    def blocks(self, connector: int, id_tag_hash: str | None,
               parent_hash: str | None = None) -> bool:
        """Whether a start on this connector is refused: reserved for another idTag.

        `id_tag_hash` None (a start for nobody in particular) is blocked by any reservation.
        """
        return connector in self._by_connector and not self.admits(connector, id_tag_hash,
                                                                   parent_hash)

    def consume(self, connector: int, id_tag_hash: str,
                parent_hash: str | None = None) -> Reservation | None:
        """A session of this idTag starts on the connector: its reservation ends, used."""
        if not self.admits(connector, id_tag_hash, parent_hash):
            return None
        return self._by_connector.pop(connector)

    def expire(self, now: datetime) -> list[Reservation]:
        """Remove and return every reservation whose deadline has come."""
        gone = [r for r in self._by_connector.values() if r.expiry <= now]
        for r in gone:
            del self._by_connector[r.connector]
        return gone

    def next_expiry(self) -> datetime | None:
        return min((r.expiry for r in self._by_connector.values()), default=None)
