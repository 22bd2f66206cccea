from __future__ import annotations

import sqlite3

import pytest

from bess_gateway.journal import (
    MIGRATIONS,
    Journal,
    JournalError,
    OutboxItem,
    ReservationRecord,
    TxRecord,
    hash_id_tag,
)


@pytest.fixture
def path(tmp_path):
    return tmp_path / "data" / "journal.sqlite"


@pytest.fixture
def journal(path):
    j = Journal(path)
    yield j
    j.close()


def tx(local_id: str = "L1", **kw) -> TxRecord:
    fields = {
        "endpoint_id": "HUB-001",
        "local_id": local_id,
        "connector": 1,
        "id_tag_hash": "h" * 32,
        "meter_start_wh": 1200,
        "started_at": "2025-01-01T12:00:00.000Z",
    }
    fields.update(kw)
    return TxRecord(**fields)


def test_wal_mode_full_sync_and_schema_version(journal, path):
    assert path.exists()
    db = journal.db.connection()
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert journal.schema_version == len(MIGRATIONS)


def test_everything_survives_a_reopen(path):
    with Journal(path) as j:
        key_hash = j.hash_id_tag("RFID-1")
        j.settings.put_setting("HUB-001", "HeartbeatInterval", "60")
        j.settings.put_setting("HUB-001", "HeartbeatInterval", "120")
        j.settings.put_setting("HUB-002", "MeterValueSampleInterval", "10")
        j.meters.put_meters({("HUB-001", 1): 1234.5, ("HUB-001", 2): 10.0})
        j.meters.put_meters({("HUB-001", 1): 2000.25})
        j.transactions.put_transaction(tx("L1", data={"reservation": 3}))
        seq = j.outbox.enqueue("HUB-001", "StartTransaction", {"idTag": "RFID-1"}, "L1", "uid-1")
    with Journal(path) as j:
        assert j.hash_id_tag("RFID-1") == key_hash  # the key is kept in the journal
        assert j.settings.get_settings("HUB-001") == {"HeartbeatInterval": "120"}
        assert j.settings.get_settings("HUB-002") == {"MeterValueSampleInterval": "10"}
        assert j.settings.get_settings("nobody") == {}
        assert j.meters.get_meters() == {("HUB-001", 1): 2000.25, ("HUB-001", 2): 10.0}
        assert j.transactions.open_transactions("HUB-001") == [tx("L1", data={"reservation": 3})]
        assert j.outbox.pending("HUB-001") == [
            OutboxItem(seq, "HUB-001", "StartTransaction", {"idTag": "RFID-1"}, "L1", "uid-1", 0)
        ]
        assert j.schema_version == len(MIGRATIONS)


def test_transactions_upsert_and_finish(journal):
    journal.transactions.put_transaction(tx("L1"))
    journal.transactions.put_transaction(tx("L2", connector=2,
                                            started_at="2025-01-01T12:05:00.000Z"))
    journal.transactions.put_transaction(tx("L1", transaction_id="42", stopped=True))
    journal.transactions.put_transaction(tx("L9", endpoint_id="HUB-002"))
    open_ = journal.transactions.open_transactions("HUB-001")
    assert [(r.local_id, r.transaction_id, r.stopped) for r in open_] == [
        ("L1", "42", True),
        ("L2", None, False),
    ]
    journal.transactions.finish_transaction("HUB-001", "L1")
    assert [r.local_id for r in journal.transactions.open_transactions("HUB-001")] == ["L2"]
    assert [r.local_id for r in journal.transactions.open_transactions("HUB-002")] == ["L9"]


def test_outbox_keeps_order_per_endpoint_and_acks(journal):
    seqs = [journal.outbox.enqueue("HUB-001", "MeterValues", {"i": i}, None, f"u{i}")
            for i in range(5)]
    other = journal.outbox.enqueue("HUB-002", "StatusNotification", {}, None, "x")
    assert seqs == sorted(seqs) and other > seqs[-1]
    assert [p.payload["i"] for p in journal.outbox.pending("HUB-001")] == [0, 1, 2, 3, 4]
    assert [p.unique_id for p in journal.outbox.pending("HUB-001", limit=2)] == ["u0", "u1"]
    outbox = journal.outbox
    assert outbox.depth() == 6 and outbox.depth("HUB-001") == 5 and outbox.depth("x") == 0
    journal.outbox.ack(seqs[0])
    journal.outbox.bump_attempts(seqs[1])
    journal.outbox.bump_attempts(seqs[1])
    first = journal.outbox.pending("HUB-001")[0]
    assert (first.seq, first.attempts) == (seqs[1], 2)
    # sequence numbers are never reused, even after the newest one is acked
    journal.outbox.ack(other)
    assert journal.outbox.enqueue("HUB-002", "A", {}, None, "y") > other


