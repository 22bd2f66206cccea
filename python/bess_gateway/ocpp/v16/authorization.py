"""1.6 Local Auth List Management and the authorization cache: SendLocalList,
GetLocalListVersion, ClearCache, and the 1.6 side of an authorization decision.

The rules live in domain/authorization.py and the flow in authorizer.py (shared with 2.0.1);
this block translates IdTagInfo and AuthorizationData into domain values and keeps them in the
journal, keyed by the idTag's hash. Logs name an idTag only by the first characters of its hash.
"""

from __future__ import annotations

import logging
from typing import Any

from bess_gateway.domain.authorization import (
    AuthInfo,
    ListChange,
    ListUpdateStatus,
    parse_status,
)
from bess_gateway.endpoint.authorizer import tag_ref, wire_time
from bess_gateway.ocpp.v16.context import Context

log = logging.getLogger("bess_gateway.ocpp.v16")

__all__ = ["authorized", "handlers", "info_from_wire", "remember", "tag_ref"]


def info_from_wire(ctx: Context, id_tag_info: dict[str, Any]) -> AuthInfo:
    """A 1.6 IdTagInfo as a domain AuthInfo (the parent idTag kept as its hash only)."""
    parent = id_tag_info.get("parentIdTag")
    return AuthInfo(
        status=parse_status(str(id_tag_info.get("status", ""))),
        expiry=wire_time(id_tag_info.get("expiryDate")),
        parent_hash=ctx.journal.hash_id_tag(parent) if isinstance(parent, str) else None,
    )


def remember(ctx: Context, id_hash: str, id_tag_info: dict[str, Any] | None) -> None:
    """Keep what a CSMS answer (Authorize.conf, StartTransaction.conf) said about an idTag."""
    if id_tag_info:
        ctx.services.authorizer.remember(id_hash, info_from_wire(ctx, id_tag_info))


async def authorized(ctx: Context, id_tag: str) -> bool:
    """AuthorizeRemoteTxRequests: the shared flow (`authorizer.authorized`) with 1.6 Authorize."""

    async def ask() -> AuthInfo:
        resp = await ctx.call("Authorize", {"idTag": id_tag})
        return info_from_wire(ctx, resp.get("idTagInfo") or {})

    return await ctx.services.authorizer.authorized(ctx.journal.hash_id_tag(id_tag), ask)


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
        status = ctx.services.authorizer.update_local_list(full=full, version=version,
                                                           changes=changes)
        return {"status": str(ListUpdateStatus.FAILED if status is None else status)}

    async def get_local_list_version(p: dict[str, Any]) -> dict[str, Any]:
        if not settings.bool("local_auth_list_enabled"):
            return {"listVersion": -1}
        return {"listVersion": journal.auth.auth_list_version(ctx.endpoint_id)}

    async def clear_cache(p: dict[str, Any]) -> dict[str, Any]:
        return {"status": "Accepted" if ctx.services.authorizer.clear_cache() else "Rejected"}

    return {
        "SendLocalList": send_local_list,
        "GetLocalListVersion": get_local_list_version,
        "ClearCache": clear_cache,
    }
