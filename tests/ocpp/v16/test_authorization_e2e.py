"""1.6 Local Auth List Management and the authorization cache end to end: the real CSMS over
WebSocket, the real simulator over Modbus TCP, the journal in a SQLite file."""

from __future__ import annotations

from typing import Any

from waiting import booted, until

from bess_gateway.demo.csms import CsmsServer
from bess_gateway.domain.authorization import AuthStatus
from bess_gateway.gateway import Gateway


def entry(tag: str, status: str | None = "Accepted", **info: Any) -> dict[str, Any]:
    if status is None:
        return {"idTag": tag}  # a Differential update's deletion
    return {"idTag": tag, "idTagInfo": {"status": status, **info}}


async def send_list(csms: CsmsServer, sid: str, version: int, update: str,
                    entries: list[dict[str, Any]]) -> str:
    r = await csms.call(sid, "SendLocalList", {"listVersion": version, "updateType": update,
                                               "localAuthorizationList": entries})
    return str(r["status"])


async def list_version(csms: CsmsServer, sid: str) -> int:
    return int((await csms.call(sid, "GetLocalListVersion"))["listVersion"])


async def configure(csms: CsmsServer, sid: str, **keys: str) -> None:
    for key, value in keys.items():
        r = await csms.call(sid, "ChangeConfiguration", {"key": key, "value": value})
        assert r == {"status": "Accepted"}, (key, r)


async def remote_start(csms: CsmsServer, sid: str, connector: int, tag: str) -> None:
    r = await csms.call(sid, "RemoteStartTransaction", {"idTag": tag, "connectorId": connector})
    assert r == {"status": "Accepted"}


async def start_outcome(gw: Gateway, sid: str, connector: int) -> bool:
    """Whether the remote start on `connector` became a session (after it left Preparing)."""
    st = gw.stations[sid]
    await until(lambda: connector not in st.preparing, 15)
    return connector in st.transactions


async def remote_stop(csms: CsmsServer, gw: Gateway, sid: str, connector: int) -> None:
    st = gw.stations[sid]
    tx = st.transactions[connector]
    await until(lambda: tx.transaction_id is not None)  # the CSMS's id, from StartTransaction
    r = await csms.call(sid, "RemoteStopTransaction", {"transactionId": int(tx.transaction_id)})
    assert r == {"status": "Accepted"}
    await until(lambda: connector not in st.transactions)


async def test_send_local_list_full_then_differential_with_versions(
        gateway_factory, csms: CsmsServer) -> None:
    gw = await gateway_factory(1)
    (sid,) = await booted(gw, csms)
    j = gw.journal
    assert j is not None
    conf = await csms.call(sid, "GetConfiguration", {"key": [
        "SupportedFeatureProfiles", "LocalAuthListEnabled", "LocalAuthListMaxLength",
        "SendLocalListMaxLength", "AuthorizationCacheEnabled", "AllowOfflineTxForUnknownId"]})
    keys = {k["key"]: k for k in conf["configurationKey"]}
    assert "LocalAuthListManagement" in keys["SupportedFeatureProfiles"]["value"].split(",")
    assert keys["LocalAuthListEnabled"]["value"] == "true"
    assert int(keys["LocalAuthListMaxLength"]["value"]) >= int(
        keys["SendLocalListMaxLength"]["value"]) > 0
    assert keys["AuthorizationCacheEnabled"]["readonly"] is False
    assert keys["AllowOfflineTxForUnknownId"] == {
        "key": "AllowOfflineTxForUnknownId", "readonly": False, "value": "false"}

    def status_of(tag: str) -> AuthStatus | None:
        info = j.auth.auth_list_entry(sid, j.hash_id_tag(tag))
        return None if info is None else info.status

    assert await list_version(csms, sid) == 0  # no list yet
    assert await send_list(csms, sid, 1, "Full", [
        entry("ALPHA"), entry("BRAVO"), entry("CHARLIE", "Blocked",
                                              expiryDate="2030-01-01T00:00:00Z")]) == "Accepted"
    assert await list_version(csms, sid) == 1
    assert j.auth.auth_list_size(sid) == 3
    info = j.auth.auth_list_entry(sid, j.hash_id_tag("CHARLIE"))
    assert info is not None and info.status == AuthStatus.BLOCKED
    assert info.expiry is not None and info.expiry.year == 2030

    # Differential: add one, change one, delete one.
    assert await send_list(csms, sid, 2, "Differential", [
        entry("DELTA"), entry("CHARLIE", "Accepted"), entry("BRAVO", None)]) == "Accepted"
    assert await list_version(csms, sid) == 2
    assert (status_of("ALPHA"), status_of("BRAVO"), status_of("CHARLIE"), status_of("DELTA")) \
        == (AuthStatus.ACCEPTED, None, AuthStatus.ACCEPTED, AuthStatus.ACCEPTED)

    # A Differential update for a version we already have (or older) is stale: nothing changes.
    for stale in (2, 1):
        assert await send_list(csms, sid, stale, "Differential",
                               [entry("ALPHA", None)]) == "VersionMismatch"
    assert await list_version(csms, sid) == 2 and status_of("ALPHA") == AuthStatus.ACCEPTED

    # A Full update replaces the list whatever its version was; a deletion in it is malformed.
    assert await send_list(csms, sid, 7, "Full", [entry("ALPHA", None)]) == "Failed"
    assert await send_list(csms, sid, 7, "Full", [entry("ECHO", "Invalid")]) == "Accepted"
    assert await list_version(csms, sid) == 7
    assert j.auth.auth_list_size(sid) == 1 and status_of("ECHO") == AuthStatus.INVALID

    # Survives a restart of the endpoint's connection (it is in the journal, not in memory).
    await csms.call(sid, "Reset", {"type": "Soft"})
    await csms.wait_until(lambda: gw.endpoints[sid].connects >= 2, 20)
    await until(lambda: gw.endpoints[sid].booted.is_set(), 20)
    assert await list_version(csms, sid) == 7

    # Disabled: the list is not supported for now, and the version says so (-1).
    await configure(csms, sid, LocalAuthListEnabled="false")
    assert await list_version(csms, sid) == -1
    assert await send_list(csms, sid, 8, "Full", [entry("FOXTROT")]) == "NotSupported"
    await configure(csms, sid, LocalAuthListEnabled="true")
    assert await list_version(csms, sid) == 7


