"""1.6 GetDiagnostics and GetLog end to end: a real CSMS, the simulator, real FTP and HTTP servers
on loopback; the uploaded zip is opened and checked."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import logging
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from transfer_servers import FTP_PASSWORD, ftp_server, http_server
from waiting import until

from bess_gateway.config import ControlConfig, PcsConfig
from bess_gateway.demo.csms import CsmsServer
from bess_gateway.demo.run import demo_config
from bess_gateway.domain.timefmt import iso
from bess_gateway.gateway import Gateway
from bess_gateway.sim.server import SimulatorThread

PASSWORD = "endpoint-basic-auth-pw-123"
ID_TAG = "SECRET-TAG-0042"


@pytest.fixture
async def gateway(tmp_path: Path, sim: SimulatorThread,
                  csms: CsmsServer) -> AsyncIterator[Callable[[], Awaitable[Gateway]]]:
    """One endpoint with Basic auth (security profile 1): a configured secret to keep out."""
    running: list[Gateway] = []

    async def make() -> Gateway:
        cfg = demo_config(tmp_path / "var", csms.url, sim.port, 1, sample_s=1)
        ep = dataclasses.replace(cfg.endpoints[0], security_profile=1, password=PASSWORD)
        csms.policy.passwords = {ep.id: PASSWORD}
        cfg = dataclasses.replace(cfg, endpoints=(ep,), control=ControlConfig(),
                                  pcs=dataclasses.replace(PcsConfig(), port=sim.port,
                                                          timeout_ms=400))
        gw = Gateway(cfg)
        await gw.start()
        running.append(gw)
        (sid,) = gw.endpoints
        await csms.wait_for(sid, "BootNotification", timeout=20)
        await until(lambda: gw.endpoints[sid].booted.is_set(), 20)
        return gw

    yield make
    for gw in running:
        async with asyncio.timeout(10):
            await gw.stop(drain_s=0)


def hour_ago() -> str:
    return iso(datetime.now(UTC) - timedelta(hours=1))


async def open_transaction(csms: CsmsServer, sid: str) -> None:
    after = csms.last_seq()
    assert await csms.call(sid, "RemoteStartTransaction", {
        "idTag": ID_TAG, "connectorId": 2}) == {"status": "Accepted"}
    await csms.wait_for(sid, "StartTransaction", after=after)


def read_zip(data: bytes) -> dict[str, str]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return {n: z.read(n).decode() for n in z.namelist()}


def check_bundle(files: dict[str, str], gw: Gateway, marker: str) -> None:
    assert set(files) == {"gateway.log", "config.json", "journal.json", "manifest.json"}
    assert marker in files["gateway.log"]
    everything = "".join(files.values())
    assert PASSWORD not in everything
    assert ID_TAG not in everything
    config = orjson.loads(files["config.json"])
    assert config["gateway"]["endpoints"][0]["password"] == "<redacted>"
    assert config["gateway"]["endpoints"][0]["id"] == "DEMO-01"
    journal = orjson.loads(files["journal.json"])
    txs = journal["endpoints"]["DEMO-01"]["transactions"]
    assert [t["id_tag_hash"] for t in txs if t["open"]] == [gw.journal.hash_id_tag(ID_TAG)]
    manifest = orjson.loads(files["manifest.json"])
    assert manifest["requested_by"] == "DEMO-01"


async def statuses_until(csms: CsmsServer, sid: str, action: str, final: str,
                         after: int) -> list[dict]:
    await csms.wait_for(sid, action, lambda p: p["status"] == final, after=after, timeout=15)
    return [m.payload for m in csms.of(sid, action) if m.seq > after]


async def test_get_diagnostics_uploads_a_redacted_bundle_by_ftp(
        gateway, csms: CsmsServer, tmp_path: Path) -> None:
    gw = await gateway()
    (sid,) = gw.endpoints
    await open_transaction(csms, sid)
    marker = "diagnostics-marker-ftp-7731"
    logging.getLogger("bess_gateway.test").warning(marker)
    with ftp_server(tmp_path / "ftp") as base:
        after = csms.last_seq()
        r = await csms.call(sid, "GetDiagnostics", {"location": base, "startTime": hour_ago(),
                                                    "retries": 0})
        name = r["fileName"]
        assert name.endswith(".zip")
        got = await statuses_until(csms, sid, "DiagnosticsStatusNotification", "Uploaded", after)
        assert [p["status"] for p in got] == ["Uploading", "Uploaded"]
        check_bundle(read_zip((tmp_path / "ftp" / name).read_bytes()), gw, marker)
    # The local copy is not kept once it is uploaded.
    assert not (gw.config.gateway.data_dir / "diagnostics" / name).exists()


async def test_get_diagnostics_by_http_and_the_time_window(
        gateway, csms: CsmsServer, tmp_path: Path) -> None:
    gw = await gateway()
    (sid,) = gw.endpoints
    await open_transaction(csms, sid)
    marker = "diagnostics-marker-http-5519"
    logging.getLogger("bess_gateway.test").warning(marker)
    with http_server(tmp_path / "www") as (base, store):
        after = csms.last_seq()
        r = await csms.call(sid, "GetDiagnostics", {"location": base + "diag/",
                                                    "startTime": hour_ago()})
        await statuses_until(csms, sid, "DiagnosticsStatusNotification", "Uploaded", after)
        assert store.puts == [f"/diag/{r['fileName']}"]
        check_bundle(read_zip((tmp_path / "www" / "diag" / r["fileName"]).read_bytes()), gw,
                     marker)

        # A window that ended an hour ago holds none of today's lines.
        after = csms.last_seq()
        r = await csms.call(sid, "GetDiagnostics", {
            "location": base + "old/", "stopTime": hour_ago()})
        await statuses_until(csms, sid, "DiagnosticsStatusNotification", "Uploaded", after)
        files = read_zip((tmp_path / "www" / "old" / r["fileName"]).read_bytes())
        assert marker not in files["gateway.log"]


async def test_get_diagnostics_upload_failed(gateway, csms: CsmsServer, tmp_path: Path) -> None:
    gw = await gateway()
    (sid,) = gw.endpoints
    with http_server(tmp_path / "www") as (base, store):
        store.fail_puts = True
        after = csms.last_seq()
        await csms.call(sid, "GetDiagnostics", {"location": base, "retries": 1,
                                                "retryInterval": 0})
        got = await statuses_until(csms, sid, "DiagnosticsStatusNotification", "UploadFailed",
                                   after)
        assert [p["status"] for p in got] == ["Uploading", "UploadFailed"]
        assert len(store.puts) == 2  # 1 + retries
    # A location we cannot use: no file name (nothing will come).
    assert await csms.call(sid, "GetDiagnostics", {"location": "mailto:ops@example.com"}) == {}

    after = csms.last_seq()
    assert await csms.call(sid, "TriggerMessage", {
        "requestedMessage": "DiagnosticsStatusNotification"}) == {"status": "Accepted"}
    msg = await csms.wait_for(sid, "DiagnosticsStatusNotification", after=after)
    assert msg.payload == {"status": "Idle"}
    assert gw.maintenance is not None


async def test_get_log_diagnostics_and_security_logs(
        gateway, csms: CsmsServer, tmp_path: Path) -> None:
    gw = await gateway()
    (sid,) = gw.endpoints
    await open_transaction(csms, sid)
    marker = "getlog-marker-3301"
    logging.getLogger("bess_gateway.test").warning(marker)
    logging.getLogger("bess_gateway.security").warning("SECURITY-EVENT-TEST-1")
    with ftp_server(tmp_path / "ftp") as base:
        after = csms.last_seq()
        r = await csms.call(sid, "GetLog", {"logType": "DiagnosticsLog", "requestId": 11,
                                            "log": {"remoteLocation": base,
                                                    "oldestTimestamp": hour_ago()}})
        assert r["status"] == "Accepted"
        got = await statuses_until(csms, sid, "LogStatusNotification", "Uploaded", after)
        assert got == [{"status": "Uploading", "requestId": 11},
                       {"status": "Uploaded", "requestId": 11}]
        check_bundle(read_zip((tmp_path / "ftp" / r["filename"]).read_bytes()), gw, marker)

        after = csms.last_seq()
        r = await csms.call(sid, "GetLog", {"logType": "SecurityLog", "requestId": 12,
                                            "log": {"remoteLocation": base}})
        assert r["status"] == "Accepted"
        got = await statuses_until(csms, sid, "LogStatusNotification", "Uploaded", after)
        assert [p["requestId"] for p in got] == [12, 12]
        files = read_zip((tmp_path / "ftp" / r["filename"]).read_bytes())
        assert set(files) == {"security.log", "manifest.json"}
        assert "SECURITY-EVENT-TEST-1" in files["security.log"]
        assert marker not in files["security.log"]  # only security events
        assert FTP_PASSWORD not in "".join(files.values())

    # Upload failure is UploadFailure in LogStatusNotification's vocabulary.
    with http_server(tmp_path / "www") as (base, store):
        store.fail_puts = True
        after = csms.last_seq()
        r = await csms.call(sid, "GetLog", {"logType": "SecurityLog", "requestId": 13,
                                            "retries": 0, "log": {"remoteLocation": base}})
        got = await statuses_until(csms, sid, "LogStatusNotification", "UploadFailure", after)
        assert [p["status"] for p in got] == ["Uploading", "UploadFailure"]
    assert (await csms.call(sid, "GetLog", {"logType": "SecurityLog", "requestId": 14,
                                            "log": {"remoteLocation": "nope"}}))["status"] == (
        "Rejected")


async def test_extended_trigger_of_log_and_signed_firmware_status(
        gateway, csms: CsmsServer) -> None:
    gw = await gateway()
    (sid,) = gw.endpoints
    after = csms.last_seq()
    assert await csms.call(sid, "ExtendedTriggerMessage", {
        "requestedMessage": "LogStatusNotification"}) == {"status": "Accepted"}
    msg = await csms.wait_for(sid, "LogStatusNotification", after=after)
    assert msg.payload == {"status": "Idle"}
    assert await csms.call(sid, "ExtendedTriggerMessage", {
        "requestedMessage": "FirmwareStatusNotification"}) == {"status": "Accepted"}
    msg = await csms.wait_for(sid, "SignedFirmwareStatusNotification", after=after)
    assert msg.payload == {"status": "Idle"}
