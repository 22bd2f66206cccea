"""The journal's database layer: the SQLite connection, the file lock, the pragmas, running the
migrations, and the commit policy (atomic blocks, group commits, `durable()`, what a failed
commit lost) with its writer thread (`writer.py`). It knows no table: the stores speak SQL
through `write()` and `read()`, and this layer decides when their writes reach the disk.

Every write is committed with `synchronous=FULL` before the method returns (durable before we
act), unless `group_commits()` is on (the gateway turns it on): writes then join one open "group"
transaction that commits once for all of them (the load benchmark's session restarts made ~6
commits each, issue 6). The group commits when something must be durable before its next step:
`durable(endpoint_id)` (awaited before every frame an endpoint sends, so nothing reaches the
CSMS, a CALLRESULT or a queued message, before what that endpoint wrote ahead of it is on disk)
or `flush()`; otherwise at most `max_delay_s` after its first write. What a crash can lose is
only what nobody outside has seen, such as an ack of a delivered message (it is sent again, with
its id). `atomic()` groups several calls into one all-or-nothing change (inside a group: a
savepoint). Every SQLite failure raises `JournalError`, so a caller can contain it (a database
error must not take down an endpoint).

The disk's share of a group commit runs on the writer thread, not on the event loop (issue 12:
each fsync stalled the loop 5-13 ms on a busy disk). In group mode the connection runs with
`synchronous = NORMAL` in WAL mode: a COMMIT then appends its frames to the -wal file and
returns; no fsync (SQLite's WAL page, "Performance Considerations": writers sync the WAL on
every commit with FULL and omit that sync with NORMAL, https://www.sqlite.org/wal.html). The
writer thread fsyncs the -wal file after the commit, and `durable()` returns only once the fsync
covering the endpoint's last commit is done: the same bytes reach the disk in the same order as
with FULL, the fsync has only moved threads. That syncing the -wal file makes the commits in it
durable is SQLite's own advice for NORMAL (SQLite forum, "Switching pragma synchronous to
upgrade durability": flushing the journal file makes previously committed transactions durable,
https://sqlite.org/forum/forumpost/d1a6bc7c4cd2baca). NORMAL keeps
the file consistent whatever happens (https://www.sqlite.org/pragma.html#pragma_synchronous:
with NORMAL "the WAL file is synchronized before each checkpoint and the database file ... after
each completed checkpoint and the WAL file header is synchronized when a WAL file begins to be
reused after a checkpoint"; the checkpoints run on the writer thread; "Transactions are durable
across application crashes regardless of the synchronous setting"): a process that dies after a
COMMIT loses nothing; a power cut or kernel crash can lose the commits whose fsync had not
finished, always a suffix (WAL frames are checksummed in a chain), and nothing sent depended on
them. What stays on the loop thread: the COMMIT's write(2) calls, and the one WAL-header sync
when the WAL starts over after a checkpoint (about once per `CHECKPOINT_COMMITS` commits).

`flush()` commits at once and leaves the fsync to the writer thread: what depends on it being on
disk before it is *sent* waits for it in `durable()`; a process crash after `flush()` returned
loses nothing (see above). Only a power cut within the fsync's few ms could: a session's power
(Station.begin flushes its record first) may then have flowed for those ms unrecorded.
An fsync that fails leaves those commits' durability unknown: they are reported like a lost
group (`durable()` raises JournalError to the endpoints that wrote in them, once each).
Without group commits (start-up, the CLI) the connection keeps `synchronous = FULL`: SQLite
fsyncs at each COMMIT, on the caller's thread.

One Database per file per process: the file is locked (flock) while open, so a second gateway
started on the same data folder fails at once instead of duplicating transactions.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bess_gateway.journal.writer import WalWriter

try:
    import fcntl
except ImportError:  # pragma: no cover - not on POSIX
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

# The writer thread checkpoints every CHECKPOINT_COMMITS group commits (each is at least one
# page; SQLite's own autocheckpoint is every 1000 pages), or once the -wal file grew by
# CHECKPOINT_BYTES; the file is cut back to CHECKPOINT_BYTES when it starts over, and past
# RESTART_BYTES a checkpoint makes it start over.
CHECKPOINT_COMMITS = 500
CHECKPOINT_BYTES = 4 * 1024 * 1024
RESTART_BYTES = 4 * CHECKPOINT_BYTES


class JournalError(Exception):
    """The journal could not read or write (disk full, corrupt file, locked, bad payload...)."""


class Database:
    """One SQLite file, one connection, used from one thread (the asyncio loop's)."""

    def __init__(self, path: str | Path, *, migrations: tuple[tuple[str, ...], ...],
                 busy_timeout_ms: int = 5000) -> None:
        self.path = Path(path)
        self._busy_timeout_ms = busy_timeout_ms
        self._conn: sqlite3.Connection | None = None
        self._lock_file: Any = None
        self._wal = False  # the file is in WAL mode (an in-memory database is not)
        self._depth = 0  # nesting of atomic() blocks
        self.commits = 0  # commits known to be on disk (counted when their fsync is done)
        # group commit (see the module docstring): off until group_commits()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._max_delay_s = 0.0
        self._group_open = False  # a group transaction holds writes not yet committed
        self._group_timer: asyncio.Handle | None = None
        self._flush_after_block = False  # flush() was called inside an atomic() block
        self._waits: set[str] = set()  # endpoints whose frames wait for the open group
        self._waits_all = False  # every endpoint's frames wait for it
        self._lost: set[str] = set()  # endpoints whose writes a failed group (or fsync) lost
        # Failed groups that held a write for every endpoint, and how many of them each caller
        # of durable() (an endpoint id; None: a caller for all) has been told of: each is told
        # once, then goes on (a set of endpoints left to tell cannot be made, the journal does
        # not know them).
        self._lost_all = 0
        self._lost_all_told: dict[str | None, int] = {}
        # Group commits are numbered 1, 2, ... Per endpoint, the last one holding its writes
        # (those of every endpoint: _last_all); the commits whose fsync has no outcome yet; the
        # highest number with an outcome; and the durable() calls waiting for one.
        self._writer: WalWriter | None = None
        self._seq = 0
        self._last_of: dict[str, int] = {}
        self._last_all = 0
        self._unsettled: deque[tuple[int, frozenset[str], bool]] = deque()
        self._settled = 0
        self._waiters: list[tuple[int, str | None, asyncio.Future[bool]]] = []
        memory = str(path) == ":memory:"
        try:
            if not memory:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._lock()
            # isolation_level=None: no implicit transactions, we BEGIN/COMMIT ourselves
            self._conn = sqlite3.connect(
                str(self.path), isolation_level=None, timeout=busy_timeout_ms / 1000
            )
            c = self._conn
            c.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            mode = c.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            self._wal = mode.lower() == "wal"
            if not self._wal and not memory:
                log.warning("journal %s: WAL mode not available, using %s", self.path, mode)
            c.execute("PRAGMA synchronous = FULL")
            c.execute("PRAGMA secure_delete = ON")
            self._migrate(migrations)
        except (sqlite3.Error, OSError) as e:
            self._release()
            raise JournalError(f"cannot open journal {self.path}: {e}") from e
        except JournalError:
            self._release()
            raise

    # -- life cycle ----------------------------------------------------------------------------
    def _lock(self) -> None:
        if fcntl is None:  # pragma: no cover
            return
        lock_path = self.path.with_name(self.path.name + ".lock")
        f = lock_path.open("a+")
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            raise JournalError(
                f"journal {self.path} is in use by another gateway (lock {lock_path}); "
                "stop it or give this one another data_dir"
            ) from None
        self._lock_file = f

    def _release(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except sqlite3.Error:  # pragma: no cover
                pass
            self._conn = None
        if self._lock_file is not None:
            self._lock_file.close()  # closing the file releases the flock
            self._lock_file = None

    def close(self) -> None:
        """Commit an open group, wait for its fsync and a last checkpoint, end the writer
        thread, close the connection and release the lock. Idempotent."""
        if self._conn is not None and self._group_open:
            try:
                self.flush()
            except JournalError:
                pass  # already logged by flush()
        if self._writer is not None:
            self._writer.close()
            self._settle()
            self._writer = None
        self._loop = None
        self._release()

    def _migrate(self, migrations: tuple[tuple[str, ...], ...]) -> None:
        c = self.connection()
        current = int(c.execute("PRAGMA user_version").fetchone()[0])
        if current > len(migrations):
            raise JournalError(
                f"journal {self.path} has schema version {current}, newer than this gateway "
                f"knows ({len(migrations)}); upgrade the gateway or move the file away"
            )
        for version in range(current, len(migrations)):
            c.execute("BEGIN IMMEDIATE")
            try:
                for statement in migrations[version]:
                    c.execute(statement)
                c.execute(f"PRAGMA user_version = {version + 1}")
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise

    @property
    def schema_version(self) -> int:
        return int(self.read("PRAGMA user_version")[0][0])

    @property
    def writer_thread(self) -> Any:
        """The writer thread (threading.Thread), None without group commits on a WAL file."""
        return None if self._writer is None else self._writer.thread

    # -- group commit --------------------------------------------------------------------------
    def group_commits(self, max_delay_s: float = 1.0) -> None:
        """From now on, writes made on the running loop share commits, and their fsync runs on
        the writer thread (module docstring).

        `max_delay_s` bounds how long a write nobody waits for stays uncommitted.
        """
        self._loop = asyncio.get_running_loop()
        self._max_delay_s = max_delay_s
        if self._writer is not None or not self._wal:
            return
        if self._depth or self._group_open:
            raise JournalError(f"journal {self.path}: group_commits() inside a transaction")
        try:
            c = self.connection()
            c.execute("PRAGMA synchronous = NORMAL")  # the writer thread fsyncs the -wal file
            c.execute("PRAGMA wal_autocheckpoint = 0")  # and runs the checkpoints
            c.execute(f"PRAGMA journal_size_limit = {CHECKPOINT_BYTES}")
        except sqlite3.Error as e:
            raise JournalError(f"journal {self.path}: cannot set up group commits: {e}") from e
        self._writer = WalWriter(self.path, notify=self._notify_from_writer,
                                 checkpoint_commits=CHECKPOINT_COMMITS,
                                 checkpoint_bytes=CHECKPOINT_BYTES, restart_bytes=RESTART_BYTES,
                                 busy_timeout_ms=self._busy_timeout_ms)

    @property
    def uncommitted(self) -> bool:
        """True while a group holds writes not yet committed."""
        return self._group_open

    @property
    def unsynced(self) -> bool:
        """True while a commit waits for its fsync on the writer thread."""
        return self._seq > self._settled

    async def durable(self, endpoint_id: str | None = None) -> None:
        """Return once the writes made so far are on disk: those of `endpoint_id` and those
        made for every endpoint; with None, all of them. Commits the open group if it holds
        such writes (everything else written so far shares that commit), then waits, without
        blocking the loop, for the writer thread's fsync that covers it.

        Raises JournalError when such writes were lost (a failed commit, SQLite rolled the
        group back, or the fsync failed): what they recorded must not be acted on. Reported
        once per endpoint (a lost write for every endpoint: once to each caller), after which
        it goes on.
        """
        if self._loss_unreported(endpoint_id):
            self._loss_reported(endpoint_id)
            raise JournalError(f"journal {self.path}: earlier writes were lost")
        if self._group_open and (endpoint_id is None or self._waits_all
                                 or endpoint_id in self._waits):
            # At once rather than at the end of this loop turn: a loaded turn took longer than
            # the fsync itself (load benchmark, issue 6), and the writes of other endpoints that
            # arrive within one turn are rare next to those nobody waits for, which share it.
            try:
                self.flush()
            except JournalError:
                self._loss_reported(endpoint_id)
                raise
        target = self._seq if endpoint_id is None else max(self._last_of.get(endpoint_id, 0),
                                                           self._last_all)
        if target <= self._settled:
            return
        assert self._loop is not None
        waiter: asyncio.Future[bool] = self._loop.create_future()
        self._waiters.append((target, endpoint_id, waiter))
        if await waiter:
            self._loss_reported(endpoint_id)
            raise JournalError(
                f"journal {self.path}: earlier writes may not be on disk (fsync failed)")

    def _loss_unreported(self, endpoint_id: str | None) -> bool:
        if self._lost_all_told.get(endpoint_id, 0) < self._lost_all:
            return True
        return bool(self._lost) and (endpoint_id is None or endpoint_id in self._lost)

    def _loss_reported(self, endpoint_id: str | None) -> None:
        if endpoint_id is None:
            self._lost.clear()
        else:
            self._lost.discard(endpoint_id)
        self._lost_all_told[endpoint_id] = self._lost_all

    def flush(self) -> None:
        """Commit the open group now (inside an atomic() block: at the end of the outermost one).
        Its fsync follows on the writer thread; `durable()` waits for it.

        Raises JournalError when the commit fails; the group's writes are then rolled back.
        """
        if not self._group_open:
            return
        if self._depth:
            self._flush_after_block = True
            return
        try:
            self.connection().execute("COMMIT")
        except (sqlite3.Error, JournalError) as e:
            err = JournalError(f"journal {self.path}: group commit failed, writes lost: {e}")
            try:
                self.connection().execute("ROLLBACK")
            except (sqlite3.Error, JournalError):
                pass  # a failed COMMIT may already have rolled back
            self._fail_group(err)
            raise err from e
        waits, waits_all = frozenset(self._waits), self._waits_all
        self._close_group()
        self._committed(waits, waits_all)

    def _committed(self, waits: frozenset[str], waits_all: bool) -> None:
        """A group commit is in the -wal file: number it and have the writer thread fsync it."""
        self._seq += 1
        seq = self._seq
        for endpoint_id in waits:
            self._last_of[endpoint_id] = seq
        if waits_all:
            self._last_all = seq
        if self._writer is None:  # no WAL: the COMMIT itself synced (FULL), or nothing can
            self.commits += 1
            self._settled = seq
            return
        self._unsettled.append((seq, waits, waits_all))
        self._writer.request(seq)

    def _notify_from_writer(self) -> None:
        """On the writer thread: an fsync has an outcome; settle it on the loop's thread."""
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(self._settle)
        except RuntimeError:
            pass  # the loop is closed: close() settles what is left

    def _settle(self) -> None:
        if self._writer is None:
            return
        for upto, err in self._writer.take_outcomes():
            self._settle_upto(upto, err)

    def _settle_upto(self, upto: int, err: OSError | None) -> None:
        covered: list[tuple[int, frozenset[str], bool]] = []
        while self._unsettled and self._unsettled[0][0] <= upto:
            covered.append(self._unsettled.popleft())
        lost: set[str] = set()
        lost_all = False
        if err is None:
            self.commits += len(covered)
        elif covered:
            for _, waits, waits_all in covered:
                lost.update(waits)
                lost_all = lost_all or waits_all
            log.error("journal %s: fsync of the WAL failed, %d commits may not be on disk: %s",
                      self.path, len(covered), err)
            self._lost.update(lost)
            if lost_all:
                self._lost_all += 1
        self._settled = max(self._settled, upto)
        waiting: list[tuple[int, str | None, asyncio.Future[bool]]] = []
        for target, endpoint_id, waiter in self._waiters:
            if target > upto:
                waiting.append((target, endpoint_id, waiter))
                continue
            failed = err is not None and bool(covered) and (
                lost_all or endpoint_id is None or endpoint_id in lost)
            if not waiter.done():
                try:
                    waiter.set_result(failed)
                except RuntimeError:
                    pass  # its loop is closed: nobody waits any more
        self._waiters = waiting

    def _close_group(self) -> None:
        self._group_open = False
        self._waits.clear()
        self._waits_all = False
        if self._group_timer is not None:
            self._group_timer.cancel()
            self._group_timer = None

    def _fail_group(self, err: JournalError) -> None:
        log.error("%s", err)
        self._lost.update(self._waits)
        if self._waits_all:
            self._lost_all += 1
        self._close_group()

    def _flush_quietly(self) -> None:
        # the max_delay_s timer: a failure is logged, and raised by durable() to those it hit
        if self._depth:  # pragma: no cover - atomic() blocks never span an await here
            assert self._loop is not None
            self._group_timer = self._loop.call_soon(self._flush_quietly)
            return
        self._group_timer = None
        try:
            self.flush()
        except JournalError:
            pass

    def _open_group(self, c: sqlite3.Connection) -> None:
        if self._group_open:
            return
        assert self._loop is not None
        c.execute("BEGIN IMMEDIATE")
        self._group_open = True
        self._group_timer = self._loop.call_later(self._max_delay_s, self._flush_quietly)

    # -- what the stores use -------------------------------------------------------------------
    def connection(self) -> sqlite3.Connection:
        """The connection (JournalError once closed)."""
        if self._conn is None:
            raise JournalError(f"journal {self.path} is closed")
        return self._conn

    @contextmanager
    def write(self, endpoint_id: str | None = None, *,
              lazy: bool = False) -> Iterator[sqlite3.Connection]:
        """One committed transaction, or a part of the enclosing atomic() block.

        In a group: whose next frame must wait for the commit. An endpoint's own writes hold up
        that endpoint's frames; `endpoint_id=None` holds up every endpoint's; `lazy` (an ack, a
        meter register) holds up nobody's.
        """
        with self.atomic():
            if self._loop is not None and not lazy:
                if endpoint_id is None:
                    self._waits_all = True
                else:
                    self._waits.add(endpoint_id)
            yield self.connection()

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """Group calls into one transaction: all of them are committed, or none.

        Any exception inside rolls the whole block back; SQLite errors come out as JournalError.
        """
        c = self.connection()
        depth = self._depth
        grouped = self._loop is not None
        # the outermost block is a transaction, an inner one (or any, in a group) a savepoint
        begin, commit, rollback = (
            ("BEGIN IMMEDIATE", "COMMIT", "ROLLBACK")
            if depth == 0 and not grouped
            else (f"SAVEPOINT sp{depth}", f"RELEASE sp{depth}", f"ROLLBACK TO sp{depth}")
        )
        try:
            if depth == 0 and grouped:
                self._open_group(c)
            c.execute(begin)
        except sqlite3.Error as e:
            raise JournalError(f"journal {self.path}: write failed: {e}") from e
        self._depth = depth + 1
        try:
            yield
            c.execute(commit)
            if commit == "COMMIT":
                self.commits += 1  # synchronous = FULL: on disk when COMMIT returns
        except BaseException as e:
            try:
                c.execute(rollback)
                if depth or grouped:
                    c.execute(commit)  # a savepoint stays on the stack after ROLLBACK TO
            except sqlite3.Error:
                pass  # a failed COMMIT may already have rolled back
            if grouped and self._group_open and not c.in_transaction:
                # SQLite rolled the whole group back (disk full, I/O error): so are its writes
                self._fail_group(JournalError(f"journal {self.path}: group rolled back: {e}"))
            if isinstance(e, sqlite3.Error):
                raise JournalError(f"journal {self.path}: write failed: {e}") from e
            raise
        finally:
            self._depth = depth
        if depth == 0 and self._flush_after_block:
            self._flush_after_block = False
            self.flush()

    def read(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        try:
            return self.connection().execute(sql, params).fetchall()
        except sqlite3.Error as e:
            raise JournalError(f"journal {self.path}: read failed: {e}") from e

    def checkpoint_truncate(self) -> None:
        """Checkpoint the whole WAL into the file and empty it (after secure deletes: the WAL
        may still hold the old pages). On the calling thread: an operator's rare action."""
        self.flush()  # a checkpoint cannot run inside the open group
        self.read("PRAGMA wal_checkpoint(TRUNCATE)")
