"""Privacy: an idTag never appears in clear in the journal file or the gateway's logs, and
`bess-gateway forget-idtag` removes what is stored about one."""

from __future__ import annotations

import io
import logging
import re
from pathlib import Path

import pytest
from waiting import booted, until

from bess_gateway.cli import main
from bess_gateway.demo.csms import CsmsServer
from bess_gateway.gateway import Gateway
from bess_gateway.journal import Journal, ReservationRecord
from bess_gateway.ops.logs import setup_logging

TAG = "PRIV-7Q3Z-XK9W"  # distinctive: a chance match in unrelated bytes is not plausible
PARENT = "PRIV-PARENT-55JD"
# Loggers of the test's own CSMS (the `ocpp` library logs every frame it handles): not ours.
CSMS_LOGGERS = ("ocpp", "bess_gateway.csms", "websockets.server")


def gateway_lines(text: str) -> str:
    """Log text without the lines of the test's in-process CSMS (not there in production).

    Text format: "<time> <LEVEL> <logger>: <message>"; other lines (tracebacks) are kept.
    """
    return "\n".join(line for line in text.splitlines()
                     if not (m := re.match(r"\S+ +\S+ +(\S+?):", line))
                     or not m.group(1).startswith(CSMS_LOGGERS))


def stored_bytes(folder: Path) -> dict[Path, bytes]:
    """Every file under the data folder: the journal, its WAL and shared memory, the logs."""
    out = {}
    for p in folder.rglob("*"):
        if p.is_file():
            data = p.read_bytes()
            if p.suffix == ".log" or ".log." in p.name:
                data = gateway_lines(data.decode("utf-8", "replace")).encode()
            out[p] = data
    return out


def holding(folder: Path, needle: bytes) -> list[Path]:
    return [p for p, data in stored_bytes(folder).items() if needle in data]


def write_config(tmp_path: Path, data_dir: Path) -> Path:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(
        f'[gateway]\ndata_dir = "{data_dir}"\nmetrics_listen = ""\n\n'
        '[[endpoint]]\nid = "DEMO-{n:02}"\ncount = 2\ncsms_url = "ws://127.0.0.1:9/ocpp"\n')
    return cfg


async def run_session(csms: CsmsServer, gw: Gateway, sid: str) -> None:
    after = csms.last_seq()
    r = await csms.call(sid, "RemoteStartTransaction", {"idTag": TAG, "connectorId": 1})
    assert r == {"status": "Accepted"}
    start = await csms.wait_for(sid, "StartTransaction", after=after)
    assert start.payload["idTag"] == TAG  # the CSMS does get the clear tag
    tx = gw.stations[sid].transactions[1]
    await until(lambda: tx.transaction_id is not None)
    await csms.wait_for(sid, "MeterValues", lambda p: "transactionId" in p, after=after,
                        timeout=15)
    r = await csms.call(sid, "RemoteStopTransaction",
                        {"transactionId": int(tx.transaction_id)})  # type: ignore[arg-type]
    assert r == {"status": "Accepted"}
    await csms.wait_for(sid, "StopTransaction", after=after)


async def test_sessions_leave_no_clear_idtag_and_forget_idtag_removes_the_rest(
        gateway_factory, csms: CsmsServer, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        capsys: pytest.CaptureFixture[str]) -> None:
    # As `bess-gateway run --log-level DEBUG` sets it up, plus pytest's capture of every record.
    caplog.set_level(logging.DEBUG)
    text = io.StringIO()
    setup_logging("text", "DEBUG", stream=text)
    try:
        await _run_and_forget(gateway_factory, csms, tmp_path, caplog, capsys, text)
    finally:
        root = logging.getLogger()
        for handler in [h for h in root.handlers
                        if getattr(h, "stream", None) is text]:
            root.removeHandler(handler)


