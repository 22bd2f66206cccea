"""OCPP 1.6 Security Whitepaper end to end: real TLS (trustme CAs), Basic auth, client
certificates, the certificate messages and security events, against the real CSMS and simulator."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import secrets
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID
from waiting import until

from bess_gateway.config import Config, ControlConfig, PcsConfig
from bess_gateway.demo.csms import CsmsServer, Policy
from bess_gateway.demo.run import demo_config
from bess_gateway.gateway import Gateway
from bess_gateway.ocpp.v16.endpoint import Backoff
from bess_gateway.security.certificates import hash_data
from bess_gateway.sim.server import SimulatorThread

SID = "DEMO-01"


def server_context(ca: trustme.CA, client_ca: trustme.CA | None = None) -> ssl.SSLContext:
    """A CSMS TLS context: a certificate for 127.0.0.1 from ``ca``; client certs from
    ``client_ca`` required when given."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    if client_ca is not None:
        client_ca.configure_trust(ctx)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


class Env:
    """CSMS servers (restartable on the same port) and gateways for one test."""

    def __init__(self, tmp: Path, sim: SimulatorThread) -> None:
        self.tmp = tmp
        self.sim = sim
        self.servers: list[CsmsServer] = []
        self.gateways: list[Gateway] = []

    def file(self, name: str, data: bytes) -> Path:
        path = self.tmp / name
        path.write_bytes(data)
        return path

    async def csms(self, policy: Policy | None = None, *, port: int = 0,
                   ssl_context: ssl.SSLContext | None = None) -> CsmsServer:
        server = CsmsServer(policy)
        await server.start(port=port, ssl_context=ssl_context)
        self.servers.append(server)
        return server

    async def restart(self, old: CsmsServer, *,
                      ssl_context: ssl.SSLContext | None = None) -> CsmsServer:
        """The same CSMS address, now with another TLS setup (same policy)."""
        port = old.port
        await old.stop()
        return await self.csms(old.policy, port=port, ssl_context=ssl_context)

    async def gateway(self, url: str, *more: dict[str, Any], **endpoint: Any) -> Gateway:
        """A gateway with endpoint DEMO-01 (``endpoint`` fields), DEMO-02 (``more[0]``), ..."""
        cfg: Config = demo_config(self.tmp / "var", url, self.sim.port, 1 + len(more),
                                  sample_s=60)
        cfg = dataclasses.replace(
            cfg, control=ControlConfig(),
            pcs=dataclasses.replace(PcsConfig(), port=self.sim.port, timeout_ms=400),
            endpoints=tuple(dataclasses.replace(ep, **fields) for ep, fields
                            in zip(cfg.endpoints, (endpoint, *more), strict=True)))
        gw = Gateway(cfg)
        await gw.start()
        # Endpoint tasks have not run yet: a short back-off keeps failure tests brief.
        for ep in gw.endpoints.values():
            ep.backoff = Backoff(0.1, 0.4, 2)
        self.gateways.append(gw)
        return gw

    async def stop(self, gw: Gateway) -> None:
        self.gateways.remove(gw)
        async with asyncio.timeout(10):
            await gw.stop(drain_s=0)

    async def close(self) -> None:
        for gw in self.gateways:
            async with asyncio.timeout(10):
                await gw.stop(drain_s=0)
        for server in self.servers:
            async with asyncio.timeout(10):
                await server.stop()


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


def events_of(csms: CsmsServer, kind: str) -> list[dict[str, Any]]:
    return [m.payload for m in csms.of(SID, "SecurityEventNotification")
            if m.payload["type"] == kind]


async def event(csms: CsmsServer, kind: str, after: int = -1) -> dict[str, Any]:
    msg = await csms.wait_for(SID, "SecurityEventNotification", lambda p: p["type"] == kind,
                              after=after, timeout=20)
    return msg.payload


def tls_version(csms: CsmsServer) -> str | None:
    ssl_object = csms.stations[SID]._connection.transport.get_extra_info("ssl_object")
    return None if ssl_object is None else ssl_object.version()


async def change(csms: CsmsServer, key: str, value: str) -> str:
    r = await csms.call(SID, "ChangeConfiguration", {"key": key, "value": value})
    return str(r["status"])


