"""2.0.1 C Authorization and D Local authorization list end to end.

The shared flow (`authorizer`, the same code 1.6 runs) against the demo CSMS's Authorize on
loopback, with the real journal holding list and cache; every frame we send is schema-checked.
"""

from __future__ import annotations

from typing import Any

from bess_gateway.demo.csms import CsmsServer
from bess_gateway.endpoint.link import Context
from bess_gateway.gateway import Gateway
from bess_gateway.ocpp.v201.authorization import authorize_start, same_group, token_hash
from tests.conftest import GatewayFactory
from tests.waiting import until

SID = "DEMO-01"


def tok(value: str, kind: str = "ISO14443") -> dict[str, Any]:
    return {"idToken": value, "type": kind}


async def setup(gateway_factory: GatewayFactory, csms: CsmsServer) -> tuple[Gateway, Context]:
    gw = await gateway_factory(1, ocpp="2.0.1")
    await csms.wait_for(SID, "StatusNotification", timeout=20)
    ctx = gw.endpoints[SID].ctx
    await until(lambda: ctx.online, 10)
    return gw, ctx


async def set_vars(csms: CsmsServer, component: str, **values: str) -> None:
    resp = await csms.call(SID, "SetVariables", {"setVariableData": [
        {"component": {"name": component}, "variable": {"name": k}, "attributeValue": v}
        for k, v in values.items()]})
    assert [r["attributeStatus"] for r in resp["setVariableResult"]] == ["Accepted"] * len(values)


def authorizes(csms: CsmsServer) -> list[str]:
    return [m.payload["idToken"]["idToken"] for m in csms.of(SID, "Authorize")]


async def test_authorize_start_paths(gateway_factory: GatewayFactory, csms: CsmsServer) -> None:
    _, ctx = await setup(gateway_factory, csms)
    # AuthorizeRemoteStart false (default): the CSMS's request is its own authorization.
    assert await authorize_start(ctx, tok("ANY"))
    assert authorizes(csms) == []

    await set_vars(csms, "AuthCtrlr", AuthorizeRemoteStart="true")
    csms.policy.blocked_id_tags.add("BAD")
    assert await authorize_start(ctx, tok("GOOD"))
    assert not await authorize_start(ctx, tok("BAD"))
    assert authorizes(csms) == ["GOOD", "BAD"]
    assert csms.of(SID, "Authorize")[0].payload == {"idToken": tok("GOOD")}
    # NoAuthorization tokens need none.
    assert await authorize_start(ctx, {"idToken": "", "type": "NoAuthorization"})
    assert authorizes(csms) == ["GOOD", "BAD"]

    # Without LocalPreAuthorize the CSMS is asked every time; with it, the cache answers.
    assert await authorize_start(ctx, tok("GOOD"))
    assert authorizes(csms) == ["GOOD", "BAD", "GOOD"]
    await set_vars(csms, "AuthCtrlr", LocalPreAuthorize="true")
    assert await authorize_start(ctx, tok("GOOD"))
    assert authorizes(csms) == ["GOOD", "BAD", "GOOD"]
    # A cached non-Accepted entry is asked about again (it may have been unblocked).
    csms.policy.blocked_id_tags.discard("BAD")
    assert await authorize_start(ctx, tok("BAD"))
    assert authorizes(csms)[-1] == "BAD"

    # ClearCache empties it: the next start asks again; disabled cache -> Rejected.
    assert (await csms.call(SID, "ClearCache", {}))["status"] == "Accepted"
    assert ctx.journal.auth.auth_cache_size(SID) == 0
    n = len(authorizes(csms))
    assert await authorize_start(ctx, tok("GOOD"))
    assert len(authorizes(csms)) == n + 1
    await set_vars(csms, "AuthCacheCtrlr", Enabled="false")
    assert (await csms.call(SID, "ClearCache", {}))["status"] == "Rejected"


async def test_cache_lifetime_bounds_entries(gateway_factory: GatewayFactory,
                                             csms: CsmsServer) -> None:
    _, ctx = await setup(gateway_factory, csms)
    await set_vars(csms, "AuthCtrlr", AuthorizeRemoteStart="true")
    await set_vars(csms, "AuthCacheCtrlr", LifeTime="3600")
    before = ctx.station.now()
    assert await authorize_start(ctx, tok("TIMED"))
    entry = ctx.journal.auth.auth_cache_entry(SID, token_hash(ctx, tok("TIMED")))
    assert entry is not None and entry.expiry is not None
    assert 3590 <= (entry.expiry - before).total_seconds() <= 3610


async def test_offline_rules_when_authorize_gets_no_answer(gateway_factory: GatewayFactory,
                                                           csms: CsmsServer) -> None:
    _, ctx = await setup(gateway_factory, csms)
    await set_vars(csms, "AuthCtrlr", AuthorizeRemoteStart="true")
    assert await authorize_start(ctx, tok("KNOWN"))  # cached Accepted
    csms.policy.authorize_fails = True  # every Authorize now gets a CALLERROR
    assert not await authorize_start(ctx, tok("STRANGER"))
    await set_vars(csms, "AuthCtrlr", OfflineTxForUnknownIdEnabled="true")
    assert await authorize_start(ctx, tok("STRANGER"))
    # LocalAuthorizeOffline (default true): the cache's Accepted entry decides
    assert await authorize_start(ctx, tok("KNOWN"))
    await set_vars(csms, "AuthCtrlr", LocalAuthorizeOffline="false")
    # a known identifier is not "unknown": without local authorization it is refused
    assert not await authorize_start(ctx, tok("KNOWN"))
    assert authorizes(csms).count("STRANGER") == 2