async def _run_and_forget(gateway_factory, csms: CsmsServer, tmp_path: Path,
                          caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str],
                          text: io.StringIO) -> None:
    data_dir = tmp_path / "var"
    gw = await gateway_factory(2, data_dir=data_dir)
    listed, cached = await booted(gw, csms)
    j = gw.journal
    assert j is not None
    # One endpoint knows the tag from its local list (with a parent), the other from its cache.
    for key, value in (("AuthorizeRemoteTxRequests", "true"), ("LocalPreAuthorize", "true")):
        await csms.call(listed, "ChangeConfiguration", {"key": key, "value": value})
    await csms.call(cached, "ChangeConfiguration",
                    {"key": "AuthorizeRemoteTxRequests", "value": "true"})
    r = await csms.call(listed, "SendLocalList", {
        "listVersion": 4, "updateType": "Full", "localAuthorizationList": [
            {"idTag": TAG, "idTagInfo": {"status": "Accepted", "parentIdTag": PARENT}}]})
    assert r == {"status": "Accepted"}
    await run_session(csms, gw, listed)
    await run_session(csms, gw, cached)
    await until(lambda: j.outbox.depth() == 0)
    h = j.hash_id_tag(TAG)
    assert j.auth.auth_list_entry(listed, h) is not None
    assert j.auth.auth_cache_entry(cached, h) is not None
    await gw.stop(drain_s=0)

    # The gateway's own log lines name the tag by a hash prefix only.
    ours = [r for r in caplog.records if not r.name.startswith(CSMS_LOGGERS)]
    assert any(f"tag#{h[:8]}" in r.getMessage() for r in ours)
    leaks = [r.getMessage() for r in ours if TAG in r.getMessage() or PARENT in r.getMessage()
             or (r.exc_text and TAG in r.exc_text)]
    assert leaks == []
    printed = gateway_lines(text.getvalue())
    assert TAG not in printed and PARENT not in printed
    assert f"tag#{h[:8]}" in printed
    # The CSMS side does log it (proof the scan would see it).
    assert any(TAG in r.getMessage() for r in caplog.records if r.name.startswith("ocpp"))

    # The journal file (and WAL) never held the clear tags; the keyed hash is there.
    assert holding(data_dir, TAG.encode()) == []
    assert holding(data_dir, PARENT.encode()) == []
    assert holding(data_dir, h.encode())

    cfg = write_config(tmp_path, data_dir)
    capsys.readouterr()
    assert main(["forget-idtag", "--config", str(cfg), TAG]) == 0
    out = capsys.readouterr().out
    assert "local authorization list entries removed: 1" in out
    assert "authorization cache entries removed: 1" in out
    # Not even its hash is left in the file's pages.
    assert holding(data_dir, h.encode()) == []
    with Journal(data_dir / "journal.sqlite") as again:
        assert again.hash_id_tag(TAG) == h
        assert again.auth.auth_list_entry(listed, h) is None
        assert again.auth.auth_cache_entry(cached, h) is None
        assert again.auth.auth_list_version(listed) == 4  # the rest of the list is untouched
    # Running it again finds nothing and says so.
    assert main(["forget-idtag", "--config", str(cfg), TAG]) == 0
    assert "local authorization list entries removed: 0" in capsys.readouterr().out


def test_a_queued_start_transaction_keeps_its_idtag_sealed(tmp_path: Path) -> None:
    path = tmp_path / "var" / "journal.sqlite"
    with Journal(path) as j:
        j.outbox.enqueue("DEMO-01", "StartTransaction",
                  {"connectorId": 1, "idTag": TAG, "meterStart": 0,
                   "timestamp": "2026-01-01T00:00:00Z"}, "L1", "u1")
        j.outbox.enqueue("DEMO-01", "StopTransaction", {"transactionId": -1, "meterStop": 5,
                                                 "timestamp": "2026-01-01T00:01:00Z"}, "L1", "u2")
        assert holding(path.parent, TAG.encode()) == []
    with Journal(path) as j:
        first = j.outbox.pending("DEMO-01")[0]
        assert first.payload["idTag"] == TAG  # opened again for delivery
        # Forgetting keeps what the CSMS must still get, and says so.
        assert j.auth.forget_id_tag(TAG)["undelivered"] == 1
        assert len(j.outbox.pending("DEMO-01")) == 2


def test_forget_idtag_command_drops_undelivered_and_explains_errors(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data_dir = tmp_path / "var"
    cfg = write_config(tmp_path, data_dir)
    assert main(["forget-idtag", "--config", str(cfg), TAG]) == 1
    assert "no journal at" in capsys.readouterr().err

    with Journal(data_dir / "journal.sqlite") as j:
        h = j.hash_id_tag(TAG)
        j.reservations.put_reservation(ReservationRecord("DEMO-01", 7, 1, h,
                                                         "2030-01-01T00:00:00Z"))
        j.reservations.put_reservation(ReservationRecord("DEMO-02", 8, 1, j.hash_id_tag("CHILD"),
                                            "2030-01-01T00:00:00Z", parent_hash=h))
        j.outbox.enqueue("DEMO-01", "StartTransaction", {"connectorId": 1, "idTag": TAG,
                                                         "meterStart": 0,
                                                  "timestamp": "2026-01-01T00:00:00Z"}, "L1", "u1")
        j.outbox.enqueue("DEMO-01", "StartTransaction", {"connectorId": 2, "idTag": "OTHER",
                                                  "meterStart": 0,
                                                  "timestamp": "2026-01-01T00:00:00Z"}, "L2", "u2")
        # While a gateway holds the journal, the command refuses and says why.
        assert main(["forget-idtag", "--config", str(cfg), TAG]) == 1
        assert "in use by another gateway" in capsys.readouterr().err

    assert main(["forget-idtag", "--config", str(cfg), TAG]) == 0
    out = capsys.readouterr().out
    assert "still carrying it (encrypted): 1" in out
    assert "reservations removed: 1" in out
    assert "entries no longer naming it as their parent: 1" in out
    assert main(["forget-idtag", "--config", str(cfg), "--drop-undelivered", TAG]) == 0
    assert "undelivered transaction messages deleted: 1" in capsys.readouterr().out
    with Journal(data_dir / "journal.sqlite") as j:
        assert [i.payload["idTag"] for i in j.outbox.pending("DEMO-01")] == ["OTHER"]
        assert j.reservations.reservations("DEMO-01") == []
        assert [r.parent_hash for r in j.reservations.reservations("DEMO-02")] == [None]

    assert main(["forget-idtag", "--config", str(cfg), "  "]) == 2
    assert main(["forget-idtag", "--help"]) == 0
    assert "forget-idtag" in capsys.readouterr().out