def test_patch_transaction_id_rewrites_queued_messages(journal):
    journal.transactions.put_transaction(tx("L1"))
    start = journal.outbox.enqueue("HUB-001", "StartTransaction", {"idTag": "T"}, "L1", "a")
    mv = journal.outbox.enqueue("HUB-001", "MeterValues", {"transactionId": -1, "v": 1}, "L1", "b")
    stop = journal.outbox.enqueue("HUB-001", "StopTransaction", {"transactionId": -1}, "L1", "c")
    other = journal.outbox.enqueue("HUB-001", "MeterValues", {"transactionId": -1}, "L2", "d")
    with journal.atomic():
        journal.outbox.ack(start)
        assert journal.transactions.patch_transaction_id("HUB-001", "L1", 4711) == 2
    by_seq = {p.seq: p for p in journal.outbox.pending("HUB-001")}
    assert start not in by_seq
    assert by_seq[mv].payload == {"transactionId": 4711, "v": 1}
    assert by_seq[stop].payload == {"transactionId": 4711}
    assert by_seq[other].payload == {"transactionId": -1}
    assert by_seq[mv].unique_id == "b"
    assert journal.transactions.open_transactions("HUB-001")[0].transaction_id == "4711"


def test_atomic_rolls_back_everything_on_error(journal):
    with pytest.raises(RuntimeError), journal.atomic():
        journal.settings.put_setting("E", "k", "v")
        journal.outbox.enqueue("E", "A", {}, None, "u")
        raise RuntimeError("boom")
    assert journal.settings.get_settings("E") == {} and journal.outbox.depth() == 0
    with journal.atomic():
        journal.settings.put_setting("E", "k", "1")
        with pytest.raises(JournalError), journal.atomic():
            journal.settings.put_setting("E", "k", "2")
            journal.outbox.enqueue("E", "A", {"bad": {1, 2}}, None, "u")  # not JSON
    assert journal.settings.get_settings("E") == {"k": "1"} and journal.outbox.depth() == 0


def test_id_tags_are_hashed_with_a_per_journal_key(journal, tmp_path):
    h = journal.hash_id_tag("RFID-1")
    assert len(h) == 32 and h != "RFID-1" and int(h, 16) >= 0
    assert h == journal.hash_id_tag("RFID-1") != journal.hash_id_tag("RFID-2")
    with Journal(tmp_path / "other.sqlite") as other:
        assert other.hash_id_tag("RFID-1") != h
    assert hash_id_tag("a", b"k") == hash_id_tag("a", b"k") != hash_id_tag("a", b"K")


def test_unserialisable_payload_is_a_journal_error(journal):
    with pytest.raises(JournalError, match="JSON"):
        journal.outbox.enqueue("E", "A", {"x": object()}, None, "u")
    with pytest.raises(JournalError):
        journal.transactions.put_transaction(tx(data={"x": {1}}))
    assert journal.outbox.depth() == 0


def test_corrupt_file_is_a_journal_error(tmp_path):
    bad = tmp_path / "journal.sqlite"
    bad.write_bytes(b"this is not a database at all, not even close" * 100)
    with pytest.raises(JournalError, match="cannot open journal"):
        Journal(bad)


def test_newer_schema_is_refused(tmp_path):
    p = tmp_path / "j.sqlite"
    con = sqlite3.connect(p)
    con.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    con.close()
    with pytest.raises(JournalError, match="newer than this gateway"):
        Journal(p)


def test_locked_database_write_is_a_journal_error(path):
    j = Journal(path, busy_timeout_ms=50)
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")
        with pytest.raises(JournalError, match="locked"):
            j.settings.put_setting("E", "k", "v")
        other.execute("ROLLBACK")
        j.settings.put_setting("E", "k", "v")  # usable again afterwards
        assert j.settings.get_settings("E") == {"k": "v"}
    finally:
        other.close()
        j.close()