async def test_local_list_full_differential_and_version(gateway_factory: GatewayFactory,
                                                        csms: CsmsServer) -> None:
    _, ctx = await setup(gateway_factory, csms)
    await set_vars(csms, "AuthCtrlr", AuthorizeRemoteStart="true", LocalPreAuthorize="true")
    call = csms.call
    assert (await call(SID, "GetLocalListVersion", {}))["versionNumber"] == 0
    full = {"versionNumber": 3, "updateType": "Full", "localAuthorizationList": [
        {"idToken": tok("L-OK"), "idTokenInfo": {"status": "Accepted"}},
        {"idToken": tok("L-BLOCKED"), "idTokenInfo": {"status": "Blocked"}},
        {"idToken": tok("L-OLD"), "idTokenInfo": {"status": "Accepted",
                                                  "cacheExpiryDateTime": "2020-01-01T00:00:00Z"}},
    ]}
    assert (await call(SID, "SendLocalList", full))["status"] == "Accepted"
    assert (await call(SID, "GetLocalListVersion", {}))["versionNumber"] == 3
    assert ctx.journal.auth.auth_list_size(SID) == 3
    # A list entry is final with LocalPreAuthorize: no Authorize, blocked/expired refuse.
    assert await authorize_start(ctx, tok("L-OK"))
    assert not await authorize_start(ctx, tok("L-BLOCKED"))
    assert not await authorize_start(ctx, tok("L-OLD"))
    assert authorizes(csms) == []

    diff = {"versionNumber": 3, "updateType": "Differential", "localAuthorizationList": [
        {"idToken": tok("L-BLOCKED"), "idTokenInfo": {"status": "Accepted"}}]}
    assert (await call(SID, "SendLocalList", diff))["status"] == "VersionMismatch"
    diff["versionNumber"] = 4
    diff["localAuthorizationList"].append({"idToken": tok("L-OK")})  # no info: delete it
    assert (await call(SID, "SendLocalList", diff))["status"] == "Accepted"
    assert (await call(SID, "GetLocalListVersion", {}))["versionNumber"] == 4
    assert ctx.journal.auth.auth_list_size(SID) == 2
    assert await authorize_start(ctx, tok("L-BLOCKED"))
    assert authorizes(csms) == []
    assert await authorize_start(ctx, tok("L-OK"))  # no longer listed: the CSMS is asked
    assert authorizes(csms) == ["L-OK"]

    bad = {"versionNumber": 0, "updateType": "Full", "localAuthorizationList": [
        {"idToken": tok("X"), "idTokenInfo": {"status": "Accepted"}}]}
    assert (await call(SID, "SendLocalList", bad))["status"] == "Failed"
    # A Full list replaces everything (and may carry no entries at all).
    assert (await call(SID, "SendLocalList", {"versionNumber": 5, "updateType": "Full"}))[
        "status"] == "Accepted"
    assert ctx.journal.auth.auth_list_size(SID) == 0

    await set_vars(csms, "LocalAuthListCtrlr", Enabled="false")
    assert (await call(SID, "GetLocalListVersion", {}))["versionNumber"] == 0
    assert (await call(SID, "SendLocalList", full))["status"] == "Failed"
    # Entries is the live size of the list (ReadOnly).
    resp = await call(SID, "GetVariables", {"getVariableData": [
        {"component": {"name": "LocalAuthListCtrlr"}, "variable": {"name": "Entries"}}]})
    assert resp["getVariableResult"][0]["attributeValue"] == "0"


async def test_group_id(gateway_factory: GatewayFactory, csms: CsmsServer) -> None:
    _, ctx = await setup(gateway_factory, csms)
    await set_vars(csms, "AuthCtrlr", AuthorizeRemoteStart="true")
    csms.policy.group_ids.update({"FLEET-1": "FLEET", "FLEET-2": "FLEET", "SOLO": "OTHER"})
    assert await authorize_start(ctx, tok("FLEET-1"))  # the cache learns its group
    started = token_hash(ctx, tok("FLEET-1"))
    assert await same_group(ctx, started, tok("FLEET-1"))  # the same token, no lookup
    n = len(authorizes(csms))
    assert await same_group(ctx, started, tok("FLEET-2"))  # learned by Authorize
    assert not await same_group(ctx, started, tok("SOLO"))
    assert not await same_group(ctx, started, tok("NOGROUP"))
    assert authorizes(csms)[n:] == ["FLEET-2", "SOLO", "NOGROUP"]
    # Once known (cache), no further Authorize is needed.
    assert await same_group(ctx, started, tok("FLEET-2"))
    assert len(authorizes(csms)) == n + 3

    # Groups from the local list, the CSMS never asked.
    assert (await csms.call(SID, "SendLocalList", {
        "versionNumber": 1, "updateType": "Full", "localAuthorizationList": [
            {"idToken": tok("CARD-A"), "idTokenInfo": {
                "status": "Accepted", "groupIdToken": {"idToken": "DEPOT", "type": "Central"}}},
            {"idToken": tok("CARD-B"), "idTokenInfo": {
                "status": "Accepted", "groupIdToken": {"idToken": "DEPOT", "type": "Central"}}},
            {"idToken": tok("CARD-C"), "idTokenInfo": {
                "status": "Blocked", "groupIdToken": {"idToken": "DEPOT", "type": "Central"}}},
        ]}))["status"] == "Accepted"
    n = len(authorizes(csms))
    card_a = token_hash(ctx, tok("CARD-A"))
    assert await same_group(ctx, card_a, tok("CARD-B"))
    assert not await same_group(ctx, card_a, tok("CARD-C"))  # blocked cards stop nothing
    assert len(authorizes(csms)) == n
