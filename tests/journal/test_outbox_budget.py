"""The outbox disk budget on a real SQLite file: what goes first when full, what never goes."""

from __future__ import annotations

import logging
import sqlite3

import pytest

from bess_gateway.journal import MIGRATIONS, OUTBOX_ROW_BYTES, Journal, Retention

EP = "HUB-001"
SAMPLE = {"connectorId": 1, "transactionId": None,
          "meterValue": [{"timestamp": "2026-01-01T00:00:00Z",
                          "sampledValue": [{"value": "12345", "context": "Sample.Periodic",
                                            "measurand": "Energy.Active.Export.Register",
                                            "unit": "Wh"}] * 4}]}


@pytest.fixture
def path(tmp_path):
    return tmp_path / "journal.sqlite"


def size(payload: dict) -> int:
    import orjson
    return len(orjson.dumps(payload)) + OUTBOX_ROW_BYTES


def queued(j: Journal, endpoint: str = EP) -> list[tuple[str, str | None, str]]:
    return [(i.action, i.local_tx_id, i.unique_id) for i in j.outbox.pending(endpoint,
                                                                             limit=10_000)]


def test_usage_is_kept_by_the_file_itself(path):
    j = Journal(path)
    a = j.outbox.enqueue(EP, "StartTransaction", {"connectorId": 1}, "T1", "a")
    j.outbox.enqueue(EP, "MeterValues", dict(SAMPLE), "T1", "b", Retention.THIN)
    assert j.outbox.outbox_bytes() == size({"connectorId": 1}) + size(SAMPLE)
    j.transactions.patch_transaction_id(EP, "T1", 4711)  # a longer payload after the patch
    patched = {**SAMPLE, "transactionId": 4711}
    assert j.outbox.outbox_bytes() == size({"connectorId": 1}) + size(patched)
    j.outbox.ack(a)
    assert j.outbox.outbox_bytes() == size(patched)
    j.close()
    # the counter is in the file and agrees with a full count after a reopen
    j = Journal(path)
    assert j.outbox.outbox_bytes() == size(patched)
    with sqlite3.connect(path) as raw:
        (full,) = raw.execute("SELECT SUM(length(CAST(payload AS BLOB))) + COUNT(*) * ? "
                              "FROM outbox", (OUTBOX_ROW_BYTES,)).fetchone()
    assert full == j.outbox.outbox_bytes()
    j.close()


def test_rolled_back_writes_leave_the_count_alone(path):
    j = Journal(path)
    with pytest.raises(RuntimeError), j.atomic():
        j.outbox.enqueue(EP, "MeterValues", dict(SAMPLE), "T1", "b", Retention.THIN)
        raise RuntimeError("crash inside the block")
    assert j.outbox.outbox_bytes() == 0 and j.outbox.depth() == 0
    j.close()


def test_full_queue_thins_oldest_transactions_samples_first_keeping_first_and_last(path, caplog):
    one = size(SAMPLE)
    j = Journal(path, outbox_budget_bytes=one * 20)
    j.outbox.enqueue(EP, "StartTransaction", {"connectorId": 1}, "OLD", "s-old")
    for i in range(12):
        j.outbox.enqueue(EP, "MeterValues", dict(SAMPLE), "OLD", f"old-{i}", Retention.THIN)
    j.outbox.enqueue("HUB-002", "SecurityEventNotification", {"type": "InvalidMessages"}, None,
                     "ev",
              Retention.EXPENDABLE)
    j.outbox.enqueue(EP, "StartTransaction", {"connectorId": 2}, "NEW", "s-new")
    assert j.outbox.thinned == 0
    with caplog.at_level(logging.WARNING, logger="bess_gateway.journal"):
        for i in range(14):
            j.outbox.enqueue(EP, "MeterValues", dict(SAMPLE), "NEW", f"new-{i}", Retention.THIN)
            assert j.outbox.outbox_bytes() <= one * 20
    ids = [u for _, _, u in queued(j)]
    old = [u for u in ids if u.startswith("old-")]
    new = [u for u in ids if u.startswith("new-")]
    # The oldest transaction went first and lost most; each keeps its first and last sample,
    # in order; the starts and (not needed yet) the expendable event stay.
    assert old[0] == "old-0" and old[-1] == "old-11" and len(old) < 12
    assert new[0] == "new-0" and new[-1] == "new-13" and len(new) > len(old)
    assert old == sorted(old, key=lambda u: int(u[4:]))
    assert new == sorted(new, key=lambda u: int(u[4:]))
    # each pass halves the oldest transaction that still has samples between first and last;
    # here that was enough every time, so the newer one kept all of its samples
    assert old == ["old-0", "old-4", "old-8", "old-11"]
    assert new == [f"new-{i}" for i in range(14)]
    assert ids[0] == "s-old" and "s-new" in ids
    assert "ev" in [u for _, _, u in queued(j, "HUB-002")]
    assert j.outbox.thinned == 26 - len(old) - len(new) and j.outbox.dropped == 0
    assert "thinned" in caplog.text
    j.close()


