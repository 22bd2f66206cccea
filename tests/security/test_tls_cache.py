"""Cached TLS client contexts (security.tls): reused while nothing they load changes, rebuilt as
soon as anything does. Every "new context" is proven by a real TLS handshake against a real
server: it trusts the new CA (and the old one no longer), or presents the new client certificate.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import os
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from waiting import until

from bess_gateway.config import Config, ControlConfig, PcsConfig
from bess_gateway.demo.csms import CsmsServer, Policy
from bess_gateway.demo.run import demo_config
from bess_gateway.gateway import Gateway
from bess_gateway.security import tls
from bess_gateway.security.certificates import CertificateStore, hash_data
from bess_gateway.security.keys import StationKeys
from bess_gateway.sim.server import SimulatorThread

ROOT = "CentralSystemRootCertificate"
SID = "CP-1"


def server_context(ca: trustme.CA, client_ca: trustme.CA | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    if client_ca is not None:
        client_ca.configure_trust(ctx)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


class TlsServers:
    """Real TLS servers on loopback; each answers with the SHA-256 of the client certificate it
    got (b"none" without one) and closes."""

    def __init__(self) -> None:
        self.servers: list[asyncio.Server] = []

    async def start(self, ctx: ssl.SSLContext) -> int:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            ssl_object = writer.get_extra_info("ssl_object")
            der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
            writer.write(hashlib.sha256(der).hexdigest().encode() if der else b"none")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=ctx)
        self.servers.append(server)
        return int(server.sockets[0].getsockname()[1])


@pytest.fixture
async def servers() -> AsyncIterator[TlsServers]:
    s = TlsServers()
    try:
        yield s
    finally:
        for server in s.servers:
            server.close()
            await server.wait_closed()


async def handshake(ctx: ssl.SSLContext, port: int) -> str:
    """Connect with ``ctx`` (host name checked, as the endpoints do); what the server saw."""
    async with asyncio.timeout(10):
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx,
                                                       server_hostname="127.0.0.1")
        try:
            return (await reader.read()).decode()
        finally:
            writer.close()


def fingerprint(cert_pem: bytes) -> str:
    der = x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)
    return hashlib.sha256(der).hexdigest()


def sign(ca: trustme.CA, csr_pem: str) -> str:
    """What a CSMS's CertificateSigned carries for ``csr_pem``: leaf + CA, PEM."""
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


def spec(tmp: Path, **fields: object) -> tls.ClientTls:
    base = tls.ClientTls(csms="wss://csms.example:443/ocpp", profile=2, store=tmp / "store")
    return dataclasses.replace(base, **fields)  # type: ignore[arg-type]


async def test_same_inputs_give_the_same_context_and_it_works(
        tmp_path: Path, servers: TlsServers) -> None:
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca.cert_pem.bytes())
    cache = tls.ContextCache()
    first = cache.get(spec(tmp_path, ca_file=ca_file))
    # An equal slot built separately (another endpoint of the operator): the same object.
    assert cache.get(spec(tmp_path, ca_file=ca_file)) is first
    assert cache.builds == 1
    assert first.minimum_version == ssl.TLSVersion.TLSv1_2
    assert first.verify_mode == ssl.CERT_REQUIRED and first.check_hostname
    assert await handshake(first, await servers.start(server_context(ca))) == "none"
    # A server of another CA is refused by it.
    with pytest.raises(ssl.SSLCertVerificationError):
        await handshake(first, await servers.start(server_context(trustme.CA())))
    assert cache.get(spec(tmp_path, ca_file=ca_file)) is first  # a refusal changes nothing


async def test_installed_and_deleted_root_give_new_contexts(
        tmp_path: Path, servers: TlsServers) -> None:
    old_ca, new_ca = trustme.CA(), trustme.CA()
    store = CertificateStore(tmp_path / "store")
    assert store.install(ROOT, old_ca.cert_pem.bytes().decode()) == "Accepted"
    old_port = await servers.start(server_context(old_ca))
    new_port = await servers.start(server_context(new_ca))
    cache = tls.ContextCache()
    before = cache.get(spec(tmp_path))
    assert await handshake(before, old_port) == "none"
    with pytest.raises(ssl.SSLCertVerificationError):
        await handshake(before, new_port)

    assert store.install(ROOT, new_ca.cert_pem.bytes().decode()) == "Accepted"  # InstallCert.
    both = cache.get(spec(tmp_path))
    assert both is not before
    assert await handshake(both, new_port) == "none"
    assert await handshake(both, old_port) == "none"

    old_id = hash_data(x509.load_pem_x509_certificate(old_ca.cert_pem.bytes()))
    assert store.delete(old_id) == "Accepted"  # DeleteCertificate
    after = cache.get(spec(tmp_path))
    assert after is not both
    assert await handshake(after, new_port) == "none"
    with pytest.raises(ssl.SSLCertVerificationError):
        await handshake(after, old_port)
    assert cache.get(spec(tmp_path)) is after
    assert cache.builds == 3


