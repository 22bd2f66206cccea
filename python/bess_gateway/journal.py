"""The journal: everything that must survive a restart, in one SQLite file (WAL).

- settings: configuration keys per endpoint (strings, as OCPP carries them)
- meters: the energy register of each (endpoint, connector), restored into the core at start-up
- transactions: open transactions (stopped ones stay until their stop message is delivered)
- outbox: transaction-related messages per endpoint, in order, delivered at least once; each keeps
  its OCPP message id, so a resend after a crash carries the same id and a CSMS can recognise it

Every write is committed with `synchronous=FULL` before the method returns (durable before we act).
`atomic()` groups several calls into one transaction. Every SQLite or serialisation failure raises
`JournalError`, so a caller can contain it (a database error must not take down an endpoint).

idTags are stored only as keyed hashes (`hash_id_tag`), with a random key kept in the journal.
The one exception is a message still waiting in the outbox (e.g. a StartTransaction carries its
idTag): it is deleted, and its pages zeroed (`secure_delete`), once the CSMS has answered it.

One Journal per file per process: the file is locked (flock) while open, so a second gateway
started on the same data folder fails at once instead of duplicating transactions.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

try:
    import fcntl
except ImportError:  # pragma: no cover - not on POSIX
    fcntl = None  # type: ignore[assignment]

__all__ = ["Journal", "JournalError", "OutboxItem", "TxRecord", "hash_id_tag"]

log = logging.getLogger(__name__)

ID_TAG_HASH_CHARS = 32

# Each entry migrates the schema from version i to i + 1 (PRAGMA user_version). Append only.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID",
        """CREATE TABLE settings (
            endpoint_id TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
            PRIMARY KEY (endpoint_id, key)) WITHOUT ROWID""",
        """CREATE TABLE meters (
            endpoint_id TEXT NOT NULL, connector INTEGER NOT NULL, energy_wh REAL NOT NULL,
            PRIMARY KEY (endpoint_id, connector)) WITHOUT ROWID""",
        """CREATE TABLE transactions (
            endpoint_id TEXT NOT NULL, local_id TEXT NOT NULL, connector INTEGER NOT NULL,
            id_tag_hash TEXT NOT NULL, meter_start_wh INTEGER NOT NULL, started_at TEXT NOT NULL,
            transaction_id TEXT, stopped INTEGER NOT NULL DEFAULT 0, data TEXT NOT NULL,
            PRIMARY KEY (endpoint_id, local_id)) WITHOUT ROWID""",
        """CREATE TABLE outbox (
            seq INTEGER PRIMARY KEY AUTOINCREMENT, endpoint_id TEXT NOT NULL,
            action TEXT NOT NULL, payload TEXT NOT NULL, local_tx_id TEXT,
            unique_id TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0)""",
        "CREATE INDEX outbox_by_endpoint ON outbox (endpoint_id, seq)",
        """CREATE INDEX outbox_by_tx ON outbox (endpoint_id, local_tx_id)
            WHERE local_tx_id IS NOT NULL""",
    ),
)


class JournalError(Exception):
    """The journal could not read or write (disk full, corrupt file, locked, bad payload...)."""


@dataclass(frozen=True, slots=True)
class TxRecord:
    endpoint_id: str
    local_id: str
    connector: int
    id_tag_hash: str
    meter_start_wh: int
    started_at: str  # ISO-8601
    transaction_id: str | None = None  # the CSMS's (1.6) or our own (2.0.1) id, once known
    stopped: bool = False  # stopped locally; the stop message may still be in the outbox
    data: dict[str, Any] = field(default_factory=dict)  # version-specific extras (JSON)


@dataclass(frozen=True, slots=True)
class OutboxItem:
    seq: int
    endpoint_id: str
    action: str
    payload: dict[str, Any]
    local_tx_id: str | None
    unique_id: str
    attempts: int


def hash_id_tag(id_tag: str, key: bytes) -> str:
    """HMAC-SHA256 of an idTag, hex, truncated to 32 characters (128 bits)."""
    digest = hmac.new(key, id_tag.encode("utf-8"), hashlib.sha256).hexdigest()
    return digest[:ID_TAG_HASH_CHARS]


def _dumps(value: Any) -> str:
    try:
        return orjson.dumps(value).decode("utf-8")
    except TypeError as e:
        raise JournalError(f"cannot store as JSON: {e}") from e


def _loads(text: str | bytes) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as e:
        raise JournalError(f"corrupt JSON in the journal: {e}") from e


class Journal:
    """One SQLite file, one connection, used from one thread (the asyncio loop's)."""

    def __init__(self, path: str | Path, *, busy_timeout_ms: int = 5000) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._lock_file: Any = None
        self._depth = 0  # nesting of atomic() blocks
        memory = str(path) == ":memory:"
        try:
            if not memory:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._lock()
            # isolation_level=None: no implicit transactions, we BEGIN/COMMIT ourselves
            self._conn = sqlite3.connect(
                str(self.path), isolation_level=None, timeout=busy_timeout_ms / 1000
            )
            c = self._conn
            c.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            mode = c.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal" and not memory:
                log.warning("journal %s: WAL mode not available, using %s", self.path, mode)
            c.execute("PRAGMA synchronous = FULL")
            c.execute("PRAGMA secure_delete = ON")
            self._migrate()
            self._key = self._id_tag_key()
        except (sqlite3.Error, OSError) as e:
            self._release()
            raise JournalError(f"cannot open journal {self.path}: {e}") from e
        except JournalError:
            self._release()
            raise

    # -- life cycle ----------------------------------------------------------------------------
    def _lock(self) -> None:
        if fcntl is None:  # pragma: no cover
            return
        lock_path = self.path.with_name(self.path.name + ".lock")
        f = lock_path.open("a+")
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            raise JournalError(
                f"journal {self.path} is in use by another gateway (lock {lock_path}); "
                "stop it or give this one another data_dir"
            ) from None
        self._lock_file = f

    def _release(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except sqlite3.Error:  # pragma: no cover
                pass
            self._conn = None
        if self._lock_file is not None:
            self._lock_file.close()  # closing the file releases the flock
            self._lock_file = None

    def close(self) -> None:
        """Close the connection and release the lock. Idempotent."""
        self._release()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        return int(self._read("PRAGMA user_version")[0][0])

    def _migrate(self) -> None:
        c = self._db()
        current = int(c.execute("PRAGMA user_version").fetchone()[0])
        if current > len(MIGRATIONS):
            raise JournalError(
                f"journal {self.path} has schema version {current}, newer than this gateway "
                f"knows ({len(MIGRATIONS)}); upgrade the gateway or move the file away"
            )
        for version in range(current, len(MIGRATIONS)):
            c.execute("BEGIN IMMEDIATE")
            try:
                for statement in MIGRATIONS[version]:
                    c.execute(statement)
                c.execute(f"PRAGMA user_version = {version + 1}")
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise

    def _id_tag_key(self) -> bytes:
        with self._write() as c:
            c.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('id_tag_key', ?)",
                (secrets.token_bytes(32),),
            )
        return bytes(self._read("SELECT value FROM meta WHERE key = 'id_tag_key'")[0][0])

    # -- plumbing ------------------------------------------------------------------------------
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise JournalError(f"journal {self.path} is closed")
        return self._conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One committed transaction, or a part of the enclosing atomic() block."""
        with self.atomic():
            yield self._db()

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """Group calls into one transaction: all of them are committed, or none.

        Any exception inside rolls the whole block back; SQLite errors come out as JournalError.
        """
        c = self._db()
        depth = self._depth
        # the outermost block is a transaction, an inner one a savepoint inside it
        begin, commit, rollback = (
            ("BEGIN IMMEDIATE", "COMMIT", "ROLLBACK")
            if depth == 0
            else (f"SAVEPOINT sp{depth}", f"RELEASE sp{depth}", f"ROLLBACK TO sp{depth}")
        )
        try:
            c.execute(begin)
        except sqlite3.Error as e:
            raise JournalError(f"journal {self.path}: write failed: {e}") from e
        self._depth = depth + 1
        try:
            yield
            c.execute(commit)
        except BaseException as e:
            try:
                c.execute(rollback)
                if depth:
                    c.execute(commit)  # a savepoint stays on the stack after ROLLBACK TO
            except sqlite3.Error:
                pass  # a failed COMMIT may already have rolled back
            if isinstance(e, sqlite3.Error):
                raise JournalError(f"journal {self.path}: write failed: {e}") from e
            raise
        finally:
            self._depth = depth

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        try:
            return self._db().execute(sql, params).fetchall()
        except sqlite3.Error as e:
            raise JournalError(f"journal {self.path}: read failed: {e}") from e

    # -- id tags -------------------------------------------------------------------------------
    def hash_id_tag(self, id_tag: str) -> str:
        """The idTag's keyed hash under this journal's key (what we store and compare)."""
        return hash_id_tag(id_tag, self._key)

    # -- settings ------------------------------------------------------------------------------
    def get_settings(self, endpoint_id: str) -> dict[str, str]:
        rows = self._read("SELECT key, value FROM settings WHERE endpoint_id = ?", (endpoint_id,))
        return {k: v for k, v in rows}

    def put_setting(self, endpoint_id: str, key: str, value: str) -> None:
        with self._write() as c:
            c.execute(
                "INSERT INTO settings (endpoint_id, key, value) VALUES (?, ?, ?) "
                "ON CONFLICT (endpoint_id, key) DO UPDATE SET value = excluded.value",
                (endpoint_id, key, str(value)),
            )

    # -- meters --------------------------------------------------------------------------------
    def get_meters(self) -> dict[tuple[str, int], float]:
        rows = self._read("SELECT endpoint_id, connector, energy_wh FROM meters")
        return {(e, int(c)): float(wh) for e, c, wh in rows}

    def put_meters(self, values: Mapping[tuple[str, int], float]) -> None:
        """Store many registers in one transaction."""
        if not values:
            return
        with self._write() as c:
            c.executemany(
                "INSERT INTO meters (endpoint_id, connector, energy_wh) VALUES (?, ?, ?) "
                "ON CONFLICT (endpoint_id, connector) DO UPDATE SET energy_wh = excluded.energy_wh",
                [(e, int(conn), float(wh)) for (e, conn), wh in values.items()],
            )

    # -- transactions --------------------------------------------------------------------------
    def put_transaction(self, rec: TxRecord) -> None:
        """Insert or replace the record with this (endpoint_id, local_id)."""
        data = _dumps(rec.data)
        with self._write() as c:
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
        rows = self._read(
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
                data=_loads(data),
            )
            for e, lid, conn, h, ms, sa, tid, st, data in rows
        ]

    def finish_transaction(self, endpoint_id: str, local_id: str) -> None:
        """Forget a transaction whose stop the CSMS has acknowledged (deletes the record)."""
        with self._write() as c:
            c.execute(
                "DELETE FROM transactions WHERE endpoint_id = ? AND local_id = ?",
                (endpoint_id, local_id),
            )

    # -- outbox --------------------------------------------------------------------------------
    def enqueue(
        self,
        endpoint_id: str,
        action: str,
        payload: dict[str, Any],
        local_tx_id: str | None,
        unique_id: str,
    ) -> int:
        """Queue a message; returns its sequence number (increasing, never reused)."""
        body = _dumps(payload)
        with self._write() as c:
            cur = c.execute(
                "INSERT INTO outbox (endpoint_id, action, payload, local_tx_id, unique_id) "
                "VALUES (?, ?, ?, ?, ?)",
                (endpoint_id, action, body, local_tx_id, unique_id),
            )
            seq = cur.lastrowid
        assert seq is not None
        return int(seq)

    def pending(self, endpoint_id: str, limit: int = 100) -> list[OutboxItem]:
        """The oldest `limit` queued messages of an endpoint, in order."""
        rows = self._read(
            "SELECT seq, endpoint_id, action, payload, local_tx_id, unique_id, attempts "
            "FROM outbox WHERE endpoint_id = ? ORDER BY seq LIMIT ?",
            (endpoint_id, int(limit)),
        )
        return [
            OutboxItem(
                seq=int(seq),
                endpoint_id=e,
                action=action,
                payload=_loads(payload),
                local_tx_id=ltx,
                unique_id=uid,
                attempts=int(att),
            )
            for seq, e, action, payload, ltx, uid, att in rows
        ]

    def ack(self, seq: int) -> None:
        """The CSMS answered the message: remove it."""
        with self._write() as c:
            c.execute("DELETE FROM outbox WHERE seq = ?", (int(seq),))

    def bump_attempts(self, seq: int) -> None:
        with self._write() as c:
            c.execute("UPDATE outbox SET attempts = attempts + 1 WHERE seq = ?", (int(seq),))

    def patch_transaction_id(
        self, endpoint_id: str, local_tx_id: str, transaction_id: int | str
    ) -> int:
        """The CSMS assigned a transactionId (1.6 StartTransaction.conf): write it everywhere.

        Rewrites `payload["transactionId"]` of the still-queued messages of that local
        transaction that have the key (queue them with a placeholder, e.g. -1; a message without
        the key, such as StartTransaction itself, is left alone), and sets the record's
        transaction_id, in one transaction. Returns the number of messages patched.
        """
        with self._write() as c:
            rows = c.execute(
                "SELECT seq, payload FROM outbox WHERE endpoint_id = ? AND local_tx_id = ?",
                (endpoint_id, local_tx_id),
            ).fetchall()
            patched = 0
            for seq, text in rows:
                payload = _loads(text)
                if isinstance(payload, dict) and "transactionId" in payload:
                    payload["transactionId"] = transaction_id
                    c.execute("UPDATE outbox SET payload = ? WHERE seq = ?", (_dumps(payload), seq))
                    patched += 1
            c.execute(
                "UPDATE transactions SET transaction_id = ? WHERE endpoint_id = ? AND local_id = ?",
                (str(transaction_id), endpoint_id, local_tx_id),
            )
        return patched

    def depth(self, endpoint_id: str | None = None) -> int:
        """Number of queued messages, of one endpoint or of all."""
        if endpoint_id is None:
            rows = self._read("SELECT COUNT(*) FROM outbox")
        else:
            rows = self._read("SELECT COUNT(*) FROM outbox WHERE endpoint_id = ?", (endpoint_id,))
        return int(rows[0][0])