def test_after_samples_expendable_messages_go_then_records_are_kept_over_budget(path, caplog):
    start = {"connectorId": 1, "idTag": "TAG", "meterStart": 0, "timestamp": "2026-01-01T00:00Z"}
    one = size(SAMPLE)
    j = Journal(path, outbox_budget_bytes=one * 6)
    j.outbox.enqueue(EP, "StartTransaction", start, "T1", "start")
    for i in range(3):
        j.outbox.enqueue(EP, "MeterValues", dict(SAMPLE), "T1", f"mv-{i}", Retention.THIN)
    for i in range(3):
        j.outbox.enqueue(EP, "SecurityEventNotification", {"type": "InvalidMessages"}, None,
                         f"ev-{i}",
                  Retention.EXPENDABLE)
    j.outbox.enqueue(EP, "SecurityEventNotification", {"type": "StartupOfTheDevice"}, None,
                     "critical")
    assert not j.outbox.over_budget
    # For the whole test: "back within its budget" below is logged too (the ambient level is
    # whatever the process has, not necessarily WARNING).
    caplog.set_level(logging.WARNING, logger="bess_gateway.journal")
    for i in range(40):
        j.outbox.enqueue(EP, "StopTransaction", {"transactionId": None, "meterStop": i}, f"T{i}",
                  f"stop-{i}")
    ids = [u for _, _, u in queued(j)]
    # Samples were thinned to first + last, every expendable event went, no record was lost.
    assert [u for u in ids if u.startswith("mv-")] == ["mv-0", "mv-2"]
    assert not [u for u in ids if u.startswith("ev-")]
    assert ids[0] == "start" and "critical" in ids
    assert [u for u in ids if u.startswith("stop-")] == [f"stop-{i}" for i in range(40)]
    assert j.outbox.over_budget and j.outbox.outbox_bytes() > one * 6
    assert j.outbox.dropped == 3 and j.outbox.thinned == 1
    assert caplog.text.count("only transaction records left") == 1  # once, not per message
    # Delivered records make room again: the queue is back within budget.
    for item in j.outbox.pending(EP, limit=10_000):
        if item.unique_id.startswith("stop-"):
            j.outbox.ack(item.seq)
    assert not j.outbox.over_budget
    j.outbox.enqueue(EP, "MeterValues", dict(SAMPLE), "T1", "mv-late", Retention.THIN)
    assert not j.outbox.over_budget and "back within its budget" in caplog.text
    j.close()


def test_existing_queue_is_counted_by_the_migration(path):
    # A file made by the version before the budget, with a message waiting in its outbox.
    before = next(i for i, m in enumerate(MIGRATIONS) if any("outbox_usage" in s for s in m))
    with sqlite3.connect(path) as raw:
        for statements in MIGRATIONS[:before]:
            for statement in statements:
                raw.execute(statement)
        raw.execute(f"PRAGMA user_version = {before}")
        raw.execute("INSERT INTO outbox (endpoint_id, action, payload, local_tx_id, unique_id) "
                    "VALUES (?, 'StopTransaction', '{\"transactionId\":1}', 'T', 'u')", (EP,))
    j = Journal(path, outbox_budget_bytes=10_000)
    assert j.outbox.outbox_bytes() == size({"transactionId": 1})
    assert j.outbox.pending(EP)[0].payload == {"transactionId": 1}
    j.close()
