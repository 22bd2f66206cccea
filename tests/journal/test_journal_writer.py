"""The journal's writer thread: group commits are fsynced off the event loop, and still nothing
is sent before the fsync that covers what it depends on (bess_gateway.journal.db, writer).

Real SQLite files, a real gateway against the demo CSMS and the PCS simulator; `os.fsync` is
wrapped to see which thread calls it, to hold it, or to make it fail as a failing disk would."""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import sqlite3
import sys
import textwrap
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import GatewayFactory
from waiting import booted, until

from bess_gateway.demo.csms import CsmsServer
from bess_gateway.journal import Journal, JournalError

WRITER_PREFIX = "journal-writer"


def on_disk(path: Path, sql: str) -> list[tuple[object, ...]]:
    """What another process would read: committed rows only."""
    with sqlite3.connect(path) as other:
        return other.execute(sql).fetchall()


class FsyncSpy:
    """os.fsync, counted per calling thread; the writer thread's calls can be held (`gate`)
    or made to fail with EIO (the next `fail_next` ones, or all while `failing`), as a slow or
    failing disk would."""

    def __init__(self) -> None:
        self.real = os.fsync
        self.calls: Counter[str] = Counter()
        self.gate = threading.Event()
        self.gate.set()
        self.fail_next = 0
        self.failing = False
        self.failed = threading.Event()

    def __call__(self, fd: int) -> None:
        name = threading.current_thread().name
        self.calls[name] += 1
        if name.startswith(WRITER_PREFIX):
            assert self.gate.wait(60), "a held fsync was never released"
            if self.failing or self.fail_next:
                self.fail_next = max(0, self.fail_next - 1)
                self.failed.set()
                raise OSError(errno.EIO, "injected I/O error")
        self.real(fd)

    def by_writer(self) -> int:
        return sum(n for name, n in self.calls.items() if name.startswith(WRITER_PREFIX))


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> Iterator[FsyncSpy]:
    spy = FsyncSpy()
    monkeypatch.setattr(os, "fsync", spy)
    try:
        yield spy
    finally:
        spy.gate.set()  # never leave the writer thread (and the journal's close) hanging


async def start_session(csms: CsmsServer, sid: str) -> asyncio.Task[dict[str, object]]:
    return asyncio.create_task(csms.call(sid, "RemoteStartTransaction",
                                         {"idTag": "TAG-1", "connectorId": 1}))


async def test_the_loop_thread_never_fsyncs_with_group_commits(
        gateway_factory: GatewayFactory, csms: CsmsServer, fsyncs: FsyncSpy) -> None:
    gw = await gateway_factory(1)
    [sid] = await booted(gw, csms)
    assert gw.journal is not None
    # SQLite itself syncs nothing at a COMMIT: NORMAL in WAL mode (pragma docs).
    db = gw.journal.db.connection()
    assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert db.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL
    loop_thread = threading.current_thread().name  # the gateway runs on this test's loop
    calls_before = fsyncs.calls[loop_thread]
    commits = gw.journal.commits
    after = csms.last_seq()
    answer = await (await start_session(csms, sid))
    assert answer == {"status": "Accepted"}
    start = await csms.wait_for(sid, "StartTransaction", after=after, timeout=20)
    tx_id = await csms.wait_until(lambda: next(
        (t.id for t in csms.transactions.values() if t.meter_stop is None), None), 10)
    await csms.call(sid, "RemoteStopTransaction", {"transactionId": tx_id})
    await csms.wait_for(sid, "StopTransaction", after=start.seq, timeout=20)
    assert gw.journal.commits > commits  # commits were made durable meanwhile ...
    assert fsyncs.by_writer() > 0  # ... by the writer thread's fsyncs
    assert fsyncs.calls[loop_thread] == calls_before == 0  # and never on the loop


