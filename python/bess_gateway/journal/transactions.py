"""Transactions: open ones (stopped ones stay until their stop message is delivered), and the
totals of those the CSMS never got (`Abandoned`: their start message was given up)."""

from __future__ import annotations

import sqlite3
from typing import Any

from bess_gateway.journal.db import Database
from bess_gateway.journal.records import TxRecord, dumps, loads


class Transactions:
    def __init__(self, db: Database) -> None:
        self._db = db

    def flush(self) -> None:
        """Commit what is written so far, now (domain.station.TxStore: a session's record is
        committed before its power flows)."""
        self._db.flush()

    def put_transaction(self, rec: TxRecord) -> None:
        """Insert or replace the record with this (endpoint_id, local_id)."""
        data = dumps(rec.data)
        with self._db.write(rec.endpoint_id) as c:
            c.execute(
                "INSERT INTO transactions (endpoint_id, local_id, connector, id_tag_hash, "
                "meter_start_wh, started_at, transaction_id, stopped, data) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (endpoint_id, local_id) DO UPDATE SET connector = excluded.connector, "
                "id_tag_hash = excluded.id_tag_hash, meter_start_wh = excluded.meter_start_wh, "
                "started_at = excluded.started_at, transaction_id = excluded.transaction_id, "
                "stopped = excluded.stopped, data = excluded.data",
                (
                    rec.endpoint_id,
                    rec.local_id,
                    int(rec.connector),
                    rec.id_tag_hash,
                    int(rec.meter_start_wh),
                    rec.started_at,
                    None if rec.transaction_id is None else str(rec.transaction_id),
                    int(bool(rec.stopped)),
                    data,
                ),
            )

    def open_transactions(self, endpoint_id: str) -> list[TxRecord]:
        """Every transaction not finished yet (including stopped ones), oldest first."""
        rows = self._db.read(
            "SELECT endpoint_id, local_id, connector, id_tag_hash, meter_start_wh, started_at, "
            "transaction_id, stopped, data FROM transactions WHERE endpoint_id = ? "
            "ORDER BY started_at, local_id",
            (endpoint_id,),
        )
        return [
            TxRecord(
                endpoint_id=e,
                local_id=lid,
                connector=int(conn),
                id_tag_hash=h,
                meter_start_wh=int(ms),
                started_at=sa,
                transaction_id=tid,
                stopped=bool(st),
                data=loads(data),
            )
            for e, lid, conn, h, ms, sa, tid, st, data in rows
        ]

    def finish_transaction(self, endpoint_id: str, local_id: str) -> None:
        """Forget a transaction whose stop the CSMS has acknowledged (deletes the record)."""
        with self._db.write(endpoint_id) as c:
            c.execute(
                "DELETE FROM transactions WHERE endpoint_id = ? AND local_id = ?",
                (endpoint_id, local_id),
            )

    def patch_transaction_id(
        self, endpoint_id: str, local_tx_id: str, transaction_id: int | str
    ) -> int:
        """The CSMS assigned a transactionId (1.6 StartTransaction.conf): write it everywhere.

        Rewrites `payload["transactionId"]` of the still-queued messages of that local
        transaction that have the key (queue them with a placeholder, e.g. -1; a message without
        the key, such as StartTransaction itself, is left alone), and sets the record's
        transaction_id, in one transaction. Returns the number of messages patched.
        """
        with self._db.write(endpoint_id) as c:
            rows = c.execute(
                "SELECT seq, payload FROM outbox WHERE endpoint_id = ? AND local_tx_id = ?",
                (endpoint_id, local_tx_id),
            ).fetchall()
            patched = 0
            for seq, text in rows:
                payload = loads(text)
                if isinstance(payload, dict) and "transactionId" in payload:
                    payload["transactionId"] = transaction_id
                    c.execute("UPDATE outbox SET payload = ? WHERE seq = ?", (dumps(payload), seq))
                    patched += 1
            c.execute(
                "UPDATE transactions SET transaction_id = ? WHERE endpoint_id = ? AND local_id = ?",
                (str(transaction_id), endpoint_id, local_tx_id),
            )
        return patched


