"""The local authorization list and the authorization cache, by keyed idTag hash only, and
forgetting one idTag everywhere the journal holds it."""

from __future__ import annotations

import sqlite3
from collections.abc import Collection
from datetime import datetime

from bess_gateway.domain.authorization import (
    CACHE_MAX_LENGTH,
    AuthInfo,
    ListChange,
    cache_victims,
    parse_status,
)
from bess_gateway.journal.db import Database
from bess_gateway.journal.records import loads, parse_time
from bess_gateway.journal.sealing import Sealing, id_slots


def _info(status: str, expiry: str | None, parent: str | None) -> AuthInfo:
    return AuthInfo(parse_status(status), parse_time(expiry), parent)


def _info_row(info: AuthInfo) -> tuple[str, str | None, str | None]:
    expiry = None if info.expiry is None else info.expiry.isoformat()
    return str(info.status), expiry, info.parent_hash


class Auth:
    def __init__(self, db: Database, sealing: Sealing) -> None:
        self._db = db
        self._sealing = sealing

    def auth_list_version(self, endpoint_id: str) -> int:
        """The version of the endpoint's local list; 0 when it never got one."""
        rows = self._db.read("SELECT version FROM auth_list_version WHERE endpoint_id = ?",
                             (endpoint_id,))
        return int(rows[0][0]) if rows else 0

    def auth_list_entry(self, endpoint_id: str, id_tag_hash: str) -> AuthInfo | None:
        rows = self._db.read(
            "SELECT status, expiry, parent_hash FROM auth_list "
            "WHERE endpoint_id = ? AND id_tag_hash = ?", (endpoint_id, id_tag_hash))
        return _info(*rows[0]) if rows else None

    def auth_list_size(self, endpoint_id: str) -> int:
        rows = self._db.read("SELECT COUNT(*) FROM auth_list WHERE endpoint_id = ?",
                             (endpoint_id,))
        return int(rows[0][0])

    def auth_list_count(self, endpoint_id: str, hashes: list[str]) -> int:
        """How many of `hashes` the endpoint's list holds."""
        count = 0
        for i in range(0, len(hashes), 500):  # stay under SQLite's bound-parameter limit
            chunk = hashes[i:i + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._db.read(
                "SELECT COUNT(*) FROM auth_list WHERE endpoint_id = ? "
                f"AND id_tag_hash IN ({marks})", (endpoint_id, *chunk))
            count += int(rows[0][0])
        return count

    def apply_auth_list(self, endpoint_id: str, *, full: bool, version: int,
                        changes: list[ListChange]) -> None:
        """Apply a checked list update and set the version, all or nothing.

        Identifiers that enter the list leave the cache (the two never hold the same one).
        """
        with self._db.write(endpoint_id) as c:
            if full:
                c.execute("DELETE FROM auth_list WHERE endpoint_id = ?", (endpoint_id,))
            for ch in changes:
                if ch.info is None:
                    c.execute("DELETE FROM auth_list WHERE endpoint_id = ? AND id_tag_hash = ?",
                              (endpoint_id, ch.id_hash))
                    continue
                c.execute(
                    "INSERT INTO auth_list (endpoint_id, id_tag_hash, status, expiry, parent_hash)"
                    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (endpoint_id, id_tag_hash) DO UPDATE SET"
                    " status = excluded.status, expiry = excluded.expiry,"
                    " parent_hash = excluded.parent_hash",
                    (endpoint_id, ch.id_hash, *_info_row(ch.info)))
                c.execute("DELETE FROM auth_cache WHERE endpoint_id = ? AND id_tag_hash = ?",
                          (endpoint_id, ch.id_hash))
            c.execute(
                "INSERT INTO auth_list_version (endpoint_id, version) VALUES (?, ?) "
                "ON CONFLICT (endpoint_id) DO UPDATE SET version = excluded.version",
                (endpoint_id, int(version)))

    def auth_cache_entry(self, endpoint_id: str, id_tag_hash: str) -> AuthInfo | None:
        rows = self._db.read(
            "SELECT status, expiry, parent_hash FROM auth_cache "
            "WHERE endpoint_id = ? AND id_tag_hash = ?", (endpoint_id, id_tag_hash))
        return _info(*rows[0]) if rows else None

    def auth_cache_size(self, endpoint_id: str) -> int:
        rows = self._db.read("SELECT COUNT(*) FROM auth_cache WHERE endpoint_id = ?",
                             (endpoint_id,))
        return int(rows[0][0])

    def put_auth_cache(self, endpoint_id: str, id_tag_hash: str, info: AuthInfo,
                       now: datetime) -> bool:
        """Record what the CSMS said about an identifier, unless the local list holds it.

        A full cache first drops not-valid entries, then the least recently updated valid ones.
        Returns whether the cache was written.
        """
        with self._db.write(endpoint_id) as c:
            if c.execute("SELECT 1 FROM auth_list WHERE endpoint_id = ? AND id_tag_hash = ?",
                         (endpoint_id, id_tag_hash)).fetchone():
                return False
            size = c.execute("SELECT COUNT(*) FROM auth_cache WHERE endpoint_id = ? AND "
                             "id_tag_hash != ?", (endpoint_id, id_tag_hash)).fetchone()[0]
            rows = [] if size < CACHE_MAX_LENGTH else c.execute(
                "SELECT id_tag_hash, status, expiry, parent_hash, updated_at FROM auth_cache "
                "WHERE endpoint_id = ? AND id_tag_hash != ?", (endpoint_id, id_tag_hash)
            ).fetchall()
            entries = [(h, _info(s, e, p), parse_time(u) or now) for h, s, e, p, u in rows]
            for victim in cache_victims(entries, 1, now):
                c.execute("DELETE FROM auth_cache WHERE endpoint_id = ? AND id_tag_hash = ?",
                          (endpoint_id, victim))
            c.execute(
                "INSERT INTO auth_cache (endpoint_id, id_tag_hash, status, expiry, parent_hash, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (endpoint_id, id_tag_hash) "
                "DO UPDATE SET status = excluded.status, expiry = excluded.expiry, "
                "parent_hash = excluded.parent_hash, updated_at = excluded.updated_at",
                (endpoint_id, id_tag_hash, *_info_row(info), now.isoformat()))
        return True

    def clear_auth_cache(self, endpoint_id: str) -> int:
        """Empty the endpoint's authorization cache; returns the number of entries removed."""
        with self._db.write(endpoint_id) as c:
            cur = c.execute("DELETE FROM auth_cache WHERE endpoint_id = ?", (endpoint_id,))
        return int(cur.rowcount)

    def forget_id_tag(self, id_tag: str, *, drop_undelivered: bool = False,
                      endpoints: Collection[str] | None = None) -> dict[str, int]:
        """Remove what the journal holds about one idTag, across all endpoints (or only across
        ``endpoints``: one operator's, when its CSMS asks, docs/security.md).

        Deletes its local-list, cache and reservation entries, unlinks it from transaction
        records (their hash is overwritten) and from entries it is the parent of. Queued
        messages that still carry it (sealed) are the CSMS's transaction record: they are kept
        and counted as `undelivered`, unless `drop_undelivered`, which deletes them together
        with the rest of their transaction's queued messages (the CSMS then never hears of
        those transactions). Returns counts.
        """
        h = self._sealing.hash_id_tag(id_tag)
        # The endpoint restriction as SQL: the ids are bound parameters, in chunks below
        # SQLite's limit of bound parameters.
        chunks: list[list[str]] = [[]] if endpoints is None else [
            sorted(endpoints)[i:i + 500] for i in range(0, len(endpoints), 500)]

        def only(chunk: list[str]) -> str:
            return "" if endpoints is None else \
                f" AND endpoint_id IN ({','.join('?' * len(chunk))})"

        def run(c: sqlite3.Connection, sql: str) -> int:
            return sum(c.execute(sql + only(chunk), (h, *chunk)).rowcount for chunk in chunks)

        with self._db.write() as c:
            out = {
                "local_list": run(c, "DELETE FROM auth_list WHERE id_tag_hash = ?"),
                "cache": run(c, "DELETE FROM auth_cache WHERE id_tag_hash = ?"),
                "reservations": run(c, "DELETE FROM reservations WHERE id_tag_hash = ?"),
                # A transaction record needs no idTag to be finished: keep it, unlinked.
                "transactions": run(
                    c, "UPDATE transactions SET id_tag_hash = 'forgotten' WHERE id_tag_hash = ?"),
            }
            # Where it is another identifier's parent, the link goes (group rights are lost).
            out["parent_links"] = sum(
                run(c, f"UPDATE {table} SET parent_hash = NULL WHERE parent_hash = ?")
                for table in ("auth_list", "auth_cache", "reservations"))
            carrying: list[tuple[int, str, str | None]] = []
            for seq, endpoint_id, text, ltx in c.execute(
                    "SELECT seq, endpoint_id, payload, local_tx_id FROM outbox").fetchall():
                if endpoints is not None and endpoint_id not in endpoints:
                    continue
                payload = loads(text)
                slots = id_slots(payload) if isinstance(payload, dict) else []
                if any(isinstance(holder[key], dict) and holder[key].get("hash") == h
                       for holder, key in slots):
                    carrying.append((int(seq), endpoint_id, ltx))
            dropped = 0
            if drop_undelivered:
                for seq, endpoint_id, ltx in carrying:
                    dropped += c.execute("DELETE FROM outbox WHERE seq = ?", (seq,)).rowcount
                    if ltx is not None:
                        dropped += c.execute(
                            "DELETE FROM outbox WHERE endpoint_id = ? AND local_tx_id = ?",
                            (endpoint_id, ltx)).rowcount
                        c.execute("DELETE FROM transactions WHERE endpoint_id = ? AND local_id = ?",
                                  (endpoint_id, ltx))
            out["undelivered"] = 0 if drop_undelivered else len(carrying)
            out["dropped_messages"] = dropped
        if any(out.values()):
            # secure_delete zeroes freed pages; the WAL may still hold old ones until checkpointed.
            self._db.checkpoint_truncate()
        return out
