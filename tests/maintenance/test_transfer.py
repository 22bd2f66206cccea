"""Downloads and uploads against real FTP and HTTP servers on loopback."""

from __future__ import annotations

from pathlib import Path

import pytest
from transfer_servers import FTP_PASSWORD, ftp_server, http_server, refused_url

from bess_gateway.maintenance.transfer import (
    TransferError,
    check_url,
    download,
    safe_url,
    upload,
    upload_target,
    with_retries,
)


def test_download_and_upload_over_http(tmp_path: Path) -> None:
    with http_server(tmp_path / "www") as (base, store):
        (tmp_path / "www" / "fw.bin").write_bytes(b"firmware-bytes")
        dest = tmp_path / "dl" / "fw.bin"
        dest.parent.mkdir()
        assert download(base + "fw.bin", dest) == len(b"firmware-bytes")
        assert dest.read_bytes() == b"firmware-bytes"
        assert not dest.with_name("fw.bin.part").exists()

        bundle = tmp_path / "bundle.zip"
        bundle.write_bytes(b"zipdata")
        target = upload(base + "incoming/", bundle)
        assert target == base + "incoming/bundle.zip"
        assert (tmp_path / "www" / "incoming" / "bundle.zip").read_bytes() == b"zipdata"
        assert store.puts == ["/incoming/bundle.zip"]


def test_download_and_upload_over_ftp(tmp_path: Path) -> None:
    with ftp_server(tmp_path / "ftp") as base:
        (tmp_path / "ftp" / "fw.bin").write_bytes(b"\x00\x01firmware")
        dest = tmp_path / "fw.bin"
        download(base + "fw.bin", dest)
        assert dest.read_bytes() == b"\x00\x01firmware"
        bundle = tmp_path / "diag.zip"
        bundle.write_bytes(b"PK-data")
        upload(base, bundle)
        assert (tmp_path / "ftp" / "diag.zip").read_bytes() == b"PK-data"


def test_failures_are_transfer_errors_without_the_password(tmp_path: Path) -> None:
    with http_server(tmp_path / "www") as (base, _):
        with pytest.raises(TransferError, match="404"):
            download(base + "missing.bin", tmp_path / "x.bin")
        assert not (tmp_path / "x.bin").exists()
        assert not (tmp_path / "x.bin.part").exists()
    with pytest.raises(TransferError):
        download(refused_url(), tmp_path / "y.bin")
    with ftp_server(tmp_path / "ftp") as base:
        with pytest.raises(TransferError) as info:
            download(base + "nothing-here.bin", tmp_path / "z.bin")
        assert FTP_PASSWORD not in str(info.value)
        bad_login = base.replace(FTP_PASSWORD, "wrong")
        with pytest.raises(TransferError):
            upload(bad_login, tmp_path / "missing-local-file.zip")
    with pytest.raises(TransferError, match="unsupported scheme"):
        download("file:///etc/passwd", tmp_path / "w.bin")


def test_url_helpers() -> None:
    assert safe_url("ftp://u:pw@h:21/a") == "ftp://u:***@h:21/a"
    assert safe_url("http://h/a") == "http://h/a"
    assert check_url("https://h/x") is None
    assert check_url("sftp://h/x") is not None
    assert check_url("http:///x") == "URL has no host"
    assert upload_target("ftp://h", "b.zip") == "ftp://h/b.zip"
    assert upload_target("http://h/diag", "b.zip") == "http://h/diag/b.zip"
    assert upload_target("http://h/up/?t=1", "b c.zip") == "http://h/up/b%20c.zip?t=1"


async def test_with_retries_tries_one_plus_retries_times() -> None:
    calls: list[int] = []
    delays: list[float] = []

    def attempt() -> int:
        calls.append(1)
        if len(calls) < 3:
            raise TransferError("not yet")
        return 7

    async def fake_sleep(s: float) -> None:
        delays.append(s)

    assert await with_retries(attempt, retries=2, interval_s=5, what="t", sleep=fake_sleep) == 7
    assert len(calls) == 3 and delays == [5, 5]
    calls.clear()
    with pytest.raises(TransferError):
        await with_retries(attempt, retries=1, interval_s=0, what="t", sleep=fake_sleep)
    assert len(calls) == 2
