"""Installed charging profiles (smart charging), as the domain's JSON."""

from __future__ import annotations

from typing import Any

from bess_gateway.journal.db import Database
from bess_gateway.journal.records import dumps, loads


class Profiles:
    def __init__(self, db: Database) -> None:
        self._db = db

    def put_charging_profile(self, endpoint_id: str, profile_id: int, data: dict[str, Any],
                             installed_at: str) -> None:
        with self._db.write(endpoint_id) as c:
            c.execute(
                "INSERT OR REPLACE INTO charging_profiles (endpoint_id, profile_id, data, "
                "installed_at) VALUES (?, ?, ?, ?)",
                (endpoint_id, int(profile_id), dumps(data), installed_at),
            )

    def delete_charging_profiles(self, endpoint_id: str, profile_ids: list[int]) -> None:
        with self._db.write(endpoint_id) as c:
            c.executemany(
                "DELETE FROM charging_profiles WHERE endpoint_id = ? AND profile_id = ?",
                [(endpoint_id, int(i)) for i in profile_ids],
            )

    def charging_profiles(self, endpoint_id: str) -> list[tuple[dict[str, Any], str]]:
        """(profile data, installed_at ISO-8601) of every stored profile, by profile id."""
        rows = self._db.read(
            "SELECT data, installed_at FROM charging_profiles WHERE endpoint_id = ? "
            "ORDER BY profile_id", (endpoint_id,))
        return [(loads(data), at) for data, at in rows]
