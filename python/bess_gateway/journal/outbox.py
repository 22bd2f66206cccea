"""The outbox: transaction-related messages per endpoint, in order, delivered at least once;
each keeps its OCPP message id, so a resend after a crash carries the same id and a CSMS can
recognise it. Its idTags are sealed (`sealing.py`), and it keeps to a disk budget
(`Retention`, `_make_room`)."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from typing import Any

from bess_gateway.journal.db import Database, JournalError
from bess_gateway.journal.endpoints import Endpoints
from bess_gateway.journal.records import OutboxItem, Retention, dumps, loads, set_meter_stop
from bess_gateway.journal.sealing import Sealing

log = logging.getLogger(__name__)


class Outbox:
    def __init__(self, db: Database, sealing: Sealing, endpoints: Endpoints, *,
                 budget_bytes: int | None = None) -> None:
        self._db = db
        self._sealing = sealing
        self._endpoints = endpoints  # the removed ones' messages are outside the budget
        # The disk budget (None: unbounded) and what keeping to it did (metrics).
        self.budget_bytes = budget_bytes
        self.thinned = 0  # sampled meter values removed
        self.dropped = 0  # expendable messages removed
        self.over_budget = False  # over it with only messages that are never dropped

    def enqueue(
        self,
        endpoint_id: str,
        action: str,
        payload: dict[str, Any],
        local_tx_id: str | None,
        unique_id: str,
        retention: Retention = Retention.ALWAYS,
    ) -> int:
        """Queue a message; returns its sequence number (increasing, never reused).

        Over the disk budget, older messages make room as their retention allows (_make_room).
        """
        body = dumps(self._sealing.seal(endpoint_id, payload))
        with self._db.write(endpoint_id) as c:
            cur = c.execute(
                "INSERT INTO outbox (endpoint_id, action, payload, local_tx_id, unique_id, "
                "retention) VALUES (?, ?, ?, ?, ?, ?)",
                (endpoint_id, action, body, local_tx_id, unique_id, int(retention)),
            )
            seq = cur.lastrowid
            budget = self.budget_bytes
            if budget is not None and (self.over_budget or self._outbox_bytes(c) > budget):
                self._make_room(c, budget)
        assert seq is not None
        return int(seq)

    def pending(self, endpoint_id: str, limit: int = 100) -> list[OutboxItem]:
        """The oldest `limit` queued messages of an endpoint, in order."""
        rows = self._db.read(
            "SELECT seq, endpoint_id, action, payload, local_tx_id, unique_id, attempts "
            "FROM outbox WHERE endpoint_id = ? ORDER BY seq LIMIT ?",
            (endpoint_id, int(limit)),
        )
        return [
            OutboxItem(
                seq=int(seq),
                endpoint_id=e,
                action=action,
                payload=self._sealing.unseal(e, loads(payload)),
                local_tx_id=ltx,
                unique_id=uid,
                attempts=int(att),
            )
            for seq, e, action, payload, ltx, uid, att in rows
        ]

    def queued_payloads(self, endpoint_id: str, action: str) -> list[dict[str, Any]]:
        """Payloads of an endpoint's queued messages of one action, in order (e.g. to coalesce
        repeated security events)."""
        rows = self._db.read(
            "SELECT payload FROM outbox WHERE endpoint_id = ? AND action = ? ORDER BY seq",
            (endpoint_id, action),
        )
        return [self._sealing.unseal(endpoint_id, loads(payload)) for (payload,) in rows]

    def queued_stop(self, endpoint_id: str, local_tx_id: str) -> dict[str, Any] | None:
        """The queued StopTransaction of a transaction, if it has not been delivered."""
        rows = self._db.read(
            "SELECT payload FROM outbox WHERE endpoint_id = ? AND local_tx_id = ? "
            "AND action = 'StopTransaction' ORDER BY seq LIMIT 1", (endpoint_id, local_tx_id))
        if not rows:
            return None
        payload = self._sealing.unseal(endpoint_id, loads(rows[0][0]))
        return payload if isinstance(payload, dict) else None

    def queued_of(self, endpoint_id: str, local_tx_id: str, action: str) -> list[dict[str, Any]]:
        """A transaction's queued messages of one action, in order."""
        rows = self._db.read(
            "SELECT payload FROM outbox WHERE endpoint_id = ? AND local_tx_id = ? "
            "AND action = ? ORDER BY seq", (endpoint_id, local_tx_id, action))
        out = [self._sealing.unseal(endpoint_id, loads(text)) for (text,) in rows]
        return [p for p in out if isinstance(p, dict)]

    def patch_meter_stop(self, endpoint_id: str, local_tx_id: str, meter_stop: int) -> None:
        """Set `meterStop` of a transaction's queued StopTransaction (its final register, known
        once the meter has settled: bess_gateway.endpoint.settling, which holds the message until
        then)."""
        with self._db.write(endpoint_id) as c:
            rows = c.execute(
                "SELECT seq, payload FROM outbox WHERE endpoint_id = ? AND local_tx_id = ? "
                "AND action = 'StopTransaction'", (endpoint_id, local_tx_id)).fetchall()
            for seq, text in rows:
                payload = loads(text)
                if isinstance(payload, dict) and "meterStop" in payload:
                    set_meter_stop(payload, meter_stop)
                    c.execute("UPDATE outbox SET payload = ? WHERE seq = ?", (dumps(payload), seq))

    def rewrite_queued(self, endpoint_id: str, local_tx_id: str, action: str,
                       rewrite: Callable[[dict[str, Any]], bool]) -> None:
        """Edit a transaction's queued `action` messages in place (same seq and unique id);
        `rewrite` changes the stored payload (idTags stay sealed) and says whether it did."""
        with self._db.write(endpoint_id) as c:
            rows = c.execute(
                "SELECT seq, payload FROM outbox WHERE endpoint_id = ? AND local_tx_id = ? "
                "AND action = ?", (endpoint_id, local_tx_id, action)).fetchall()
            for seq, text in rows:
                payload = loads(text)
                if isinstance(payload, dict) and rewrite(payload):
                    c.execute("UPDATE outbox SET payload = ? WHERE seq = ?", (dumps(payload), seq))

    def ack(self, seq: int) -> None:
        """The CSMS answered the message: remove it."""
        with self._db.write(lazy=True) as c:
            c.execute("DELETE FROM outbox WHERE seq = ?", (int(seq),))
            budget = self.budget_bytes
            if self.over_budget and budget is not None and self._outbox_bytes(c) <= budget:
                self.over_budget = False
                log.warning("outbox back within its budget of %d bytes", budget)

    def bump_attempts(self, seq: int) -> None:
        with self._db.write(lazy=True) as c:
            c.execute("UPDATE outbox SET attempts = attempts + 1 WHERE seq = ?", (int(seq),))

    def depth(self, endpoint_id: str | None = None) -> int:
        """Number of queued messages, of one endpoint or of all."""
        if endpoint_id is None:
            rows = self._db.read("SELECT COUNT(*) FROM outbox")
        else:
            rows = self._db.read("SELECT COUNT(*) FROM outbox WHERE endpoint_id = ?",
                                 (endpoint_id,))
        return int(rows[0][0])

    def depths(self) -> dict[str, int]:
        """Queued messages per endpoint (endpoints with none are absent): one query per scrape."""
        rows = self._db.read("SELECT endpoint_id, COUNT(*) FROM outbox GROUP BY endpoint_id")
        return {str(eid): int(n) for eid, n in rows}

    def live_depth(self) -> int:
        """Queued messages of the configured endpoints (the removed ones' are not waited for)."""
        removed = self._endpoints.removed
        return sum(n for eid, n in self.depths().items() if eid not in removed)

    def outbox_bytes(self) -> int:
        """What the queued messages take (payload bytes + OUTBOX_ROW_BYTES each)."""
        return self._outbox_bytes(self._db.connection())

    def _outbox_bytes(self, c: sqlite3.Connection) -> int:
        """The live endpoints' share of the outbox (what the budget is about)."""
        try:
            row = c.execute("SELECT bytes FROM outbox_usage WHERE id = 0").fetchone()
        except sqlite3.Error as e:
            raise JournalError(f"journal {self._db.path}: read failed: {e}") from e
        return (int(row[0]) if row else 0) - self._endpoints.removed_bytes

    def _make_room(self, c: sqlite3.Connection, budget: int) -> None:
        """Bring the outbox under 90 % of its budget (the margin spares a pass per message).

        In this order: thin the sampled meter values of the oldest transactions (every other one
        goes, each transaction's first and last stay; one transaction, then the next, round
        after round), then drop expendable messages, oldest first. Messages kept ALWAYS are
        never touched: when only they remain the outbox goes over budget (logged, metric), as
        a lost billing record costs more than an overrun disk budget.
        """
        target = budget * 9 // 10
        thinned = dropped = 0
        used = self._outbox_bytes(c)
        # A removed endpoint's messages are outside the budget and kept as they are.
        removed = sorted(self._endpoints.removed)
        live_only = f" AND endpoint_id NOT IN ({','.join('?' * len(removed))})" if removed else ""
        while used > target:
            txs = c.execute(
                f"SELECT endpoint_id, local_tx_id FROM outbox WHERE retention = ?{live_only} "
                "GROUP BY endpoint_id, local_tx_id HAVING COUNT(*) >= 3 ORDER BY MIN(seq)",
                (int(Retention.THIN), *removed)).fetchall()
            if not txs:
                break
            for endpoint_id, local_tx_id in txs:
                seqs = [int(s) for (s,) in c.execute(
                    "SELECT seq FROM outbox WHERE retention = ? AND endpoint_id = ? "
                    "AND local_tx_id IS ? ORDER BY seq",
                    (int(Retention.THIN), endpoint_id, local_tx_id))]
                victims = seqs[1:-1:2]
                c.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in victims])
                thinned += len(victims)
                used = self._outbox_bytes(c)
                if used <= target:
                    break
        while used > target:
            seqs = [int(s) for (s,) in c.execute(
                f"SELECT seq FROM outbox WHERE retention = ?{live_only} ORDER BY seq LIMIT 32",
                (int(Retention.EXPENDABLE), *removed))]
            if not seqs:
                break
            for seq in seqs:
                c.execute("DELETE FROM outbox WHERE seq = ?", (seq,))
                dropped += 1
                used = self._outbox_bytes(c)
                if used <= target:
                    break
        self.thinned += thinned
        self.dropped += dropped
        if thinned or dropped:
            log.warning("outbox over its budget of %d bytes: %d sampled MeterValues thinned, "
                        "%d expendable messages dropped; now %d bytes", budget, thinned,
                        dropped, used)
        over = used > budget
        if over and not self.over_budget:
            log.warning("outbox over its budget (%d > %d bytes) with only transaction records "
                        "left: they are still accepted (never dropped)", used, budget)
        elif not over and self.over_budget:
            log.warning("outbox back within its budget of %d bytes", budget)
        self.over_budget = over
