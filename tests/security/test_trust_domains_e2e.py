"""Operators (trust domains, design.md section 10) end to end: one gateway, two operators, each
with its own real CSMS over WebSocket; real TLS handshakes, real FTP/HTTP servers for the uploads,
the real simulator. What one operator's CSMS does or asks must not reach the other's.

ACME maintains the gateway (``[gateway] maintenance_operator``); BETA is a tenant.
"""

from __future__ import annotations

import asyncio
import io
import ssl
import stat
import zipfile
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import trustme
from cryptography import x509
from ocpp.exceptions import SecurityError
from transfer_servers import ftp_server, http_server
from waiting import until

from bess_gateway.config import Config
from bess_gateway.demo.csms import CsmsServer, Policy
from bess_gateway.domain.timefmt import iso
from bess_gateway.endpoint.connection_security import ssl_context
from bess_gateway.gateway import Gateway
from bess_gateway.security.certificates import CertificateStore, hash_data
from bess_gateway.sim.server import SimulatorThread

ACME_16, ACME_201 = "ACME-01", "ACME-02"
BETA_16, BETA_201 = "BETA-01", "BETA-02"
ROOT = "CentralSystemRootCertificate"
FIRMWARE = b"BESS-GATEWAY-FIRMWARE-3.0\x00" * 64
TOKEN = "SHARED-CUSTOMER-77"


class Hub:
    """Two CSMSs (ACME's, BETA's) and one gateway with a 1.6 and a 2.0.1 endpoint of each."""

    def __init__(self, acme: CsmsServer, beta: CsmsServer, gw: Gateway) -> None:
        self.acme, self.beta, self.gw = acme, beta, gw

    def csms(self, sid: str) -> CsmsServer:
        return self.acme if sid.startswith("ACME") else self.beta


