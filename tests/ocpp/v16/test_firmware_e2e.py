"""1.6 Firmware Management end to end: a real CSMS, the simulator, real HTTP/FTP servers on
loopback, a real installer command, and SignedUpdateFirmware against the real certificate store."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trustme
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from transfer_servers import ftp_server, http_server, refused_url
from waiting import until

from bess_gateway.config import PcsConfig
from bess_gateway.demo.csms import CsmsServer
from bess_gateway.demo.run import demo_config
from bess_gateway.domain.timefmt import iso
from bess_gateway.gateway import Gateway, run_gateway
from bess_gateway.maintenance.firmware import EXIT_RESTART
from bess_gateway.sim.server import SimulatorThread

FIRMWARE = b"BESS-GATEWAY-FIRMWARE-2.0\x00\x01\x02" * 100


async def booted(gw: Gateway, csms: CsmsServer) -> str:
    (sid,) = list(gw.endpoints)
    await csms.wait_for(sid, "BootNotification", timeout=20)
    await until(lambda: gw.endpoints[sid].booted.is_set(), 20)
    return sid


def installer(tmp_path: Path, exit_code: int = 0) -> tuple[str, Path]:
    """A tiny installer that records its argument (and the file's size) and exits."""
    record = tmp_path / f"installed-{exit_code}.txt"
    script = tmp_path / f"install-{exit_code}.sh"
    script.write_text(f'#!/bin/sh\necho "$1" >> "{record}"\nexit {exit_code}\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script), record


def installed_file(record: Path) -> Path:
    """The firmware file the installer was given."""
    return Path(record.read_text().strip())


def statuses(csms: CsmsServer, sid: str, action: str = "FirmwareStatusNotification",
             after: int = -1) -> list[str]:
    return [m.payload["status"] for m in csms.of(sid, action) if m.seq > after]


async def wait_status(csms: CsmsServer, sid: str, status: str, *, after: int = -1,
                      action: str = "FirmwareStatusNotification", timeout: float = 15) -> int:
    msg = await csms.wait_for(sid, action, lambda p: p["status"] == status, after=after,
                              timeout=timeout)
    return msg.seq


def now() -> str:
    return iso(datetime.now(UTC))


async def test_update_firmware_installs_after_the_open_transaction_ends(
        gateway_factory, csms: CsmsServer, tmp_path: Path) -> None:
    gw = await gateway_factory(1)
    sid = await booted(gw, csms)
    assert gw.maintenance is not None
    command, record = installer(tmp_path)
    gw.maintenance.firmware.installer = command  # as [gateway] firmware_installer would set it

    after = csms.last_seq()
    assert await csms.call(sid, "RemoteStartTransaction", {"idTag": "T1", "connectorId": 1}) == {
        "status": "Accepted"}
    await csms.wait_for(sid, "StartTransaction", after=after)
    tx = await csms.wait_until(lambda: next(
        (t for t in csms.transactions.values() if t.station == sid and t.meter_stop is None),
        None))

    with http_server(tmp_path / "www") as (base, store):
        (tmp_path / "www" / "fw-2.0.bin").write_bytes(FIRMWARE)
        start = csms.last_seq()
        assert await csms.call(sid, "UpdateFirmware", {
            "location": base + "fw-2.0.bin", "retrieveDate": now(), "retries": 1,
            "retryInterval": 1}) == {}
        await wait_status(csms, sid, "Downloaded", after=start)
        assert store.gets == ["/fw-2.0.bin"]

        # Downloaded, but a session is open: nothing is installed while it runs.
        await until(lambda: gw.maintenance.firmware.status == "Downloaded")
        trig = csms.last_seq()
        assert await csms.call(sid, "TriggerMessage", {
            "requestedMessage": "FirmwareStatusNotification"}) == {"status": "Accepted"}
        await wait_status(csms, sid, "Downloaded", after=trig)
        assert not record.exists()
        assert "Installing" not in statuses(csms, sid, after=start)

        stop_at = csms.last_seq()
        assert await csms.call(sid, "RemoteStopTransaction", {"transactionId": tx.id}) == {
            "status": "Accepted"}
        await wait_status(csms, sid, "Installed", after=start)

    stop_seq = (await csms.wait_for(sid, "StopTransaction", after=stop_at)).seq
    installing = await wait_status(csms, sid, "Installing", after=start)
    assert stop_seq < installing
    assert [s for s in statuses(csms, sid, after=start) if s != "Downloaded"] == [
        "Downloading", "Installing", "Installed"]
    assert statuses(csms, sid, after=start).count("Downloaded") == 2  # event + trigger
    installed_path = installed_file(record)
    assert installed_path.read_bytes() == FIRMWARE
    assert installed_path.parent == gw.config.gateway.data_dir / "firmware"
    # The process restarts after an install: run_gateway exits with the restart code.
    await until(lambda: gw.restart_requested.is_set())


async def test_download_failed_after_retries(
        gateway_factory, csms: CsmsServer, tmp_path: Path) -> None:
    gw = await gateway_factory(1)
    sid = await booted(gw, csms)
    command, record = installer(tmp_path)
    gw.maintenance.firmware.installer = command
    with http_server(tmp_path / "www") as (base, store):
        start = csms.last_seq()
        await csms.call(sid, "UpdateFirmware", {
            "location": base + "missing.bin", "retrieveDate": now(), "retries": 2,
            "retryInterval": 0})
        await wait_status(csms, sid, "DownloadFailed", after=start)
        assert store.gets == ["/missing.bin"] * 3  # 1 + retries
    assert statuses(csms, sid, after=start) == ["Downloading", "DownloadFailed"]

    # Connection refused (FTP), no retries.
    start = csms.last_seq()
    await csms.call(sid, "UpdateFirmware", {
        "location": refused_url("ftp"), "retrieveDate": now(), "retries": 0})
    await wait_status(csms, sid, "DownloadFailed", after=start)
    assert statuses(csms, sid, after=start) == ["Downloading", "DownloadFailed"]
    assert not record.exists()
    assert not gw.restart_requested.is_set()
    assert gw.maintenance.firmware.status == "Idle"

    # An unusable location is a DownloadFailed too (UpdateFirmware.conf has no status).
    start = csms.last_seq()
    assert await csms.call(sid, "UpdateFirmware", {
        "location": "gopher://127.0.0.1/fw", "retrieveDate": now()}) == {}
    await wait_status(csms, sid, "DownloadFailed", after=start)


async def test_installation_failed_when_the_installer_fails(
        gateway_factory, csms: CsmsServer, tmp_path: Path) -> None:
    gw = await gateway_factory(1)
    sid = await booted(gw, csms)
    command, record = installer(tmp_path, exit_code=3)
    gw.maintenance.firmware.installer = command
    with ftp_server(tmp_path / "ftp") as base:
        (tmp_path / "ftp" / "fw.bin").write_bytes(FIRMWARE)
        start = csms.last_seq()
        await csms.call(sid, "UpdateFirmware", {"location": base + "fw.bin",
                                                "retrieveDate": now()})
        await wait_status(csms, sid, "InstallationFailed", after=start)
    assert statuses(csms, sid, after=start) == [
        "Downloading", "Downloaded", "Installing", "InstallationFailed"]
    assert installed_file(record).read_bytes() == FIRMWARE  # it did run
    assert not gw.restart_requested.is_set()

    # No installer configured: InstallationFailed as well.
    gw.maintenance.firmware.installer = None
    with ftp_server(tmp_path / "ftp") as base:
        start = csms.last_seq()
        await csms.call(sid, "UpdateFirmware", {"location": base + "fw.bin",
                                                "retrieveDate": now()})
        await wait_status(csms, sid, "InstallationFailed", after=start)
    assert not gw.restart_requested.is_set()

    trig = csms.last_seq()
    assert await csms.call(sid, "TriggerMessage", {
        "requestedMessage": "FirmwareStatusNotification", "connectorId": 1}) == {
        "status": "Accepted"}
    await wait_status(csms, sid, "Idle", after=trig)


async def test_supported_feature_profiles_lists_firmware_management(
        gateway_factory, csms: CsmsServer) -> None:
    gw = await gateway_factory(1)
    sid = await booted(gw, csms)
    r = await csms.call(sid, "GetConfiguration", {"key": ["SupportedFeatureProfiles"]})
    assert "FirmwareManagement" in r["configurationKey"][0]["value"].split(",")


# -- SignedUpdateFirmware ------------------------------------------------------------------------
def signer(ca: trustme.CA) -> tuple[str, ec.EllipticCurvePrivateKey]:
    leaf = ca.issue_cert("firmware-signer.bess-gateway.test")
    key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return leaf.cert_chain_pems[0].bytes().decode(), key


def sign(key: ec.EllipticCurvePrivateKey, data: bytes) -> str:
    return base64.b64encode(key.sign(data, ec.ECDSA(hashes.SHA256()))).decode()


@pytest.fixture
def manufacturer() -> trustme.CA:
    return trustme.CA(organization_name="BESS Manufacturer Root")


async def test_signed_update_firmware_good_signature_installs(
        gateway_factory, csms: CsmsServer, tmp_path: Path, manufacturer: trustme.CA) -> None:
    gw = await gateway_factory(1)
    sid = await booted(gw, csms)
    assert gw.certificates is not None
    assert gw.certificates.install("ManufacturerRootCertificate",
                                   manufacturer.cert_pem.bytes().decode()) == "Accepted"
    command, record = installer(tmp_path)
    gw.maintenance.firmware.installer = command
    cert_pem, key = signer(manufacturer)
    with http_server(tmp_path / "www") as (base, _):
        (tmp_path / "www" / "signed.bin").write_bytes(FIRMWARE)
        start = csms.last_seq()
        r = await csms.call(sid, "SignedUpdateFirmware", {"requestId": 42, "retries": 0,
                                                          "firmware": {
            "location": base + "signed.bin", "retrieveDateTime": now(),
            "signingCertificate": cert_pem, "signature": sign(key, FIRMWARE)}})
        assert r == {"status": "Accepted"}
        await wait_status(csms, sid, "Installed", after=start,
                          action="SignedFirmwareStatusNotification")
    msgs = [m.payload for m in csms.of(sid, "SignedFirmwareStatusNotification") if m.seq > start]
    assert [p["status"] for p in msgs] == [
        "Downloading", "Downloaded", "SignatureVerified", "Installing", "Installed"]
    assert {p["requestId"] for p in msgs} == {42}
    assert installed_file(record).read_bytes() == FIRMWARE
    await until(lambda: gw.restart_requested.is_set())
    await csms.wait_for(sid, "SecurityEventNotification",
                        lambda p: p["type"] == "FirmwareUpdated", after=start)


async def test_signed_update_firmware_bad_signature_installs_nothing(
        gateway_factory, csms: CsmsServer, tmp_path: Path, manufacturer: trustme.CA) -> None:
    gw = await gateway_factory(1)
    sid = await booted(gw, csms)
    gw.certificates.install("ManufacturerRootCertificate",
                            manufacturer.cert_pem.bytes().decode())
    command, record = installer(tmp_path)
    gw.maintenance.firmware.installer = command
    cert_pem, key = signer(manufacturer)
    with http_server(tmp_path / "www") as (base, _):
        (tmp_path / "www" / "tampered.bin").write_bytes(FIRMWARE + b"tampered")
        start = csms.last_seq()
        r = await csms.call(sid, "SignedUpdateFirmware", {"requestId": 7, "firmware": {
            "location": base + "tampered.bin", "retrieveDateTime": now(),
            "signingCertificate": cert_pem, "signature": sign(key, FIRMWARE)}})
        assert r == {"status": "Accepted"}
        await wait_status(csms, sid, "InvalidSignature", after=start,
                          action="SignedFirmwareStatusNotification")
    assert statuses(csms, sid, "SignedFirmwareStatusNotification", after=start) == [
        "Downloading", "Downloaded", "InvalidSignature"]
    assert not record.exists()
    assert not gw.restart_requested.is_set()
    assert os.listdir(gw.config.gateway.data_dir / "firmware") == []
    security_log = (gw.config.gateway.data_dir / "logs" / "security.log").read_text()
    assert "InvalidFirmwareSignature" in security_log
    await csms.wait_for(sid, "SecurityEventNotification",
                        lambda p: p["type"] == "InvalidFirmwareSignature", after=start)

    # A signer the installed roots did not issue: refused at once.
    other_cert, other_key = signer(trustme.CA())
    r = await csms.call(sid, "SignedUpdateFirmware", {"requestId": 8, "firmware": {
        "location": "http://127.0.0.1:1/x.bin", "retrieveDateTime": now(),
        "signingCertificate": other_cert, "signature": sign(other_key, FIRMWARE)}})
    assert r == {"status": "InvalidCertificate"}
    await csms.wait_for(sid, "SecurityEventNotification",
                        lambda p: p["type"] == "InvalidFirmwareSigningCertificate", after=start)


async def test_run_exits_with_the_restart_code_after_an_install(
        csms: CsmsServer, sim: SimulatorThread, tmp_path: Path) -> None:
    """The real `run` path: [gateway] firmware_installer from the config, exit code 75."""
    command, record = installer(tmp_path)
    cfg = demo_config(tmp_path / "var", csms.url, sim.port, 1)
    cfg = dataclasses.replace(
        cfg, gateway=dataclasses.replace(cfg.gateway, firmware_installer=command),
        pcs=dataclasses.replace(PcsConfig(), port=sim.port, timeout_ms=400))
    stop = asyncio.Event()
    run = asyncio.create_task(run_gateway(cfg, stop=stop))
    try:
        sid = cfg.endpoints[0].id
        await csms.wait_for(sid, "BootNotification", timeout=20)
        await csms.wait_until(lambda: sid in csms.stations)
        with http_server(tmp_path / "www") as (base, _):
            (tmp_path / "www" / "fw.bin").write_bytes(FIRMWARE)
            await csms.call(sid, "UpdateFirmware", {"location": base + "fw.bin",
                                                    "retrieveDate": now()})
            async with asyncio.timeout(20):
                code = await asyncio.shield(run)
        assert code == EXIT_RESTART
        assert installed_file(record).read_bytes() == FIRMWARE
        assert statuses(csms, sid)[-1] == "Installed"
    finally:
        stop.set()
        async with asyncio.timeout(15):
            await asyncio.gather(run, return_exceptions=True)


# -- a second request while one runs (2.0.1 L01.FR.24, followed by 1.6 too) ------------------------
def gated_installer(tmp_path: Path, exit_code: int = 0) -> tuple[str, Path, Path]:
    """An installer that records its argument, then waits until the gate file exists: the
    test decides how long the gateway stays Installing."""
    record = tmp_path / f"gated-{exit_code}.txt"
    gate = tmp_path / f"gate-{exit_code}"
    script = tmp_path / f"gated-{exit_code}.sh"
    script.write_text(f'#!/bin/sh\necho "$1" >> "{record}"\n'
                      f'while [ ! -e "{gate}" ]; do sleep 0.05; done\nexit {exit_code}\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script), record, gate


def installed_files(record: Path) -> list[bytes]:
    return [Path(line).read_bytes() for line in record.read_text().split()]


async def test_a_second_update_replaces_one_not_installing_yet(
        gateway_factory, csms: CsmsServer, tmp_path: Path) -> None:
    """Seen in the field: a second UpdateFirmware right after the first one's Downloaded got
    its empty answer and no status ever followed."""
    gw = await gateway_factory(1)
    sid = await booted(gw, csms)
    command, record = installer(tmp_path)
    gw.maintenance.firmware.installer = command
    after = csms.last_seq()
    await csms.call(sid, "RemoteStartTransaction", {"idTag": "T1", "connectorId": 1})
    await csms.wait_for(sid, "StartTransaction", after=after)
    tx = await csms.wait_until(lambda: next(
        (t for t in csms.transactions.values() if t.station == sid and t.meter_stop is None),
        None))
    second = FIRMWARE + b"second"
    with http_server(tmp_path / "www") as (base, store):
        (tmp_path / "www" / "fw-1.bin").write_bytes(FIRMWARE)
        (tmp_path / "www" / "fw-2.bin").write_bytes(second)
        start = csms.last_seq()
        await csms.call(sid, "UpdateFirmware", {"location": base + "fw-1.bin",
                                                "retrieveDate": now(), "retries": 0})
        first_done = await wait_status(csms, sid, "Downloaded", after=start)
        # The first job waits for the session to end: not installing yet, so it is replaced.
        assert await csms.call(sid, "UpdateFirmware", {"location": base + "fw-2.bin",
                                                       "retrieveDate": now(), "retries": 0}) == {}
        await wait_status(csms, sid, "Downloaded", after=first_done)
        assert store.gets == ["/fw-1.bin", "/fw-2.bin"]
        await csms.call(sid, "RemoteStopTransaction", {"transactionId": tx.id})
        await wait_status(csms, sid, "Installed", after=start)
    assert statuses(csms, sid, after=start) == [
        "Downloading", "Downloaded", "Downloading", "Downloaded", "Installing", "Installed"]
    assert installed_files(record) == [second]  # only the replacement was installed


async def test_an_update_ordered_while_installing_runs_when_the_install_fails(
        gateway_factory, csms: CsmsServer, tmp_path: Path) -> None:
    gw = await gateway_factory(1)
    sid = await booted(gw, csms)
    command, record, gate = gated_installer(tmp_path, exit_code=4)
    gw.maintenance.firmware.installer = command
    second = FIRMWARE + b"second"
    with ftp_server(tmp_path / "ftp") as base:
        (tmp_path / "ftp" / "fw-1.bin").write_bytes(FIRMWARE)
        (tmp_path / "ftp" / "fw-2.bin").write_bytes(second)
        start = csms.last_seq()
        await csms.call(sid, "UpdateFirmware", {"location": base + "fw-1.bin",
                                                "retrieveDate": now()})
        await wait_status(csms, sid, "Installing", after=start)
        # An install is not cut off (L01.FR.27); 1.6's answer has no status: kept, not dropped.
        assert await csms.call(sid, "UpdateFirmware", {"location": base + "fw-2.bin",
                                                       "retrieveDate": now()}) == {}
        gate.touch()
        first_failed = await wait_status(csms, sid, "InstallationFailed", after=start)
        await wait_status(csms, sid, "InstallationFailed", after=first_failed)
    assert statuses(csms, sid, after=start) == [
        "Downloading", "Downloaded", "Installing", "InstallationFailed",
        "Downloading", "Downloaded", "Installing", "InstallationFailed"]
    assert installed_files(record) == [FIRMWARE, second]
    assert gw.maintenance.firmware.pending == []
    assert gw.journal is not None and gw.journal.facts.get_fact("firmware_pending") is None


async def test_an_update_ordered_while_installing_survives_the_restart(
        gateway_factory, csms: CsmsServer, tmp_path: Path, manufacturer: trustme.CA) -> None:
    gw = await gateway_factory(1)
    sid = await booted(gw, csms)
    assert gw.certificates is not None
    gw.certificates.install("ManufacturerRootCertificate", manufacturer.cert_pem.bytes().decode())
    command, record, gate = gated_installer(tmp_path)
    gw.maintenance.firmware.installer = command
    cert_pem, key = signer(manufacturer)
    second = FIRMWARE + b"second"
    with http_server(tmp_path / "www") as (base, store):
        (tmp_path / "www" / "fw-1.bin").write_bytes(FIRMWARE)
        (tmp_path / "www" / "fw-2.bin").write_bytes(second)
        start = csms.last_seq()
        await csms.call(sid, "UpdateFirmware", {"location": base + "fw-1.bin",
                                                "retrieveDate": now()})
        await wait_status(csms, sid, "Installing", after=start)
        assert await csms.call(sid, "UpdateFirmware", {"location": base + "fw-2.bin",
                                                       "retrieveDate": now()}) == {}
        # A signed request has a status to refuse with while installing (L01.FR.27).
        r = await csms.call(sid, "SignedUpdateFirmware", {"requestId": 5, "firmware": {
            "location": base + "fw-2.bin", "retrieveDateTime": now(),
            "signingCertificate": cert_pem, "signature": sign(key, second)}})
        assert r == {"status": "Rejected"}
        gate.touch()
        await wait_status(csms, sid, "Installed", after=start)
        await until(lambda: gw.restart_requested.is_set())
        assert store.gets == ["/fw-1.bin"]

        # The restart that the install asked for: the kept request runs in the new process.
        await gw.stop(drain_s=0)
        before = csms.last_seq()
        gw2 = await gateway_factory(1, data_dir=gw.config.gateway.data_dir)
        assert gw2.maintenance is not None
        gw2.maintenance.firmware.installer = command
        await wait_status(csms, sid, "Installed", after=before)
        assert store.gets == ["/fw-1.bin", "/fw-2.bin"]
    assert statuses(csms, sid, after=start) == [
        "Downloading", "Downloaded", "Installing", "Installed",
        "Downloading", "Downloaded", "Installing", "Installed"]
    assert installed_files(record) == [FIRMWARE, second]
    assert gw2.journal is not None and gw2.journal.facts.get_fact("firmware_pending") is None


async def test_signed_update_replaces_a_scheduled_one_with_accepted_canceled(
        gateway_factory, csms: CsmsServer, manufacturer: trustme.CA) -> None:
    gw = await gateway_factory(1)
    sid = await booted(gw, csms)
    gw.certificates.install("ManufacturerRootCertificate", manufacturer.cert_pem.bytes().decode())
    cert_pem, key = signer(manufacturer)
    later = iso(datetime.now(UTC).replace(year=datetime.now(UTC).year + 1))
    start = csms.last_seq()
    for request_id, expected in ((61, "Accepted"), (62, "AcceptedCanceled")):
        r = await csms.call(sid, "SignedUpdateFirmware", {"requestId": request_id, "firmware": {
            "location": refused_url("http"), "retrieveDateTime": later,
            "signingCertificate": cert_pem, "signature": sign(key, FIRMWARE)}})
        assert r == {"status": expected}
        await csms.wait_for(sid, "SignedFirmwareStatusNotification",
                            lambda p, i=request_id: p == {"status": "DownloadScheduled",
                                                          "requestId": i}, after=start)
    assert gw.maintenance.firmware.request.request_id == 62
