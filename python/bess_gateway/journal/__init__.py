"""The journal: everything that must survive a restart, in one SQLite file (WAL).

What lives here, in layers (each imports only the ones below it):

- `db.py` (with `writer.py`): the database layer. The connection, the file lock, the pragmas,
  running the migrations, and the commit policy: atomic blocks and savepoints, group commits,
  `durable()` (nothing is sent before what it depends on is on disk), what a failed commit or
  fsync lost, and the writer thread that takes the fsyncs and checkpoints off the event loop.
  It knows no table.
- `migrations.py`: the schema (MIGRATIONS, append only).
- `records.py`: the records the stores take and give (TxRecord, OutboxItem, ...), JSON helpers.
- `sealing.py`: idTags as keyed hashes, and AES-GCM sealing of those a queued message carries.
- the stores, one per concern; only they speak SQL: `settings.py` (settings, facts, meter
  registers), `transactions.py` (open transactions, abandoned ones' totals), `outbox.py` (the
  queue of messages and its disk budget), `auth.py` (local list, cache, forgetting an idTag),
  `reservations.py`, `profiles.py` (charging profiles), `endpoints.py` (removed endpoints,
  export, purge, diagnostics summary).
- `Journal` (here) opens the database, composes the stores and exposes each as an attribute:
  `journal.outbox`, `journal.transactions`, `journal.auth`, `journal.settings`,
  `journal.facts`, `journal.meters`, `journal.abandoned`, `journal.reservations`,
  `journal.profiles`, `journal.endpoints`, `journal.sealing`, and `journal.db`.

What it may import: the standard library, its own modules and third-party packages; nothing of
the gateway above it (no endpoint, ocpp, version or service modules). The one exception is
`bess_gateway.domain.authorization`, a pure module of values and rules (AuthInfo, ListChange,
the cache's eviction rule, no I/O) that `auth.py` stores and returns as they are.

Callers speak to a store (`ctx.journal.outbox.enqueue(...)`); the Journal itself keeps only the
database layer's face (durable, flush, atomic, group_commits, close, commits) and the idTag hash,
which every store's writes share (`_Via` below, one line each).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, overload

from bess_gateway.journal.auth import Auth
from bess_gateway.journal.db import Database, JournalError
from bess_gateway.journal.endpoints import Endpoints
from bess_gateway.journal.migrations import MIGRATIONS, OUTBOX_ROW_BYTES
from bess_gateway.journal.outbox import Outbox
from bess_gateway.journal.profiles import Profiles
from bess_gateway.journal.records import (
    OutboxItem,
    ReservationRecord,
    Retention,
    TxRecord,
    set_meter_stop,
)
from bess_gateway.journal.reservations import Reservations
from bess_gateway.journal.sealing import ID_TAG_HASH_CHARS, Sealing, hash_id_tag
from bess_gateway.journal.settings import Facts, Meters, Settings
from bess_gateway.journal.transactions import Abandoned, Transactions

__all__ = ["ID_TAG_HASH_CHARS", "MIGRATIONS", "OUTBOX_ROW_BYTES", "Journal", "JournalError",
           "OutboxItem", "ReservationRecord", "Retention", "TxRecord", "hash_id_tag",
           "set_meter_stop"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


class _Via(Generic[P, R]):
    """A Journal method that is its store's method of the same name: `journal.x(...)` calls
    `journal.<store>.x(...)`, with the store method's signature for type checkers."""

    def __init__(self, store: str, method: Callable[Concatenate[Any, P], R]) -> None:
        self.store = store
        self.name = method.__name__
        self.__doc__ = method.__doc__

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> _Via[P, R]: ...
    @overload
    def __get__(self, obj: Journal, owner: type | None = None) -> Callable[P, R]: ...
    def __get__(self, obj: Journal | None, owner: type | None = None) -> Any:
        if obj is None:
            return self
        return getattr(getattr(obj, self.store), self.name)


class _Attr(Generic[T]):
    """A Journal attribute that is a store's attribute (read and write); its type is the
    annotation where it is declared."""

    def __init__(self, store: str, name: str) -> None:
        self.store, self.name = store, name

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> _Attr[T]: ...
    @overload
    def __get__(self, obj: Journal, owner: type | None = None) -> T: ...
    def __get__(self, obj: Journal | None, owner: type | None = None) -> Any:
        if obj is None:
            return self
        return getattr(getattr(obj, self.store), self.name)

    def __set__(self, obj: Journal, value: T) -> None:
        setattr(getattr(obj, self.store), self.name, value)


class Journal:
    """One SQLite file: the database layer and its stores, used from one thread (the loop's)."""

    def __init__(self, path: str | Path, *, busy_timeout_ms: int = 5000,
                 outbox_budget_bytes: int | None = None) -> None:
        self.db = db = Database(path, migrations=MIGRATIONS, busy_timeout_ms=busy_timeout_ms)
        try:
            self.sealing = Sealing(db)
        except BaseException:
            db.close()
            raise
        self.settings = Settings(db)
        self.facts = Facts(db)
        self.meters = Meters(db)
        self.transactions = Transactions(db)
        self.abandoned = Abandoned(db)
        self.endpoints = Endpoints(db)
        self.outbox = Outbox(db, self.sealing, self.endpoints, budget_bytes=outbox_budget_bytes)
        self.auth = Auth(db, self.sealing)
        self.reservations = Reservations(db)
        self.profiles = Profiles(db)

    @property
    def path(self) -> Path:
        return self.db.path

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the database layer: the commit policy every store's writes share ------------------
    close = _Via("db", Database.close)
    group_commits = _Via("db", Database.group_commits)
    durable = _Via("db", Database.durable)
    flush = _Via("db", Database.flush)
    atomic = _Via("db", Database.atomic)
    commits: _Attr[int] = _Attr("db", "commits")
    uncommitted: _Attr[bool] = _Attr("db", "uncommitted")
    schema_version: _Attr[int] = _Attr("db", "schema_version")
    hash_id_tag = _Via("sealing", Sealing.hash_id_tag)