def installer(tmp: Path) -> tuple[str, Path]:
    record = tmp / "installed.txt"
    script = tmp / "install.sh"
    script.write_text(f'#!/bin/sh\necho "$1" >> "{record}"\nexit 0\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script), record


@pytest.fixture
async def hub(tmp_path: Path, sim: SimulatorThread) -> AsyncIterator[Hub]:
    acme, beta = CsmsServer(), CsmsServer()
    await acme.start()
    await beta.start()
    command, _ = installer(tmp_path)
    endpoints: list[dict[str, Any]] = [
        {"id": ACME_16, "csms_url": acme.url, "operator": "acme"},
        {"id": ACME_201, "csms_url": acme.url, "operator": "acme", "ocpp_version": "2.0.1"},
        {"id": BETA_16, "csms_url": beta.url, "operator": "beta"},
        {"id": BETA_201, "csms_url": beta.url, "operator": "beta", "ocpp_version": "2.0.1"},
    ]
    for e in endpoints:
        e.update(meter_sample_interval_s=60, heartbeat_interval_s=60)
    cfg = Config.with_endpoints(
        endpoints, gateway={"data_dir": tmp_path / "var", "metrics_listen": "",
                            "firmware_installer": command, "maintenance_operator": "acme"},
        pcs={"port": sim.port, "timeout_ms": 400})
    gw = Gateway(cfg)
    await gw.start()
    hub = Hub(acme, beta, gw)
    try:
        for sid in gw.endpoints:
            await hub.csms(sid).wait_for(sid, "BootNotification", timeout=20)
            await until(lambda s=sid: gw.endpoints[s].booted.is_set(), 20)
        yield hub
    finally:
        async with asyncio.timeout(10):
            await gw.stop(drain_s=0)
        for server in (acme, beta):
            async with asyncio.timeout(10):
                await server.stop()


async def handshake(context: ssl.SSLContext | None, port: int) -> None:
    """A real TLS handshake with the server on ``port`` (its certificate is for 127.0.0.1)."""
    assert context is not None
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    writer.close()
    await writer.wait_closed()


@pytest.fixture
async def tls_server() -> AsyncIterator[tuple[trustme.CA, int]]:
    """A TLS server whose certificate is issued by a CA no endpoint is configured with."""
    ca = trustme.CA()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(context)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
    try:
        yield ca, server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def test_a_root_installed_by_one_operator_is_neither_listed_nor_trusted_for_another(
        hub: Hub, tls_server: tuple[trustme.CA, int]) -> None:
    ca, port = tls_server
    pem = ca.cert_pem.bytes().decode()
    r = await hub.acme.call(ACME_16, "InstallCertificate",
                            {"certificateType": ROOT, "certificate": pem})
    assert r == {"status": "Accepted"}
    root = hash_data(x509.load_pem_x509_certificate(pem.encode()))

    # Listed to the operator that installed it, on both its endpoints ...
    r = await hub.acme.call(ACME_16, "GetInstalledCertificateIds", {"certificateType": ROOT})
    assert r == {"status": "Accepted", "certificateHashData": [root]}
    r = await hub.acme.call(ACME_201, "GetInstalledCertificateIds",
                            {"certificateType": ["CSMSRootCertificate"]})
    assert r["status"] == "Accepted"
    assert [e["certificateHashData"] for e in r["certificateHashDataChain"]] == [root]
    # ... and to nobody else, in either version.
    r = await hub.beta.call(BETA_16, "GetInstalledCertificateIds", {"certificateType": ROOT})
    assert r == {"status": "NotFound"}
    r = await hub.beta.call(BETA_201, "GetInstalledCertificateIds", {})
    assert r == {"status": "NotFound"}
    # BETA cannot delete it either: for BETA it does not exist.
    r = await hub.beta.call(BETA_16, "DeleteCertificate", {"certificateHashData": root})
    assert r == {"status": "NotFound"}

    # The TLS context each endpoint connects with: ACME's trusts the root (a real handshake
    # with a server whose certificate it issued succeeds), BETA's does not.
    target = f"wss://127.0.0.1:{port}/ocpp"
    await handshake(ssl_context(hub.gw.endpoints[ACME_16].ctx, target), port)
    await handshake(ssl_context(hub.gw.endpoints[ACME_201].ctx, target), port)
    for sid in (BETA_16, BETA_201):
        with pytest.raises(ssl.SSLCertVerificationError):
            await handshake(ssl_context(hub.gw.endpoints[sid].ctx, target), port)
    # Stored apart, per operator.
    data = hub.gw.config.gateway.data_dir / "certs" / "operators"
    assert [p.parent.parent.name for p in data.glob(f"*/{ROOT}/*.pem")] == ["acme"]


async def test_firmware_only_for_the_maintenance_operator_and_reset_stays_per_endpoint(
        hub: Hub, tmp_path: Path) -> None:
    gw = hub.gw
    assert gw.maintenance is not None
    firmware = gw.maintenance.firmware
    now = iso(datetime.now(UTC))
    with http_server(tmp_path / "www") as (base, store):
        (tmp_path / "www" / "fw.bin").write_bytes(FIRMWARE)
        # 1.6 UpdateFirmware has no status to refuse with: a SecurityError CALLERROR.
        with pytest.raises(SecurityError):
            await hub.beta.call(BETA_16, "UpdateFirmware", {
                "location": base + "fw.bin", "retrieveDate": now, "retries": 0})
        # SignedUpdateFirmware (1.6 security extension) and 2.0.1 UpdateFirmware: Rejected.
        r = await hub.beta.call(BETA_16, "SignedUpdateFirmware", {
            "requestId": 5, "firmware": {
                "location": base + "fw.bin", "retrieveDateTime": now,
                "signingCertificate": "-----BEGIN CERTIFICATE-----", "signature": "AAAA"}})
        assert r == {"status": "Rejected"}
        r = await hub.beta.call(BETA_201, "UpdateFirmware", {
            "requestId": 6, "firmware": {"location": base + "fw.bin", "retrieveDateTime": now}})
        assert r["status"] == "Rejected"
        assert not firmware.busy and store.gets == []
        assert hub.beta.of(BETA_16, "FirmwareStatusNotification") == []
        assert hub.beta.of(BETA_201, "FirmwareStatusNotification") == []

        # The maintenance operator's request runs: download, install, restart.
        after = hub.acme.last_seq()
        assert await hub.acme.call(ACME_16, "UpdateFirmware", {
            "location": base + "fw.bin", "retrieveDate": now, "retries": 0}) == {}
        await hub.acme.wait_for(ACME_16, "FirmwareStatusNotification",
                                lambda p: p["status"] == "Installed", after=after, timeout=15)
        assert store.gets == ["/fw.bin"]
    await until(lambda: gw.restart_requested.is_set())

    # A Reset is the endpoint's own (its sessions, its connection), so every operator may
    # order it: BETA's endpoint reconnects, ACME's link is not touched.
    acme_connects = gw.endpoints[ACME_16].connects
    after = hub.beta.last_seq()
    assert await hub.beta.call(BETA_16, "Reset", {"type": "Hard"}) == {"status": "Accepted"}
    await hub.beta.wait_for(BETA_16, "BootNotification", after=after, timeout=15)
    assert gw.endpoints[ACME_16].connects == acme_connects
    assert gw.endpoints[ACME_16].ctx.online


def read_zip(data: bytes) -> dict[str, str]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return {n: z.read(n).decode() for n in z.namelist()}


def acme_traces(hub: Hub) -> list[str]:
    """What names ACME: its endpoint ids, its CSMS's URL and address, its name."""
    url = hub.acme.url
    return [ACME_16, ACME_201, url, url.split("//", 1)[1].split("/", 1)[0], "acme"]


def assert_nothing_of_acme(hub: Hub, files: dict[str, str]) -> None:
    text = "".join(files.values()).lower()
    for trace in acme_traces(hub):
        assert trace.lower() not in text, trace


@pytest.fixture
def uploads(tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    """(FTP base URL, HTTP base URL, the folder both store into)."""
    root = tmp_path / "uploads"
    with ftp_server(root) as ftp, http_server(root) as (http, _):
        yield ftp, http, root


async def uploaded(csms: CsmsServer, sid: str, action: str, after: int, root: Path,
                   name: str) -> dict[str, str]:
    await csms.wait_for(sid, action, lambda p: p["status"] == "Uploaded", after=after,
                        timeout=20)
    return read_zip((root / name).read_bytes())


async def test_diagnostics_and_logs_hold_nothing_of_another_operator(
        hub: Hub, uploads: tuple[str, str, Path]) -> None:
    ftp, http, root = uploads
    journal = hub.gw.journal
    assert journal is not None
    # ACME has a session (journal rows), its endpoints have logged their connections and
    # security events (StartupOfTheDevice), and a traceback names its CSMS.
    after = hub.acme.last_seq()
    assert await hub.acme.call(ACME_16, "RemoteStartTransaction", {
        "idTag": "ACME-TAG", "connectorId": 2}) == {"status": "Accepted"}
    await hub.acme.wait_for(ACME_16, "StartTransaction", after=after)
    assert any(r.endpoint_id == ACME_16 for r in journal.transactions.open_transactions(ACME_16))
    log_dir = hub.gw.config.gateway.data_dir / "logs"
    await until(lambda: ACME_16 in (log_dir / "gateway.log").read_text()
                and ACME_16 in (log_dir / "security.log").read_text())
    since = iso(datetime.now(UTC) - timedelta(hours=1))

    # 1.6 GetDiagnostics, by FTP.
    after = hub.beta.last_seq()
    r = await hub.beta.call(BETA_16, "GetDiagnostics", {"location": ftp, "startTime": since,
                                                        "retries": 0})
    files = await uploaded(hub.beta, BETA_16, "DiagnosticsStatusNotification", after, root,
                           r["fileName"])
    assert_nothing_of_acme(hub, files)
    # It is BETA's bundle, not an empty one: its endpoints, settings, journal and log lines.
    config = orjson.loads(files["config.json"])
    assert [e["id"] for e in config["gateway"]["endpoints"]] == [BETA_16, BETA_201]
    assert set(config["ocpp_settings"]) <= {BETA_16, BETA_201}
    assert set(orjson.loads(files["journal.json"])["endpoints"]) <= {BETA_16, BETA_201}
    assert f"{BETA_16}: connected" in files["gateway.log"]

    # 1.6 GetLog (diagnostics log) by HTTP, 2.0.1 GetLog (security log) by FTP.
    after = hub.beta.last_seq()
    r = await hub.beta.call(BETA_16, "GetLog", {"logType": "DiagnosticsLog", "requestId": 3,
                                                "log": {"remoteLocation": http}})
    files = await uploaded(hub.beta, BETA_16, "LogStatusNotification", after, root,
                           r["filename"])
    assert_nothing_of_acme(hub, files)
    assert BETA_201 in files["gateway.log"]
    after = hub.beta.last_seq()
    r = await hub.beta.call(BETA_201, "GetLog", {"logType": "SecurityLog", "requestId": 4,
                                                 "log": {"remoteLocation": ftp}})
    files = await uploaded(hub.beta, BETA_201, "LogStatusNotification", after, root,
                           r["filename"])
    assert_nothing_of_acme(hub, files)
    assert f"{BETA_201}: security event StartupOfTheDevice" in files["security.log"]

    # ACME's own bundle has ACME's session, and nothing of BETA.
    after = hub.acme.last_seq()
    r = await hub.acme.call(ACME_201, "GetLog", {"logType": "DiagnosticsLog", "requestId": 9,
                                                 "log": {"remoteLocation": http}})
    files = await uploaded(hub.acme, ACME_201, "LogStatusNotification", after, root,
                           r["filename"])
    text = "".join(files.values()).lower()
    assert "beta" not in text and hub.beta.url.lower() not in text
    assert ACME_16 in files["gateway.log"]


async def test_customer_information_clears_only_the_requesting_operators_data(
        hub: Hub) -> None:
    journal = hub.gw.journal
    assert journal is not None
    token = {"idToken": TOKEN, "type": "ISO14443"}
    entry = {"idToken": token, "idTokenInfo": {"status": "Accepted"}}
    for csms, sid in ((hub.acme, ACME_201), (hub.beta, BETA_201)):
        r = await csms.call(sid, "SendLocalList", {
            "versionNumber": 1, "updateType": "Full", "localAuthorizationList": [entry]})
        assert r["status"] == "Accepted"
    h = journal.hash_id_tag(TOKEN)

    after = hub.beta.last_seq()
    r = await hub.beta.call(BETA_201, "CustomerInformation", {
        "requestId": 1, "report": True, "clear": True, "idToken": token})
    assert r == {"status": "Accepted"}
    msg = await hub.beta.wait_for(BETA_201, "NotifyCustomerInformation",
                                  lambda p: not p["tbc"], after=after, timeout=15)
    # One item removed: BETA's own entry; the count says nothing of what ACME holds.
    assert "Cleared: 1 stored item(s) removed." in msg.payload["data"]
    assert journal.auth.auth_list_entry(BETA_201, h) is None
    assert journal.auth.auth_list_entry(ACME_201, h) is not None  # ACME's customer record stays


async def test_a_single_operators_shared_store_still_serves_its_tls_after_the_upgrade(
        tmp_path: Path, sim: SimulatorThread) -> None:
    """A gateway from before trust domains left its one store in certs/: with one operator, the
    root its CSMS installed still authenticates that CSMS (migrate_shared_store)."""
    ca = trustme.CA()
    data_dir = tmp_path / "var"
    assert CertificateStore(data_dir / "certs").install(
        ROOT, ca.cert_pem.bytes().decode()) == "Accepted"
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    csms = CsmsServer(Policy(passwords={"SOLO-01": "pw-solo-12345"}))
    await csms.start(ssl_context=server)
    cfg = Config.with_endpoints(
        [{"id": "SOLO-01", "csms_url": csms.url, "security_profile": 2,
          "password": "pw-solo-12345"}],  # no ca_file: the installed root is the only trust
        gateway={"data_dir": data_dir, "metrics_listen": ""},
        pcs={"port": sim.port, "timeout_ms": 400})
    gw = Gateway(cfg)
    await gw.start()
    try:
        await csms.wait_for("SOLO-01", "BootNotification", timeout=20)
        r = await csms.call("SOLO-01", "GetInstalledCertificateIds", {"certificateType": ROOT})
        assert r["certificateHashData"] == [
            hash_data(x509.load_pem_x509_certificate(ca.cert_pem.bytes()))]
        assert not list((data_dir / "certs").glob(f"{ROOT}/*.pem"))  # moved to the operator
    finally:
        async with asyncio.timeout(10):
            await gw.stop(drain_s=0)
        async with asyncio.timeout(10):
            await csms.stop()
