"""Issue 13 item 8: an endpoint removed from the configuration keeps its journaled data until
the operator decides. Visible (log, metric, /status, `bess-gateway journal`), not sent, not in
the live queue budget, not waited for at shutdown; configured again, its delivery resumes.
Real gateway, real SQLite journal, real CSMS, the real CLI entry point."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest
from httpget import get
from waiting import until

from bess_gateway.cli import main
from bess_gateway.demo.csms import CsmsServer
from bess_gateway.journal import Journal, Retention, TxRecord
from tests.conftest import GatewayFactory

GONE = "DEMO-02"  # configured in the first run, removed, then configured again
EVENTS = 6
PAD = "x" * 200  # techInfo: what makes the removed endpoint's queue larger than the budget


def seed(data_dir: Path, endpoint_id: str = GONE) -> None:
    """What a gateway that ran `endpoint_id` left behind: security events it could not deliver
    and a transaction the stop cut."""
    with Journal(data_dir / "journal.sqlite") as j:
        for i in range(EVENTS):
            j.outbox.enqueue(endpoint_id, "SecurityEventNotification",
                      {"type": "InvalidMessages", "timestamp": "2026-01-01T00:00:00Z",
                       "techInfo": f"seeded-{i} {PAD}"}, None, f"seeded-{endpoint_id}-{i}",
                      Retention.EXPENDABLE)
        j.transactions.put_transaction(TxRecord(endpoint_id=endpoint_id,
                                                local_id=f"tx-{endpoint_id}",
                                   connector=1, id_tag_hash="h", meter_start_wh=0,
                                   started_at="2026-01-01T00:00:00.000Z", transaction_id="77"))


def config_file(tmp_path: Path, data_dir: Path) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(f'[gateway]\ndata_dir = "{data_dir}"\n\n[[endpoint]]\nid = "DEMO-01"\n'
                    'csms_url = "ws://127.0.0.1:9/ocpp"\n')
    return path


async def test_removed_endpoint_is_kept_visible_outside_the_budget_and_resumes(
        caplog: pytest.LogCaptureFixture, gateway_factory: GatewayFactory, csms: CsmsServer,
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.INFO, logger="bess_gateway")
    data_dir = tmp_path / "var"
    seed(data_dir)
    gw = await gateway_factory(1, data_dir=data_dir, metrics_listen="127.0.0.1:0")
    assert gw.journal is not None and gw.metrics is not None
    await csms.wait_for("DEMO-01", "BootNotification", timeout=20)
    # Visible: a warning at start naming it, /status and /metrics.
    warned = [r.getMessage() for r in caplog.records
              if r.levelno == logging.WARNING and GONE in r.getMessage()]
    assert len(warned) == 1 and f"{EVENTS} queued messages" in warned[0]
    assert "1 transaction records" in warned[0] and "bess-gateway journal" in warned[0]
    _, _, body = await get(gw.metrics.port, "/status")
    (removed,) = json.loads(body)["removed_endpoints"]
    assert (removed["endpoint_id"], removed["queued_messages"],
            removed["open_transactions"]) == (GONE, EVENTS, 1)
    _, _, body = await get(gw.metrics.port, "/metrics")
    metrics = body.decode()
    assert "bess_journal_removed_endpoints 1.0" in metrics
    assert f"bess_journal_removed_messages {EVENTS}.0" in metrics

    # Outside the live budget: with a budget the removed queue alone overflows, a live
    # endpoint's expendable event is queued without dropping anything of the removed one.
    removed_bytes = removed["queued_bytes"]
    gw.journal.outbox.budget_bytes = removed_bytes // 2
    gw.journal.outbox.enqueue("DEMO-01", "SecurityEventNotification",
                       {"type": "InvalidMessages", "timestamp": "2026-01-01T00:00:00Z"},
                       None, "live-1", Retention.EXPENDABLE)
    gw.endpoints["DEMO-01"].ctx.outbox_wake.set()  # as security_event() does after queueing
    assert gw.journal.outbox.depth(GONE) == EVENTS
    assert not gw.journal.outbox.over_budget and gw.journal.outbox.dropped == 0
    assert gw.journal.outbox.outbox_bytes() < removed_bytes // 2
    # Not sent to anyone, and not waited for at shutdown (a wait would outlast this bound).
    await until(lambda: gw.journal is not None and gw.journal.outbox.depth("DEMO-01") == 0)
    async with asyncio.timeout(10):
        await gw.stop(drain_s=60)
    assert csms.of(GONE, "SecurityEventNotification") == []

    # The operator's view: list and export (the gateway is stopped: the journal is free).
    cfg = config_file(tmp_path, data_dir)
    capsys.readouterr()
    assert main(["journal", "list", "-c", str(cfg)]) == 0
    assert f"{GONE}: {EVENTS} queued messages" in capsys.readouterr().out
    export = tmp_path / "removed.json"
    assert main(["journal", "export", "-c", str(cfg), "-o", str(export)]) == 0
    (exported,) = json.loads(export.read_text())["endpoints"]
    assert exported["endpoint_id"] == GONE
    assert [m["unique_id"] for m in exported["queued_messages"]] == [
        f"seeded-{GONE}-{i}" for i in range(EVENTS)]
    assert [t["transaction_id"] for t in exported["transactions"]] == ["77"]
    assert main(["journal", "purge", "-c", str(cfg), "--endpoint", "DEMO-01", "--yes"]) == 2

    # Configured again: its delivery resumes (the cut transaction ends as PowerLoss).
    before = csms.last_seq()
    gw2 = await gateway_factory(2, data_dir=data_dir)
    stop = await csms.wait_for(GONE, "StopTransaction", after=before, timeout=20)
    assert stop.payload["transactionId"] == 77 and stop.payload["reason"] == "PowerLoss"
    await until(lambda: gw2.journal is not None and gw2.journal.outbox.depth(GONE) == 0, 20)
    delivered = [m.payload["techInfo"].split()[0]
                 for m in csms.of(GONE, "SecurityEventNotification")
                 if m.payload.get("techInfo", "").startswith("seeded-")]
    assert delivered == [f"seeded-{i}" for i in range(EVENTS)]
    assert gw2.journal.endpoints.removed == frozenset()


async def test_journal_purge_deletes_a_removed_endpoint_for_good(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data_dir = tmp_path / "var"
    seed(data_dir, "OLD-9")
    cfg = config_file(tmp_path, data_dir)
    assert main(["journal", "purge", "-c", str(cfg)]) == 2  # not without --yes
    with Journal(data_dir / "journal.sqlite") as j:
        assert j.outbox.depth("OLD-9") == EVENTS
    assert main(["journal", "purge", "-c", str(cfg), "--yes"]) == 0
    with Journal(data_dir / "journal.sqlite") as j:
        assert j.outbox.depth("OLD-9") == 0 and j.transactions.open_transactions("OLD-9") == []
        assert j.endpoints.removed_endpoints(exclude={"DEMO-01"}) == []
    capsys.readouterr()
    assert main(["journal", "list", "-c", str(cfg)]) == 0
    assert "no removed endpoints" in capsys.readouterr().out