async def reconnected(gw: Gateway, csms_factory: Callable[[], Awaitable[CsmsServer]],
                      old: CsmsServer) -> CsmsServer:
    """Wait for the station to leave ``old``, then bring up the new CSMS and wait for boot."""
    await old.wait_until(lambda: SID not in old.stations, 10)
    new = await csms_factory()
    await booted(gw, new)
    return new


async def test_profile1_basic_auth_key_bytes_write_only_and_startup_event(env: Env) -> None:
    csms = await env.csms(Policy(passwords={SID: "configured-password"}))
    gw = await env.gateway(csms.url, security_profile=1, password="configured-password")
    await booted(gw, csms)
    startup = await event(csms, "StartupOfTheDevice")
    assert startup["timestamp"].endswith("Z")

    # A CSMS-set AuthorizationKey: the Basic password becomes the key's 20 bytes (not its hex).
    key = secrets.token_hex(20)
    assert await change(csms, "AuthorizationKey", "not-hex") == "Rejected"
    csms.policy.passwords = {SID: bytes.fromhex(key)}
    after = csms.last_seq()
    assert await change(csms, "AuthorizationKey", key.upper()) == "Accepted"
    await booted(gw, csms, after)  # it reconnected with the new key, and was let in
    assert csms.connections == 2
    info = await event(csms, "ReconfigurationOfSecurityParameters", after)
    assert "AuthorizationKey" in info["techInfo"]

    # Write-only: never read back, neither in the full list nor when asked by name.
    full = await csms.call(SID, "GetConfiguration", {})
    names = {k["key"] for k in full["configurationKey"]}
    assert "AuthorizationKey" not in names and "SecurityProfile" in names
    assert key not in str(full) and key.upper() not in str(full)
    named = await csms.call(SID, "GetConfiguration", {"key": ["AuthorizationKey", "CpoName"]})
    assert [k["key"] for k in named["configurationKey"]] == ["CpoName"]
    assert key not in str(named)

    # The hex text as password is not what we send: a CSMS expecting it refuses us.
    csms.policy.passwords = {SID: key}
    refused = csms.refused
    await csms.drop(SID)
    await until(lambda: csms.refused >= refused + 2, 15)
    assert SID not in csms.stations


async def test_profile1_wrong_password_no_boot_retries_then_event(env: Env) -> None:
    csms = await env.csms(Policy(passwords={SID: "right-password"}))
    gw = await env.gateway(csms.url, security_profile=1, password="wrong-password")
    await until(lambda: csms.refused >= 3, 15)  # 401, and it keeps retrying with back-off
    assert csms.of(SID, "BootNotification") == []
    assert not gw.endpoints[SID].booted.is_set()

    csms.policy.passwords = {SID: "wrong-password"}  # the CSMS side is fixed
    await booted(gw, csms)
    failed = await event(csms, "FailedToAuthenticateAtCentralSystem")
    assert "401" in failed.get("techInfo", "")
    await event(csms, "StartupOfTheDevice")
    # Several refusals while offline, one queued event (coalesced).
    assert len(events_of(csms, "FailedToAuthenticateAtCentralSystem")) == 1


async def test_profile2_tls_with_ca_file_and_extended_trigger_and_reset_event(env: Env) -> None:
    ca = trustme.CA()
    csms = await env.csms(Policy(passwords={SID: "tls-password"}),
                          ssl_context=server_context(ca))
    assert csms.url.startswith("wss://")
    gw = await env.gateway(csms.url, security_profile=2, password="tls-password",
                           ca_file=env.file("ca.pem", ca.cert_pem.bytes()))
    await booted(gw, csms)
    assert tls_version(csms) in ("TLSv1.2", "TLSv1.3")

    after = csms.last_seq()
    r = await csms.call(SID, "ExtendedTriggerMessage", {"requestedMessage": "Heartbeat"})
    assert r == {"status": "Accepted"}
    await csms.wait_for(SID, "Heartbeat", after=after)
    r = await csms.call(SID, "ExtendedTriggerMessage",
                        {"requestedMessage": "StatusNotification", "connectorId": 2})
    assert r == {"status": "Accepted"}
    await csms.wait_for(SID, "StatusNotification", lambda p: p["connectorId"] == 2, after=after)
    r = await csms.call(SID, "ExtendedTriggerMessage",
                        {"requestedMessage": "MeterValues", "connectorId": 7})
    assert r == {"status": "Rejected"}

    after = csms.last_seq()
    assert (await csms.call(SID, "Reset", {"type": "Soft"}))["status"] == "Accepted"
    await booted(gw, csms, after)
    await event(csms, "ResetOrReboot", after)


