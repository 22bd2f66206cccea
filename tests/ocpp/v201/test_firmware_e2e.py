"""2.0.1 L Firmware end to end: UpdateFirmware (signed and not) through the gateway's one
updater, real HTTP/FTP servers on loopback, a real installer command, the real certificate store
and the demo CSMS (ocpp.v201)."""

from __future__ import annotations

import base64
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trustme
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from transfer_servers import ftp_server, http_server, refused_url
from waiting import until

from bess_gateway.demo.csms import CsmsServer
from bess_gateway.domain.timefmt import iso
from bess_gateway.gateway import Gateway
from bess_gateway.ocpp.v201.firmware import boot_reason
from tests.conftest import GatewayFactory

SID = "DEMO-01"
FIRMWARE = b"BESS-GATEWAY-FIRMWARE-2.0.1\x00\x01\x02" * 100


async def booted(gw: Gateway, csms: CsmsServer, sid: str = SID) -> None:
    await csms.wait_for(sid, "BootNotification", timeout=20)
    await until(lambda: gw.endpoints[sid].booted.is_set(), 20)


def installer(tmp_path: Path, exit_code: int = 0) -> tuple[str, Path]:
    record = tmp_path / f"installed-{exit_code}.txt"
    script = tmp_path / f"install-{exit_code}.sh"
    script.write_text(f'#!/bin/sh\necho "$1" >> "{record}"\nexit {exit_code}\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script), record


def installed_bytes(record: Path) -> bytes:
    """The firmware file the installer was given."""
    return Path(record.read_text().strip()).read_bytes()


def notifications(csms: CsmsServer, after: int, sid: str = SID) -> list[dict[str, Any]]:
    return [m.payload for m in csms.of(sid, "FirmwareStatusNotification") if m.seq > after]


async def wait_status(csms: CsmsServer, status: str, after: int, timeout: float = 20) -> None:
    await csms.wait_for(SID, "FirmwareStatusNotification", lambda p: p["status"] == status,
                        after=after, timeout=timeout)


def now(delta_s: float = 0) -> str:
    return iso(datetime.now(UTC) + timedelta(seconds=delta_s))


@pytest.fixture
def manufacturer() -> trustme.CA:
    return trustme.CA(organization_name="BESS Manufacturer Root")


def signer(ca: trustme.CA) -> tuple[str, ec.EllipticCurvePrivateKey]:
    leaf = ca.issue_cert("firmware-signer.bess-gateway.test")
    key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return leaf.cert_chain_pems[0].bytes().decode(), key


def sign(key: ec.EllipticCurvePrivateKey, data: bytes) -> str:
    return base64.b64encode(key.sign(data, ec.ECDSA(hashes.SHA256()))).decode()


async def test_unsigned_update_installs_with_request_id(
        gateway_factory: GatewayFactory, csms: CsmsServer, tmp_path: Path) -> None:
    gw = await gateway_factory(1, ocpp="2.0.1")
    await booted(gw, csms)
    assert gw.maintenance is not None
    command, record = installer(tmp_path)
    gw.maintenance.firmware.installer = command
    with http_server(tmp_path / "www") as (base, store):
        (tmp_path / "www" / "fw.bin").write_bytes(FIRMWARE)
        start = csms.last_seq()
        r = await csms.call(SID, "UpdateFirmware", {
            "requestId": 11, "retries": 0,
            "firmware": {"location": base + "fw.bin", "retrieveDateTime": now()}})
        assert r == {"status": "Accepted"}
        await wait_status(csms, "InstallRebooting", start)
        assert store.gets == ["/fw.bin"]
    sent = notifications(csms, start)
    assert [p["status"] for p in sent] == ["Downloading", "Downloaded", "Installing",
                                           "InstallRebooting"]
    assert {p["requestId"] for p in sent} == {11}
    assert installed_bytes(record) == FIRMWARE
    await until(lambda: gw.restart_requested.is_set())
    await csms.wait_for(SID, "SecurityEventNotification",
                        lambda p: p["type"] == "FirmwareUpdated", after=start)

    # The restart that activates it (L01): boot reason FirmwareUpdate, then Installed, once.
    await gw.stop(drain_s=0)
    before = csms.last_seq()
    gw2 = await gateway_factory(1, ocpp="2.0.1", data_dir=gw.config.gateway.data_dir)
    boot = await csms.wait_for(SID, "BootNotification", after=before, timeout=20)
    assert boot.payload["reason"] == "FirmwareUpdate"
    await wait_status(csms, "Installed", before)
    assert [p["status"] for p in notifications(csms, before)] == ["Installed"]
    assert notifications(csms, before)[0]["requestId"] == 11
    # Reported: a later restart is an ordinary power-up with nothing more to report. (Once the
    # gateway has taken the CSMS's answer: stopped before, it reports Installed again.)
    await until(lambda: boot_reason(gw2.endpoints[SID].ctx) is None)
    await gw2.stop(drain_s=0)
    before = csms.last_seq()
    await gateway_factory(1, ocpp="2.0.1", data_dir=gw.config.gateway.data_dir)
    boot = await csms.wait_for(SID, "BootNotification", after=before, timeout=20)
    assert boot.payload["reason"] == "PowerUp"


async def test_signed_update_good_and_bad_signature_and_certificate(
        gateway_factory: GatewayFactory, csms: CsmsServer, tmp_path: Path,
        manufacturer: trustme.CA) -> None:
    gw = await gateway_factory(1, ocpp="2.0.1")
    await booted(gw, csms)
    assert gw.maintenance is not None and gw.certificates is not None
    assert gw.certificates.install("ManufacturerRootCertificate",
                                   manufacturer.cert_pem.bytes().decode()) == "Accepted"
    command, record = installer(tmp_path)
    gw.maintenance.firmware.installer = command
    cert_pem, key = signer(manufacturer)
    with http_server(tmp_path / "www") as (base, _):
        (tmp_path / "www" / "tampered.bin").write_bytes(FIRMWARE + b"x")
        start = csms.last_seq()
        r = await csms.call(SID, "UpdateFirmware", {"requestId": 21, "firmware": {
            "location": base + "tampered.bin", "retrieveDateTime": now(),
            "signingCertificate": cert_pem, "signature": sign(key, FIRMWARE)}})
        assert r == {"status": "Accepted"}
        await wait_status(csms, "InvalidSignature", start)
        assert [p["status"] for p in notifications(csms, start)] == [
            "Downloading", "Downloaded", "InvalidSignature"]
        await csms.wait_for(SID, "SecurityEventNotification",
                            lambda p: p["type"] == "InvalidFirmwareSignature", after=start)
        assert not record.exists()
        assert os.listdir(gw.config.gateway.data_dir / "firmware") == []

        (tmp_path / "www" / "good.bin").write_bytes(FIRMWARE)
        start = csms.last_seq()
        r = await csms.call(SID, "UpdateFirmware", {"requestId": 22, "retries": 0, "firmware": {
            "location": base + "good.bin", "retrieveDateTime": now(),
            "signingCertificate": cert_pem, "signature": sign(key, FIRMWARE)}})
        assert r == {"status": "Accepted"}
        await wait_status(csms, "InstallRebooting", start)
    sent = notifications(csms, start)
    assert [p["status"] for p in sent] == [
        "Downloading", "Downloaded", "SignatureVerified", "Installing", "InstallRebooting"]
    assert {p["requestId"] for p in sent} == {22}
    assert installed_bytes(record) == FIRMWARE


async def test_refusals_before_anything_runs(
        gateway_factory: GatewayFactory, csms: CsmsServer, manufacturer: trustme.CA) -> None:
    gw = await gateway_factory(1, ocpp="2.0.1")
    await booted(gw, csms)
    assert gw.certificates is not None
    gw.certificates.install("ManufacturerRootCertificate", manufacturer.cert_pem.bytes().decode())
    start = csms.last_seq()
    # A signer no installed root issued.
    other_cert, other_key = signer(trustme.CA())
    r = await csms.call(SID, "UpdateFirmware", {"requestId": 31, "firmware": {
        "location": "http://127.0.0.1:1/x.bin", "retrieveDateTime": now(),
        "signingCertificate": other_cert, "signature": sign(other_key, FIRMWARE)}})
    assert r == {"status": "InvalidCertificate"}
    await csms.wait_for(SID, "SecurityEventNotification",
                        lambda p: p["type"] == "InvalidFirmwareSigningCertificate", after=start)
    # A signature without its certificate, a signature that is no Base64, a bad URL.
    cert_pem, key = signer(manufacturer)
    for firmware in ({"signature": sign(key, FIRMWARE)},
                     {"signingCertificate": cert_pem, "signature": "%%%not base64%%%"},
                     {"location": "gopher://127.0.0.1/fw"}):
        r = await csms.call(SID, "UpdateFirmware", {"requestId": 32, "firmware": {
            "location": "http://127.0.0.1:1/x.bin", "retrieveDateTime": now(), **firmware}})
        assert r["status"] == "Rejected"
        assert r["statusInfo"]["reasonCode"]
    assert notifications(csms, start) == []
    assert gw.maintenance is not None and not gw.maintenance.firmware.busy


async def test_download_failed_then_scheduled_update_replaced_and_triggered(
        gateway_factory: GatewayFactory, csms: CsmsServer, tmp_path: Path) -> None:
    gw = await gateway_factory(2, ocpp="mixed")  # DEMO-01 1.6, DEMO-02 2.0.1
    sid = "DEMO-02"
    await booted(gw, csms, "DEMO-01")
    await booted(gw, csms, sid)
    assert gw.maintenance is not None
    with ftp_server(tmp_path / "ftp") as base:
        start = csms.last_seq()
        r = await csms.call(sid, "UpdateFirmware", {"requestId": 41, "retries": 1,
                                                    "retryInterval": 0, "firmware": {
            "location": base + "missing.bin", "retrieveDateTime": now()}})
        assert r == {"status": "Accepted"}
        await csms.wait_for(sid, "FirmwareStatusNotification",
                            lambda p: p["status"] == "DownloadFailed", after=start, timeout=20)
    assert [p["status"] for p in notifications(csms, start, sid)] == [
        "Downloading", "DownloadFailed"]

    # An update scheduled for later is replaced by the next request (AcceptedCanceled).
    start = csms.last_seq()
    r = await csms.call(sid, "UpdateFirmware", {"requestId": 42, "firmware": {
        "location": refused_url("http"), "retrieveDateTime": now(3600)}})
    assert r == {"status": "Accepted"}
    await csms.wait_for(sid, "FirmwareStatusNotification",
                        lambda p: p["status"] == "DownloadScheduled", after=start)
    trig = csms.last_seq()
    r = await csms.call(sid, "TriggerMessage", {"requestedMessage": "FirmwareStatusNotification"})
    assert r == {"status": "Accepted"}
    got = await csms.wait_for(sid, "FirmwareStatusNotification", after=trig)
    assert got.payload == {"status": "DownloadScheduled", "requestId": 42}

    # The other endpoint cannot take the gateway's one update from this one.
    r = await csms.call("DEMO-01", "SignedUpdateFirmware", {"requestId": 1, "firmware": {
        "location": refused_url("http"), "retrieveDateTime": now(),
        "signingCertificate": "x", "signature": "eA=="}})
    assert r["status"] in ("Rejected", "InvalidCertificate")
    assert gw.maintenance.firmware.request is not None
    assert gw.maintenance.firmware.request.request_id == 42

    r = await csms.call(sid, "UpdateFirmware", {"requestId": 43, "firmware": {
        "location": refused_url("http"), "retrieveDateTime": now(3600)}})
    assert r == {"status": "AcceptedCanceled"}
    trig = csms.last_seq()
    await csms.call(sid, "TriggerMessage", {"requestedMessage": "FirmwareStatusNotification"})
    got = await csms.wait_for(sid, "FirmwareStatusNotification", after=trig)
    assert got.payload == {"status": "DownloadScheduled", "requestId": 43}
    # The 1.6 endpoint's own request is kept (its answer has no status): it runs after this one.
    assert await csms.call("DEMO-01", "UpdateFirmware", {
        "location": refused_url("http"), "retrieveDate": now()}) == {}
    assert gw.maintenance.firmware.owner == sid
    assert [owner for owner, _ in gw.maintenance.firmware.pending] == ["DEMO-01"]
    assert gw.journal is not None and "DEMO-01" in (gw.journal.facts.get_fact("firmware_pending")
                                                    or "")


async def test_a_request_while_installing_is_rejected_and_one_while_downloaded_replaces(
        gateway_factory: GatewayFactory, csms: CsmsServer, tmp_path: Path) -> None:
    """L01.FR.24 (replace what is not installing yet) and L01.FR.27 (Rejected while installing)."""
    gw = await gateway_factory(1, ocpp="2.0.1")
    await booted(gw, csms)
    assert gw.maintenance is not None
    record, gate = tmp_path / "gated.txt", tmp_path / "gate"
    script = tmp_path / "gated.sh"
    script.write_text(f'#!/bin/sh\necho "$1" >> "{record}"\n'
                      f'while [ ! -e "{gate}" ]; do sleep 0.05; done\nexit 0\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    gw.maintenance.firmware.installer = str(script)
    second = FIRMWARE + b"second"
    with http_server(tmp_path / "www") as (base, store):
        (tmp_path / "www" / "fw-1.bin").write_bytes(FIRMWARE)
        (tmp_path / "www" / "fw-2.bin").write_bytes(second)
        start = csms.last_seq()
        # Downloaded, then waiting for its installDateTime: replaced (AcceptedCanceled).
        r = await csms.call(SID, "UpdateFirmware", {"requestId": 51, "retries": 0, "firmware": {
            "location": base + "fw-1.bin", "retrieveDateTime": now(),
            "installDateTime": now(3600)}})
        assert r == {"status": "Accepted"}
        await wait_status(csms, "InstallScheduled", start)
        r = await csms.call(SID, "UpdateFirmware", {"requestId": 52, "retries": 0, "firmware": {
            "location": base + "fw-2.bin", "retrieveDateTime": now()}})
        assert r == {"status": "AcceptedCanceled"}
        await wait_status(csms, "Installing", start)
        # Installing: an install is not cut off (L01.FR.27).
        r = await csms.call(SID, "UpdateFirmware", {"requestId": 53, "firmware": {
            "location": base + "fw-1.bin", "retrieveDateTime": now()}})
        assert r["status"] == "Rejected" and r["statusInfo"]["reasonCode"]
        gate.touch()
        await wait_status(csms, "InstallRebooting", start)
        assert store.gets == ["/fw-1.bin", "/fw-2.bin"]
    sent = [(p["status"], p["requestId"]) for p in notifications(csms, start)]
    assert sent == [("Downloading", 51), ("Downloaded", 51), ("InstallScheduled", 51),
                    ("Downloading", 52), ("Downloaded", 52), ("Installing", 52),
                    ("InstallRebooting", 52)]
    assert installed_bytes(record) == second
