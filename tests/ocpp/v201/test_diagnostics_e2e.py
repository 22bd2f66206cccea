"""2.0.1 N Diagnostics end to end: GetLog with real FTP/HTTP servers on loopback, and
CustomerInformation (report and clear what the journal holds for an idToken), against the demo
CSMS (ocpp.v201) and the simulator."""

from __future__ import annotations

import io
import logging
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from transfer_servers import FTP_PASSWORD, ftp_server, http_server
from waiting import until

from bess_gateway.demo.csms import CsmsServer
from bess_gateway.domain.timefmt import iso
from bess_gateway.gateway import Gateway
from tests.conftest import GatewayFactory

SID = "DEMO-01"
TOKEN = "CUSTOMER-TOKEN-0042"


async def booted(gw: Gateway, csms: CsmsServer) -> None:
    await csms.wait_for(SID, "BootNotification", timeout=20)
    await until(lambda: gw.endpoints[SID].booted.is_set(), 20)


def read_zip(data: bytes) -> dict[str, str]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return {n: z.read(n).decode() for n in z.namelist()}


async def statuses_until(csms: CsmsServer, action: str, final: str, after: int
                         ) -> list[dict[str, Any]]:
    await csms.wait_for(SID, action, lambda p: p["status"] == final, after=after, timeout=20)
    return [m.payload for m in csms.of(SID, action) if m.seq > after]


async def test_get_log_uploads_and_reports_with_request_id(
        gateway_factory: GatewayFactory, csms: CsmsServer, tmp_path: Path) -> None:
    gw = await gateway_factory(1, ocpp="2.0.1")
    await booted(gw, csms)
    marker = "v201-getlog-marker-8812"
    logging.getLogger("bess_gateway.test").warning(marker)
    logging.getLogger("bess_gateway.security").warning("SECURITY-EVENT-V201-1")
    hour_ago = iso(datetime.now(UTC) - timedelta(hours=1))
    with ftp_server(tmp_path / "ftp") as base:
        after = csms.last_seq()
        r = await csms.call(SID, "GetLog", {"logType": "DiagnosticsLog", "requestId": 7,
                                            "log": {"remoteLocation": base,
                                                    "oldestTimestamp": hour_ago}})
        assert r["status"] == "Accepted" and r["filename"].endswith(".zip")
        got = await statuses_until(csms, "LogStatusNotification", "Uploaded", after)
        assert got == [{"status": "Uploading", "requestId": 7},
                       {"status": "Uploaded", "requestId": 7}]
        files = read_zip((tmp_path / "ftp" / r["filename"]).read_bytes())
        assert set(files) == {"gateway.log", "config.json", "journal.json", "manifest.json"}
        assert marker in files["gateway.log"]

        after = csms.last_seq()
        r = await csms.call(SID, "GetLog", {"logType": "SecurityLog", "requestId": 8,
                                            "log": {"remoteLocation": base}})
        got = await statuses_until(csms, "LogStatusNotification", "Uploaded", after)
        files = read_zip((tmp_path / "ftp" / r["filename"]).read_bytes())
        assert set(files) == {"security.log", "manifest.json"}
        assert "SECURITY-EVENT-V201-1" in files["security.log"]
        assert FTP_PASSWORD not in "".join(files.values())

    r = await csms.call(SID, "GetLog", {"logType": "SecurityLog", "requestId": 9,
                                        "log": {"remoteLocation": "mailto:ops@example.com"}})
    assert r["status"] == "Rejected"


async def test_get_log_replaces_a_running_upload_and_trigger_reports_it(
        gateway_factory: GatewayFactory, csms: CsmsServer, tmp_path: Path) -> None:
    gw = await gateway_factory(1, ocpp="2.0.1")
    await booted(gw, csms)
    after = csms.last_seq()
    r = await csms.call(SID, "TriggerMessage", {"requestedMessage": "LogStatusNotification"})
    assert r == {"status": "Accepted"}
    msg = await csms.wait_for(SID, "LogStatusNotification", after=after)
    assert msg.payload == {"status": "Idle"}

    with http_server(tmp_path / "www") as (base, store):
        store.fail_puts = True
        after = csms.last_seq()
        # The first attempt fails; the retry waits an hour: the job stays Uploading.
        r = await csms.call(SID, "GetLog", {"logType": "DiagnosticsLog", "requestId": 21,
                                            "retries": 1, "retryInterval": 3600,
                                            "log": {"remoteLocation": base}})
        assert r["status"] == "Accepted"
        await until(lambda: len(store.puts) == 1, 20)
        trig = csms.last_seq()
        await csms.call(SID, "TriggerMessage", {"requestedMessage": "LogStatusNotification"})
        msg = await csms.wait_for(SID, "LogStatusNotification", after=trig)
        assert msg.payload == {"status": "Uploading", "requestId": 21}

        store.fail_puts = False
        r = await csms.call(SID, "GetLog", {"logType": "DiagnosticsLog", "requestId": 22,
                                            "log": {"remoteLocation": base + "second/"}})
        assert r["status"] == "AcceptedCanceled"
        got = await statuses_until(csms, "LogStatusNotification", "Uploaded", after)
    # The job's Uploading, the triggered one, the replaced request closed, the new one.
    assert [(p["status"], p["requestId"]) for p in got] == [
        ("Uploading", 21), ("Uploading", 21), ("AcceptedCanceled", 21), ("Uploading", 22),
        ("Uploaded", 22)]
    assert store.puts[-1] == f"/second/{r['filename']}"