async def test_local_pre_authorize_starts_from_the_list_and_blocked_never_starts(
        gateway_factory, csms: CsmsServer) -> None:
    gw = await gateway_factory(1)
    (sid,) = await booted(gw, csms)
    await configure(csms, sid, AuthorizeRemoteTxRequests="true", LocalPreAuthorize="true")
    assert await send_list(csms, sid, 1, "Full",
                           [entry("LISTED-OK"), entry("LISTED-BAD", "Blocked")]) == "Accepted"

    after = csms.last_seq()
    await remote_start(csms, sid, 1, "LISTED-OK")
    start = await csms.wait_for(sid, "StartTransaction", after=after)
    assert start.payload["idTag"] == "LISTED-OK"
    assert await start_outcome(gw, sid, 1)
    assert [m for m in csms.of(sid, "Authorize") if m.seq > after] == []

    # The CSMS itself would accept this tag (its policy blocks nothing): the list decides.
    after = csms.last_seq()
    await remote_start(csms, sid, 2, "LISTED-BAD")
    assert not await start_outcome(gw, sid, 2)  # decided: nothing can follow
    assert [m for m in csms.received if m.seq > after
            and m.action in ("Authorize", "StartTransaction")] == []

    # Without LocalPreAuthorize, online, the CSMS is asked even for a listed tag.
    await configure(csms, sid, LocalPreAuthorize="false")
    after = csms.last_seq()
    await remote_start(csms, sid, 2, "LISTED-BAD")
    auth = await csms.wait_for(sid, "Authorize", after=after)
    assert auth.payload == {"idTag": "LISTED-BAD"}
    assert await start_outcome(gw, sid, 2)