async def test_profile3_client_certificate_required_by_csms(env: Env) -> None:
    server_ca, client_ca = trustme.CA(), trustme.CA()
    csms = await env.csms(Policy(client_cert_cn=True),
                          ssl_context=server_context(server_ca, client_ca))
    client = client_ca.issue_cert("bess.example", common_name=SID)
    # DEMO-02 presents a valid certificate, but one issued to another station.
    impostor = client_ca.issue_cert("bess.example", common_name="SOMEONE-ELSE")
    ca_file = env.file("ca.pem", server_ca.cert_pem.bytes())
    gw = await env.gateway(
        csms.url,
        {"security_profile": 3, "ca_file": ca_file,
         "cert_file": env.file("other.pem", impostor.cert_chain_pems[0].bytes()),
         "key_file": env.file("other.key", impostor.private_key_pem.bytes())},
        security_profile=3, ca_file=ca_file,
        cert_file=env.file("client.pem", b"".join(b.bytes() for b in client.cert_chain_pems)),
        key_file=env.file("client.key", client.private_key_pem.bytes()))
    await booted(gw, csms)
    await until(lambda: csms.refused >= 2)  # 403 for DEMO-02
    assert csms.of("DEMO-02", "BootNotification") == []
    assert gw.journal is not None
    assert [p.get("techInfo") for p in gw.journal.outbox.queued_payloads(
        "DEMO-02", "SecurityEventNotification")
        if p["type"] == "FailedToAuthenticateAtCentralSystem"] == ["HTTP 403"]
    presented = x509.load_der_x509_certificate(csms.peer_certs[SID])
    assert presented.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == SID
    # profile 3 sends no password
    assert csms.stations[SID]._connection.request.headers.get("Authorization") is None


async def test_wrong_ca_refused_event_delivered_once_csms_is_fixed(env: Env) -> None:
    good, bad = trustme.CA(), trustme.CA()
    csms = await env.csms(Policy(passwords={SID: "pw-for-tls-1"}),
                          ssl_context=server_context(bad))
    gw = await env.gateway(csms.url, security_profile=2, password="pw-for-tls-1",
                           ca_file=env.file("ca.pem", good.cert_pem.bytes()))
    journal = gw.journal
    assert journal is not None
    await until(lambda: any(p["type"] == "InvalidCentralSystemCertificate"
                            for p in journal.outbox.queued_payloads(SID,
                                                                    "SecurityEventNotification")))
    assert csms.connections == 0  # refused in the TLS handshake: never reached the CSMS

    fixed = await env.restart(csms, ssl_context=server_context(good))
    await booted(gw, fixed)
    invalid = await event(fixed, "InvalidCentralSystemCertificate")
    assert "certificate" in invalid["techInfo"].lower()
    assert len(events_of(fixed, "InvalidCentralSystemCertificate")) == 1
    await until(lambda: journal.outbox.depth(SID) == 0)


async def test_raise_1_to_2_reconnects_over_tls_lowering_rejected(env: Env) -> None:
    ca = trustme.CA()
    policy = Policy(passwords={SID: "pw-raise-1234"})
    plain = await env.csms(policy)
    gw = await env.gateway(plain.url, security_profile=1, password="pw-raise-1234",
                           ca_file=env.file("ca.pem", ca.cert_pem.bytes()))
    await booted(gw, plain)
    assert await change(plain, "SecurityProfile", "0") == "Rejected"
    assert await change(plain, "SecurityProfile", "1") == "Accepted"  # no change
    assert await change(plain, "SecurityProfile", "3") == "Rejected"  # no client certificate
    assert await change(plain, "SecurityProfile", "2") == "Accepted"

    port = plain.port
    tls = await reconnected(gw, lambda: env.restart(plain, ssl_context=server_context(ca)),
                            plain)
    assert tls.port == port and tls_version(tls) in ("TLSv1.2", "TLSv1.3")
    # Reported on whichever link was up when it left the queue (usually just before the close).
    await until(lambda: events_of(plain, "ReconfigurationOfSecurityParameters")
                + events_of(tls, "ReconfigurationOfSecurityParameters"))
    r = await tls.call(SID, "GetConfiguration", {"key": ["SecurityProfile"]})
    assert r["configurationKey"][0]["value"] == "2"
    assert await change(tls, "SecurityProfile", "1") == "Rejected"
    # persisted: the journal holds the raised profile
    assert gw.journal is not None
    assert gw.journal.settings.get_settings(SID)["security_profile"] == "2"


