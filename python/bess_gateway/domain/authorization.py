"""Who may start a session: the local authorization list, the authorization cache and the rules.

Version-agnostic (OCPP 1.6 idTag, 2.0.1 idToken): an identifier is only ever known here by its
keyed hash (`journal.hash_id_tag`), so neither the list nor the cache can leak a clear identifier.
Time is a parameter everywhere, so the rules are pure and testable.

The rules (1.6 section 3.5, the LocalPreAuthorize / LocalAuthorizeOffline /
AllowOfflineTxForUnknownId keys; 2.0.1's C-block is the same shape):

- Local authorization (list, then cache) is consulted online only with LocalPreAuthorize, and
  offline only with LocalAuthorizeOffline.
- A list entry is final when consulted: Accepted and unexpired starts, anything else refuses
  (the CSMS put it there; 1.6 3.5.3 says non-Accepted list entries MUST be rejected offline).
  The list has priority over the cache for the same identifier.
- A cache entry only ever authorizes (Accepted, unexpired). A cached not-valid entry is asked
  about again when online (1.6 3.5.1), and refuses offline.
- Offline, an identifier neither list nor cache knows starts only with AllowOfflineTxForUnknownId;
  a known-bad one (list or cache, any status but valid) never does, whatever the keys say.
- Online and not decided locally: ask the CSMS.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Literal

# What we advertise as LocalAuthListMaxLength / SendLocalListMaxLength, and the cache's size.
LOCAL_LIST_MAX_LENGTH = 10_000
SEND_LOCAL_LIST_MAX_LENGTH = 1_000
CACHE_MAX_LENGTH = 1_000


class AuthStatus(StrEnum):
    # 1.6 AuthorizationStatus; 2.0.1 AuthorizationStatusEnumType adds more, all non-valid here.
    ACCEPTED = "Accepted"
    BLOCKED = "Blocked"
    EXPIRED = "Expired"
    INVALID = "Invalid"
    CONCURRENT_TX = "ConcurrentTx"


@dataclass(frozen=True, slots=True)
class AuthInfo:
    """What the CSMS told us about one identifier (1.6 IdTagInfo, 2.0.1 IdTokenInfo)."""

    status: AuthStatus
    expiry: datetime | None = None
    parent_hash: str | None = None  # keyed hash of the parent identifier, never the clear one

    def valid(self, now: datetime) -> bool:
        """Accepted and not past its expiry date (ConcurrentTx counts as not valid to start)."""
        return self.status == AuthStatus.ACCEPTED and (self.expiry is None or self.expiry > now)

    def effective_status(self, now: datetime) -> AuthStatus:
        """The status as of `now`: an Accepted entry past its expiry date reads Expired."""
        if self.status == AuthStatus.ACCEPTED and self.expiry is not None and self.expiry <= now:
            return AuthStatus.EXPIRED
        return self.status


def parse_status(text: str) -> AuthStatus:
    """A status from the wire; anything unknown (a newer version's value) counts as Invalid."""
    try:
        return AuthStatus(text)
    except ValueError:
        return AuthStatus.INVALID


Source = Literal["list", "cache", "unknown", "csms"]


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of `authorize`: start now, refuse now, or ask the CSMS."""

    action: Literal["start", "refuse", "ask"]
    source: Source
    status: AuthStatus | None = None  # the status that decided, when decided locally

    @property
    def start(self) -> bool:
        return self.action == "start"


@dataclass(frozen=True, slots=True)
class AuthPolicy:
    """The settings the decision depends on (1.6 keys of the same names)."""

    local_pre_authorize: bool
    local_authorize_offline: bool
    allow_offline_tx_for_unknown_id: bool
    local_list_enabled: bool
    cache_enabled: bool

    @classmethod
    def from_settings(cls, get: Callable[[str], bool]) -> AuthPolicy:
        return cls(
            local_pre_authorize=get("local_pre_authorize"),
            local_authorize_offline=get("local_authorize_offline"),
            allow_offline_tx_for_unknown_id=get("allow_offline_tx_for_unknown_id"),
            local_list_enabled=get("local_auth_list_enabled"),
            cache_enabled=get("authorization_cache_enabled"),
        )


def authorize(
    online: bool,
    policy: AuthPolicy,
    *,
    list_entry: AuthInfo | None,
    cache_entry: AuthInfo | None,
    now: datetime,
) -> Decision:
    """Decide locally for one identifier (already looked up by its hash), or say to ask."""
    listed = list_entry if policy.local_list_enabled else None
    cached = cache_entry if policy.cache_enabled else None
    local = policy.local_pre_authorize if online else policy.local_authorize_offline
    if local and listed is not None:
        return Decision("start" if listed.valid(now) else "refuse", "list",
                        listed.effective_status(now))
    if local and cached is not None and cached.valid(now):
        return Decision("start", "cache", AuthStatus.ACCEPTED)
    if online:
        return Decision("ask", "csms")
    if listed is not None:
        return Decision("refuse", "list", listed.effective_status(now))
    if cached is not None:
        # A cached Accepted entry here is expired, or LocalAuthorizeOffline is off: either way
        # the identifier is not "unknown", so AllowOfflineTxForUnknownId does not cover it.
        if cached.valid(now):
            return Decision("refuse", "cache", AuthStatus.ACCEPTED)
        return Decision("refuse", "cache", cached.effective_status(now))
    if policy.allow_offline_tx_for_unknown_id:
        return Decision("start", "unknown")
    return Decision("refuse", "unknown")


# -- the local list ------------------------------------------------------------------------------
class ListUpdateStatus(StrEnum):
    ACCEPTED = "Accepted"
    FAILED = "Failed"
    NOT_SUPPORTED = "NotSupported"
    VERSION_MISMATCH = "VersionMismatch"


@dataclass(frozen=True, slots=True)
class ListChange:
    """One entry of a list update: `info` None deletes the identifier (a Differential update)."""

    id_hash: str
    info: AuthInfo | None


def check_update(
    *,
    enabled: bool,
    full: bool,
    current_version: int,
    new_version: int,
    changes: Iterable[ListChange],
    current_size: int,
    current_hashes: Callable[[Iterable[str]], int],
) -> ListUpdateStatus:
    """Whether a list update may be applied (the caller applies it when Accepted).

    `current_hashes(hashes)` counts how many of the given hashes the list holds already, so the
    size after a Differential update can be checked without loading the list.
    """
    if not enabled:
        return ListUpdateStatus.NOT_SUPPORTED
    changes = list(changes)
    if len(changes) > SEND_LOCAL_LIST_MAX_LENGTH:
        return ListUpdateStatus.FAILED
    if len({c.id_hash for c in changes}) != len(changes):
        return ListUpdateStatus.FAILED  # one identifier twice: ambiguous, refuse the whole update
    if full:
        if any(c.info is None for c in changes):
            return ListUpdateStatus.FAILED  # a Full list carries no deletions
        return ListUpdateStatus.ACCEPTED
    # A Differential update applies to one version only; an older or same version is stale.
    if new_version <= current_version:
        return ListUpdateStatus.VERSION_MISMATCH
    added = [c.id_hash for c in changes if c.info is not None]
    removed = [c.id_hash for c in changes if c.info is None]
    size = current_size + len(added) - current_hashes(added) - current_hashes(removed)
    if size > LOCAL_LIST_MAX_LENGTH:
        return ListUpdateStatus.FAILED
    return ListUpdateStatus.ACCEPTED


def cache_victims(entries: Iterable[tuple[str, AuthInfo, datetime]], room: int,
                  now: datetime) -> list[str]:
    """Which cache entries to drop so `room` new ones fit (1.6 3.5.1): not-valid ones first,
    then the least recently updated valid ones. `entries` are (hash, info, updated_at)."""
    items = list(entries)
    excess = len(items) + room - CACHE_MAX_LENGTH
    if excess <= 0:
        return []
    ordered = sorted(items, key=lambda e: (e[1].valid(now), e[2]))
    return [h for h, _, _ in ordered[:excess]]
