"""1.6 offline queue end to end: sessions through CSMS outages and gateway restarts, the ids their
queued messages carry, retries of messages the CSMS fails to process, and the disk budget.

A scripted CSMS on a real WebSocket (tests/scripted_csms.py), the real simulator, a real SQLite
journal in tmp_path; every CALL is schema-checked on both sides.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from scripted_csms import Got, ScriptedCsms, booted, remote_start, scripted_csms, start_gateway
from waiting import until

from bess_gateway.gateway import Gateway
from bess_gateway.journal import Journal
from bess_gateway.sim.server import SimulatorThread

TX_ACTIONS = ("StartTransaction", "MeterValues", "StopTransaction")


@pytest.fixture
async def csms() -> AsyncIterator[ScriptedCsms]:
    async with scripted_csms() as server:
        yield server


@pytest.fixture
async def gateways(tmp_path: Path, sim: SimulatorThread,
                   csms: ScriptedCsms) -> AsyncIterator[Callable[..., Awaitable[Gateway]]]:
    running: list[Gateway] = []

    async def make(n: int = 1, **keys: Any) -> Gateway:
        gw = await start_gateway(tmp_path / "var", csms, sim.port, n, **keys)
        running.append(gw)
        return gw

    yield make
    for gw in running:
        async with asyncio.timeout(10):
            await gw.stop(drain_s=0)


async def scrape(gw: Gateway) -> dict[str, float]:
    """/metrics over real HTTP: unlabelled samples by name."""
    assert gw.metrics is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.metrics.port)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    async with asyncio.timeout(10):
        data = await reader.read()
    writer.close()
    body = data.partition(b"\r\n\r\n")[2].decode()
    return {s.name: s.value for f in text_string_to_metric_families(body) for s in f.samples
            if not s.labels}


def tx_ids(msgs: list[Got]) -> list[Any]:
    return [m.payload.get("transactionId") for m in msgs]


async def csms_back(csms: ScriptedCsms, sid: str) -> None:
    await csms.start()
    await until(lambda: csms.online(sid), 20)


async def test_session_started_offline_gets_its_id_on_reconnect(
        gateways, csms: ScriptedCsms) -> None:
    gw = await gateways(1, sample_s=1)
    (sid,) = await booted(gw)
    journal = gw.journal
    assert journal is not None
    last_id = None
    for round_ in range(2):  # the second session on the same connector must not get the first id
        # The CSMS goes down on the StartTransaction: the session runs on, unanswered.
        csms.script["StartTransaction"] = ["outage"]
        await remote_start(csms, sid, 1, f"TAG-{round_}")
        await until(lambda: not csms.online(sid))
        await until(lambda: len([i for i in journal.outbox.pending(sid)
                                 if i.action == "MeterValues"])
                    >= 3, 15)
        queued = [i for i in journal.outbox.pending(sid) if i.action in TX_ACTIONS]
        assert queued[0].action == "StartTransaction"
        assert all(i.payload["transactionId"] is None for i in queued[1:])
        boots = len(csms.of(sid, "BootNotification"))
        after = len(csms.received)

        await csms_back(csms, sid)
        await until(lambda: journal.outbox.depth(sid) == 0, 20)
        replay = [g for g in csms.received[after:] if g.action in TX_ACTIONS]
        start, samples = replay[0], replay[1:]
        assert start.action == "StartTransaction"
        first_try = csms.of(sid, "StartTransaction")[-2]
        assert start.unique_id == first_try.unique_id  # the same message, recognisably
        tx_id = csms.tx_ids[start.unique_id]
        assert tx_id != last_id
        assert len(samples) >= 3 and all(m.action == "MeterValues" for m in samples)
        assert tx_ids(samples) == [tx_id] * len(samples)
        stamps = [m.payload["meterValue"][0]["timestamp"] for m in samples]
        assert stamps == sorted(stamps) and start.payload["timestamp"] <= stamps[0]
        # After the reconnect the CSMS hears each connector's state once, not what it missed.
        assert len(csms.of(sid, "BootNotification")) == boots + 1
        status = [g.payload for g in csms.received[after:] if g.action == "StatusNotification"]
        assert sorted(p["connectorId"] for p in status) == [0, 1, 2]
        assert next(p for p in status if p["connectorId"] == 1)["status"] == "Charging"

        # Live again: the CSMS stops the session by the id it gave.
        r = await csms.call(sid, "RemoteStopTransaction", {"transactionId": tx_id})
        assert r == {"status": "Accepted"}
        stop = await until(lambda n=round_: next(iter(csms.of(sid, "StopTransaction")[n:]), None))
        assert stop.payload["transactionId"] == tx_id and stop.payload["reason"] == "Remote"
        last_id = tx_id
        await until(lambda: 1 not in gw.stations[sid].transactions)


async def test_ids_survive_a_restart_between_start_answer_and_the_rest(
        gateways, csms: ScriptedCsms, tmp_path: Path) -> None:
    gw = await gateways(1, sample_s=1)
    (sid,) = await booted(gw)
    csms.script["StartTransaction"] = ["outage"]
    await remote_start(csms, sid, 1)
    await until(lambda: not csms.online(sid))
    assert gw.journal is not None
    j = gw.journal
    await until(lambda: len([i for i in j.outbox.pending(sid) if i.action == "MeterValues"]) >= 2,
                15)
    # Restart while the CSMS is down: the session ends (Reboot), its stop queues without an id.
    await gw.stop(drain_s=0)

    gw2 = await gateways(1, sample_s=1)
    # The CSMS answers the resent StartTransaction, then goes down before anything else.
    csms.script["StartTransaction"] = ["answer_then_outage"]
    await csms.start()
    await until(lambda: len(csms.of(sid, "StartTransaction")) == 2, 20)
    start = csms.of(sid, "StartTransaction")[-1]
    assert start.answered == "answer_then_outage"
    tx_id = csms.tx_ids[start.unique_id]
    await until(lambda: not csms.online(sid))
    await gw2.stop(drain_s=0)
    assert not csms.of(sid, "MeterValues", "StopTransaction")

    # What waits in the journal across the restart already carries the CSMS's id.
    with Journal(tmp_path / "var" / "journal.sqlite") as journal:
        rest = [i for i in journal.outbox.pending(sid) if i.action in TX_ACTIONS]
    assert [i.action for i in rest][-1] == "StopTransaction" and len(rest) >= 3
    assert [i.payload["transactionId"] for i in rest] == [tx_id] * len(rest)

    await gateways(1, sample_s=1)
    await csms.start()
    await until(lambda: len(csms.of(sid, "StopTransaction")) == 1, 20)
    delivered = csms.of(sid, *TX_ACTIONS)
    assert [g.action for g in delivered[:2]] == ["StartTransaction", "StartTransaction"]
    assert [g.action for g in delivered[2:]][-1] == "StopTransaction"
    assert tx_ids(delivered[2:]) == [tx_id] * len(delivered[2:])
    assert [g.unique_id for g in delivered[2:]] == [i.unique_id for i in rest]
    assert delivered[-1].payload["reason"] == "Reboot"


async def test_stop_transaction_retried_then_discarded_per_transaction_message_attempts(
        gateways, csms: ScriptedCsms, caplog: pytest.LogCaptureFixture) -> None:
    gw = await gateways(1, sample_s=60)
    (sid,) = await booted(gw)
    for key, value in (("TransactionMessageAttempts", "3"),
                       ("TransactionMessageRetryInterval", "1")):
        r = await csms.call(sid, "ChangeConfiguration", {"key": key, "value": value})
        assert r == {"status": "Accepted"}

    # Two failures to process, then the CSMS takes it: interval x 1, then interval x 2 apart.
    csms.script["StopTransaction"] = ["error", "error"]
    await remote_start(csms, sid, 1)
    await until(lambda: csms.of(sid, "StartTransaction"))
    tx_id = csms.tx_ids[csms.of(sid, "StartTransaction")[-1].unique_id]
    await until(lambda: gw.stations[sid].transactions[1].transaction_id == str(tx_id))
    r = await csms.call(sid, "RemoteStopTransaction", {"transactionId": tx_id})
    assert r == {"status": "Accepted"}
    await until(lambda: len(csms.of(sid, "StopTransaction")) == 3, 15)
    await until(lambda: gw.journal.outbox.depth(sid) == 0)
    stops = csms.of(sid, "StopTransaction")
    assert [s.answered for s in stops] == ["error", "error", "answer"]
    assert len({s.unique_id for s in stops}) == 1 and tx_ids(stops) == [tx_id] * 3
    assert stops[1].at - stops[0].at >= 0.9 * 1
    assert stops[2].at - stops[1].at >= 0.9 * 2

    # Attempts exhausted: the message is discarded (logged) and the queue goes on.
    r = await csms.call(sid, "ChangeConfiguration",
                        {"key": "TransactionMessageAttempts", "value": "2"})
    assert r == {"status": "Accepted"}
    csms.script["StopTransaction"] = ["error", "error"]
    await remote_start(csms, sid, 1, "TAG-2")
    await until(lambda: len(csms.of(sid, "StartTransaction")) == 2)
    await until(lambda: 1 in gw.stations[sid].transactions
                and gw.stations[sid].transactions[1].transaction_id is not None)
    second = int(gw.stations[sid].transactions[1].transaction_id or 0)
    with caplog.at_level(logging.ERROR, logger="bess_gateway.endpoint.outbox"):
        r = await csms.call(sid, "RemoteStopTransaction", {"transactionId": second})
        assert r == {"status": "Accepted"}
        await until(lambda: len(csms.of(sid, "StopTransaction")) == 4)
        # the next session's start queues behind the failing stop
        await remote_start(csms, sid, 1, "TAG-3")
        await until(lambda: len(csms.of(sid, "StartTransaction")) == 3, 15)
    tail = csms.of(sid, "StopTransaction", "StartTransaction")[-3:]
    assert [(g.action, g.answered) for g in tail] == [
        ("StopTransaction", "error"), ("StopTransaction", "error"), ("StartTransaction", "answer")]
    assert tail[1].at - tail[0].at >= 0.9 * 1
    assert "discarded after 2 failed attempts" in caplog.text
    await until(lambda: gw.journal.outbox.depth(sid) == 0)


async def test_queue_keeps_to_its_disk_budget_through_a_long_outage(
        gateways, csms: ScriptedCsms) -> None:
    budget_mb = 0.02
    budget = int(budget_mb * 1_000_000)
    gw = await gateways(4, sample_s=1, queue_budget_mb=budget_mb, metrics_listen="127.0.0.1:0")
    ids = await booted(gw)
    for sid in ids:
        for connector in (1, 2):
            await remote_start(csms, sid, connector)
    await until(lambda: len(csms.of(None, "StartTransaction")) == 8)
    await until(lambda: all(t.transaction_id is not None
                            for s in gw.stations.values() for t in s.transactions.values()))
    j = gw.journal
    assert j is not None
    await csms.stop()
    # Sampling goes on offline; every sample queues. Watch the queue's size as it grows.
    firsts: dict[str, str] = {}
    sizes: list[int] = []
    async with asyncio.timeout(60):
        while j.outbox.thinned < 40:
            sizes.append(j.outbox.outbox_bytes())
            for sid in ids:
                for item in j.outbox.pending(sid, limit=1000):
                    if item.action == "MeterValues":
                        firsts.setdefault(item.local_tx_id or "", item.unique_id)
            await asyncio.sleep(0.1)
    assert max(sizes) <= budget
    assert not j.outbox.over_budget and j.outbox.dropped == 0
    queued = {sid: j.outbox.pending(sid, limit=10_000) for sid in ids}
    metrics = await scrape(gw)
    assert metrics["bess_journal_queue_budget_bytes"] == budget
    assert 0 < metrics["bess_journal_queue_bytes"] <= budget
    assert metrics["bess_journal_queue_thinned_total"] >= 40
    assert metrics["bess_journal_queue_dropped_total"] == 0
    assert metrics["bess_journal_queue_over_budget"] == 0
    kept = {i.unique_id for items in queued.values() for i in items}
    assert set(firsts.values()) <= kept  # every transaction's first sample is still there

    after = len(csms.received)
    await csms.start()
    await until(lambda: j.outbox.depth() == 0, 30)
    delivered = {g.unique_id for g in csms.received}
    assert set(firsts.values()) <= delivered
    for sid in ids:
        got = [g for g in csms.received[after:] if g.station == sid and g.action == "MeterValues"]
        # in queue order (thinning may still have taken some after the snapshot)
        snapshot = [i.unique_id for i in queued[sid]]
        got_ids = [g.unique_id for g in got]
        assert [u for u in got_ids if u in set(snapshot)] == [
            u for u in snapshot if u in set(got_ids)]
        for connector in (1, 2):
            mine = [g for g in got if g.payload["connectorId"] == connector]
            tx_id = int(gw.stations[sid].transactions[connector].transaction_id or 0)
            assert tx_ids(mine) == [tx_id] * len(mine)
            stamps = [g.payload["meterValue"][0]["timestamp"] for g in mine]
            assert stamps == sorted(stamps)
