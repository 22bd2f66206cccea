"""2.0.1 A Security and M certificate management end to end: real TLS (trustme CAs), Basic auth
with the 2.0.1 BasicAuthPassword, client certificates, the certificate messages and security
events, against the demo CSMS (ocpp.v201) and the simulator."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from cryptography import x509
from cryptography.x509.oid import NameOID
from waiting import until

from bess_gateway.demo.csms import CsmsServer, Policy
from bess_gateway.gateway import Gateway
from bess_gateway.security.certificates import hash_data
from bess_gateway.sim.server import SimulatorThread
from tests.ocpp.v16.test_security_e2e import Env, server_context, sign_csr

SID = "DEMO-01"
V201 = {"ocpp_version": "2.0.1"}


@pytest.fixture
async def env(tmp_path: Path, sim: SimulatorThread) -> AsyncIterator[Env]:
    e = Env(tmp_path, sim)
    try:
        yield e
    finally:
        await e.close()


async def booted(gw: Gateway, csms: CsmsServer, after: int = -1) -> None:
    await csms.wait_for(SID, "BootNotification", after=after, timeout=20)
    await until(lambda: gw.endpoints[SID].booted.is_set(), 20)


async def event(csms: CsmsServer, kind: str, after: int = -1) -> dict[str, Any]:
    msg = await csms.wait_for(SID, "SecurityEventNotification", lambda p: p["type"] == kind,
                              after=after, timeout=20)
    return msg.payload


def events_of(csms: CsmsServer, kind: str) -> list[dict[str, Any]]:
    return [m.payload for m in csms.of(SID, "SecurityEventNotification")
            if m.payload["type"] == kind]


async def set_variable(csms: CsmsServer, component: str, name: str, value: str) -> str:
    r = await csms.call(SID, "SetVariables", {"setVariableData": [{
        "component": {"name": component}, "variable": {"name": name}, "attributeValue": value}]})
    return str(r["setVariableResult"][0]["attributeStatus"])


async def get_variable(csms: CsmsServer, component: str, name: str) -> dict[str, Any]:
    r = await csms.call(SID, "GetVariables", {"getVariableData": [{
        "component": {"name": component}, "variable": {"name": name}}]})
    return dict(r["getVariableResult"][0])


async def test_profile1_basic_auth_password_is_text_write_only_and_reconnects(env: Env) -> None:
    csms = await env.csms(Policy(passwords={SID: "configured-password"}))
    gw = await env.gateway(csms.url, security_profile=1, password="configured-password", **V201)
    await booted(gw, csms)
    startup = await event(csms, "StartupOfTheDevice")
    assert startup["timestamp"].endswith("Z")

    assert await set_variable(csms, "SecurityCtrlr", "BasicAuthPassword", "short") == "Rejected"
    assert csms.connections == 1
    # 2.0.1 sends the password's text itself (not hex-decoded bytes as 1.6's AuthorizationKey).
    password = "Pw-" + secrets.token_hex(10)  # 23 characters
    csms.policy.passwords = {SID: password}
    after = csms.last_seq()
    assert await set_variable(csms, "SecurityCtrlr", "BasicAuthPassword", password) == "Accepted"
    await booted(gw, csms, after)  # reconnected with it, and let in
    assert csms.connections == 2
    info = await event(csms, "ReconfigurationOfSecurityParameters", after)
    assert "BasicAuthPassword" in info["techInfo"]

    got = await get_variable(csms, "SecurityCtrlr", "BasicAuthPassword")
    assert got["attributeStatus"] == "Rejected" and "attributeValue" not in got
    profile = await get_variable(csms, "SecurityCtrlr", "SecurityProfile")
    assert profile["attributeValue"] == "1"
    assert await set_variable(csms, "SecurityCtrlr", "SecurityProfile", "2") == "Rejected"


async def test_wrong_password_then_fixed_reports_2_0_1_event_name(env: Env) -> None:
    csms = await env.csms(Policy(passwords={SID: "right-password-123"}))
    gw = await env.gateway(csms.url, security_profile=1, password="wrong-password-123", **V201)
    await until(lambda: csms.refused >= 2, 15)
    assert csms.of(SID, "BootNotification") == []
    csms.policy.passwords = {SID: "wrong-password-123"}
    await booted(gw, csms)
    failed = await event(csms, "FailedToAuthenticateAtCsms")
    assert "401" in failed["techInfo"]
    assert events_of(csms, "FailedToAuthenticateAtCentralSystem") == []
    assert len(events_of(csms, "FailedToAuthenticateAtCsms")) == 1  # coalesced while offline


async def test_profile1_refuses_trust_anchors_and_station_certificates(env: Env) -> None:
    csms = await env.csms(Policy(passwords={SID: "pw-profile-one-1"}))
    gw = await env.gateway(csms.url, security_profile=1, password="pw-profile-one-1", **V201)
    await booted(gw, csms)
    ca = trustme.CA()
    pem = ca.cert_pem.bytes().decode()
    for kind in ("ManufacturerRootCertificate", "V2GRootCertificate", "MORootCertificate"):
        r = await csms.call(SID, "InstallCertificate", {"certificateType": kind,
                                                        "certificate": pem})
        assert r["status"] == "Rejected" and r["statusInfo"]["reasonCode"] == "SecurityProfile"
    # The CSMS root is what a raise to profile 2 needs: installable on profile 1.
    r = await csms.call(SID, "InstallCertificate", {"certificateType": "CSMSRootCertificate",
                                                    "certificate": pem})
    assert r == {"status": "Accepted"}
    r = await csms.call(SID, "GetInstalledCertificateIds", {})
    assert r == {"status": "Accepted", "certificateHashDataChain": [{
        "certificateType": "CSMSRootCertificate",
        "certificateHashData": hash_data(x509.load_pem_x509_certificate(pem.encode()))}]}
    after = csms.last_seq()
    for message in ("SignChargingStationCertificate", "SignV2GCertificate"):
        r = await csms.call(SID, "TriggerMessage", {"requestedMessage": message})
        assert r["status"] == "Rejected"
    r = await csms.call(SID, "CertificateSigned", {"certificateChain": pem})
    assert r["status"] == "Rejected"
    r = await csms.call(SID, "TriggerMessage", {"requestedMessage": "Heartbeat"})
    assert r == {"status": "Accepted"}
    await csms.wait_for(SID, "Heartbeat", after=after)
    assert csms.of(SID, "SignCertificate") == []


async def test_profile2_certificates_install_list_delete_and_sign_both_kinds(env: Env) -> None:
    server_ca, client_ca = trustme.CA(), trustme.CA()
    csms = await env.csms(Policy(passwords={SID: "pw-tls-profile-2"}),
                          ssl_context=server_context(server_ca))
    gw = await env.gateway(csms.url, security_profile=2, password="pw-tls-profile-2",
                           ca_file=env.file("ca.pem", server_ca.cert_pem.bytes()), **V201)
    await booted(gw, csms)
    assert csms.url.startswith("wss://")

    assert await csms.call(SID, "GetInstalledCertificateIds", {}) == {"status": "NotFound"}
    roots = {kind: trustme.CA() for kind in ("CSMSRootCertificate", "V2GRootCertificate",
                                            "MORootCertificate",
                                            "ManufacturerRootCertificate")}
    for kind, ca in roots.items():
        r = await csms.call(SID, "InstallCertificate", {
            "certificateType": kind, "certificate": ca.cert_pem.bytes().decode()})
        assert r == {"status": "Accepted"}
    r = await csms.call(SID, "InstallCertificate", {
        "certificateType": "V2GRootCertificate", "certificate": "-----BEGIN CERTIFICATE-----"})
    assert r == {"status": "Rejected"}

    def hashed(kind: str) -> dict[str, str]:
        return hash_data(x509.load_pem_x509_certificate(roots[kind].cert_pem.bytes()))

    r = await csms.call(SID, "GetInstalledCertificateIds",
                        {"certificateType": ["V2GRootCertificate", "MORootCertificate"]})
    assert r["status"] == "Accepted"
    assert r["certificateHashDataChain"] == [
        {"certificateType": "V2GRootCertificate", "certificateHashData": hashed(
            "V2GRootCertificate")},
        {"certificateType": "MORootCertificate", "certificateHashData": hashed(
            "MORootCertificate")}]
    r = await csms.call(SID, "GetInstalledCertificateIds",
                        {"certificateType": ["V2GCertificateChain"]})
    assert r == {"status": "NotFound"}
    r = await csms.call(SID, "DeleteCertificate",
                        {"certificateHashData": hashed("MORootCertificate")})
    assert r == {"status": "Accepted"}
    r = await csms.call(SID, "DeleteCertificate",
                        {"certificateHashData": hashed("MORootCertificate")})
    assert r == {"status": "NotFound"}

    # The station certificate: TriggerMessage -> SignCertificate -> CertificateSigned.
    assert await set_variable(csms, "SecurityCtrlr", "OrganizationName", "ACME Charging") \
        == "Accepted"
    after = csms.last_seq()
    r = await csms.call(SID, "TriggerMessage",
                        {"requestedMessage": "SignChargingStationCertificate"})
    assert r == {"status": "Accepted"}
    sign = await csms.wait_for(SID, "SignCertificate", after=after)
    assert sign.payload["certificateType"] == "ChargingStationCertificate"
    csr = x509.load_pem_x509_csr(sign.payload["csr"].encode())
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == SID
    assert csr.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == \
        "ACME Charging"
    stranger = trustme.CA().issue_cert("x.example", common_name=SID)
    r = await csms.call(SID, "CertificateSigned", {"certificateChain": b"".join(
        b.bytes() for b in stranger.cert_chain_pems).decode()})
    assert r == {"status": "Rejected"}
    await event(csms, "InvalidChargingStationCertificate", after)
    chain = sign_csr(client_ca, sign.payload["csr"])
    r = await csms.call(SID, "CertificateSigned", {
        "certificateChain": chain, "certificateType": "ChargingStationCertificate"})
    assert r == {"status": "Accepted"}
    signed = x509.load_pem_x509_certificate(chain.encode())
    client_root = x509.load_pem_x509_certificate(client_ca.cert_pem.bytes())
    r = await csms.call(SID, "DeleteCertificate",
                        {"certificateHashData": hash_data(signed, client_root)})
    assert r == {"status": "Failed"}  # our own certificate is not deleted

    # The ISO 15118 (SECC) certificate is a separate key and chain.
    after = csms.last_seq()
    r = await csms.call(SID, "TriggerMessage", {"requestedMessage": "SignV2GCertificate"})
    assert r == {"status": "Accepted"}
    sign_v2g = await csms.wait_for(SID, "SignCertificate", after=after)
    assert sign_v2g.payload["certificateType"] == "V2GCertificate"
    assert sign_v2g.payload["csr"] != sign.payload["csr"]
    v2g_root = roots["V2GRootCertificate"]
    v2g_chain = sign_csr(v2g_root, sign_v2g.payload["csr"])
    # Signed for the V2G key: not a charging station certificate.
    r = await csms.call(SID, "CertificateSigned", {
        "certificateChain": v2g_chain, "certificateType": "ChargingStationCertificate"})
    assert r == {"status": "Rejected"}
    r = await csms.call(SID, "CertificateSigned", {
        "certificateChain": v2g_chain, "certificateType": "V2GCertificate"})
    assert r == {"status": "Accepted"}
    r = await csms.call(SID, "GetInstalledCertificateIds",
                        {"certificateType": ["V2GCertificateChain"]})
    leaf = x509.load_pem_x509_certificate(v2g_chain.encode())
    root = x509.load_pem_x509_certificate(v2g_root.cert_pem.bytes())
    assert r == {"status": "Accepted", "certificateHashDataChain": [{
        "certificateType": "V2GCertificateChain",
        "certificateHashData": hash_data(leaf, root),
        "childCertificateHashData": [hash_data(root)]}]}
    # The CSMS connection still uses the configured identity: profile 2 sends no certificate.
    assert SID not in csms.peer_certs


async def test_profile3_client_certificate_and_invalid_csms_certificate_event(env: Env) -> None:
    good, bad, client_ca = trustme.CA(), trustme.CA(), trustme.CA()
    csms = await env.csms(Policy(client_cert_cn=True),
                          ssl_context=server_context(bad, client_ca))
    client = client_ca.issue_cert("bess.example", common_name=SID)
    gw = await env.gateway(
        csms.url, security_profile=3, ca_file=env.file("ca.pem", good.cert_pem.bytes()),
        cert_file=env.file("client.pem", b"".join(b.bytes() for b in client.cert_chain_pems)),
        key_file=env.file("client.key", client.private_key_pem.bytes()), **V201)
    journal = gw.journal
    assert journal is not None
    await until(lambda: any(p["type"] == "InvalidCsmsCertificate"
                            for p in journal.outbox.queued_payloads(SID,
                                                                    "SecurityEventNotification")),
                20)
    assert csms.connections == 0

    fixed = await env.restart(csms, ssl_context=server_context(good, client_ca))
    await booted(gw, fixed)
    presented = x509.load_der_x509_certificate(fixed.peer_certs[SID])
    assert presented.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == SID
    assert fixed.stations[SID]._connection.request.headers.get("Authorization") is None
    await event(fixed, "InvalidCsmsCertificate")
    r = await fixed.call(SID, "GetVariables", {"getVariableData": [{
        "component": {"name": "SecurityCtrlr"}, "variable": {"name": "SecurityProfile"}}]})
    assert r["getVariableResult"][0]["attributeValue"] == "3"


async def test_sign_certificate_repeated_until_certificate_signed(env: Env) -> None:
    server_ca, client_ca = trustme.CA(), trustme.CA()
    csms = await env.csms(Policy(passwords={SID: "pw-repeat-sign-1"}),
                          ssl_context=server_context(server_ca))
    gw = await env.gateway(csms.url, security_profile=2, password="pw-repeat-sign-1",
                           ca_file=env.file("ca.pem", server_ca.cert_pem.bytes()), **V201)
    await booted(gw, csms)
    assert await set_variable(csms, "SecurityCtrlr", "CertSigningWaitMinimum", "1") == "Accepted"
    assert await set_variable(csms, "SecurityCtrlr", "CertSigningRepeatTimes", "1") == "Accepted"

    # Never answered: sent once, then once more (RepeatTimes 1), the same CSR both times.
    after = csms.last_seq()
    r = await csms.call(SID, "TriggerMessage",
                        {"requestedMessage": "SignChargingStationCertificate"})
    assert r == {"status": "Accepted"}
    await until(lambda: len([m for m in csms.of(SID, "SignCertificate") if m.seq > after]) == 2,
                20)
    sent = [m.payload for m in csms.of(SID, "SignCertificate") if m.seq > after]
    assert sent[0] == sent[1]

    # Answered after the first: no repeat.
    assert await set_variable(csms, "SecurityCtrlr", "CertSigningWaitMinimum", "2") == "Accepted"
    after = csms.last_seq()
    await csms.call(SID, "TriggerMessage", {"requestedMessage": "SignChargingStationCertificate"})
    sign = await csms.wait_for(SID, "SignCertificate", after=after)
    r = await csms.call(SID, "CertificateSigned",
                        {"certificateChain": sign_csr(client_ca, sign.payload["csr"])})
    assert r == {"status": "Accepted"}
    # A repeat would come 2 s after the first; none comes in 3 s.
    with pytest.raises(TimeoutError):
        await csms.wait_for(SID, "SignCertificate", after=sign.seq, timeout=3)


async def test_raise_to_profile2_through_set_network_profile_and_reset(env: Env) -> None:
    ca = trustme.CA()
    plain = await env.csms(Policy(passwords={SID: "pw-raise-network-1"}))
    tls = await env.csms(Policy(passwords={SID: "pw-raise-network-1"}),
                         ssl_context=server_context(ca))
    gw = await env.gateway(plain.url, security_profile=1, password="pw-raise-network-1", **V201)
    await booted(gw, plain)
    profile2 = {"ocppVersion": "OCPP20", "ocppTransport": "JSON", "ocppCsmsUrl": tls.url,
                "messageTimeout": 30, "securityProfile": 2, "ocppInterface": "Wired0"}
    # No CA for the CSMS certificate yet: a raise would lock the station out.
    r = await plain.call(SID, "SetNetworkProfile", {"configurationSlot": 1,
                                                    "connectionData": profile2})
    assert r["status"] == "Rejected" and r["statusInfo"]["reasonCode"] == "MissingCredentials"
    r = await plain.call(SID, "InstallCertificate", {"certificateType": "CSMSRootCertificate",
                                                     "certificate": ca.cert_pem.bytes().decode()})
    assert r == {"status": "Accepted"}
    r = await plain.call(SID, "SetNetworkProfile", {"configurationSlot": 1,
                                                    "connectionData": profile2})
    assert r == {"status": "Accepted"}
    assert await set_variable(plain, "OCPPCommCtrlr", "NetworkConfigurationPriority", "1,0") \
        == "RebootRequired"
    assert (await plain.call(SID, "Reset", {"type": "Immediate"}))["status"] == "Accepted"

    boot = await tls.wait_for(SID, "BootNotification", timeout=30)
    assert boot.payload["reason"] == "RemoteReset"
    await until(lambda: gw.endpoints[SID].booted.is_set(), 20)
    ssl_object = tls.stations[SID]._connection.transport.get_extra_info("ssl_object")
    assert ssl_object.version() in ("TLSv1.2", "TLSv1.3")
    assert (await get_variable(tls, "SecurityCtrlr", "SecurityProfile"))["attributeValue"] \
        == "2"
    back = {**profile2, "ocppCsmsUrl": plain.url, "securityProfile": 1}
    r = await tls.call(SID, "SetNetworkProfile", {"configurationSlot": 2,
                                                  "connectionData": back})
    assert r["status"] == "Rejected"
    # Reported on whichever link was up when it left the queue (usually before the close).
    await until(lambda: events_of(plain, "ResetOrReboot") + events_of(tls, "ResetOrReboot"))
