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
  `journal.facts`, `journal.meters`, `journal.abandoned`, `journal.reservation_store`,
  `journal.profiles`, `journal.endpoints`, `journal.sealing`, and `journal.db`.

What it may import: the standard library, its own modules and third-party packages; nothing of
the gateway above it (no endpoint, ocpp, version or service modules). The one exception is
`bess_gateway.domain.authorization`, a pure module of values and rules (AuthInfo, ListChange,
the cache's eviction rule, no I/O) that `auth.py` stores and returns as they are.

For now every method the Journal had before its split is still a Journal method, delegating
to its store (`_Via` below, one line each): callers move to the stores, then they go.
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
        # not `reservations`: that name is still the method below until callers move
        self.reservation_store = Reservations(db)
        self.profiles = Profiles(db)

    @property
    def path(self) -> Path:
        return self.db.path

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the database layer ------------------------------------------------------------------
    close = _Via("db", Database.close)
    group_commits = _Via("db", Database.group_commits)
    durable = _Via("db", Database.durable)
    flush = _Via("db", Database.flush)
    atomic = _Via("db", Database.atomic)
    commits: _Attr[int] = _Attr("db", "commits")
    uncommitted: _Attr[bool] = _Attr("db", "uncommitted")
    schema_version: _Attr[int] = _Attr("db", "schema_version")
    hash_id_tag = _Via("sealing", Sealing.hash_id_tag)
    # -- settings, facts, meters -------------------------------------------------------------
    get_settings = _Via("settings", Settings.get_settings)
    put_setting = _Via("settings", Settings.put_setting)
    put_fact = _Via("facts", Facts.put_fact)
    get_fact = _Via("facts", Facts.get_fact)
    drop_fact = _Via("facts", Facts.drop_fact)
    raise_meter_floor = _Via("meters", Meters.raise_meter_floor)
    meter_floors = _Via("meters", Meters.meter_floors)
    get_meters = _Via("meters", Meters.get_meters)
    put_meters = _Via("meters", Meters.put_meters)
    meter_basis = _Via("meters", Meters.meter_basis)
    # -- transactions --------------------------------------------------------------------------
    put_transaction = _Via("transactions", Transactions.put_transaction)
    open_transactions = _Via("transactions", Transactions.open_transactions)
    finish_transaction = _Via("transactions", Transactions.finish_transaction)
    patch_transaction_id = _Via("transactions", Transactions.patch_transaction_id)
    abandon_transaction = _Via("abandoned", Abandoned.abandon_transaction)
    abandoned_transaction = _Via("abandoned", Abandoned.abandoned_transaction)
    settle_abandoned = _Via("abandoned", Abandoned.settle_abandoned)
    count_given_up = _Via("abandoned", Abandoned.count_given_up)
    abandoned_totals = _Via("abandoned", Abandoned.abandoned_totals)
    # -- reservations, charging profiles ------------------------------------------------------
    put_reservation = _Via("reservation_store", Reservations.put_reservation)
    delete_reservation = _Via("reservation_store", Reservations.delete_reservation)
    reservations = _Via("reservation_store", Reservations.reservations)
    put_charging_profile = _Via("profiles", Profiles.put_charging_profile)
    delete_charging_profiles = _Via("profiles", Profiles.delete_charging_profiles)
    charging_profiles = _Via("profiles", Profiles.charging_profiles)
    # -- outbox ----------------------------------------------------------------------------------
    enqueue = _Via("outbox", Outbox.enqueue)
    pending = _Via("outbox", Outbox.pending)
    queued_payloads = _Via("outbox", Outbox.queued_payloads)
    queued_stop = _Via("outbox", Outbox.queued_stop)
    queued_of = _Via("outbox", Outbox.queued_of)
    patch_meter_stop = _Via("outbox", Outbox.patch_meter_stop)
    rewrite_queued = _Via("outbox", Outbox.rewrite_queued)
    ack = _Via("outbox", Outbox.ack)
    bump_attempts = _Via("outbox", Outbox.bump_attempts)
    depth = _Via("outbox", Outbox.depth)
    depths = _Via("outbox", Outbox.depths)
    live_depth = _Via("outbox", Outbox.live_depth)
    outbox_bytes = _Via("outbox", Outbox.outbox_bytes)
    outbox_budget_bytes: _Attr[int | None] = _Attr("outbox", "budget_bytes")
    outbox_thinned: _Attr[int] = _Attr("outbox", "thinned")
    outbox_dropped: _Attr[int] = _Attr("outbox", "dropped")
    outbox_over_budget: _Attr[bool] = _Attr("outbox", "over_budget")
    # -- endpoints -------------------------------------------------------------------------------
    set_live_endpoints = _Via("endpoints", Endpoints.set_live_endpoints)
    removed_endpoints = _Via("endpoints", Endpoints.removed_endpoints)
    known_endpoints = _Via("endpoints", Endpoints.known_endpoints)
    export_endpoint = _Via("endpoints", Endpoints.export_endpoint)
    purge_endpoint = _Via("endpoints", Endpoints.purge_endpoint)
    summary = _Via("endpoints", Endpoints.summary)
    removed: _Attr[frozenset[str]] = _Attr("endpoints", "removed")
    live_endpoints: _Attr[frozenset[str]] = _Attr("endpoints", "live_endpoints")
    # -- authorization ---------------------------------------------------------------------------
    auth_list_version = _Via("auth", Auth.auth_list_version)
    auth_list_entry = _Via("auth", Auth.auth_list_entry)
    auth_list_size = _Via("auth", Auth.auth_list_size)
    auth_list_count = _Via("auth", Auth.auth_list_count)
    apply_auth_list = _Via("auth", Auth.apply_auth_list)
    auth_cache_entry = _Via("auth", Auth.auth_cache_entry)
    auth_cache_size = _Via("auth", Auth.auth_cache_size)
    put_auth_cache = _Via("auth", Auth.put_auth_cache)
    clear_auth_cache = _Via("auth", Auth.clear_auth_cache)
    forget_id_tag = _Via("auth", Auth.forget_id_tag)
