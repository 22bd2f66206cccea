"""Firmware signature checks (RSA and ECDSA signers) and the updater's failure paths."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from transfer_servers import http_server
from waiting import until

from bess_gateway.maintenance.firmware import (
    FirmwareRequest,
    FirmwareUpdater,
    Signed,
    check_signing_certificate,
    decode_signature,
    verify_file,
)

DATA = b"firmware image" * 50


def _sign(key: object, data: bytes) -> bytes:
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key.sign(data, ec.ECDSA(hashes.SHA256()))


def test_verify_file_rsa_and_ecdsa(tmp_path: Path) -> None:
    path = tmp_path / "fw.bin"
    path.write_bytes(DATA)
    for key_type in (trustme.KeyType.RSA, trustme.KeyType.ECDSA):
        ca = trustme.CA(key_type=key_type)
        leaf = ca.issue_cert("signer.test", key_type=key_type)
        key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), None)
        pem = leaf.cert_chain_pems[0].bytes().decode()
        root = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
        assert check_signing_certificate(pem, [root])
        assert verify_file(path, Signed(pem, _sign(key, DATA)))
        assert not verify_file(path, Signed(pem, _sign(key, DATA + b"x")))
        assert not verify_file(path, Signed(pem, b"\x00" * 64))
    other = x509.load_pem_x509_certificate(trustme.CA().cert_pem.bytes())
    assert not check_signing_certificate(pem, [other])
    assert not check_signing_certificate(pem, [])
    assert not check_signing_certificate("not a certificate", [root])
    assert decode_signature("not base64!") is None
    assert decode_signature("AAEC") == b"\x00\x01\x02"


async def test_updater_runs_one_job_at_a_time_and_fails_without_installer(
        tmp_path: Path) -> None:
    restarts: list[int] = []
    updater = FirmwareUpdater(tmp_path / "fw", installer=None, sessions_open=lambda: False,
                              request_restart=lambda: restarts.append(1))
    seen: list[str] = []

    async def notify(status: str) -> None:
        seen.append(status)

    with http_server(tmp_path / "www") as (base, _):
        (tmp_path / "www" / "f.bin").write_bytes(DATA)
        req = FirmwareRequest(location=base + "f.bin", retrieve_at=datetime.now(UTC),
                              retries=0)
        assert updater.start(req, notify, "EP")
        assert not updater.start(req, notify, "EP")  # busy
        await until(lambda: "InstallationFailed" in seen)
    assert seen == ["Downloading", "Downloaded", "Installing", "InstallationFailed"]
    assert not updater.busy and updater.status == "Idle"
    assert restarts == []

    # A notify that fails (CSMS gone) does not stop the job.
    async def broken(status: str) -> None:
        seen.append(status)
        raise ConnectionError("offline")

    seen.clear()
    updater.installer = "true"
    with http_server(tmp_path / "www") as (base, _):
        assert updater.start(FirmwareRequest(location=base + "f.bin",
                                             retrieve_at=datetime.now(UTC)), broken, "EP")
        await until(lambda: restarts == [1])
    assert seen[-1] == "Installed"
    await updater.close()