async def test_cache_is_filled_by_csms_answers_used_and_cleared(
        gateway_factory, csms: CsmsServer) -> None:
    gw = await gateway_factory(1)
    (sid,) = await booted(gw, csms)
    j = gw.journal
    assert j is not None
    await configure(csms, sid, AuthorizeRemoteTxRequests="true")
    csms.policy.blocked_id_tags = {"CACHE-BAD"}

    after = csms.last_seq()
    await remote_start(csms, sid, 1, "CACHE-OK")
    await csms.wait_for(sid, "Authorize", lambda p: p["idTag"] == "CACHE-OK", after=after)
    await csms.wait_for(sid, "StartTransaction", after=after)
    cached = j.auth.auth_cache_entry(sid, j.hash_id_tag("CACHE-OK"))
    assert cached is not None and cached.status == AuthStatus.ACCEPTED

    after = csms.last_seq()
    await remote_start(csms, sid, 2, "CACHE-BAD")
    assert not await start_outcome(gw, sid, 2)
    cached = j.auth.auth_cache_entry(sid, j.hash_id_tag("CACHE-BAD"))
    assert cached is not None and cached.status == AuthStatus.BLOCKED

    # With LocalPreAuthorize the valid cache entry starts at once; the Blocked one asks again.
    await configure(csms, sid, LocalPreAuthorize="true")
    await remote_stop(csms, gw, sid, 1)
    after = csms.last_seq()
    await remote_start(csms, sid, 1, "CACHE-OK")
    assert await start_outcome(gw, sid, 1)
    await remote_start(csms, sid, 2, "CACHE-BAD")
    await csms.wait_for(sid, "Authorize", lambda p: p["idTag"] == "CACHE-BAD", after=after)
    assert not await start_outcome(gw, sid, 2)
    assert [m.payload["idTag"] for m in csms.of(sid, "Authorize") if m.seq > after] == [
        "CACHE-BAD"]

    # ClearCache really empties it: the next start must ask the CSMS again. (First the queued
    # messages go out: the StartTransaction.conf of the session above, queued behind the earlier
    # StopTransaction that waits for its meter to settle, would fill it again.)
    await until(lambda: j.outbox.depth(sid) == 0, 15)
    assert j.auth.auth_cache_size(sid) == 2
    assert await csms.call(sid, "ClearCache") == {"status": "Accepted"}
    assert j.auth.auth_cache_size(sid) == 0
    await remote_stop(csms, gw, sid, 1)
    after = csms.last_seq()
    await remote_start(csms, sid, 1, "CACHE-OK")
    await csms.wait_for(sid, "Authorize", lambda p: p["idTag"] == "CACHE-OK", after=after)
    assert await start_outcome(gw, sid, 1)

    # Disabled: no entries are kept.
    await configure(csms, sid, AuthorizationCacheEnabled="false")
    assert await csms.call(sid, "ClearCache") == {"status": "Accepted"}
    after = csms.last_seq()
    await remote_start(csms, sid, 2, "CACHE-NEW")
    await csms.wait_for(sid, "StartTransaction", after=after)
    assert j.auth.auth_cache_size(sid) == 0


async def test_a_listed_tag_is_never_cached(gateway_factory, csms: CsmsServer) -> None:
    gw = await gateway_factory(1)
    (sid,) = await booted(gw, csms)
    j = gw.journal
    assert j is not None
    await configure(csms, sid, AuthorizeRemoteTxRequests="true")
    assert await send_list(csms, sid, 3, "Full", [entry("BOTH")]) == "Accepted"
    after = csms.last_seq()
    await remote_start(csms, sid, 1, "BOTH")
    await csms.wait_for(sid, "Authorize", after=after)  # no LocalPreAuthorize: asked
    await csms.wait_for(sid, "StartTransaction", after=after)
    assert await start_outcome(gw, sid, 1)
    await until(lambda: j.outbox.depth(sid) == 0)
    assert j.auth.auth_cache_size(sid) == 0


async def test_no_answer_to_authorize_applies_the_offline_rules(
        gateway_factory, csms: CsmsServer) -> None:
    gw = await gateway_factory(1)
    (sid,) = await booted(gw, csms)
    await configure(csms, sid, AuthorizeRemoteTxRequests="true", LocalAuthorizeOffline="true")
    assert await send_list(csms, sid, 1, "Full",
                           [entry("OFF-OK"), entry("OFF-BAD", "Blocked")]) == "Accepted"
    csms.policy.authorize_fails = True  # the CSMS answers Authorize with a CALLERROR

    async def attempt(connector: int, tag: str) -> bool:
        after = csms.last_seq()
        await remote_start(csms, sid, connector, tag)
        await csms.wait_for(sid, "Authorize", lambda p: p["idTag"] == tag, after=after)
        return await start_outcome(gw, sid, connector)

    assert await attempt(1, "OFF-OK")  # in the list: LocalAuthorizeOffline starts it
    assert not await attempt(2, "OFF-UNKNOWN")  # AllowOfflineTxForUnknownId is false
    await configure(csms, sid, AllowOfflineTxForUnknownId="true")
    assert not await attempt(2, "OFF-BAD")  # known and Blocked: never, whatever the keys
    assert await attempt(2, "OFF-UNKNOWN")
    await remote_stop(csms, gw, sid, 1)
    await configure(csms, sid, LocalAuthorizeOffline="false")
    assert not await attempt(1, "OFF-OK")  # listed but local authorization is off offline
