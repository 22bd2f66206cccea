"""The journal: everything that must survive a restart, in one SQLite file (WAL).

- settings: configuration keys per endpoint (strings, as OCPP carries them)
- meters: the energy register of each (endpoint, connector), restored into the core at start-up
- transactions: open transactions (stopped ones stay until their stop message is delivered)
- outbox: transaction-related messages per endpoint, in order, delivered at least once; each keeps
  its OCPP message id, so a resend after a crash carries the same id and a CSMS can recognise it

Every write is committed with `synchronous=FULL` before the method returns (durable before we act),
unless `group_commits()` is on (the gateway turns it on): writes then join one open "group"
transaction that commits once for all of them (one fsync instead of one per write; the load
benchmark's session restarts made ~6 commits each, issue 6). The group commits when something must
be durable before its next step: `durable(endpoint_id)` (awaited before every frame an endpoint
sends, so nothing reaches the CSMS, a CALLRESULT or a queued message, before what that endpoint
wrote ahead of it is on disk) or `flush()` (a session's record before its power); otherwise at
most `max_delay_s` after its first write. What a crash can lose is only what nobody outside
has seen, such as an ack of a delivered message (it is sent again, with its id). Meter registers
(`put_meters`) still commit at once: a crash's energy split is only as good as the last save.
`atomic()` groups several calls into one all-or-nothing change (inside a group: a savepoint).
Every SQLite or serialisation failure raises `JournalError`, so a caller can contain it (a
database error must not take down an endpoint).

idTags are stored only as keyed hashes (`hash_id_tag`), with a random key kept in the journal.
The one exception is a message still waiting in the outbox (a StartTransaction must carry its
idTag, a 2.0.1 TransactionEvent Started its idToken): its `idTag` / `idToken.idToken` is sealed
with AES-GCM under a second random key in the meta table (so the tag never appears in clear in
the file, nor in a copy of the outbox rows), tagged with its hash so `forget_id_tag` finds it,
and the row is deleted, its pages zeroed (`secure_delete`), once the CSMS has answered. Both keys
live in the same file: this keeps tags out of dumps, logs, support bundles and forensic greps,
not away from someone holding the whole file.

One Journal per file per process: the file is locked (flock) while open, so a second gateway
started on the same data folder fails at once instead of duplicating transactions.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import secrets
import sqlite3
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import IntEnum
from pathlib import Path
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bess_gateway.domain.authorization import (
    CACHE_MAX_LENGTH,
    AuthInfo,
    ListChange,
    cache_victims,
    parse_status,
)

try:
    import fcntl
except ImportError:  # pragma: no cover - not on POSIX
    fcntl = None  # type: ignore[assignment]

__all__ = ["Journal", "JournalError", "OutboxItem", "Retention", "TxRecord", "hash_id_tag",
           "set_meter_stop"]

log = logging.getLogger(__name__)

ID_TAG_HASH_CHARS = 32

# What a queued message costs besides its payload (row, ids, index entries), for the disk budget.
# Written into the budget migration's triggers: a change needs a new migration.
OUTBOX_ROW_BYTES = 100


class Retention(IntEnum):
    """What the outbox may do with a queued message when it is over its disk budget."""

    ALWAYS = 0  # billing records (start, stop, transaction-end data): never dropped
    THIN = 1  # sampled meter values of a transaction: every other one may go, first/last stay
    EXPENDABLE = 2  # non-transaction messages (non-critical security events): oldest go first


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
    (  # local authorization list and authorization cache, by keyed idTag hash only
        """CREATE TABLE auth_list (
            endpoint_id TEXT NOT NULL, id_tag_hash TEXT NOT NULL, status TEXT NOT NULL,
            expiry TEXT, parent_hash TEXT,
            PRIMARY KEY (endpoint_id, id_tag_hash)) WITHOUT ROWID""",
        """CREATE TABLE auth_list_version (
            endpoint_id TEXT PRIMARY KEY, version INTEGER NOT NULL) WITHOUT ROWID""",
        """CREATE TABLE auth_cache (
            endpoint_id TEXT NOT NULL, id_tag_hash TEXT NOT NULL, status TEXT NOT NULL,
            expiry TEXT, parent_hash TEXT, updated_at TEXT NOT NULL,
            PRIMARY KEY (endpoint_id, id_tag_hash)) WITHOUT ROWID""",
    ),
    (  # reservations in force (ReserveNow), by keyed idTag hash only
        """CREATE TABLE reservations (
            endpoint_id TEXT NOT NULL, reservation_id INTEGER NOT NULL,
            connector INTEGER NOT NULL, id_tag_hash TEXT NOT NULL, parent_hash TEXT,
            expiry TEXT NOT NULL,
            PRIMARY KEY (endpoint_id, reservation_id)) WITHOUT ROWID""",
    ),
    (  # installed charging profiles (smart charging), as the domain's JSON
        """CREATE TABLE charging_profiles (
            endpoint_id TEXT NOT NULL, profile_id INTEGER NOT NULL, data TEXT NOT NULL,
            installed_at TEXT NOT NULL,
            PRIMARY KEY (endpoint_id, profile_id)) WITHOUT ROWID""",
    ),
    (  # the outbox's disk budget: each message's Retention, and its size kept by triggers in
       # one row, so checking the budget is a point read, never a scan (docs/operations.md)
        "ALTER TABLE outbox ADD COLUMN retention INTEGER NOT NULL DEFAULT 0",
        """CREATE INDEX outbox_thinnable ON outbox (endpoint_id, local_tx_id, seq)
            WHERE retention = 1""",
        "CREATE INDEX outbox_expendable ON outbox (seq) WHERE retention = 2",
        """CREATE TABLE outbox_usage (
            id INTEGER PRIMARY KEY CHECK (id = 0), bytes INTEGER NOT NULL)""",
        f"""INSERT INTO outbox_usage (id, bytes) SELECT 0,
            COALESCE(SUM(length(CAST(payload AS BLOB)) + {OUTBOX_ROW_BYTES}), 0) FROM outbox""",
        f"""CREATE TRIGGER outbox_usage_insert AFTER INSERT ON outbox BEGIN
            UPDATE outbox_usage SET bytes = bytes + length(CAST(NEW.payload AS BLOB))
                + {OUTBOX_ROW_BYTES} WHERE id = 0; END""",
        f"""CREATE TRIGGER outbox_usage_delete AFTER DELETE ON outbox BEGIN
            UPDATE outbox_usage SET bytes = bytes - length(CAST(OLD.payload AS BLOB))
                - {OUTBOX_ROW_BYTES} WHERE id = 0; END""",
        """CREATE TRIGGER outbox_usage_update AFTER UPDATE OF payload ON outbox BEGIN
            UPDATE outbox_usage SET bytes = bytes - length(CAST(OLD.payload AS BLOB))
                + length(CAST(NEW.payload AS BLOB)) WHERE id = 0; END""",
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
class ReservationRecord:
    endpoint_id: str
    reservation_id: int
    connector: int
    id_tag_hash: str
    expiry: str  # ISO-8601
    parent_hash: str | None = None


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


def set_meter_stop(payload: dict[str, Any], meter_stop: int) -> None:
    """A StopTransaction's final register: `meterStop` and the energy register of its
    Transaction.End sample (taken with meterStop, so the two agree)."""
    payload["meterStop"] = int(meter_stop)
    for mv in payload.get("transactionData") or []:
        for sv in mv.get("sampledValue") or []:
            if (sv.get("context") == "Transaction.End" and sv.get("unit", "Wh") == "Wh"
                    and str(sv.get("measurand", "")).startswith("Energy.Active.")
                    and str(sv.get("measurand", "")).endswith(".Register")):
                sv["value"] = str(int(meter_stop))


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

    def __init__(self, path: str | Path, *, busy_timeout_ms: int = 5000,
                 outbox_budget_bytes: int | None = None) -> None:
        self.path = Path(path)
        # The outbox's disk budget (None: unbounded) and what keeping to it did (metrics).
        self.outbox_budget_bytes = outbox_budget_bytes
        self.outbox_thinned = 0  # sampled meter values removed
        self.outbox_dropped = 0  # expendable messages removed
        self.outbox_over_budget = False  # over it with only messages that are never dropped
        # Endpoints the journal holds data of but the configuration no longer names (set by
        # `set_live_endpoints`): kept untouched until the operator decides (docs/operations.md,
        # "Removed endpoints"); their queued bytes are not part of the live budget.
        self.removed: frozenset[str] = frozenset()
        self._removed_bytes = 0
        self._conn: sqlite3.Connection | None = None
        self._lock_file: Any = None
        self._depth = 0  # nesting of atomic() blocks
        self.commits = 0  # transactions committed to disk (each one fsync with synchronous=FULL)
        # group commit (see the module docstring): off until group_commits()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._max_delay_s = 0.0
        self._group_open = False  # a group transaction holds writes not yet on disk
        self._group_timer: asyncio.Handle | None = None
        self._flush_after_block = False  # flush() was called inside an atomic() block
        self._waits: set[str] = set()  # endpoints whose frames wait for the open group
        self._waits_all = False  # every endpoint's frames wait for it
        self._lost: set[str] = set()  # endpoints whose writes a failed group lost
        # Failed groups that held a write for every endpoint, and how many of them each caller
        # of durable() (an endpoint id; None: a caller for all) has been told of: each is told
        # once, then goes on (a set of endpoints left to tell cannot be made, the journal does
        # not know them).
        self._lost_all = 0
        self._lost_all_told: dict[str | None, int] = {}
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
            self._seal_key = AESGCM(self._meta_secret("outbox_key"))
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
        """Commit an open group, close the connection and release the lock. Idempotent."""
        if self._conn is not None and self._group_open:
            try:
                self.flush()
            except JournalError:
                pass  # already logged by flush()
        self._loop = None
        self._release()

    # -- group commit --------------------------------------------------------------------------
    def group_commits(self, max_delay_s: float = 1.0) -> None:
        """From now on, writes made on the running loop share commits (module docstring).

        `max_delay_s` bounds how long a write nobody waits for stays uncommitted.
        """
        self._loop = asyncio.get_running_loop()
        self._max_delay_s = max_delay_s

    @property
    def uncommitted(self) -> bool:
        """True while a group holds writes not yet on disk."""
        return self._group_open

    async def durable(self, endpoint_id: str | None = None) -> None:
        """Return once the writes made so far are on disk: those of `endpoint_id` and those
        made for every endpoint; with None, all of them. Commits the open group if it holds
        such writes (everything else written so far shares that commit).

        Raises JournalError when such writes were lost (a failed commit, or SQLite rolled the
        group back): what they recorded must not be acted on. Reported once per endpoint (a
        lost write for every endpoint: once to each caller), after which it goes on.
        """
        if self._loss_unreported(endpoint_id):
            self._loss_reported(endpoint_id)
            raise JournalError(f"journal {self.path}: earlier writes were lost")
        if not self._group_open:
            return
        if endpoint_id is not None and not self._waits_all and endpoint_id not in self._waits:
            return
        # At once rather than at the end of this loop turn: a loaded turn took longer than the
        # fsync itself (load benchmark, issue 6), and the writes of other endpoints that arrive
        # within one turn are rare next to those nobody waits for, which share it anyway.
        try:
            self.flush()
        except JournalError:
            self._loss_reported(endpoint_id)
            raise

    def _loss_unreported(self, endpoint_id: str | None) -> bool:
        if self._lost_all_told.get(endpoint_id, 0) < self._lost_all:
            return True
        return bool(self._lost) and (endpoint_id is None or endpoint_id in self._lost)

    def _loss_reported(self, endpoint_id: str | None) -> None:
        if endpoint_id is None:
            self._lost.clear()
        else:
            self._lost.discard(endpoint_id)
        self._lost_all_told[endpoint_id] = self._lost_all

    def flush(self) -> None:
        """Commit the open group now (inside an atomic() block: at the end of the outermost one).

        Raises JournalError when the commit fails; the group's writes are then rolled back.
        """
        if not self._group_open:
            return
        if self._depth:
            self._flush_after_block = True
            return
        try:
            self._db().execute("COMMIT")
        except (sqlite3.Error, JournalError) as e:
            err = JournalError(f"journal {self.path}: group commit failed, writes lost: {e}")
            try:
                self._db().execute("ROLLBACK")
            except (sqlite3.Error, JournalError):
                pass  # a failed COMMIT may already have rolled back
            self._fail_group(err)
            raise err from e
        self._close_group()
        self.commits += 1

    def _close_group(self) -> None:
        self._group_open = False
        self._waits.clear()
        self._waits_all = False
        if self._group_timer is not None:
            self._group_timer.cancel()
            self._group_timer = None

    def _fail_group(self, err: JournalError) -> None:
        log.error("%s", err)
        self._lost.update(self._waits)
        if self._waits_all:
            self._lost_all += 1
        self._close_group()

    def _flush_quietly(self) -> None:
        # the max_delay_s timer: a failure is logged, and raised by durable() to those it hit
        if self._depth:  # pragma: no cover - atomic() blocks never span an await here
            assert self._loop is not None
            self._group_timer = self._loop.call_soon(self._flush_quietly)
            return
        self._group_timer = None
        try:
            self.flush()
        except JournalError:
            pass

    def _open_group(self, c: sqlite3.Connection) -> None:
        if self._group_open:
            return
        assert self._loop is not None
        c.execute("BEGIN IMMEDIATE")
        self._group_open = True
        self._group_timer = self._loop.call_later(self._max_delay_s, self._flush_quietly)

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
        return self._meta_secret("id_tag_key")

    def _meta_secret(self, name: str) -> bytes:
        """A random 32-byte key made on first use and kept in the meta table."""
        with self._write() as c:
            c.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)",
                (name, secrets.token_bytes(32)),
            )
        return bytes(self._read("SELECT value FROM meta WHERE key = ?", (name,))[0][0])

    # -- sealed idTags in queued messages --------------------------------------------------
    def _seal(self, endpoint_id: str, payload: dict[str, Any]) -> dict[str, Any]:
        out = _id_holders_copied(payload)
        for holder, key in _id_slots(out):
            tag = holder[key]
            if not isinstance(tag, str):
                continue
            nonce = secrets.token_bytes(12)
            # The endpoint id as associated data: a sealed tag cannot move to another endpoint.
            box = self._seal_key.encrypt(nonce, tag.encode("utf-8"), endpoint_id.encode("utf-8"))
            holder[key] = {"sealed": base64.b64encode(nonce + box).decode("ascii"),
                           "hash": self.hash_id_tag(tag)}
        return out

    def _unseal(self, endpoint_id: str, payload: Any) -> Any:
        if not isinstance(payload, dict):
            return payload
        out = _id_holders_copied(payload)
        for holder, key in _id_slots(out):
            sealed = holder[key]
            if not isinstance(sealed, dict) or "sealed" not in sealed:
                continue
            try:
                raw = base64.b64decode(sealed["sealed"])
                tag = self._seal_key.decrypt(raw[:12], raw[12:], endpoint_id.encode("utf-8"))
            except (InvalidTag, ValueError, TypeError) as e:
                raise JournalError(
                    f"journal {self.path}: a sealed idTag cannot be opened: {e}") from e
            holder[key] = tag.decode("utf-8")
        return out

    # -- plumbing ------------------------------------------------------------------------------
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise JournalError(f"journal {self.path} is closed")
        return self._conn

    @contextmanager
    def _write(self, endpoint_id: str | None = None, *,
               lazy: bool = False) -> Iterator[sqlite3.Connection]:
        """One committed transaction, or a part of the enclosing atomic() block.

        In a group: whose next frame must wait for the commit. An endpoint's own writes hold up
        that endpoint's frames; `endpoint_id=None` holds up every endpoint's; `lazy` (an ack, a
        meter register) holds up nobody's.
        """
        with self.atomic():
            if self._loop is not None and not lazy:
                if endpoint_id is None:
                    self._waits_all = True
                else:
                    self._waits.add(endpoint_id)
            yield self._db()

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """Group calls into one transaction: all of them are committed, or none.

        Any exception inside rolls the whole block back; SQLite errors come out as JournalError.
        """
        c = self._db()
        depth = self._depth
        grouped = self._loop is not None
        # the outermost block is a transaction, an inner one (or any, in a group) a savepoint
        begin, commit, rollback = (
            ("BEGIN IMMEDIATE", "COMMIT", "ROLLBACK")
            if depth == 0 and not grouped
            else (f"SAVEPOINT sp{depth}", f"RELEASE sp{depth}", f"ROLLBACK TO sp{depth}")
        )
        try:
            if depth == 0 and grouped:
                self._open_group(c)
            c.execute(begin)
        except sqlite3.Error as e:
            raise JournalError(f"journal {self.path}: write failed: {e}") from e
        self._depth = depth + 1
        try:
            yield
            c.execute(commit)
            if commit == "COMMIT":
                self.commits += 1
        except BaseException as e:
            try:
                c.execute(rollback)
                if depth or grouped:
                    c.execute(commit)  # a savepoint stays on the stack after ROLLBACK TO
            except sqlite3.Error:
                pass  # a failed COMMIT may already have rolled back
            if grouped and self._group_open and not c.in_transaction:
                # SQLite rolled the whole group back (disk full, I/O error): so are its writes
                self._fail_group(JournalError(f"journal {self.path}: group rolled back: {e}"))
            if isinstance(e, sqlite3.Error):
                raise JournalError(f"journal {self.path}: write failed: {e}") from e
            raise
        finally:
            self._depth = depth
        if depth == 0 and self._flush_after_block:
            self._flush_after_block = False
            self.flush()

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
        with self._write(endpoint_id) as c:
            c.execute(
                "INSERT INTO settings (endpoint_id, key, value) VALUES (?, ?, ?) "
                "ON CONFLICT (endpoint_id, key) DO UPDATE SET value = excluded.value",
                (endpoint_id, key, str(value)),
            )

    # -- small facts that must survive a restart --------------------------------------------
    def put_fact(self, key: str, value: str) -> None:
        """Store ``key`` durably (committed before this returns: a restart may follow)."""
        with self._write() as c:
            c.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                      (f"fact:{key}", value.encode()))
        self.flush()

    def get_fact(self, key: str) -> str | None:
        rows = self._read("SELECT value FROM meta WHERE key = ?", (f"fact:{key}",))
        return bytes(rows[0][0]).decode() if rows else None

    def drop_fact(self, key: str) -> None:
        with self._write() as c:
            c.execute("DELETE FROM meta WHERE key = ?", (f"fact:{key}",))

    # -- meters --------------------------------------------------------------------------------
    def raise_meter_floor(self, endpoint_id: str, connector: int, wh: float) -> None:
        """`wh` of the connector's register went into a journaled message (a stop's register):
        after a crash the register restores to at least this (`meter_floors`), even when the
        message was delivered and acked before the next meter save. Written with the message, so
        it is on disk before the message is sent."""
        with self._write(endpoint_id) as c:
            c.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE "
                      "SET value = excluded.value WHERE excluded.value > meta.value",
                      (f"floor:{endpoint_id} {int(connector)}", float(wh)))

    def meter_floors(self) -> dict[tuple[str, int], float]:
        """Per connector, the highest register any journaled message has carried."""
        rows = self._read("SELECT key, value FROM meta WHERE key LIKE 'floor:%'")
        out: dict[tuple[str, int], float] = {}
        for key, value in rows:
            endpoint_id, _, connector = str(key)[len("floor:"):].rpartition(" ")
            out[(endpoint_id, int(connector))] = float(value)
        return out

    def get_meters(self) -> dict[tuple[str, int], float]:
        rows = self._read("SELECT endpoint_id, connector, energy_wh FROM meters")
        return {(e, int(c)): float(wh) for e, c, wh in rows}

    def put_meters(self, values: Mapping[tuple[str, int], float],
                   basis: dict[str, Any] | None = None) -> None:
        """Store many registers in one transaction, with the `basis` they were read at (the PCS
        lifetime registers and the allocations of the same control step, see `meter_basis`)."""
        if not values and basis is None:
            return
        with self._write(lazy=True) as c:
            c.executemany(
                "INSERT INTO meters (endpoint_id, connector, energy_wh) VALUES (?, ?, ?) "
                "ON CONFLICT (endpoint_id, connector) DO UPDATE SET energy_wh = excluded.energy_wh",
                [(e, int(conn), float(wh)) for (e, conn), wh in values.items()],
            )
            if basis is not None:
                c.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('meter_basis', ?)",
                          (_dumps(basis),))
        # On disk at once, group or not: a crash splits the energy since the last save by its
        # allocations, and that split is only as good as the save is recent (docs/control.md).
        self.flush()

    def meter_basis(self) -> dict[str, Any] | None:
        """What `put_meters` stored with the last registers: {"discharged_wh", "charged_wh",
        "allocations": {"<endpoint> <connector>": W}}, or None."""
        rows = self._read("SELECT value FROM meta WHERE key = 'meter_basis'")
        if not rows:
            return None
        value = _loads(rows[0][0])
        return value if isinstance(value, dict) else None

    def queued_stop(self, endpoint_id: str, local_tx_id: str) -> dict[str, Any] | None:
        """The queued StopTransaction of a transaction, if it has not been delivered."""
        rows = self._read(
            "SELECT payload FROM outbox WHERE endpoint_id = ? AND local_tx_id = ? "
            "AND action = 'StopTransaction' ORDER BY seq LIMIT 1", (endpoint_id, local_tx_id))
        if not rows:
            return None
        payload = self._unseal(endpoint_id, _loads(rows[0][0]))
        return payload if isinstance(payload, dict) else None

    def queued_of(self, endpoint_id: str, local_tx_id: str, action: str) -> list[dict[str, Any]]:
        """A transaction's queued messages of one action, in order."""
        rows = self._read(
            "SELECT payload FROM outbox WHERE endpoint_id = ? AND local_tx_id = ? "
            "AND action = ? ORDER BY seq", (endpoint_id, local_tx_id, action))
        out = [self._unseal(endpoint_id, _loads(text)) for (text,) in rows]
        return [p for p in out if isinstance(p, dict)]

    def patch_meter_stop(self, endpoint_id: str, local_tx_id: str, meter_stop: int) -> None:
        """Set `meterStop` of a transaction's queued StopTransaction (its final register, known
        once the meter has settled: bess_gateway.settling, which holds the message until then)."""
        with self._write(endpoint_id) as c:
            rows = c.execute(
                "SELECT seq, payload FROM outbox WHERE endpoint_id = ? AND local_tx_id = ? "
                "AND action = 'StopTransaction'", (endpoint_id, local_tx_id)).fetchall()
            for seq, text in rows:
                payload = _loads(text)
                if isinstance(payload, dict) and "meterStop" in payload:
                    set_meter_stop(payload, meter_stop)
                    c.execute("UPDATE outbox SET payload = ? WHERE seq = ?", (_dumps(payload), seq))

    def rewrite_queued(self, endpoint_id: str, local_tx_id: str, action: str,
                       rewrite: Callable[[dict[str, Any]], bool]) -> None:
        """Edit a transaction's queued `action` messages in place (same seq and unique id);
        `rewrite` changes the stored payload (idTags stay sealed) and says whether it did."""
        with self._write(endpoint_id) as c:
            rows = c.execute(
                "SELECT seq, payload FROM outbox WHERE endpoint_id = ? AND local_tx_id = ? "
                "AND action = ?", (endpoint_id, local_tx_id, action)).fetchall()
            for seq, text in rows:
                payload = _loads(text)
                if isinstance(payload, dict) and rewrite(payload):
                    c.execute("UPDATE outbox SET payload = ? WHERE seq = ?", (_dumps(payload), seq))

    # -- transactions --------------------------------------------------------------------------
    def put_transaction(self, rec: TxRecord) -> None:
        """Insert or replace the record with this (endpoint_id, local_id)."""
        data = _dumps(rec.data)
        with self._write(rec.endpoint_id) as c:
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
        with self._write(endpoint_id) as c:
            c.execute(
                "DELETE FROM transactions WHERE endpoint_id = ? AND local_id = ?",
                (endpoint_id, local_id),
            )

    # -- reservations --------------------------------------------------------------------------
    def put_reservation(self, rec: ReservationRecord) -> None:
        """Insert or replace the reservation with this (endpoint_id, reservation_id)."""
        with self._write(rec.endpoint_id) as c:
            c.execute(
                "INSERT OR REPLACE INTO reservations (endpoint_id, reservation_id, connector, "
                "id_tag_hash, parent_hash, expiry) VALUES (?, ?, ?, ?, ?, ?)",
                (rec.endpoint_id, int(rec.reservation_id), int(rec.connector), rec.id_tag_hash,
                 rec.parent_hash, rec.expiry),
            )

    def delete_reservation(self, endpoint_id: str, reservation_id: int) -> None:
        with self._write(endpoint_id) as c:
            c.execute(
                "DELETE FROM reservations WHERE endpoint_id = ? AND reservation_id = ?",
                (endpoint_id, int(reservation_id)),
            )

    def reservations(self, endpoint_id: str) -> list[ReservationRecord]:
        rows = self._read(
            "SELECT endpoint_id, reservation_id, connector, id_tag_hash, expiry, parent_hash "
            "FROM reservations WHERE endpoint_id = ? ORDER BY reservation_id",
            (endpoint_id,),
        )
        return [ReservationRecord(e, int(rid), int(conn), h, exp, ph)
                for e, rid, conn, h, exp, ph in rows]

    # -- charging profiles ---------------------------------------------------------------------
    def put_charging_profile(self, endpoint_id: str, profile_id: int, data: dict[str, Any],
                             installed_at: str) -> None:
        with self._write(endpoint_id) as c:
            c.execute(
                "INSERT OR REPLACE INTO charging_profiles (endpoint_id, profile_id, data, "
                "installed_at) VALUES (?, ?, ?, ?)",
                (endpoint_id, int(profile_id), _dumps(data), installed_at),
            )

    def delete_charging_profiles(self, endpoint_id: str, profile_ids: list[int]) -> None:
        with self._write(endpoint_id) as c:
            c.executemany(
                "DELETE FROM charging_profiles WHERE endpoint_id = ? AND profile_id = ?",
                [(endpoint_id, int(i)) for i in profile_ids],
            )

    def charging_profiles(self, endpoint_id: str) -> list[tuple[dict[str, Any], str]]:
        """(profile data, installed_at ISO-8601) of every stored profile, by profile id."""
        rows = self._read(
            "SELECT data, installed_at FROM charging_profiles WHERE endpoint_id = ? "
            "ORDER BY profile_id", (endpoint_id,))
        return [(_loads(data), at) for data, at in rows]

    # -- outbox --------------------------------------------------------------------------------
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
        body = _dumps(self._seal(endpoint_id, payload))
        with self._write(endpoint_id) as c:
            cur = c.execute(
                "INSERT INTO outbox (endpoint_id, action, payload, local_tx_id, unique_id, "
                "retention) VALUES (?, ?, ?, ?, ?, ?)",
                (endpoint_id, action, body, local_tx_id, unique_id, int(retention)),
            )
            seq = cur.lastrowid
            budget = self.outbox_budget_bytes
            if budget is not None and (self.outbox_over_budget
                                       or self._outbox_bytes(c) > budget):
                self._make_room(c, budget)
        assert seq is not None
        return int(seq)

    def outbox_bytes(self) -> int:
        """What the queued messages take (payload bytes + OUTBOX_ROW_BYTES each)."""
        return self._outbox_bytes(self._db())

    def _outbox_bytes(self, c: sqlite3.Connection) -> int:
        """The live endpoints' share of the outbox (what the budget is about)."""
        try:
            row = c.execute("SELECT bytes FROM outbox_usage WHERE id = 0").fetchone()
        except sqlite3.Error as e:
            raise JournalError(f"journal {self.path}: read failed: {e}") from e
        return (int(row[0]) if row else 0) - self._removed_bytes

    # -- endpoints removed from the configuration ------------------------------------------
    def set_live_endpoints(self, endpoint_ids: Iterable[str]) -> list[dict[str, Any]]:
        """The configured endpoints; the journal's data of any other endpoint is *removed*:
        kept as it is (never sent, thinned or dropped for the budget) and outside the live
        budget. Returns `removed_endpoints()`."""
        live = set(endpoint_ids)
        found = self.removed_endpoints(exclude=live)
        self.removed = frozenset(r["endpoint_id"] for r in found)
        self._removed_bytes = sum(int(r["queued_bytes"]) for r in found)
        return found

    def removed_endpoints(self, exclude: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Per endpoint not in `exclude` (default: the live ones) that has queued messages,
        open transactions or a meter register: what the journal still holds of it."""
        skip = set(self.live_endpoints if exclude is None else exclude)
        out: dict[str, dict[str, Any]] = {}

        def entry(eid: str) -> dict[str, Any]:
            return out.setdefault(eid, {"endpoint_id": eid, "queued_messages": 0,
                                        "queued_bytes": 0, "open_transactions": 0})

        for eid, n, size in self._read(
                "SELECT endpoint_id, COUNT(*), SUM(length(CAST(payload AS BLOB)) + "
                f"{OUTBOX_ROW_BYTES}) FROM outbox GROUP BY endpoint_id"):
            if eid not in skip:
                entry(eid).update(queued_messages=int(n), queued_bytes=int(size or 0))
        for eid, n in self._read(
                "SELECT endpoint_id, COUNT(*) FROM transactions GROUP BY endpoint_id"):
            if eid not in skip:
                entry(eid)["open_transactions"] = int(n)
        return sorted(out.values(), key=lambda r: r["endpoint_id"])

    @property
    def live_endpoints(self) -> frozenset[str]:
        """Every endpoint the journal holds data of, minus the removed ones; only meaningful
        for `removed_endpoints()` as a default (the gateway passes the configured set)."""
        rows = self._read("SELECT DISTINCT endpoint_id FROM outbox UNION "
                          "SELECT DISTINCT endpoint_id FROM transactions")
        return frozenset(str(r[0]) for r in rows) - self.removed

    def export_endpoint(self, endpoint_id: str) -> dict[str, Any]:
        """What the journal holds of one endpoint, for an operator to keep before a purge:
        queued messages as stored (idTags stay sealed) and transaction records (idTags as
        keyed hashes only)."""
        queued = [{"seq": int(seq), "action": action, "payload": _loads(payload),
                   "local_tx_id": ltx, "unique_id": uid, "attempts": int(att)}
                  for seq, action, payload, ltx, uid, att in self._read(
                      "SELECT seq, action, payload, local_tx_id, unique_id, attempts FROM outbox "
                      "WHERE endpoint_id = ? ORDER BY seq", (endpoint_id,))]
        txs = [{"local_id": lid, "connector": int(c), "id_tag_hash": tag,
                "meter_start_wh": int(wh), "started_at": at, "transaction_id": tid,
                "stopped": bool(stopped), "data": _loads(data)}
               for lid, c, tag, wh, at, tid, stopped, data in self._read(
                   "SELECT local_id, connector, id_tag_hash, meter_start_wh, started_at, "
                   "transaction_id, stopped, data FROM transactions WHERE endpoint_id = ? "
                   "ORDER BY started_at", (endpoint_id,))]
        meters = {str(c): float(wh) for c, wh in self._read(
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
        with self._write(endpoint_id) as c:
            for table in tables:
                counts[table] = c.execute(f"DELETE FROM {table} WHERE endpoint_id = ?",
                                          (endpoint_id,)).rowcount
        self.flush()
        if endpoint_id in self.removed:
            self.set_live_endpoints(self.live_endpoints)
        return counts

    def live_depth(self) -> int:
        """Queued messages of the configured endpoints (the removed ones' are not waited for)."""
        return sum(n for eid, n in self.depths().items() if eid not in self.removed)

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
        removed = sorted(self.removed)
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
        self.outbox_thinned += thinned
        self.outbox_dropped += dropped
        if thinned or dropped:
            log.warning("outbox over its budget of %d bytes: %d sampled MeterValues thinned, "
                        "%d expendable messages dropped; now %d bytes", budget, thinned,
                        dropped, used)
        over = used > budget
        if over and not self.outbox_over_budget:
            log.warning("outbox over its budget (%d > %d bytes) with only transaction records "
                        "left: they are still accepted (never dropped)", used, budget)
        elif not over and self.outbox_over_budget:
            log.warning("outbox back within its budget of %d bytes", budget)
        self.outbox_over_budget = over

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
                payload=self._unseal(e, _loads(payload)),
                local_tx_id=ltx,
                unique_id=uid,
                attempts=int(att),
            )
            for seq, e, action, payload, ltx, uid, att in rows
        ]

    def queued_payloads(self, endpoint_id: str, action: str) -> list[dict[str, Any]]:
        """Payloads of an endpoint's queued messages of one action, in order (e.g. to coalesce
        repeated security events)."""
        rows = self._read(
            "SELECT payload FROM outbox WHERE endpoint_id = ? AND action = ? ORDER BY seq",
            (endpoint_id, action),
        )
        return [self._unseal(endpoint_id, _loads(payload)) for (payload,) in rows]

    def ack(self, seq: int) -> None:
        """The CSMS answered the message: remove it."""
        with self._write(lazy=True) as c:
            c.execute("DELETE FROM outbox WHERE seq = ?", (int(seq),))
            budget = self.outbox_budget_bytes
            if self.outbox_over_budget and budget is not None \
                    and self._outbox_bytes(c) <= budget:
                self.outbox_over_budget = False
                log.warning("outbox back within its budget of %d bytes", budget)

    def bump_attempts(self, seq: int) -> None:
        with self._write(lazy=True) as c:
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
        with self._write(endpoint_id) as c:
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

    # -- transactions the CSMS never got (their start message given up) ------------------------
    def abandon_transaction(self, endpoint_id: str, local_tx_id: str, connector: int,
                            meter_start_wh: int | None) -> None:
        """Mark a transaction whose start message was given up (bess_gateway.outbox): its other
        queued messages are dropped as they come up, and the energy its stop message carries is
        counted as unattributed (`settle_abandoned`). Counted at once in the endpoint's totals."""
        marker = {"connector": int(connector), "meter_start_wh": meter_start_wh}
        with self._write(endpoint_id) as c:
            c.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                      (f"abandoned:{endpoint_id}:{local_tx_id}", _dumps(marker).encode()))
            totals = self._totals(c, endpoint_id)
            totals["transactions"] += 1
            self._put_totals(c, endpoint_id, totals)

    def abandoned_transaction(self, endpoint_id: str,
                              local_tx_id: str | None) -> dict[str, Any] | None:
        """The marker of an abandoned transaction (connector, meter_start_wh), or None."""
        if local_tx_id is None:
            return None
        rows = self._read("SELECT value FROM meta WHERE key = ?",
                          (f"abandoned:{endpoint_id}:{local_tx_id}",))
        value = _loads(bytes(rows[0][0])) if rows else None
        return value if isinstance(value, dict) else None

    def settle_abandoned(self, endpoint_id: str, local_tx_id: str, connector: int,
                         energy_wh: int | None) -> None:
        """An abandoned transaction's stop came up: add its energy (None: unknown, counted as
        such) to the endpoint's unattributed totals and forget the marker, in one commit."""
        with self._write(endpoint_id) as c:
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
        """A queued message was given up after its attempts (bess_gateway.outbox): counted per
        endpoint and action in the same totals (the caller's commit, with the message's ack)."""
        with self._write(endpoint_id) as c:
            totals = self._totals(c, endpoint_id)
            given_up = totals["given_up"]
            given_up[action] = int(given_up.get(action, 0)) + 1
            self._put_totals(c, endpoint_id, totals)

    def abandoned_totals(self) -> dict[str, dict[str, Any]]:
        """Per endpoint: transactions abandoned, unattributed Wh per connector, stops whose
        energy could not be known, and messages given up per action (metrics, /status).
        Endpoints with none are absent."""
        rows = self._read("SELECT key, value FROM meta WHERE key LIKE 'unattributed:%'")
        out: dict[str, dict[str, Any]] = {}
        for key, value in rows:
            totals = _loads(bytes(value))
            if isinstance(totals, dict):
                out[str(key).removeprefix("unattributed:")] = totals
        return out

    @staticmethod
    def _totals(c: sqlite3.Connection, endpoint_id: str) -> dict[str, Any]:
        row = c.execute("SELECT value FROM meta WHERE key = ?",
                        (f"unattributed:{endpoint_id}",)).fetchone()
        totals = _loads(bytes(row[0])) if row else {}
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
                  (f"unattributed:{endpoint_id}", _dumps(totals).encode()))

    def depth(self, endpoint_id: str | None = None) -> int:
        """Number of queued messages, of one endpoint or of all."""
        if endpoint_id is None:
            rows = self._read("SELECT COUNT(*) FROM outbox")
        else:
            rows = self._read("SELECT COUNT(*) FROM outbox WHERE endpoint_id = ?", (endpoint_id,))
        return int(rows[0][0])

    def depths(self) -> dict[str, int]:
        """Queued messages per endpoint (endpoints with none are absent): one query per scrape."""
        rows = self._read("SELECT endpoint_id, COUNT(*) FROM outbox GROUP BY endpoint_id")
        return {str(eid): int(n) for eid, n in rows}

    def known_endpoints(self) -> set[str]:
        """Every endpoint id the journal holds anything of (settings, transactions, queue),
        configured or not any more."""
        rows = self._read("SELECT endpoint_id FROM settings UNION SELECT endpoint_id FROM "
                          "transactions UNION SELECT endpoint_id FROM outbox")
        return {str(r[0]) for r in rows}

    def summary(self, since: str | None = None, until: str | None = None) -> dict[str, Any]:
        """What a diagnostics bundle says about the journal: per endpoint, queued messages,
        open transactions and those started in [since, until] (ISO-8601 strings compare in
        order: all are written by `iso()`). idTags appear only as their keyed hashes."""
        out: dict[str, Any] = {"schema_version": self.schema_version, "endpoints": {}}
        endpoints: dict[str, Any] = out["endpoints"]
        for endpoint_id, count in self._read(
                "SELECT endpoint_id, COUNT(*) FROM outbox GROUP BY endpoint_id"):
            endpoints.setdefault(endpoint_id, {})["queued_messages"] = int(count)
        rows = self._read(
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

    # -- local authorization list and cache (keyed hashes only) --------------------------------
    @staticmethod
    def _info(status: str, expiry: str | None, parent: str | None) -> AuthInfo:
        return AuthInfo(parse_status(status), _parse_time(expiry), parent)

    @staticmethod
    def _info_row(info: AuthInfo) -> tuple[str, str | None, str | None]:
        expiry = None if info.expiry is None else info.expiry.isoformat()
        return str(info.status), expiry, info.parent_hash

    def auth_list_version(self, endpoint_id: str) -> int:
        """The version of the endpoint's local list; 0 when it never got one."""
        rows = self._read("SELECT version FROM auth_list_version WHERE endpoint_id = ?",
                          (endpoint_id,))
        return int(rows[0][0]) if rows else 0

    def auth_list_entry(self, endpoint_id: str, id_tag_hash: str) -> AuthInfo | None:
        rows = self._read(
            "SELECT status, expiry, parent_hash FROM auth_list "
            "WHERE endpoint_id = ? AND id_tag_hash = ?", (endpoint_id, id_tag_hash))
        return self._info(*rows[0]) if rows else None

    def auth_list_size(self, endpoint_id: str) -> int:
        rows = self._read("SELECT COUNT(*) FROM auth_list WHERE endpoint_id = ?", (endpoint_id,))
        return int(rows[0][0])

    def auth_list_count(self, endpoint_id: str, hashes: list[str]) -> int:
        """How many of `hashes` the endpoint's list holds."""
        count = 0
        for i in range(0, len(hashes), 500):  # stay under SQLite's bound-parameter limit
            chunk = hashes[i:i + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._read(
                "SELECT COUNT(*) FROM auth_list WHERE endpoint_id = ? "
                f"AND id_tag_hash IN ({marks})", (endpoint_id, *chunk))
            count += int(rows[0][0])
        return count

    def apply_auth_list(self, endpoint_id: str, *, full: bool, version: int,
                        changes: list[ListChange]) -> None:
        """Apply a checked list update and set the version, all or nothing.

        Identifiers that enter the list leave the cache (the two never hold the same one).
        """
        with self._write(endpoint_id) as c:
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
                    (endpoint_id, ch.id_hash, *self._info_row(ch.info)))
                c.execute("DELETE FROM auth_cache WHERE endpoint_id = ? AND id_tag_hash = ?",
                          (endpoint_id, ch.id_hash))
            c.execute(
                "INSERT INTO auth_list_version (endpoint_id, version) VALUES (?, ?) "
                "ON CONFLICT (endpoint_id) DO UPDATE SET version = excluded.version",
                (endpoint_id, int(version)))

    def auth_cache_entry(self, endpoint_id: str, id_tag_hash: str) -> AuthInfo | None:
        rows = self._read(
            "SELECT status, expiry, parent_hash FROM auth_cache "
            "WHERE endpoint_id = ? AND id_tag_hash = ?", (endpoint_id, id_tag_hash))
        return self._info(*rows[0]) if rows else None

    def auth_cache_size(self, endpoint_id: str) -> int:
        rows = self._read("SELECT COUNT(*) FROM auth_cache WHERE endpoint_id = ?", (endpoint_id,))
        return int(rows[0][0])

    def put_auth_cache(self, endpoint_id: str, id_tag_hash: str, info: AuthInfo,
                       now: datetime) -> bool:
        """Record what the CSMS said about an identifier, unless the local list holds it.

        A full cache first drops not-valid entries, then the least recently updated valid ones.
        Returns whether the cache was written.
        """
        with self._write(endpoint_id) as c:
            if c.execute("SELECT 1 FROM auth_list WHERE endpoint_id = ? AND id_tag_hash = ?",
                         (endpoint_id, id_tag_hash)).fetchone():
                return False
            size = c.execute("SELECT COUNT(*) FROM auth_cache WHERE endpoint_id = ? AND "
                             "id_tag_hash != ?", (endpoint_id, id_tag_hash)).fetchone()[0]
            rows = [] if size < CACHE_MAX_LENGTH else c.execute(
                "SELECT id_tag_hash, status, expiry, parent_hash, updated_at FROM auth_cache "
                "WHERE endpoint_id = ? AND id_tag_hash != ?", (endpoint_id, id_tag_hash)
            ).fetchall()
            entries = [(h, self._info(s, e, p), _parse_time(u) or now) for h, s, e, p, u in rows]
            for victim in cache_victims(entries, 1, now):
                c.execute("DELETE FROM auth_cache WHERE endpoint_id = ? AND id_tag_hash = ?",
                          (endpoint_id, victim))
            c.execute(
                "INSERT INTO auth_cache (endpoint_id, id_tag_hash, status, expiry, parent_hash, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (endpoint_id, id_tag_hash) "
                "DO UPDATE SET status = excluded.status, expiry = excluded.expiry, "
                "parent_hash = excluded.parent_hash, updated_at = excluded.updated_at",
                (endpoint_id, id_tag_hash, *self._info_row(info), now.isoformat()))
        return True

    def clear_auth_cache(self, endpoint_id: str) -> int:
        """Empty the endpoint's authorization cache; returns the number of entries removed."""
        with self._write(endpoint_id) as c:
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
        h = self.hash_id_tag(id_tag)
        # The endpoint restriction as SQL: the ids are bound parameters, in chunks below
        # SQLite's limit of bound parameters.
        chunks: list[list[str]] = [[]] if endpoints is None else [
            sorted(endpoints)[i:i + 500] for i in range(0, len(endpoints), 500)]

        def only(chunk: list[str]) -> str:
            return "" if endpoints is None else \
                f" AND endpoint_id IN ({','.join('?' * len(chunk))})"

        def run(c: sqlite3.Connection, sql: str) -> int:
            return sum(c.execute(sql + only(chunk), (h, *chunk)).rowcount for chunk in chunks)

        with self._write() as c:
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
                payload = _loads(text)
                slots = _id_slots(payload) if isinstance(payload, dict) else []
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
            self.flush()  # a checkpoint cannot run inside the open group
            # secure_delete zeroes freed pages; the WAL may still hold old ones until checkpointed.
            self._read("PRAGMA wal_checkpoint(TRUNCATE)")
        return out


# Where a queued payload carries an identifier: 1.6 `idTag`; 2.0.1 `idToken.idToken` (and a
# `groupIdToken.idToken`). Each is sealed (the 2.0.1 token's type stays readable).
_TOKEN_KEYS = ("idToken", "groupIdToken")


def _id_holders_copied(payload: dict[str, Any]) -> dict[str, Any]:
    """A copy of `payload` whose identifier-holding dicts are copies too (safe to rewrite)."""
    out = dict(payload)
    for key in _TOKEN_KEYS:
        if isinstance(out.get(key), dict):
            out[key] = dict(out[key])
    return out


def _id_slots(payload: dict[str, Any]) -> list[tuple[dict[str, Any], str]]:
    slots: list[tuple[dict[str, Any], str]] = []
    if "idTag" in payload:
        slots.append((payload, "idTag"))
    for key in _TOKEN_KEYS:
        token = payload.get(key)
        if isinstance(token, dict) and "idToken" in token:
            slots.append((token, "idToken"))
    return slots


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