async def test_install_get_delete_certificates_and_installed_root_enables_tls(env: Env) -> None:
    ca = trustme.CA()
    plain = await env.csms(Policy(passwords={SID: "pw-install-12"}))
    gw = await env.gateway(plain.url, security_profile=1, password="pw-install-12")
    await booted(gw, plain)
    typ = "CentralSystemRootCertificate"
    r = await plain.call(SID, "GetInstalledCertificateIds", {"certificateType": typ})
    assert r == {"status": "NotFound"}
    # no CA configured or installed: a raise to TLS would lock us out
    assert await change(plain, "SecurityProfile", "2") == "Rejected"

    r = await plain.call(SID, "InstallCertificate",
                         {"certificateType": typ, "certificate": "-----BEGIN CERTIFICATE-----"})
    assert r == {"status": "Rejected"}
    r = await plain.call(SID, "InstallCertificate",
                         {"certificateType": typ, "certificate": ca.cert_pem.bytes().decode()})
    assert r == {"status": "Accepted"}
    root = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    r = await plain.call(SID, "GetInstalledCertificateIds", {"certificateType": typ})
    assert r == {"status": "Accepted", "certificateHashData": [hash_data(root)]}
    r = await plain.call(SID, "GetInstalledCertificateIds",
                         {"certificateType": "ManufacturerRootCertificate"})
    assert r == {"status": "NotFound"}

    # The installed root is what the TLS connection is checked against.
    assert await change(plain, "SecurityProfile", "2") == "Accepted"
    tls = await reconnected(gw, lambda: env.restart(plain, ssl_context=server_context(ca)),
                            plain)
    # The only root the TLS link depends on is not deleted: that would lock the station out.
    r = await tls.call(SID, "DeleteCertificate", {"certificateHashData": hash_data(root)})
    assert r == {"status": "Failed"}
    successor = trustme.CA()
    r = await tls.call(SID, "InstallCertificate", {
        "certificateType": typ, "certificate": successor.cert_pem.bytes().decode()})
    assert r == {"status": "Accepted"}
    r = await tls.call(SID, "DeleteCertificate", {"certificateHashData": hash_data(root)})
    assert r == {"status": "Accepted"}
    r = await tls.call(SID, "DeleteCertificate", {"certificateHashData": hash_data(root)})
    assert r == {"status": "NotFound"}
    r = await tls.call(SID, "GetInstalledCertificateIds", {"certificateType": typ})
    assert r == {"status": "Accepted", "certificateHashData": [
        hash_data(x509.load_pem_x509_certificate(successor.cert_pem.bytes()))]}


def sign_csr(ca: trustme.CA, csr_pem: str) -> str:
    csr = x509.load_pem_x509_csr(csr_pem.encode())
    ca_key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), password=None)
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(csr.subject).issuer_name(ca_cert.subject)
            .public_key(csr.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=30))
            .sign(ca_key, hashes.SHA256()))  # type: ignore[arg-type]
    return cert.public_bytes(serialization.Encoding.PEM).decode() + ca.cert_pem.bytes().decode()


