"""Group commit: writes share one commit, and what `durable()` released survives a SIGKILL.

Real SQLite files; a second, independent connection shows what is on disk."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import GatewayFactory
from waiting import booted, until

from bess_gateway.demo.csms import CsmsServer
from bess_gateway.journal import Journal, JournalError, TxRecord


def on_disk(path: Path, sql: str) -> list[tuple[object, ...]]:
    """What another process would read: committed rows only."""
    with sqlite3.connect(path) as other:
        return other.execute(sql).fetchall()


def record(endpoint_id: str, local_id: str) -> TxRecord:
    return TxRecord(endpoint_id=endpoint_id, local_id=local_id, connector=1,
                    id_tag_hash="h" * 32, meter_start_wh=0,
                    started_at="2026-01-01T00:00:00.000Z")


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "journal.sqlite"


async def test_writes_of_one_loop_turn_share_one_commit(path: Path) -> None:
    with Journal(path) as j:
        j.group_commits(max_delay_s=60)  # only durable() commits in this test
        before = j.commits
        for k in range(10):  # ten endpoints write in the same turn
            j.outbox.enqueue(f"E{k}", "StopTransaction", {"k": k}, None, f"u{k}")
        assert j.outbox.depth() == 10  # the writer's own connection sees them at once
        assert on_disk(path, "SELECT COUNT(*) FROM outbox") == [(0,)]
        assert j.uncommitted
        await asyncio.gather(*(j.durable(f"E{k}") for k in range(10)))  # one commit for all
        assert on_disk(path, "SELECT COUNT(*) FROM outbox") == [(10,)]
        assert j.commits == before + 1
        assert not j.uncommitted
        await j.durable()  # nothing pending: returns at once, commits nothing
        assert j.commits == before + 1


async def test_a_failed_block_inside_a_group_loses_only_itself(path: Path) -> None:
    with Journal(path) as j:
        j.group_commits(max_delay_s=60)
        j.settings.put_setting("E1", "a", "1")
        with pytest.raises(RuntimeError), j.atomic():
            j.settings.put_setting("E1", "b", "2")
            j.transactions.put_transaction(record("E1", "L1"))
            raise RuntimeError("half a change")
        j.settings.put_setting("E1", "c", "3")
        await j.durable()
        assert on_disk(path, "SELECT key FROM settings ORDER BY key") == [("a",), ("c",)]
        assert on_disk(path, "SELECT COUNT(*) FROM transactions") == [(0,)]


async def test_flush_inside_a_block_commits_at_the_blocks_end(path: Path) -> None:
    with Journal(path) as j:
        j.group_commits(max_delay_s=60)
        with j.atomic():
            j.transactions.put_transaction(record("E1", "L1"))
            j.flush()  # e.g. Station.begin inside a caller's block: not half the block
            assert on_disk(path, "SELECT COUNT(*) FROM transactions") == [(0,)]
            j.outbox.enqueue("E1", "StartTransaction", {}, "L1", "u1")
        assert on_disk(path, "SELECT COUNT(*) FROM outbox") == [(1,)]
        assert on_disk(path, "SELECT COUNT(*) FROM transactions") == [(1,)]


async def test_writes_nobody_waits_for_commit_within_max_delay(path: Path) -> None:
    with Journal(path) as j:
        j.group_commits(max_delay_s=0.02)
        j.outbox.ack(12345)  # an ack: nothing is sent after it
        j.settings.put_setting("E1", "k", "v")
        await until(lambda: on_disk(path, "SELECT value FROM settings") == [("v",)], 5)
        assert not j.uncommitted


async def test_close_commits_the_open_group(path: Path) -> None:
    j = Journal(path)
    j.group_commits(max_delay_s=60)
    j.settings.put_setting("E1", "k", "v")
    j.close()
    assert on_disk(path, "SELECT value FROM settings") == [("v",)]


async def test_writes_lost_with_a_failed_group_stop_each_endpoint_once(path: Path) -> None:
    with Journal(path) as j:
        j.group_commits(max_delay_s=60)
        j.settings.put_setting("E1", "k", "v")
        j.outbox.enqueue("E2", "StopTransaction", {}, None, "u1")
        j.db.connection().execute("ROLLBACK")  # the group is gone under us, as after an I/O error
        with pytest.raises(JournalError):
            await j.durable("E1")  # its commit fails: E1 must not send what it promised
        with pytest.raises(JournalError):
            await j.durable("E2")  # lost too: told once
        await j.durable("E2")
        await j.durable("E3")  # wrote nothing: never held up
        assert not j.uncommitted
        j.settings.put_setting("E1", "k2", "v2")  # the next group works
        await j.durable("E1")
        assert on_disk(path, "SELECT key FROM settings") == [("k2",)]
        assert on_disk(path, "SELECT COUNT(*) FROM outbox") == [(0,)]



def refuse_next_commit(j: Journal) -> None:
    """The journal's next COMMIT fails with a real SQLite error (an authorizer refuses it), as
    a full disk or an I/O error would; the ones after it are allowed again."""

    def authorize(action: int, arg1: str | None, *_: object) -> int:
        if action == sqlite3.SQLITE_TRANSACTION and arg1 == "COMMIT":
            j.db.connection().set_authorizer(None)
            return sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_OK

    j.db.connection().set_authorizer(authorize)


async def test_a_lost_write_for_every_endpoint_is_reported_once_to_each_then_forgotten(
        path: Path) -> None:
    facts = "SELECT key FROM meta WHERE key LIKE 'fact:%'"
    with Journal(path) as j:
        j.group_commits(max_delay_s=60)
        j.facts.put_fact("rebooting", "1")  # committed at once
        j.facts.drop_fact("rebooting")  # a write no one endpoint owns: every endpoint's frames wait
        j.outbox.enqueue("E1", "StopTransaction", {}, None, "u1")
        refuse_next_commit(j)
        with pytest.raises(JournalError):
            await j.durable("E1")  # the commit fails: E1 must not send what it promised
        with pytest.raises(JournalError):
            await j.durable("E2")  # the drop was E2's to rely on too: told once
        await j.durable("E1")  # told: it may send again
        await j.durable("E2")
        with pytest.raises(JournalError):
            await j.durable()  # a caller for all is told once as well
        await j.durable()
        assert on_disk(path, facts) == [("fact:rebooting",)]  # lost indeed
        assert on_disk(path, "SELECT COUNT(*) FROM outbox") == [(0,)]
        # Later groups commit, for every endpoint, and nothing stays refused.
        j.facts.drop_fact("rebooting")
        j.outbox.enqueue("E2", "StopTransaction", {}, None, "u2")
        await j.durable("E2")
        assert on_disk(path, facts) == []
        assert on_disk(path, "SELECT unique_id FROM outbox") == [("u2",)]
        j.facts.put_fact("next", "1")
        assert on_disk(path, facts) == [("fact:next",)]
        # An endpoint that sent nothing since is told at its next frame, once, like the others.
        with pytest.raises(JournalError):
            await j.durable("E3")
        await j.durable("E3")
        await j.durable("E1")



async def test_endpoints_send_again_after_a_lost_write_for_every_endpoint(
        gateway_factory: GatewayFactory, csms: CsmsServer) -> None:
    csms.policy.heartbeat_interval = 1  # every endpoint sends, so each meets the lost write
    gw = await gateway_factory(2)
    ids = await booted(gw, csms)
    assert gw.journal is not None
    refuse_next_commit(gw.journal)
    gw.journal.facts.drop_fact("nothing")  # a write for every endpoint; its group's commit fails
    failed = csms.last_seq()
    # Each endpoint is told (its next frame is not sent) and then goes on: it sends again, and
    # what it writes from then on is committed before it is sent.
    for sid in ids:
        await csms.wait_for(sid, "Heartbeat", after=failed, timeout=30)
    r = await csms.call(ids[0], "RemoteStartTransaction", {"idTag": "TAG-1", "connectorId": 1})
    assert r == {"status": "Accepted"}
    start = await csms.wait_for(ids[0], "StartTransaction", after=failed, timeout=20)
    assert start.payload["idTag"] == "TAG-1"
    # Its record was committed before the message left (another connection reads it).
    assert on_disk(gw.journal.path, "SELECT endpoint_id, connector FROM transactions") == [
        (ids[0], 1)]


WRITER = textwrap.dedent("""
    import asyncio, sys
    from bess_gateway.journal import Journal, TxRecord

    async def main() -> None:
        j = Journal(sys.argv[1])
        j.group_commits(max_delay_s=10)  # only durable() commits
        i = 0
        while True:
            for k in range(4):  # four endpoints, one change each: a record and its message
                with j.atomic():
                    j.transactions.put_transaction(TxRecord(f"E{k}", f"L{i}", 1, "h" * 32, i,
                                               "2026-01-01T00:00:00.000Z"))
                    j.outbox.enqueue(f"E{k}", "StartTransaction", {"i": i}, f"L{i}", f"u{i}-{k}")
            await j.durable()
            print(i, flush=True)  # "sent": the CSMS has seen message i
            j.settings.put_setting("E0", "last", str(i))  # left uncommitted until the next group
            i += 1
            await asyncio.sleep(0)

    asyncio.run(main())
