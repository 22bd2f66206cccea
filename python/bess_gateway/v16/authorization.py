"""1.6 Local Auth List Management and the authorization cache: SendLocalList,
GetLocalListVersion, ClearCache, and the 1.6 side of an authorization decision.

The rules live in domain/authorization.py; this block translates IdTagInfo and AuthorizationData
into domain values and keeps them in the journal, keyed by the idTag's hash. Logs name an idTag
only by the first characters of its hash.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from bess_gateway.domain.authorization import (
    AuthInfo,
    AuthPolicy,
    Decision,
    ListChange,
    ListUpdateStatus,
    authorize,
    check_update,
    parse_status,
)
from bess_gateway.journal import JournalError
from bess_gateway.v16.context import Context

log = logging.getLogger("bess_gateway.v16")


def tag_ref(id_hash: str) -> str:
    """How a log line names an idTag: a short prefix of its keyed hash."""
    return f"tag#{id_hash[:8]}"


def _time(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def info_from_wire(ctx: Context, id_tag_info: dict[str, Any]) -> AuthInfo:
    """A 1.6 IdTagInfo as a domain AuthInfo (the parent idTag kept as its hash only)."""
    parent = id_tag_info.get("parentIdTag")
    return AuthInfo(
        status=parse_status(str(id_tag_info.get("status", ""))),
        expiry=_time(id_tag_info.get("expiryDate")),
        parent_hash=ctx.journal.hash_id_tag(parent) if isinstance(parent, str) else None,
    )


def decide(ctx: Context, id_hash: str, online: bool) -> Decision:
    """The local part of authorizing one idTag (by hash) now; `ask` means send Authorize."""
    settings = ctx.station.settings
    policy = AuthPolicy.from_settings(settings.bool)
    journal = ctx.journal
    try:
        list_entry = (journal.auth_list_entry(ctx.endpoint_id, id_hash)
                      if policy.local_list_enabled else None)
        cache_entry = (journal.auth_cache_entry(ctx.endpoint_id, id_hash)
                       if policy.cache_enabled else None)
    except JournalError as exc:
        # Unreadable list/cache: whether the tag is blocked is unknown, so only the CSMS decides.
        log.error("%s: local authorization unavailable (%s)", ctx.endpoint_id, exc)
        return Decision("ask", "csms") if online else Decision("refuse", "unknown")
    return authorize(online, policy, list_entry=list_entry, cache_entry=cache_entry,
                     now=ctx.station._clock())


def remember(ctx: Context, id_hash: str, id_tag_info: dict[str, Any] | None) -> None:
    """Keep what a CSMS answer (Authorize.conf, StartTransaction.conf) said about an idTag.

    A journal failure only costs the cache entry; the caller goes on with the answer it has.
    """
    if not id_tag_info or not ctx.station.settings.bool("authorization_cache_enabled"):
        return
    try:
        ctx.journal.put_auth_cache(ctx.endpoint_id, id_hash, info_from_wire(ctx, id_tag_info),
                                   ctx.station._clock())
    except JournalError as exc:
        log.error("%s: authorization cache not updated for %s: %s", ctx.endpoint_id,
                  tag_ref(id_hash), exc)


def handlers(ctx: Context) -> dict[str, Any]:
    journal = ctx.journal
    settings = ctx.station.settings

    async def send_local_list(p: dict[str, Any]) -> dict[str, Any]:
        full = p["updateType"] == "Full"
        version = int(p["listVersion"])
        changes: list[ListChange] = []
        for entry in p.get("localAuthorizationList") or []:
            info = entry.get("idTagInfo")
            changes.append(ListChange(
                journal.hash_id_tag(entry["idTag"]),
                None if info is None else info_from_wire(ctx, info)))
        if version < 1:
            # 0 means "no list" and -1 "not supported" in GetLocalListVersion: not a version.
            return {"status": str(ListUpdateStatus.FAILED)}
        try:
            status = check_update(
                enabled=settings.bool("local_auth_list_enabled"),
                full=full,
                current_version=journal.auth_list_version(ctx.endpoint_id),
                new_version=version,
                changes=changes,
                current_size=journal.auth_list_size(ctx.endpoint_id),
                current_hashes=lambda hs: journal.auth_list_count(ctx.endpoint_id, list(hs)),
            )
            if status == ListUpdateStatus.ACCEPTED:
                journal.apply_auth_list(ctx.endpoint_id, full=full, version=version,
                                        changes=changes)
        except JournalError as exc:
            log.error("%s: local list not updated: %s", ctx.endpoint_id, exc)
            return {"status": str(ListUpdateStatus.FAILED)}
        log.info("%s: SendLocalList %s v%d (%d entries): %s", ctx.endpoint_id, p["updateType"],
                 version, len(changes), status)
        return {"status": str(status)}

    async def get_local_list_version(p: dict[str, Any]) -> dict[str, Any]:
        if not settings.bool("local_auth_list_enabled"):
            return {"listVersion": -1}
        return {"listVersion": journal.auth_list_version(ctx.endpoint_id)}

    async def clear_cache(p: dict[str, Any]) -> dict[str, Any]:
        try:
            removed = journal.clear_auth_cache(ctx.endpoint_id)
        except JournalError as exc:
            log.error("%s: ClearCache failed: %s", ctx.endpoint_id, exc)
            return {"status": "Rejected"}
        log.info("%s: authorization cache cleared (%d entries)", ctx.endpoint_id, removed)
        return {"status": "Accepted"}

    return {
        "SendLocalList": send_local_list,
        "GetLocalListVersion": get_local_list_version,
        "ClearCache": clear_cache,
    }