def customer_data(csms: CsmsServer, request_id: int) -> str:
    parts = [m.payload for m in csms.of(SID, "NotifyCustomerInformation")
             if m.payload["requestId"] == request_id]
    assert [p["seqNo"] for p in parts] == list(range(len(parts)))
    assert [p["tbc"] for p in parts] == [True] * (len(parts) - 1) + [False]
    return "".join(p["data"] for p in parts)


async def notified(csms: CsmsServer, request_id: int) -> str:
    await csms.wait_for(SID, "NotifyCustomerInformation",
                        lambda p: p["requestId"] == request_id and not p["tbc"], timeout=20)
    return customer_data(csms, request_id)


async def test_customer_information_reports_then_clears_an_id_token(
        gateway_factory: GatewayFactory, csms: CsmsServer) -> None:
    gw = await gateway_factory(1, ocpp="2.0.1")
    await booted(gw, csms)
    journal = gw.journal
    assert journal is not None
    token = {"idToken": TOKEN, "type": "ISO14443"}
    r = await csms.call(SID, "SendLocalList", {
        "versionNumber": 3, "updateType": "Full",
        "localAuthorizationList": [{"idToken": token, "idTokenInfo": {"status": "Accepted"}},
                                   {"idToken": {"idToken": "SOMEONE-ELSE", "type": "ISO14443"},
                                    "idTokenInfo": {"status": "Accepted"}}]})
    assert r["status"] == "Accepted"
    after = csms.last_seq()
    r = await csms.call(SID, "RequestStartTransaction", {"idToken": token, "remoteStartId": 5,
                                                         "evseId": 2})
    assert r["status"] == "Accepted"
    await csms.wait_for(SID, "TransactionEvent", lambda p: p["eventType"] == "Started",
                        after=after, timeout=20)

    r = await csms.call(SID, "CustomerInformation", {"requestId": 1, "report": True,
                                                     "clear": False, "idToken": token})
    assert r == {"status": "Accepted"}
    report = await notified(csms, 1)
    assert "Local authorization list entry: status Accepted" in report
    assert "on EVSE 2" in report and "(open)" in report
    assert TOKEN not in report  # a report names what is held, never the identifier itself
    h = journal.hash_id_tag(TOKEN)
    assert journal.auth.auth_list_entry(SID, h) is not None

    r = await csms.call(SID, "CustomerInformation", {"requestId": 2, "report": True,
                                                     "clear": True, "idToken": token})
    assert r == {"status": "Accepted"}
    cleared = await notified(csms, 2)
    assert "Local authorization list entry" in cleared and "Cleared:" in cleared
    assert journal.auth.auth_list_entry(SID, h) is None
    assert all(rec.id_tag_hash != h for rec in journal.transactions.open_transactions(SID))
    # The other identifier is untouched.
    assert journal.auth.auth_list_entry(SID, journal.hash_id_tag("SOMEONE-ELSE")) is not None
    # The session itself goes on: clearing data is not stopping a transaction.
    assert 2 in gw.stations[SID].transactions

    r = await csms.call(SID, "CustomerInformation", {"requestId": 3, "report": True,
                                                     "clear": False, "idToken": token})
    assert r == {"status": "Accepted"}
    assert await notified(csms, 3) == "No data is held for this customer."


async def test_customer_information_statuses(gateway_factory: GatewayFactory,
                                             csms: CsmsServer) -> None:
    gw = await gateway_factory(1, ocpp="2.0.1")
    await booted(gw, csms)
    r = await csms.call(SID, "CustomerInformation", {"requestId": 1, "report": True,
                                                     "clear": False})
    assert r["status"] == "Invalid"
    r = await csms.call(SID, "CustomerInformation", {
        "requestId": 2, "report": False, "clear": False,
        "idToken": {"idToken": TOKEN, "type": "ISO14443"}})
    assert r["status"] == "Rejected"
    r = await csms.call(SID, "CustomerInformation", {"requestId": 3, "report": True,
                                                     "clear": True,
                                                     "customerIdentifier": "customer-77"})
    assert r == {"status": "Accepted"}
    data = await notified(csms, 3)
    assert data.startswith("No data is held") and "Cleared: nothing was held." in data
    assert csms.of(SID, "NotifyCustomerInformation")[0].payload["generatedAt"].endswith("Z")
