"""Small things that must survive a restart: configuration keys per endpoint (`Settings`), facts
(`Facts`: keyed strings in the meta table) and the energy registers (`Meters`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bess_gateway.journal.db import Database
from bess_gateway.journal.records import dumps, loads


class Settings:
    """Configuration keys per endpoint (strings, as OCPP carries them)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def get_settings(self, endpoint_id: str) -> dict[str, str]:
        rows = self._db.read("SELECT key, value FROM settings WHERE endpoint_id = ?",
                             (endpoint_id,))
        return {k: v for k, v in rows}

    def put_setting(self, endpoint_id: str, key: str, value: str) -> None:
        with self._db.write(endpoint_id) as c:
            c.execute(
                "INSERT INTO settings (endpoint_id, key, value) VALUES (?, ?, ?) "
                "ON CONFLICT (endpoint_id, key) DO UPDATE SET value = excluded.value",
                (endpoint_id, key, str(value)),
            )


class Facts:
    """Small facts that must survive a restart (meta rows `fact:<key>`)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def put_fact(self, key: str, value: str) -> None:
        """Store ``key``, committed before this returns (a restart may follow); every
        endpoint's next frame waits for its fsync."""
        with self._db.write() as c:
            c.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                      (f"fact:{key}", value.encode()))
        self._db.flush()

    def get_fact(self, key: str) -> str | None:
        rows = self._db.read("SELECT value FROM meta WHERE key = ?", (f"fact:{key}",))
        return bytes(rows[0][0]).decode() if rows else None

    def drop_fact(self, key: str) -> None:
        with self._db.write() as c:
            c.execute("DELETE FROM meta WHERE key = ?", (f"fact:{key}",))


class Meters:
    """The energy register of each (endpoint, connector), restored into the core at start-up,
    with the basis it was read at and the floors journaled messages set."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def raise_meter_floor(self, endpoint_id: str, connector: int, wh: float) -> None:
        """`wh` of the connector's register went into a journaled message (a stop's register):
        after a crash the register restores to at least this (`meter_floors`), even when the
        message was delivered and acked before the next meter save. Written with the message, so
        it is on disk before the message is sent."""
        with self._db.write(endpoint_id) as c:
            c.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE "
                      "SET value = excluded.value WHERE excluded.value > meta.value",
                      (f"floor:{endpoint_id} {int(connector)}", float(wh)))

    def meter_floors(self) -> dict[tuple[str, int], float]:
        """Per connector, the highest register any journaled message has carried."""
        rows = self._db.read("SELECT key, value FROM meta WHERE key LIKE 'floor:%'")
        out: dict[tuple[str, int], float] = {}
        for key, value in rows:
            endpoint_id, _, connector = str(key)[len("floor:"):].rpartition(" ")
            out[(endpoint_id, int(connector))] = float(value)
        return out

    def get_meters(self) -> dict[tuple[str, int], float]:
        rows = self._db.read("SELECT endpoint_id, connector, energy_wh FROM meters")
        return {(e, int(c)): float(wh) for e, c, wh in rows}

    def put_meters(self, values: Mapping[tuple[str, int], float],
                   basis: dict[str, Any] | None = None) -> None:
        """Store many registers in one transaction, with the `basis` they were read at (the PCS
        lifetime registers and the allocations of the same control step, see `meter_basis`)."""
        if not values and basis is None:
            return
        with self._db.write(lazy=True) as c:
            c.executemany(
                "INSERT INTO meters (endpoint_id, connector, energy_wh) VALUES (?, ?, ?) "
                "ON CONFLICT (endpoint_id, connector) DO UPDATE SET energy_wh = excluded.energy_wh",
                [(e, int(conn), float(wh)) for (e, conn), wh in values.items()],
            )
            if basis is not None:
                c.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('meter_basis', ?)",
                          (dumps(basis),))
        # Committed at once, group or not (its fsync follows on the writer thread): a crash
        # splits the energy since the last save by its allocations, and that split is only as
        # good as the save is recent (docs/control.md).
        self._db.flush()

    def meter_basis(self) -> dict[str, Any] | None:
        """What `put_meters` stored with the last registers: {"discharged_wh", "charged_wh",
        "allocations": {"<endpoint> <connector>": W}}, or None."""
        rows = self._db.read("SELECT value FROM meta WHERE key = 'meter_basis'")
        if not rows:
            return None
        value = loads(rows[0][0])
        return value if isinstance(value, dict) else None
