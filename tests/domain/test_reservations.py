"""Reservation rules without I/O: the clock is a parameter and the tests jump it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bess_gateway.domain.reservations import (
    ConnectorFacts,
    Reservation,
    ReservationBook,
    ReserveStatus,
)

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
FREE = ConnectorFacts(exists=True, faulted=False, operative=True, busy=False,
                      direction_allowed=True)


def res(rid: int = 1, connector: int = 1, tag: str = "h-alice",
        minutes: float = 10) -> Reservation:
    return Reservation(rid, connector, tag, T0 + timedelta(minutes=minutes))


def accept(book: ReservationBook, r: Reservation, now: datetime = T0) -> None:
    assert book.decide(r, FREE, now) == ReserveStatus.ACCEPTED
    book.put(r)


def test_free_connector_is_accepted_and_reserved_for_its_tag_only() -> None:
    book = ReservationBook()
    accept(book, res())
    assert book.on(1) == res()
    assert book.on(2) is None
    assert book.blocks(1, "h-bob")
    assert book.blocks(1, None)  # a start for nobody in particular
    assert not book.blocks(1, "h-alice")
    assert not book.blocks(2, "h-bob")


@pytest.mark.parametrize(("facts", "expected"), [
    (ConnectorFacts(False, False, True, False, True), ReserveStatus.REJECTED),
    (ConnectorFacts(True, True, True, False, True), ReserveStatus.FAULTED),
    (ConnectorFacts(True, False, False, False, True), ReserveStatus.UNAVAILABLE),
    (ConnectorFacts(True, False, True, True, True), ReserveStatus.OCCUPIED),
    # battery at its SoC floor (discharge) or ceiling (charge): the held power cannot be given
    (ConnectorFacts(True, False, True, False, False), ReserveStatus.REJECTED),
    # a faulted battery is reported as such before the connector's own state
    (ConnectorFacts(True, True, False, True, False), ReserveStatus.FAULTED),
])
def test_refusals_follow_the_station_state(facts: ConnectorFacts,
                                           expected: ReserveStatus) -> None:
    book = ReservationBook()
    assert book.decide(res(), facts, T0) == expected
    assert len(book) == 0


def test_connector_zero_and_past_deadline_are_rejected() -> None:
    book = ReservationBook()
    assert book.decide(res(connector=0), FREE, T0) == ReserveStatus.REJECTED
    assert book.decide(res(minutes=-1), FREE, T0) == ReserveStatus.REJECTED
    assert book.decide(res(minutes=0), FREE, T0) == ReserveStatus.REJECTED


def test_second_reservation_on_a_reserved_connector_is_occupied() -> None:
    book = ReservationBook()
    accept(book, res(1))
    assert book.decide(res(2, tag="h-bob"), FREE, T0) == ReserveStatus.OCCUPIED
    # ... even for the same idTag: one reservation per connector
    assert book.decide(res(2), FREE, T0) == ReserveStatus.OCCUPIED
    assert book.decide(res(2, connector=2), FREE, T0) == ReserveStatus.ACCEPTED


def test_same_id_replaces_the_reservation_even_on_another_connector() -> None:
    book = ReservationBook()
    accept(book, res(7, connector=1, minutes=5))
    newer = res(7, connector=2, tag="h-bob", minutes=30)
    accept(book, newer)
    assert book.on(1) is None
    assert book.on(2) == newer
    assert book.by_id(7) == newer
    assert len(book) == 1


def test_refused_replacement_keeps_the_old_reservation() -> None:
    book = ReservationBook()
    accept(book, res(7))
    busy = ConnectorFacts(True, False, True, True, True)
    assert book.decide(res(7, connector=2), busy, T0) == ReserveStatus.OCCUPIED
    assert book.on(1) == res(7)


def test_cancel_known_and_unknown() -> None:
    book = ReservationBook()
    accept(book, res(3))
    assert book.cancel(4) is None
    assert book.on(1) == res(3)
    assert book.cancel(3) == res(3)
    assert book.on(1) is None
    assert book.cancel(3) is None


def test_expiry_when_the_clock_jumps() -> None:
    book = ReservationBook()
    accept(book, res(1, connector=1, minutes=5))
    accept(book, res(2, connector=2, minutes=20))
    assert book.next_expiry() == T0 + timedelta(minutes=5)
    assert book.expire(T0 + timedelta(minutes=4, seconds=59)) == []
    assert [r.reservation_id for r in book.expire(T0 + timedelta(minutes=5))] == [1]
    assert book.next_expiry() == T0 + timedelta(minutes=20)
    # a big jump takes everything that is due in one go
    assert [r.reservation_id for r in book.expire(T0 + timedelta(hours=3))] == [2]
    assert book.next_expiry() is None
    assert len(book) == 0


def test_only_the_reserved_tag_consumes() -> None:
    book = ReservationBook()
    accept(book, res(9))
    assert book.consume(1, "h-bob") is None
    assert book.on(1) is not None
    assert book.consume(2, "h-alice") is None
    assert book.consume(1, "h-alice") == res(9)
    assert book.on(1) is None
    assert not book.blocks(1, "h-bob")


def test_reservation_after_expiry_of_the_previous_one() -> None:
    book = ReservationBook()
    accept(book, res(1, minutes=1))
    later = T0 + timedelta(minutes=2)
    assert book.decide(res(2, tag="h-bob", minutes=10), FREE, later) == ReserveStatus.OCCUPIED
    book.expire(later)
    assert book.decide(res(2, tag="h-bob", minutes=10), FREE, later) == ReserveStatus.ACCEPTED


def test_parent_id_tag_admits_the_group() -> None:
    book = ReservationBook()
    grouped = Reservation(5, 1, "h-alice", T0 + timedelta(minutes=10), "h-fleet")
    accept(book, grouped)
    assert book.admits(1, "h-alice")
    assert book.admits(1, "h-bob", "h-fleet")
    assert not book.admits(1, "h-bob", "h-other")
    assert not book.admits(1, "h-bob")  # parent unknown: just another idTag
    assert book.blocks(1, "h-fleet")  # the parent itself is not a member of its group
    assert book.consume(1, "h-bob", "h-other") is None
    assert book.consume(1, "h-bob", "h-fleet") == grouped
    # without a parentIdTag the group does not matter
    accept(book, res(6))
    assert not book.admits(1, "h-bob", None)
    assert book.blocks(1, "h-bob", "h-fleet")