async def test_a_call_does_not_leave_before_the_fsync_of_its_write(
        gateway_factory: GatewayFactory, csms: CsmsServer, fsyncs: FsyncSpy) -> None:
    gw = await gateway_factory(1)
    [sid] = await booted(gw, csms)
    assert gw.journal is not None
    path = gw.journal.path
    # Whatever start-up wrote is on disk (its frames must not wait for the held fsync below).
    await gw.journal.durable()
    # From here every fsync of the writer thread is held: a commit made now is in the WAL (the
    # file's other readers see it) but not known to be on disk.
    fsyncs.gate.clear()
    after = csms.last_seq()
    answer = await start_session(csms, sid)
    # The session's record and its queued StartTransaction are committed ...
    await until(lambda: on_disk(path, "SELECT COUNT(*) FROM transactions") == [(1,)], 20)
    assert gw.journal.db.unsynced
    # ... and the loop runs on (this test runs on it), but the StartTransaction does not leave.
    for _ in range(50):
        await asyncio.sleep(0.02)
        assert csms.of(sid, "StartTransaction") == []
    released = csms.last_seq()
    fsyncs.gate.set()
    start = await csms.wait_for(sid, "StartTransaction", after=after, timeout=20)
    assert start.seq > released
    assert start.payload["idTag"] == "TAG-1"
    assert await answer == {"status": "Accepted"}


async def test_an_fsync_failure_stops_the_message_it_held(
        gateway_factory: GatewayFactory, csms: CsmsServer, fsyncs: FsyncSpy,
        monkeypatch: pytest.MonkeyPatch) -> None:
    gw = await gateway_factory(1)
    [sid] = await booted(gw, csms)
    assert gw.journal is not None
    db = gw.journal.db
    refused: list[list[str]] = []  # what the CSMS had received when durable() raised
    durable = db.durable

    async def watched(endpoint_id: str | None = None) -> None:
        try:
            await durable(endpoint_id)
        except JournalError:
            refused.append([m.action for m in csms.of(sid, "StartTransaction")])
            raise

    monkeypatch.setattr(db, "durable", watched)
    await durable()  # start-up's writes are on disk: only the session start meets the failure
    fsyncs.gate.clear()  # hold the writer, so the failure hits the commit of the session start
    after = csms.last_seq()
    answer = await start_session(csms, sid)
    await until(lambda: on_disk(gw.journal.path,  # type: ignore[union-attr]
                                "SELECT COUNT(*) FROM transactions") == [(1,)], 20)
    fsyncs.failing = True  # every fsync from here fails, until the endpoint has been told
    fsyncs.gate.set()
    await until(lambda: refused, 20)
    fsyncs.failing = False
    assert fsyncs.failed.is_set()
    assert refused[0] == []  # the StartTransaction was not sent when its fsync failed
    # Told once, the endpoint goes on: the message is still queued and goes out later, once.
    await csms.wait_for(sid, "StartTransaction", after=after, timeout=30)
    assert len(csms.of(sid, "StartTransaction")) == 1
    assert await answer == {"status": "Accepted"}


async def test_a_failed_fsync_is_reported_once_to_the_endpoints_that_wrote(
        tmp_path: Path, fsyncs: FsyncSpy) -> None:
    with Journal(tmp_path / "journal.sqlite") as j:
        j.group_commits(max_delay_s=60)
        fsyncs.fail_next = 1
        j.outbox.enqueue("E1", "StopTransaction", {}, None, "u1")
        j.settings.put_setting("E2", "k", "v")
        j.outbox.ack(999)  # lazy: nobody waits for it
        commits = j.commits
        with pytest.raises(JournalError, match="fsync"):
            await j.durable("E1")
        await j.durable("E3")  # wrote nothing: never held up
        with pytest.raises(JournalError):
            await j.durable("E2")  # its write shared the failed fsync: told once as well
        await j.durable("E2")
        await j.durable("E1")
        assert j.commits == commits  # that commit is not counted as durable
        j.settings.put_setting("E1", "k", "w")  # the next fsync works
        await j.durable("E1")
        assert j.commits == commits + 1
        assert on_disk(j.path, "SELECT value FROM settings WHERE endpoint_id = 'E1'") == [("w",)]