async def test_sign_certificate_round_trip_then_profile3_uses_signed_cert(env: Env) -> None:
    server_ca, client_ca = trustme.CA(), trustme.CA()
    csms = await env.csms(Policy(passwords={SID: "pw-sign-12345"}),
                          ssl_context=server_context(server_ca))
    gw = await env.gateway(csms.url, security_profile=2, password="pw-sign-12345",
                           ca_file=env.file("ca.pem", server_ca.cert_pem.bytes()))
    await booted(gw, csms)
    assert await change(csms, "CpoName", "ACME Charging") == "Accepted"
    assert await change(csms, "SecurityProfile", "3") == "Rejected"  # no client cert yet

    after = csms.last_seq()
    r = await csms.call(SID, "ExtendedTriggerMessage",
                        {"requestedMessage": "SignChargePointCertificate"})
    assert r == {"status": "Accepted"}
    sign = await csms.wait_for(SID, "SignCertificate", after=after)
    csr = x509.load_pem_x509_csr(sign.payload["csr"].encode())
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == SID
    assert csr.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == \
        "ACME Charging"

    # A chain for some other key is refused, and reported.
    stranger = trustme.CA().issue_cert("x.example", common_name=SID)
    r = await csms.call(SID, "CertificateSigned", {"certificateChain": b"".join(
        b.bytes() for b in stranger.cert_chain_pems).decode()})
    assert r == {"status": "Rejected"}
    await event(csms, "InvalidChargePointCertificate", after)

    chain = sign_csr(client_ca, sign.payload["csr"])
    r = await csms.call(SID, "CertificateSigned", {"certificateChain": chain})
    assert r == {"status": "Accepted"}
    signed = x509.load_pem_x509_certificate(chain.encode())
    # our own client certificate cannot be deleted
    r = await csms.call(SID, "DeleteCertificate", {"certificateHashData": hash_data(
        signed, x509.load_pem_x509_certificate(client_ca.cert_pem.bytes()))})
    assert r == {"status": "Failed"}

    assert await change(csms, "SecurityProfile", "3") == "Accepted"
    csms.policy.client_cert_cn = True
    csms.policy.passwords = None  # profile 3: the certificate is the credential
    mutual = await reconnected(
        gw, lambda: env.restart(csms, ssl_context=server_context(server_ca, client_ca)), csms)
    presented = x509.load_der_x509_certificate(mutual.peer_certs[SID])
    assert presented.serial_number == signed.serial_number


async def test_csms_without_security_extension_does_not_hold_transactions(env: Env) -> None:
    csms = await env.csms(Policy(security_extension=False))
    gw = await env.gateway(csms.url)
    await booted(gw, csms)
    # The StartupOfTheDevice event is refused (NotImplemented) and dropped, not retried for
    # minutes ahead of the transaction messages.
    await csms.wait_for(SID, "SecurityEventNotification",
                        lambda p: p["type"] == "StartupOfTheDevice")
    assert gw.journal is not None
    await until(lambda: gw.journal is not None and gw.journal.outbox.depth(SID) == 0)
    after = csms.last_seq()
    r = await csms.call(SID, "RemoteStartTransaction", {"idTag": "TAG-1", "connectorId": 1})
    assert r == {"status": "Accepted"}
    await csms.wait_for(SID, "StartTransaction", after=after, timeout=5)
    assert len(csms.of(SID, "SecurityEventNotification")) == 1


async def test_csms_without_security_extension_is_told_once_not_at_every_boot(
        caplog: pytest.LogCaptureFixture, env: Env) -> None:
    """A plain 1.6 CSMS answers SecurityEventNotification NotImplemented: one warning, and no
    notification is sent to it again, not at the next boot nor for a later event."""
    caplog.set_level(logging.DEBUG, logger="bess_gateway")
    csms = await env.csms(Policy(security_extension=False))
    gw = await env.gateway(csms.url)
    await booted(gw, csms)
    await csms.wait_for(SID, "SecurityEventNotification",
                        lambda p: p["type"] == "StartupOfTheDevice")
    await until(lambda: gw.journal is not None and gw.journal.outbox.depth(SID) == 0)

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING
                and r.name.startswith("bess_gateway")
                and "SecurityEventNotification" in r.getMessage()]

    assert len(warnings()) == 1 and "NotImplemented" in warnings()[0]
    # A later event (the CSMS changes a security parameter): logged, not sent.
    assert await change(csms, "AuthorizationKey", secrets.token_hex(16)) == "Accepted"
    await env.stop(gw)
    after = csms.last_seq()
    gw = await env.gateway(csms.url)  # the next boot
    await booted(gw, csms, after)
    hb = csms.last_seq()
    await csms.wait_until(lambda: len(csms.of(SID, "StatusNotification")) >= 6)
    assert await csms.call(SID, "TriggerMessage", {"requestedMessage": "Heartbeat"}) == {
        "status": "Accepted"}
    await csms.wait_for(SID, "Heartbeat", after=hb)
    assert len(csms.of(SID, "SecurityEventNotification")) == 1
    assert gw.journal is not None and gw.journal.outbox.depth(SID) == 0
    assert len(warnings()) == 1
    security_log = (gw.config.gateway.data_dir / "logs" / "security.log").read_text()
    assert security_log.count("StartupOfTheDevice") == 2  # both boots are in the security log