class Abandoned:
    """Transactions the CSMS never got (their start message given up) and messages given up:
    markers and per-endpoint totals in the meta table."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def abandon_transaction(self, endpoint_id: str, local_tx_id: str, connector: int,
                            meter_start_wh: int | None) -> None:
        """Mark a transaction whose start message was given up (bess_gateway.endpoint.outbox): its
        other
        queued messages are dropped as they come up, and the energy its stop message carries is
        counted as unattributed (`settle_abandoned`). Counted at once in the endpoint's totals."""
        marker = {"connector": int(connector), "meter_start_wh": meter_start_wh}
        with self._db.write(endpoint_id) as c:
            c.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                      (f"abandoned:{endpoint_id}:{local_tx_id}", dumps(marker).encode()))
            totals = self._totals(c, endpoint_id)
            totals["transactions"] += 1
            self._put_totals(c, endpoint_id, totals)

    def abandoned_transaction(self, endpoint_id: str,
                              local_tx_id: str | None) -> dict[str, Any] | None:
        """The marker of an abandoned transaction (connector, meter_start_wh), or None."""
        if local_tx_id is None:
            return None
        rows = self._db.read("SELECT value FROM meta WHERE key = ?",
                             (f"abandoned:{endpoint_id}:{local_tx_id}",))
        value = loads(bytes(rows[0][0])) if rows else None
        return value if isinstance(value, dict) else None

    def settle_abandoned(self, endpoint_id: str, local_tx_id: str, connector: int,
                         energy_wh: int | None) -> None:
        """An abandoned transaction's stop came up: add its energy (None: unknown, counted as
        such) to the endpoint's unattributed totals and forget the marker, in one commit."""
        with self._db.write(endpoint_id) as c:
            c.execute("DELETE FROM meta WHERE key = ?",
                      (f"abandoned:{endpoint_id}:{local_tx_id}",))
            totals = self._totals(c, endpoint_id)
            if energy_wh is None:
                totals["energy_unknown"] += 1
            else:
                per = totals["energy_wh"]
                per[str(connector)] = int(per.get(str(connector), 0)) + max(0, int(energy_wh))
            self._put_totals(c, endpoint_id, totals)

    def count_given_up(self, endpoint_id: str, action: str) -> None:
        """A queued message was given up after its attempts (bess_gateway.endpoint.outbox): counted
        per
        endpoint and action in the same totals (the caller's commit, with the message's ack)."""
        with self._db.write(endpoint_id) as c:
            totals = self._totals(c, endpoint_id)
            given_up = totals["given_up"]
            given_up[action] = int(given_up.get(action, 0)) + 1
            self._put_totals(c, endpoint_id, totals)

    def abandoned_totals(self) -> dict[str, dict[str, Any]]:
        """Per endpoint: transactions abandoned, unattributed Wh per connector, stops whose
        energy could not be known, and messages given up per action (metrics, /status).
        Endpoints with none are absent."""
        rows = self._db.read("SELECT key, value FROM meta WHERE key LIKE 'unattributed:%'")
        out: dict[str, dict[str, Any]] = {}
        for key, value in rows:
            totals = loads(bytes(value))
            if isinstance(totals, dict):
                out[str(key).removeprefix("unattributed:")] = totals
        return out

    @staticmethod
    def _totals(c: sqlite3.Connection, endpoint_id: str) -> dict[str, Any]:
        row = c.execute("SELECT value FROM meta WHERE key = ?",
                        (f"unattributed:{endpoint_id}",)).fetchone()
        totals = loads(bytes(row[0])) if row else {}
        if not isinstance(totals, dict):
            totals = {}
        totals.setdefault("transactions", 0)
        totals.setdefault("energy_wh", {})
        totals.setdefault("energy_unknown", 0)
        totals.setdefault("given_up", {})
        return totals

    @staticmethod
    def _put_totals(c: sqlite3.Connection, endpoint_id: str, totals: dict[str, Any]) -> None:
        c.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                  (f"unattributed:{endpoint_id}", dumps(totals).encode()))
