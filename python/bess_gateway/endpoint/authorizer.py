"""One endpoint's authorization flow, for both OCPP versions: local list and cache, then the CSMS.

`domain.authorization` holds the pure rules; this module runs them against the endpoint's
journal (list and cache, keyed hashes only) and the CSMS link. A version layer only says how to
ask the CSMS (1.6 Authorize with an idTag, 2.0.1 Authorize with an idToken) and how to read the
answer into a domain `AuthInfo`; the decision, the offline fallback and the cache are here once.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from bess_gateway.domain.authorization import (
    AuthInfo,
    AuthPolicy,
    AuthStatus,
    Decision,
    ListChange,
    ListUpdateStatus,
    authorize,
    check_update,
)
from bess_gateway.domain.station import Station
from bess_gateway.journal import Journal, JournalError
from bess_gateway.ocpp.errors import CallErrorReceived

log = logging.getLogger("bess_gateway.auth")

# Ask the CSMS about the identifier; raise one of NO_ANSWER when it does not answer.
Ask = Callable[[], Awaitable[AuthInfo]]
NO_ANSWER = (CallErrorReceived, TimeoutError, ConnectionError)


def tag_ref(id_hash: str) -> str:
    """How a log line names an identifier: a short prefix of its keyed hash."""
    return f"tag#{id_hash[:8]}"


def wire_time(text: Any) -> datetime | None:
    """A dateTime from the wire (naive ones are UTC); None when absent or unreadable."""
    if not isinstance(text, str):
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class Authorizer:
    """The authorization flow of one endpoint: its journal's list and cache, then its CSMS.

    `online()`: whether the endpoint's CSMS link is up and accepted now."""

    def __init__(self, station: Station, journal: Journal, online: Callable[[], bool]) -> None:
        self.station = station
        self.journal = journal
        self.endpoint_id = station.endpoint_id
        self.online = online

    def decide(self, id_hash: str, online: bool) -> Decision:
        """The local part of authorizing one identifier (by hash) now; `ask` means ask the CSMS."""
        settings = self.station.settings
        policy = AuthPolicy.from_settings(settings.bool)
        journal = self.journal
        try:
            list_entry = (journal.auth.auth_list_entry(self.endpoint_id, id_hash)
                          if policy.local_list_enabled else None)
            cache_entry = (journal.auth.auth_cache_entry(self.endpoint_id, id_hash)
                           if policy.cache_enabled else None)
        except JournalError as exc:
            # Unreadable list/cache: whether the tag is blocked is unknown, so only the CSMS
            # decides.
            log.error("%s: local authorization unavailable (%s)", self.endpoint_id, exc)
            return Decision("ask", "csms") if online else Decision("refuse", "unknown")
        return authorize(online, policy, list_entry=list_entry, cache_entry=cache_entry,
                         now=self.station.now())

    def remember(self, id_hash: str, info: AuthInfo | None) -> None:
        """Keep what a CSMS answer said about an identifier in the cache (when the cache is on).

        A journal failure only costs the cache entry; the caller goes on with the answer it has.
        """
        if info is None or not self.station.settings.bool("authorization_cache_enabled"):
            return
        try:
            self.journal.auth.put_auth_cache(self.endpoint_id, id_hash, info, self.station.now())
        except JournalError as exc:
            log.error("%s: authorization cache not updated for %s: %s", self.endpoint_id,
                      tag_ref(id_hash), exc)

    def known(self, id_hash: str) -> AuthInfo | None:
        """What the local list (first) or the cache holds about an identifier, whatever its
        status."""
        try:
            entry = self.journal.auth.auth_list_entry(self.endpoint_id, id_hash)
            if entry is None:
                entry = self.journal.auth.auth_cache_entry(self.endpoint_id, id_hash)
        except JournalError as exc:
            log.error("%s: local authorization unavailable (%s)", self.endpoint_id, exc)
            return None
        return entry

    async def ask_csms(self, id_hash: str, ask: Ask) -> AuthInfo | None:
        """Ask the CSMS and cache its answer; None when it gave none (timeout, CALLERROR,
        offline)."""
        try:
            info = await ask()
        except NO_ANSWER as exc:
            log.warning("%s: Authorize for %s got no answer (%s)", self.endpoint_id,
                        tag_ref(id_hash), exc)
            return None
        self.remember(id_hash, info)
        return info

    async def authorized(self, id_hash: str, ask: Ask) -> bool:
        """May this identifier start a session now: the local list and cache first where the
        settings allow (no round trip with LocalPreAuthorize), else the CSMS; no answer from the
        CSMS counts as being offline."""
        ref = tag_ref(id_hash)
        decision = self.decide(id_hash, self.online())
        if decision.action == "ask":
            info = await self.ask_csms(id_hash, ask)
            if info is None:
                decision = self.decide(id_hash, online=False)
                log.info("%s: offline rules for %s: %s", self.endpoint_id, ref, decision.action)
            else:
                if info.status == AuthStatus.ACCEPTED:
                    return True
                log.info("%s: %s not accepted by the CSMS (%s)", self.endpoint_id, ref, info.status)
                return False
        if decision.start:
            log.info("%s: %s authorized locally (%s)", self.endpoint_id, ref, decision.source)
            return True
        log.info("%s: %s refused locally (%s, %s)", self.endpoint_id, ref, decision.source,
                 decision.status)
        return False

    def update_local_list(self, *, full: bool, version: int,
                          changes: list[ListChange]) -> ListUpdateStatus | None:
        """SendLocalList, either version: check the update and apply it; None = the journal failed
        (the list is unchanged and the answer is a failure)."""
        journal = self.journal
        try:
            status = check_update(
                enabled=self.station.settings.bool("local_auth_list_enabled"),
                full=full,
                current_version=journal.auth.auth_list_version(self.endpoint_id),
                new_version=version,
                changes=changes,
                current_size=journal.auth.auth_list_size(self.endpoint_id),
                current_hashes=lambda hs: journal.auth.auth_list_count(self.endpoint_id, list(hs)),
            )
            if status == ListUpdateStatus.ACCEPTED:
                journal.auth.apply_auth_list(self.endpoint_id, full=full, version=version,
                                             changes=changes)
        except JournalError as exc:
            log.error("%s: local list not updated: %s", self.endpoint_id, exc)
            return None
        log.info("%s: SendLocalList %s v%d (%d entries): %s", self.endpoint_id,
                 "Full" if full else "Differential", version, len(changes), status)
        return status

    def clear_cache(self) -> bool:
        """ClearCache, either version: empty the cache; False = the journal failed (Rejected)."""
        try:
            removed = self.journal.auth.clear_auth_cache(self.endpoint_id)
        except JournalError as exc:
            log.error("%s: ClearCache failed: %s", self.endpoint_id, exc)
            return False
        log.info("%s: authorization cache cleared (%d entries)", self.endpoint_id, removed)
        return True
