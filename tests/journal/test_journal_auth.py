"""The journal's local list and authorization cache, on a real SQLite file."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from bess_gateway.domain.authorization import (
    CACHE_MAX_LENGTH,
    AuthInfo,
    AuthStatus,
    ListChange,
)
from bess_gateway.journal import Journal

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_list_and_cache_survive_reopening_and_stay_per_endpoint(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    expiry = NOW + timedelta(days=3)
    with Journal(path) as j:
        a, b = j.hash_id_tag("A"), j.hash_id_tag("B")
        j.auth.apply_auth_list("E1", full=True, version=3,
                          changes=[ListChange(a, AuthInfo(AuthStatus.ACCEPTED, expiry, b))])
        assert j.auth.put_auth_cache("E1", b, AuthInfo(AuthStatus.BLOCKED), NOW)
        # A listed tag is never cached; entering the list removes it from the cache.
        assert not j.auth.put_auth_cache("E1", a, AuthInfo(AuthStatus.ACCEPTED), NOW)
        assert j.auth.put_auth_cache("E2", a, AuthInfo(AuthStatus.ACCEPTED), NOW)
    with Journal(path) as j:
        assert j.auth.auth_list_version("E1") == 3 and j.auth.auth_list_version("E2") == 0
        assert j.auth.auth_list_entry("E1", a) == AuthInfo(AuthStatus.ACCEPTED, expiry, b)
        assert j.auth.auth_list_entry("E2", a) is None
        assert j.auth.auth_cache_entry("E1", b) == AuthInfo(AuthStatus.BLOCKED)
        assert j.auth.auth_cache_entry("E1", a) is None
        j.auth.apply_auth_list("E2", full=False, version=1,
                          changes=[ListChange(a, AuthInfo(AuthStatus.ACCEPTED))])
        assert j.auth.auth_cache_entry("E2", a) is None
        assert j.auth.clear_auth_cache("E1") == 1 and j.auth.auth_cache_size("E1") == 0


def test_a_full_cache_evicts_not_valid_entries_first_then_the_oldest(tmp_path: Path) -> None:
    with Journal(tmp_path / "journal.sqlite") as j:
        with j.atomic():
            # the most recently updated, yet the first to go: it is not valid
            j.auth.put_auth_cache("E1", "blocked", AuthInfo(AuthStatus.BLOCKED),
                             NOW + timedelta(days=1))
            for i in range(CACHE_MAX_LENGTH - 1):
                j.auth.put_auth_cache("E1", f"v{i:04d}", AuthInfo(AuthStatus.ACCEPTED),
                                 NOW + timedelta(seconds=i))
        assert j.auth.auth_cache_size("E1") == CACHE_MAX_LENGTH
        later = NOW + timedelta(hours=1)
        j.auth.put_auth_cache("E1", "new1", AuthInfo(AuthStatus.ACCEPTED), later)
        assert j.auth.auth_cache_entry("E1", "blocked") is None
        j.auth.put_auth_cache("E1", "new2", AuthInfo(AuthStatus.ACCEPTED), later)
        assert j.auth.auth_cache_entry("E1", "v0000") is None
        assert j.auth.auth_cache_entry("E1", "v0001") is not None
        # Updating an entry already held needs no room.
        j.auth.put_auth_cache("E1", "v0001", AuthInfo(AuthStatus.BLOCKED), later)
        assert j.auth.auth_cache_size("E1") == CACHE_MAX_LENGTH
        assert j.auth.auth_cache_entry("E1", "v0002") is not None