def test_unopenable_path_is_a_journal_error(tmp_path):
    # A directory where the database file should be: fails for root too, unlike permissions.
    (tmp_path / "journal.sqlite").mkdir()
    with pytest.raises(JournalError):
        Journal(tmp_path / "journal.sqlite")


def test_query_only_database_write_is_a_journal_error(journal):
    journal.db.connection().execute("PRAGMA query_only = ON")  # what a read-only medium looks like
    with pytest.raises(JournalError, match="write failed"):
        journal.meters.put_meters({("E", 1): 1.0})
    journal.db.connection().execute("PRAGMA query_only = OFF")
    journal.meters.put_meters({("E", 1): 1.0})


def test_one_journal_per_file(path):
    with Journal(path):
        with pytest.raises(JournalError, match="in use by another gateway"):
            Journal(path)
    Journal(path).close()  # released on close


def test_closed_journal_raises(path):
    j = Journal(path)
    j.close()
    j.close()
    with pytest.raises(JournalError, match="closed"):
        j.outbox.depth()


def test_memory_journal_for_tests():
    with Journal(":memory:") as j:
        j.settings.put_setting("E", "k", "v")
        assert j.settings.get_settings("E") == {"k": "v"}


def test_reservations_round_trip_and_replace(path):
    with Journal(path) as j:
        j.reservations.put_reservation(ReservationRecord("E", 7, 1, "h" * 32,
                                                         "2030-01-01T00:00:00.000Z"))
        j.reservations.put_reservation(ReservationRecord("E", 8, 2, "g" * 32,
                                                         "2030-01-01T00:00:00.000Z",
                                            parent_hash="p" * 32))
        j.reservations.put_reservation(ReservationRecord("F", 7, 1, "h" * 32,
                                                         "2030-01-01T00:00:00.000Z"))
        # same (endpoint, id): replaced, e.g. moved to the other connector
        j.reservations.put_reservation(ReservationRecord("E", 7, 2, "h" * 32,
                                                         "2031-01-01T00:00:00.000Z"))
    with Journal(path) as j:
        assert j.reservations.reservations("E") == [
            ReservationRecord("E", 7, 2, "h" * 32, "2031-01-01T00:00:00.000Z"),
            ReservationRecord("E", 8, 2, "g" * 32, "2030-01-01T00:00:00.000Z", "p" * 32),
        ]
        j.reservations.delete_reservation("E", 7)
        j.reservations.delete_reservation("E", 99)  # unknown: nothing happens
        assert [r.reservation_id for r in j.reservations.reservations("E")] == [8]
        assert len(j.reservations.reservations("F")) == 1


def test_meters_keep_the_pcs_registers_they_were_read_at(path):
    basis = {"time_s": 1.5, "discharged_wh": 1000, "charged_wh": 7,
             "allocations": [["HUB-001", 1, 12000.0]]}
    with Journal(path) as j:
        assert j.meters.meter_basis() is None
        j.meters.put_meters({("HUB-001", 1): 55.5}, basis)
        j.meters.put_meters({}, {**basis, "discharged_wh": 1010})  # registers moved, no meter did
    with Journal(path) as j:
        assert j.meters.get_meters() == {("HUB-001", 1): 55.5}
        assert j.meters.meter_basis() == {**basis, "discharged_wh": 1010}


def test_a_queued_stop_gets_its_final_register(path):
    with Journal(path) as j:
        j.outbox.enqueue("HUB-001", "StartTransaction", {"meterStart": 5}, "L1", "u1")
        stop = {"transactionId": 3, "meterStop": 90, "timestamp": "t", "reason": "Remote"}
        j.outbox.enqueue("HUB-001", "StopTransaction", stop, "L1", "u2")
        j.outbox.enqueue("HUB-001", "StopTransaction", {**stop, "meterStop": 7}, "L2", "u3")
        j.outbox.patch_meter_stop("HUB-001", "L1", 112)
        j.outbox.patch_meter_stop("HUB-001", "gone", 1)  # already delivered: nothing to do
        items = j.outbox.pending("HUB-001")
    assert [i.payload.get("meterStop") for i in items] == [None, 112, 7]
    assert items[0].payload == {"meterStart": 5}  # the start is left alone
    assert [i.unique_id for i in items] == ["u1", "u2", "u3"]  # the id stays with its message