""")


async def test_everything_released_as_durable_survives_sigkill(path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", WRITER, str(path), stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    sent: list[int] = []
    try:
        async with asyncio.timeout(60):
            while len(sent) < 300:
                sent.append(int(await proc.stdout.readline()))
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        await proc.wait()
    with Journal(path) as j:
        for k in range(4):
            queued = {item.payload["i"] for item in j.outbox.pending(f"E{k}", limit=100_000)}
            records = {int(r.local_id[1:]) for r in j.transactions.open_transactions(f"E{k}")}
            assert set(sent) <= queued  # everything "sent" is on disk
            assert records == queued  # never a record without its message, nor the reverse
        # the kill came while the writer ran on: often more is on disk than was reported
        assert int(j.settings.get_settings("E0").get("last", "-1")) >= sent[-1] - 1


async def test_an_endpoints_frames_wait_only_for_writes_that_concern_it(path: Path) -> None:
    with Journal(path) as j:
        j.group_commits(max_delay_s=60)
        j.outbox.enqueue("A", "StopTransaction", {}, None, "u1")
        j.outbox.ack(999)  # lazy: holds up nobody
        commits = j.commits
        await j.durable("B")  # B wrote nothing that must precede its frames
        assert j.uncommitted and j.commits == commits
        assert on_disk(path, "SELECT COUNT(*) FROM outbox") == [(0,)]
        await j.durable("A")
        assert j.commits == commits + 1
        assert on_disk(path, "SELECT COUNT(*) FROM outbox") == [(1,)]
        j.outbox.bump_attempts(1)
        await j.durable("A")
        assert j.uncommitted  # a lazy write alone holds nobody
        with j.db.write():  # a write for no one endpoint (e.g. the meta table): everyone waits
            pass
        await j.durable("B")
        assert not j.uncommitted
        assert on_disk(path, "SELECT attempts FROM outbox") == [(1,)]


async def test_meter_registers_are_on_disk_when_put_meters_returns(path: Path) -> None:
    with Journal(path) as j:
        j.group_commits(max_delay_s=60)
        j.outbox.enqueue("A", "StopTransaction", {}, None, "u1")
        j.meters.put_meters({("B", 1): 5.0}, {"discharged_wh": 1.0})
        assert on_disk(path, "SELECT energy_wh FROM meters") == [(5.0,)]
        assert on_disk(path, "SELECT COUNT(*) FROM outbox") == [(1,)]  # shared the commit
        assert not j.uncommitted
