"""The journal per endpoint: which endpoints it holds data of, those the configuration no longer
names (*removed*: kept untouched until the operator decides, docs/operations.md, "Removed
endpoints"), and an endpoint's whole data for export, purge and diagnostics."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from bess_gateway.journal.db import Database
from bess_gateway.journal.migrations import OUTBOX_ROW_BYTES
from bess_gateway.journal.records import loads


class Endpoints:
    def __init__(self, db: Database) -> None:
        self._db = db
        # Set by `set_live_endpoints`; the removed endpoints' queued bytes are not part of the
        # live outbox budget (the outbox reads both).
        self.removed: frozenset[str] = frozenset()
        self.removed_bytes = 0

    def set_live_endpoints(self, endpoint_ids: Iterable[str]) -> list[dict[str, Any]]:
        """The configured endpoints; the journal's data of any other endpoint is *removed*:
        kept as it is (never sent, thinned or dropped for the budget) and outside the live
        budget. Returns `removed_endpoints()`."""
        live = set(endpoint_ids)
        found = self.removed_endpoints(exclude=live)
        self.removed = frozenset(r["endpoint_id"] for r in found)
        self.removed_bytes = sum(int(r["queued_bytes"]) for r in found)
        return found

    def removed_endpoints(self, exclude: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Per endpoint not in `exclude` (default: the live ones) that has queued messages,
        open transactions or a meter register: what the journal still holds of it."""
        skip = set(self.live_endpoints if exclude is None else exclude)
        out: dict[str, dict[str, Any]] = {}

        def entry(eid: str) -> dict[str, Any]:
            return out.setdefault(eid, {"endpoint_id": eid, "queued_messages": 0,
                                        "queued_bytes": 0, "open_transactions": 0})

        for eid, n, size in self._db.read(
                "SELECT endpoint_id, COUNT(*), SUM(length(CAST(payload AS BLOB)) + "
                f"{OUTBOX_ROW_BYTES}) FROM outbox GROUP BY endpoint_id"):
            if eid not in skip:
                entry(eid).update(queued_messages=int(n), queued_bytes=int(size or 0))
        for eid, n in self._db.read(
                "SELECT endpoint_id, COUNT(*) FROM transactions GROUP BY endpoint_id"):
            if eid not in skip:
                entry(eid)["open_transactions"] = int(n)
        return sorted(out.values(), key=lambda r: r["endpoint_id"])

    @property
    def live_endpoints(self) -> frozenset[str]:
        """Every endpoint the journal holds data of, minus the removed ones; only meaningful
        for `removed_endpoints()` as a default (the gateway passes the configured set)."""
        rows = self._db.read("SELECT DISTINCT endpoint_id FROM outbox UNION "
                             "SELECT DISTINCT endpoint_id FROM transactions")
        return frozenset(str(r[0]) for r in rows) - self.removed

    def known_endpoints(self) -> set[str]:
        """Every endpoint id the journal holds anything of (settings, transactions, queue),
        configured or not any more."""
        rows = self._db.read("SELECT endpoint_id FROM settings UNION SELECT endpoint_id FROM "
                             "transactions UNION SELECT endpoint_id FROM outbox")
        return {str(r[0]) for r in rows}

    def export_endpoint(self, endpoint_id: str) -> dict[str, Any]:
        """What the journal holds of one endpoint, for an operator to keep before a purge:
        queued messages as stored (idTags stay sealed) and transaction records (idTags as
        keyed hashes only)."""
        queued = [{"seq": int(seq), "action": action, "payload": loads(payload),
                   "local_tx_id": ltx, "unique_id": uid, "attempts": int(att)}
                  for seq, action, payload, ltx, uid, att in self._db.read(
                      "SELECT seq, action, payload, local_tx_id, unique_id, attempts FROM outbox "
                      "WHERE endpoint_id = ? ORDER BY seq", (endpoint_id,))]
        txs = [{"local_id": lid, "connector": int(c), "id_tag_hash": tag,
                "meter_start_wh": int(wh), "started_at": at, "transaction_id": tid,
                "stopped": bool(stopped), "data": loads(data)}
               for lid, c, tag, wh, at, tid, stopped, data in self._db.read(
                   "SELECT local_id, connector, id_tag_hash, meter_start_wh, started_at, "
                   "transaction_id, stopped, data FROM transactions WHERE endpoint_id = ? "
                   "ORDER BY started_at", (endpoint_id,))]
        meters = {str(c): float(wh) for c, wh in self._db.read(
            "SELECT connector, energy_wh FROM meters WHERE endpoint_id = ?", (endpoint_id,))}
        return {"endpoint_id": endpoint_id, "queued_messages": queued, "transactions": txs,
                "meters_wh": meters}

    def purge_endpoint(self, endpoint_id: str) -> dict[str, int]:
        """Delete everything the journal holds of one endpoint (queued messages, transactions,
        meters, settings, profiles, reservations, authorization data): the operator's decision
        for an endpoint removed for good. Returns the rows deleted per table."""
        tables = ("outbox", "transactions", "meters", "settings", "charging_profiles",
                  "reservations", "auth_list", "auth_list_version", "auth_cache")
        counts: dict[str, int] = {}
        with self._db.write(endpoint_id) as c:
            for table in tables:
                counts[table] = c.execute(f"DELETE FROM {table} WHERE endpoint_id = ?",
                                          (endpoint_id,)).rowcount
        self._db.flush()
        if endpoint_id in self.removed:
            self.set_live_endpoints(self.live_endpoints)
        return counts

    def summary(self, since: str | None = None, until: str | None = None) -> dict[str, Any]:
        """What a diagnostics bundle says about the journal: per endpoint, queued messages,
        open transactions and those started in [since, until] (ISO-8601 strings compare in
        order: all are written by `iso()`). idTags appear only as their keyed hashes."""
        out: dict[str, Any] = {"schema_version": self._db.schema_version, "endpoints": {}}
        endpoints: dict[str, Any] = out["endpoints"]
        for endpoint_id, count in self._db.read(
                "SELECT endpoint_id, COUNT(*) FROM outbox GROUP BY endpoint_id"):
            endpoints.setdefault(endpoint_id, {})["queued_messages"] = int(count)
        rows = self._db.read(
            "SELECT endpoint_id, local_id, connector, id_tag_hash, meter_start_wh, started_at, "
            "transaction_id, stopped FROM transactions WHERE stopped = 0 "
            "OR (started_at >= ? AND started_at <= ?) ORDER BY started_at",
            (since or "", until or "9999"))
        for e, local_id, connector, tag, start_wh, started, tx_id, stopped in rows:
            endpoints.setdefault(e, {}).setdefault("transactions", []).append({
                "local_id": local_id, "connector": int(connector), "id_tag_hash": tag,
                "meter_start_wh": int(start_wh), "started_at": started,
                "transaction_id": tx_id, "open": not stopped})
        return out