async def test_an_operator_replacing_a_file_by_hand_gives_a_new_context(
        tmp_path: Path, servers: TlsServers) -> None:
    """No store write (no generation bump): the file's stamp alone must tell."""
    old_ca, new_ca = trustme.CA(), trustme.CA()
    old_port = await servers.start(server_context(old_ca))
    new_port = await servers.start(server_context(new_ca))
    # Both PEMs padded to one length (text after the END line is ignored), so that the
    # replacement below keeps the size.
    old_pem, new_pem = old_ca.cert_pem.bytes(), new_ca.cert_pem.bytes()
    size = max(len(old_pem), len(new_pem))
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(old_pem.ljust(size, b"\n"))
    cache = tls.ContextCache()
    before = cache.get(spec(tmp_path, ca_file=ca_file))
    assert await handshake(before, old_port) == "none"

    # Overwritten in place (same inode), same size, and its mtime set back to the old one:
    # only the ctime (which no user can set) still differs.
    stat = os.stat(ca_file)
    ca_file.write_bytes(new_pem.ljust(size, b"\n"))
    assert os.stat(ca_file).st_size == stat.st_size
    os.utime(ca_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert os.stat(ca_file).st_ino == stat.st_ino
    after = cache.get(spec(tmp_path, ca_file=ca_file))
    assert after is not before
    assert await handshake(after, new_port) == "none"
    with pytest.raises(ssl.SSLCertVerificationError):
        await handshake(after, old_port)

    # A root copied into the operator's store folder by hand is trusted at the next attempt.
    third = trustme.CA()
    folder = tmp_path / "store" / ROOT
    folder.mkdir(parents=True)
    (folder / "by-hand.pem").write_bytes(third.cert_pem.bytes())
    with_root = cache.get(spec(tmp_path, ca_file=ca_file))
    assert with_root is not after
    assert await handshake(with_root, await servers.start(server_context(third))) == "none"


async def test_new_client_certificate_profile_and_url_give_new_contexts(
        tmp_path: Path, servers: TlsServers) -> None:
    server_ca, client_ca = trustme.CA(), trustme.CA()
    port = await servers.start(server_context(server_ca, client_ca))
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(server_ca.cert_pem.bytes())
    configured = client_ca.issue_cert("bess.example", common_name=SID)
    cert_file, key_file = tmp_path / "client.pem", tmp_path / "client.key"
    cert_file.write_bytes(configured.cert_chain_pems[0].bytes())
    key_file.write_bytes(configured.private_key_pem.bytes())
    cache = tls.ContextCache()

    profile2 = cache.get(spec(tmp_path, ca_file=ca_file))
    # The server wants a certificate: under TLS 1.3 it refuses after the client's side of the
    # handshake is done, so the refusal shows as an alert or a closed stream, never an answer.
    try:
        answer = await handshake(profile2, port)
    except (ssl.SSLError, ConnectionError):
        answer = ""
    assert answer == ""
    profile3 = cache.get(spec(tmp_path, ca_file=ca_file, profile=3, cert_file=cert_file,
                              key_file=key_file))
    assert profile3 is not profile2
    assert await handshake(profile3, port) == fingerprint(configured.cert_chain_pems[0].bytes())

    # SignCertificate / CertificateSigned: the station's own client.pem (key + chain).
    keys = StationKeys(tmp_path / "store" / "stations" / SID, SID)
    assert keys.accept_chain(sign(client_ca, keys.csr("CPO")), 10_000) == ("Accepted", "")
    identity = keys.identity()
    assert identity is not None
    signed = cache.get(spec(tmp_path, ca_file=ca_file, profile=3, cert_file=identity))
    first_leaf = keys.chain()[0].public_bytes(serialization.Encoding.PEM)
    assert await handshake(signed, port) == fingerprint(first_leaf)

    # A renewed certificate in the same file: a new context presents it, the old one no more.
    assert keys.accept_chain(sign(client_ca, keys.csr("CPO")), 10_000) == ("Accepted", "")
    renewed = cache.get(spec(tmp_path, ca_file=ca_file, profile=3, cert_file=identity))
    assert renewed is not signed
    second_leaf = keys.chain()[0].public_bytes(serialization.Encoding.PEM)
    assert second_leaf != first_leaf
    assert await handshake(renewed, port) == fingerprint(second_leaf)

    # Another CSMS URL: another context (same trust, built again).
    moved = cache.get(spec(tmp_path, ca_file=ca_file, profile=3, cert_file=identity,
                           csms="wss://backup.example:443/ocpp"))
    assert moved is not renewed
    assert await handshake(moved, port) == fingerprint(second_leaf)


def test_a_failed_build_caches_nothing(tmp_path: Path) -> None:
    cache = tls.ContextCache()
    missing = spec(tmp_path, ca_file=tmp_path / "absent.pem")
    with pytest.raises(OSError):
        cache.get(missing)
    (tmp_path / "absent.pem").write_bytes(trustme.CA().cert_pem.bytes())
    assert isinstance(cache.get(missing), ssl.SSLContext)
    assert cache.builds == 1


def test_least_recently_used_slot_goes_first(tmp_path: Path) -> None:
    cache = tls.ContextCache(max_slots=2)
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(trustme.CA().cert_pem.bytes())
    a, b, c = (spec(tmp_path, ca_file=ca_file, csms=f"wss://{n}.example:443/ocpp")
               for n in "abc")
    ctx_a = cache.get(a)
    cache.get(b)
    assert cache.get(a) is ctx_a  # a used last: b goes when c comes
    cache.get(c)
    assert cache.get(a) is ctx_a and cache.builds == 3
    cache.get(b)
    assert cache.builds == 4


# -- the gateway's endpoints ------------------------------------------------------------------

@pytest.fixture
async def tls_csms() -> AsyncIterator[tuple[CsmsServer, trustme.CA]]:
    ca = trustme.CA()
    server = CsmsServer(Policy(passwords={"DEMO-01": "pw-shared-1", "DEMO-02": "pw-shared-1",
                                          "DEMO-03": "pw-shared-1"}))
    await server.start(ssl_context=server_context(ca))
    try:
        yield server, ca
    finally:
        async with asyncio.timeout(10):
            await server.stop()


async def test_endpoints_of_one_operator_share_a_context_others_do_not(
        tmp_path: Path, sim: SimulatorThread,
        tls_csms: tuple[CsmsServer, trustme.CA]) -> None:
    csms, ca = tls_csms
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca.cert_pem.bytes())
    cfg: Config = demo_config(tmp_path / "var", csms.url, sim.port, 3, sample_s=60)
    shared = {"security_profile": 2, "password": "pw-shared-1", "ca_file": ca_file}
    cfg = dataclasses.replace(
        cfg, control=ControlConfig(),
        pcs=dataclasses.replace(PcsConfig(), port=sim.port, timeout_ms=400),
        endpoints=tuple(dataclasses.replace(ep, **shared, **extra) for ep, extra in zip(
            cfg.endpoints, ({}, {}, {"operator": "other-operator"}), strict=True)))
    gw = Gateway(cfg)
    await gw.start()
    try:
        await until(lambda: all(ep.booted.is_set() for ep in gw.endpoints.values()), 20)
        contexts: dict[str, ssl.SSLContext | None] = {
            sid: ep._ssl() for sid, ep in gw.endpoints.items()}
        assert contexts["DEMO-01"] is contexts["DEMO-02"]  # one operator, one CSMS, one CA
        assert contexts["DEMO-03"] is not contexts["DEMO-01"]  # another operator's store
        # A reconnect after a dropped link asks again and gets the same object.
        after = csms.last_seq()
        await csms.drop("DEMO-01")
        await csms.wait_for("DEMO-01", "BootNotification", after=after, timeout=20)
        assert gw.endpoints["DEMO-01"]._ssl() is contexts["DEMO-01"]
    finally:
        async with asyncio.timeout(10):
            await gw.stop(drain_s=0)