async def test_key_and_raised_profile_survive_a_restart(env: Env) -> None:
    ca = trustme.CA()
    csms = await env.csms(Policy(passwords={SID: "pw-restart-123"}))
    ca_file = env.file("ca.pem", ca.cert_pem.bytes())
    gw = await env.gateway(csms.url, security_profile=1, password="pw-restart-123",
                           ca_file=ca_file)
    await booted(gw, csms)
    key = secrets.token_hex(16)
    csms.policy.passwords = {SID: bytes.fromhex(key)}
    after = csms.last_seq()
    assert await change(csms, "AuthorizationKey", key) == "Accepted"
    await booted(gw, csms, after)
    assert await change(csms, "SecurityProfile", "2") == "Accepted"
    await csms.wait_until(lambda: SID not in csms.stations)
    await env.stop(gw)

    # Same config file (profile 1, the old password, ws://), same data folder.
    tls = await env.restart(csms, ssl_context=server_context(ca))
    again = await env.gateway(csms.url, security_profile=1, password="pw-restart-123",
                              ca_file=ca_file)
    await booted(again, tls)
    assert tls_version(tls) in ("TLSv1.2", "TLSv1.3")
    r = await tls.call(SID, "GetConfiguration", {"key": ["SecurityProfile"]})
    assert r["configurationKey"][0]["value"] == "2"


async def test_one_endpoint_refused_does_not_hold_back_another(env: Env) -> None:
    csms = await env.csms(Policy(passwords={SID: "pw-good-12345", "DEMO-02": "pw-other-1234"}))
    gw = await env.gateway(csms.url, {"security_profile": 1, "password": "wrong-password"},
                           security_profile=1, password="pw-good-12345")
    await booted(gw, csms)
    await until(lambda: csms.refused >= 2)
    assert csms.of("DEMO-02", "BootNotification") == []
    # The refused endpoint's events stay its own.
    assert events_of(csms, "FailedToAuthenticateAtCentralSystem") == []
    assert gw.journal is not None
    assert any(p["type"] == "FailedToAuthenticateAtCentralSystem"
               for p in gw.journal.outbox.queued_payloads("DEMO-02", "SecurityEventNotification"))


async def test_without_tls_only_the_csms_root_is_installed_and_no_station_certificate(
        env: Env) -> None:
    """The 2.0.1 rules (A02/A03, M03) on 1.6: on profiles 0 and 1 the CSMS is not authenticated,
    so it may install its own root (what a raise to profile 2 needs) but no other trust anchor,
    and may neither request nor hand over a station certificate."""
    csms = await env.csms(Policy(passwords={SID: "pw-no-tls-123"}))
    gw = await env.gateway(csms.url, security_profile=1, password="pw-no-tls-123")
    await booted(gw, csms)
    manufacturer = trustme.CA().cert_pem.bytes().decode()
    r = await csms.call(SID, "InstallCertificate", {
        "certificateType": "ManufacturerRootCertificate", "certificate": manufacturer})
    assert r == {"status": "Rejected"}
    r = await csms.call(SID, "GetInstalledCertificateIds",
                        {"certificateType": "ManufacturerRootCertificate"})
    assert r == {"status": "NotFound"}
    r = await csms.call(SID, "InstallCertificate", {
        "certificateType": "CentralSystemRootCertificate",
        "certificate": trustme.CA().cert_pem.bytes().decode()})
    assert r == {"status": "Accepted"}

    after = csms.last_seq()
    r = await csms.call(SID, "ExtendedTriggerMessage",
                        {"requestedMessage": "SignChargePointCertificate"})
    assert r == {"status": "Rejected"}
    # A chain that would fit our key, had a CSR been made: refused all the same.
    client_ca = trustme.CA()
    chain = client_ca.issue_cert("bess.example", common_name=SID)
    r = await csms.call(SID, "CertificateSigned", {"certificateChain": b"".join(
        b.bytes() for b in chain.cert_chain_pems).decode()})
    assert r == {"status": "Rejected"}
    # A Heartbeat round trip: anything the trigger had sent would be in by now.
    assert await csms.call(SID, "TriggerMessage", {"requestedMessage": "Heartbeat"}) == {
        "status": "Accepted"}
    await csms.wait_for(SID, "Heartbeat", after=after)
    assert csms.of(SID, "SignCertificate") == []
    assert not (gw.endpoints[SID].ctx.certificates.directory / "stations" / SID).exists()
