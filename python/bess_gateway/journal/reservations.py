"""Reservations in force (ReserveNow), by keyed idTag hash only."""

from __future__ import annotations

from bess_gateway.journal.db import Database
from bess_gateway.journal.records import ReservationRecord


class Reservations:
    def __init__(self, db: Database) -> None:
        self._db = db

    def put_reservation(self, rec: ReservationRecord) -> None:
        """Insert or replace the reservation with this (endpoint_id, reservation_id)."""
        with self._db.write(rec.endpoint_id) as c:
            c.execute(
                "INSERT OR REPLACE INTO reservations (endpoint_id, reservation_id, connector, "
                "id_tag_hash, parent_hash, expiry) VALUES (?, ?, ?, ?, ?, ?)",
                (rec.endpoint_id, int(rec.reservation_id), int(rec.connector), rec.id_tag_hash,
                 rec.parent_hash, rec.expiry),
            )

    def delete_reservation(self, endpoint_id: str, reservation_id: int) -> None:
        with self._db.write(endpoint_id) as c:
            c.execute(
                "DELETE FROM reservations WHERE endpoint_id = ? AND reservation_id = ?",
                (endpoint_id, int(reservation_id)),
            )

    def reservations(self, endpoint_id: str) -> list[ReservationRecord]:
        rows = self._db.read(
            "SELECT endpoint_id, reservation_id, connector, id_tag_hash, expiry, parent_hash "
            "FROM reservations WHERE endpoint_id = ? ORDER BY reservation_id",
            (endpoint_id,),
        )
        return [ReservationRecord(e, int(rid), int(conn), h, exp, ph)
                for e, rid, conn, h, exp, ph in rows]
