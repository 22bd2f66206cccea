"""2.0.1 C Authorization and D Local authorization list: idTokens translated to the shared flow.

The decision (list, cache, CSMS, offline rules) is `authorizer.authorized`, the same code 1.6
runs; the list and cache are the journal's, keyed by hash. An idToken is known by the keyed hash
of its `idToken` value alone: the type (ISO14443, eMAID, Central, ...) is not hashed, so the same
identifier presented under two types is one identifier (a BESS has no reader that could confuse
them), the reservation book and `bess-gateway forget-idtag TAG` find 2.0.1 tokens exactly as
1.6 idTags, and a groupIdToken is stored as a parent hash like 1.6's parentIdTag.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from bess_gateway.domain.authorization import (
    AuthInfo,
    AuthStatus,
    ListChange,
    ListUpdateStatus,
    parse_status,
)
from bess_gateway.endpoint import authorizer
from bess_gateway.endpoint.link import Context

log = logging.getLogger("bess_gateway.ocpp.v201")

NO_AUTHORIZATION = "NoAuthorization"


def token_hash(ctx: Context, id_token: dict[str, Any]) -> str:
    """The keyed hash an idToken is known by (its value only; see the module docstring)."""
    return ctx.journal.hash_id_tag(str(id_token.get("idToken", "")))


def info_from_wire(ctx: Context, id_token_info: dict[str, Any]) -> AuthInfo:
    """A 2.0.1 IdTokenInfo as a domain AuthInfo (the group kept as its hash only).

    Without a cacheExpiryDateTime, AuthCacheCtrlr.LifeTime (when set) bounds the entry.
    """
    group = id_token_info.get("groupIdToken")
    expiry = authorizer.wire_time(id_token_info.get("cacheExpiryDateTime"))
    lifetime = ctx.station.settings.int("auth_cache_lifetime_s")
    if expiry is None and lifetime > 0:
        expiry = ctx.station.now() + timedelta(seconds=lifetime)
    return AuthInfo(
        status=parse_status(str(id_token_info.get("status", ""))),
        expiry=expiry,
        parent_hash=token_hash(ctx, group) if isinstance(group, dict) else None,
    )


def remember(ctx: Context, id_token: dict[str, Any], id_token_info: dict[str, Any] | None) -> None:
    """Cache what a CSMS answer (Authorize, TransactionEvent) said about an idToken."""
    if id_token_info and id_token.get("type") != NO_AUTHORIZATION:
        ctx.services.authorizer.remember(token_hash(ctx, id_token),
                                         info_from_wire(ctx, id_token_info))


def _asker(ctx: Context, id_token: dict[str, Any]) -> authorizer.Ask:
    async def ask() -> AuthInfo:
        resp = await ctx.call("Authorize", {"idToken": _wire_token(id_token)})
        return info_from_wire(ctx, resp.get("idTokenInfo") or {})

    return ask


def _wire_token(id_token: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in id_token.items() if k in ("idToken", "type", "additionalInfo")}


async def authorize_start(ctx: Context, id_token: dict[str, Any]) -> bool:
    """May a RequestStartTransaction for this idToken start (F01/F02, C01, C12-C15)?

    AuthCtrlr.AuthorizeRemoteStart false: the CSMS's request is its authorization. Otherwise the
    shared flow: local list and cache where LocalPreAuthorize allows, else Authorize; no answer
    means the offline rules (LocalAuthorizeOffline, OfflineTxForUnknownIdEnabled).
    A NoAuthorization token needs no authorization by definition.
    """
    if id_token.get("type") == NO_AUTHORIZATION:
        return True
    if not ctx.station.settings.bool("authorize_remote_tx"):
        return True
    return await ctx.services.authorizer.authorized(token_hash(ctx, id_token),
                                                    _asker(ctx, id_token))


async def same_group(ctx: Context, started_hash: str, id_token: dict[str, Any]) -> bool:
    """May `id_token` end the transaction started by the token of hash `started_hash` (C09)?

    The same token always may; another one when both have the same GroupId, as the local list,
    the cache (which learns it from Authorize and TransactionEvent answers) or an Authorize says.
    A presented token that is not valid itself never may.
    """
    h = token_hash(ctx, id_token)
    if h == started_hash:
        return True
    started = ctx.services.authorizer.known(started_hash)
    if started is None or started.parent_hash is None:
        return False
    presented = ctx.services.authorizer.known(h)
    if presented is None and ctx.online:
        presented = await ctx.services.authorizer.ask_csms(h, _asker(ctx, id_token))
    if presented is None or presented.status != AuthStatus.ACCEPTED:
        return False
    return presented.parent_hash == started.parent_hash


def handlers(ctx: Context) -> dict[str, Any]:
    journal = ctx.journal
    settings = ctx.station.settings

    async def send_local_list(p: dict[str, Any]) -> dict[str, Any]:
        full = p["updateType"] == "Full"
        version = int(p["versionNumber"])
        changes: list[ListChange] = []
        for entry in p.get("localAuthorizationList") or []:
            info = entry.get("idTokenInfo")
            changes.append(ListChange(
                token_hash(ctx, entry["idToken"]),
                None if info is None else _list_info(ctx, info)))
        if version < 1:
            # 0 is "no list" in GetLocalListVersion: not a version a list can have.
            return {"status": "Failed", "statusInfo": {"reasonCode": "InvalidVersion"}}
        status = ctx.services.authorizer.update_local_list(full=full, version=version,
                                                           changes=changes)
        if status is None:
            return {"status": "Failed", "statusInfo": {"reasonCode": "InternalError"}}
        if status == ListUpdateStatus.NOT_SUPPORTED:
            # 2.0.1 has no NotSupported here: a disabled list fails every update.
            return {"status": "Failed", "statusInfo": {"reasonCode": "Disabled"}}
        return {"status": str(status)}

    async def get_local_list_version(p: dict[str, Any]) -> dict[str, Any]:
        # 0 = no list (D02.FR.02); a disabled list holds none as far as the CSMS is concerned.
        if not settings.bool("local_auth_list_enabled"):
            return {"versionNumber": 0}
        return {"versionNumber": journal.auth.auth_list_version(ctx.endpoint_id)}

    async def clear_cache(p: dict[str, Any]) -> dict[str, Any]:
        if not settings.bool("authorization_cache_enabled"):
            return {"status": "Rejected", "statusInfo": {"reasonCode": "Disabled"}}
        return {"status": "Accepted" if ctx.services.authorizer.clear_cache() else "Rejected"}

    return {
        "SendLocalList": send_local_list,
        "GetLocalListVersion": get_local_list_version,
        "ClearCache": clear_cache,
    }


def _list_info(ctx: Context, info: dict[str, Any]) -> AuthInfo:
    """A local-list entry: its cacheExpiryDateTime is its expiry; no cache lifetime applies."""
    group = info.get("groupIdToken")
    return AuthInfo(
        status=parse_status(str(info.get("status", ""))),
        expiry=authorizer.wire_time(info.get("cacheExpiryDateTime")),
        parent_hash=token_hash(ctx, group) if isinstance(group, dict) else None,
    )
