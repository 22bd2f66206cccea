"""The authorization rules (1.6 section 3.5), without a station: pure functions, time as input."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bess_gateway.domain.authorization import (
    CACHE_MAX_LENGTH,
    LOCAL_LIST_MAX_LENGTH,
    SEND_LOCAL_LIST_MAX_LENGTH,
    AuthInfo,
    AuthPolicy,
    AuthStatus,
    ListChange,
    ListUpdateStatus,
    authorize,
    cache_victims,
    check_update,
    parse_status,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ACCEPTED = AuthInfo(AuthStatus.ACCEPTED)
BLOCKED = AuthInfo(AuthStatus.BLOCKED)
EXPIRED_BY_TIME = AuthInfo(AuthStatus.ACCEPTED, expiry=NOW - timedelta(seconds=1))
VALID_UNTIL_LATER = AuthInfo(AuthStatus.ACCEPTED, expiry=NOW + timedelta(days=1))


def policy(**kw: bool) -> AuthPolicy:
    base = dict(local_pre_authorize=False, local_authorize_offline=True,
                allow_offline_tx_for_unknown_id=False, local_list_enabled=True,
                cache_enabled=True)
    base.update(kw)
    return AuthPolicy(**base)


def decide(online: bool, pol: AuthPolicy, lst: AuthInfo | None = None,
           cache: AuthInfo | None = None) -> tuple[str, str]:
    d = authorize(online, pol, list_entry=lst, cache_entry=cache, now=NOW)
    return d.action, d.source


def test_validity_and_expiry_are_judged_at_the_given_time() -> None:
    assert ACCEPTED.valid(NOW)
    assert VALID_UNTIL_LATER.valid(NOW)
    assert not VALID_UNTIL_LATER.valid(NOW + timedelta(days=2))
    assert not EXPIRED_BY_TIME.valid(NOW)
    assert EXPIRED_BY_TIME.effective_status(NOW) == AuthStatus.EXPIRED
    assert not AuthInfo(AuthStatus.CONCURRENT_TX).valid(NOW)
    assert BLOCKED.effective_status(NOW) == AuthStatus.BLOCKED
    assert parse_status("Accepted") == AuthStatus.ACCEPTED
    assert parse_status("NoCredit") == AuthStatus.INVALID  # a value 1.6 does not know


def test_online_without_pre_authorize_always_asks_the_csms() -> None:
    pol = policy(local_pre_authorize=False)
    assert decide(True, pol, ACCEPTED, ACCEPTED) == ("ask", "csms")
    assert decide(True, pol, BLOCKED) == ("ask", "csms")
    assert decide(True, pol) == ("ask", "csms")


def test_online_with_pre_authorize_list_is_final_and_has_priority() -> None:
    pol = policy(local_pre_authorize=True)
    assert decide(True, pol, ACCEPTED) == ("start", "list")
    assert decide(True, pol, VALID_UNTIL_LATER) == ("start", "list")
    assert decide(True, pol, BLOCKED, ACCEPTED) == ("refuse", "list")
    d = authorize(True, pol, list_entry=EXPIRED_BY_TIME, cache_entry=None, now=NOW)
    assert (d.action, d.status) == ("refuse", AuthStatus.EXPIRED)


def test_online_with_pre_authorize_cache_only_authorizes_valid_entries() -> None:
    pol = policy(local_pre_authorize=True)
    assert decide(True, pol, None, ACCEPTED) == ("start", "cache")
    # not valid in the cache: ask again (1.6 3.5.1), the CSMS may have changed its mind
    assert decide(True, pol, None, BLOCKED) == ("ask", "csms")
    assert decide(True, pol, None, EXPIRED_BY_TIME) == ("ask", "csms")
    assert decide(True, pol) == ("ask", "csms")


def test_disabled_list_and_cache_are_ignored() -> None:
    pol = policy(local_pre_authorize=True, local_list_enabled=False, cache_enabled=False)
    assert decide(True, pol, ACCEPTED, ACCEPTED) == ("ask", "csms")
    assert decide(False, pol, BLOCKED, BLOCKED) == ("refuse", "unknown")
    pol = policy(local_list_enabled=False, cache_enabled=False,
                 allow_offline_tx_for_unknown_id=True)
    assert decide(False, pol, BLOCKED, BLOCKED) == ("start", "unknown")


def test_offline_with_local_authorize_offline() -> None:
    pol = policy(local_authorize_offline=True)
    assert decide(False, pol, ACCEPTED) == ("start", "list")
    assert decide(False, pol, None, ACCEPTED) == ("start", "cache")
    assert decide(False, pol, BLOCKED, ACCEPTED) == ("refuse", "list")
    assert decide(False, pol, None, BLOCKED) == ("refuse", "cache")
    assert decide(False, pol, None, EXPIRED_BY_TIME) == ("refuse", "cache")
    assert decide(False, pol) == ("refuse", "unknown")


def test_offline_unknown_ids_only_with_allow_offline_tx_for_unknown_id() -> None:
    pol = policy(allow_offline_tx_for_unknown_id=True)
    assert decide(False, pol) == ("start", "unknown")
    # known-bad identifiers are not "unknown" (1.6 3.5.3): they never start offline
    assert decide(False, pol, BLOCKED) == ("refuse", "list")
    assert decide(False, pol, EXPIRED_BY_TIME) == ("refuse", "list")
    assert decide(False, pol, None, BLOCKED) == ("refuse", "cache")


def test_offline_without_local_authorize_offline_refuses_known_ids() -> None:
    pol = policy(local_authorize_offline=False, allow_offline_tx_for_unknown_id=True)
    assert decide(False, pol, ACCEPTED) == ("refuse", "list")
    assert decide(False, pol, None, ACCEPTED) == ("refuse", "cache")
    assert decide(False, pol) == ("start", "unknown")


def _check(*, full: bool, current: int, new: int, changes: list[ListChange],
           held: frozenset[str] | set[str] = frozenset(),
           enabled: bool = True) -> ListUpdateStatus:
    return check_update(enabled=enabled, full=full, current_version=current, new_version=new,
                        changes=changes, current_size=len(held),
                        current_hashes=lambda hs: len(set(hs) & held))


def test_list_updates_versions_and_limits() -> None:
    add_a = ListChange("a", ACCEPTED)
    del_b = ListChange("b", None)
    assert _check(full=True, current=5, new=1, changes=[add_a]) == ListUpdateStatus.ACCEPTED
    assert _check(full=False, current=5, new=6, changes=[add_a, del_b],
                  held={"b"}) == ListUpdateStatus.ACCEPTED
    assert _check(full=False, current=5, new=5, changes=[add_a]) == \
        ListUpdateStatus.VERSION_MISMATCH
    assert _check(full=False, current=5, new=4, changes=[add_a]) == \
        ListUpdateStatus.VERSION_MISMATCH
    assert _check(full=True, current=0, new=1, changes=[add_a],
                  enabled=False) == ListUpdateStatus.NOT_SUPPORTED
    assert _check(full=True, current=0, new=1, changes=[del_b]) == ListUpdateStatus.FAILED
    assert _check(full=True, current=0, new=1,
                  changes=[add_a, ListChange("a", BLOCKED)]) == ListUpdateStatus.FAILED
    too_many = [ListChange(str(i), ACCEPTED) for i in range(SEND_LOCAL_LIST_MAX_LENGTH + 1)]
    assert _check(full=True, current=0, new=1, changes=too_many) == ListUpdateStatus.FAILED
    held = {str(i) for i in range(LOCAL_LIST_MAX_LENGTH)}
    assert _check(full=False, current=1, new=2, changes=[add_a],
                  held=held) == ListUpdateStatus.FAILED
    # replacing one held entry keeps the size: fine
    assert _check(full=False, current=1, new=2, changes=[ListChange("7", BLOCKED)],
                  held=held) == ListUpdateStatus.ACCEPTED


@pytest.mark.parametrize("room", [1, 3])
def test_a_full_cache_drops_not_valid_entries_then_the_oldest_valid(room: int) -> None:
    t0 = NOW - timedelta(hours=1)
    entries = [(f"v{i}", ACCEPTED, t0 + timedelta(seconds=i)) for i in range(CACHE_MAX_LENGTH - 1)]
    entries.append(("bad", BLOCKED, NOW))
    victims = cache_victims(entries, room, NOW)
    assert victims == ["bad", "v0", "v1"][:room]
    assert cache_victims(entries[:10], 1, NOW) == []