async def test_one_fsync_covers_every_commit_made_before_it_started(
        tmp_path: Path, fsyncs: FsyncSpy) -> None:
    with Journal(tmp_path / "journal.sqlite") as j:
        j.group_commits(max_delay_s=60)
        j.settings.put_setting("E0", "k", "v")
        await j.durable("E0")  # the writer has opened the WAL; from here one fsync per round
        fsyncs.gate.clear()
        synced = fsyncs.by_writer()
        j.settings.put_setting("E1", "k", "v")
        first = asyncio.create_task(j.durable("E1"))  # commit 1; the writer is held in its fsync
        await until(lambda: fsyncs.by_writer() == synced + 1, 10)
        for k in (2, 3, 4):  # three more commits while that fsync is held
            j.settings.put_setting(f"E{k}", "k", "v")
            j.flush()
        later = [asyncio.create_task(j.durable(f"E{k}")) for k in (2, 3, 4)]
        await asyncio.sleep(0.05)
        assert not first.done() and not any(t.done() for t in later)
        commits = j.commits
        fsyncs.gate.set()
        await asyncio.gather(first, *later)
        assert fsyncs.by_writer() == synced + 2  # the held one, then one for the three others
        assert j.commits == commits + 4


async def test_close_waits_for_the_last_fsync_and_checkpoints(
        tmp_path: Path, fsyncs: FsyncSpy) -> None:
    path = tmp_path / "journal.sqlite"
    j = Journal(path)
    j.group_commits(max_delay_s=60)
    j.outbox.enqueue("E1", "StopTransaction", {"k": 1}, None, "u1")
    j.flush()
    writer = j.db.writer_thread
    assert writer is not None and writer.name.startswith(WRITER_PREFIX) and writer.daemon
    j.close()
    assert not writer.is_alive()
    assert fsyncs.by_writer() >= 1
    assert not path.with_name(path.name + "-wal").exists()  # checkpointed and removed at close
    assert on_disk(path, "SELECT unique_id FROM outbox") == [("u1",)]


CRASHER = textwrap.dedent("""
    import asyncio, os, sys, threading
    from bess_gateway.journal import Journal

    real_fsync, hold = os.fsync, threading.Event()

    def fsync(fd):
        if hold.is_set() and threading.current_thread().name.startswith("journal-writer"):
            threading.Event().wait()  # the disk never answers: the process is killed here
        real_fsync(fd)

    os.fsync = fsync

    async def main() -> None:
        j = Journal(sys.argv[1])
        j.group_commits(max_delay_s=10)
        for i in range(200):
            j.outbox.enqueue("E1", "StartTransaction", {"i": i}, f"L{i}", f"u{i}")
            await j.durable("E1")
            print("durable", i, flush=True)  # "sent": the CSMS has seen message i
        hold.set()
        for i in range(200, 210):  # committed, but their fsync never finishes
            j.outbox.enqueue("E1", "StartTransaction", {"i": i}, f"L{i}", f"u{i}")
            j.flush()
            print("committed", i, flush=True)
        await j.durable("E1")  # never returns
        print("durable", 209, flush=True)

    asyncio.run(main())
""")


async def test_a_crash_between_commit_and_fsync_loses_nothing_reported_durable(
        tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CRASHER, str(path), stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    lines: list[tuple[str, int]] = []
    try:
        async with asyncio.timeout(60):
            while not lines or lines[-1] != ("committed", 209):
                what, i = (await proc.stdout.readline()).decode().split()
                lines.append((what, int(i)))
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        await proc.wait()
    durable = {i for what, i in lines if what == "durable"}
    assert durable == set(range(200))  # the last ten never reported durable
    with Journal(path) as j:  # SQLite reopens the file and recovers its WAL
        assert j.db.read("PRAGMA integrity_check") == [("ok",)]
        queued = {item.payload["i"] for item in j.outbox.pending("E1", limit=1000)}
    assert durable <= queued
    # A process crash loses no commit (only a power cut could lose the unsynced ten): they are
    # in the WAL the kernel already had.
    assert queued == set(range(210))
