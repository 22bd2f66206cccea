"""The journal's writer thread (part of the database layer, `db.py`): the disk's share of a group
commit, off the event loop.

The loop thread runs every statement, COMMIT included; with `synchronous = NORMAL` in WAL mode a
COMMIT only appends its frames to the -wal file (write(2), no fsync). This thread then makes them
durable: the loop calls `request(n)` after its n-th group COMMIT; the thread reads the highest n
asked for, fsyncs the -wal file, and reports `(n, error)` in order (`take_outcomes()`, with a
thread-safe `notify()` after each). One fsync covers every commit made before the thread read
its n: their frames were written when COMMIT returned, and fsync(2) flushes the whole file.

The -wal file is fsynced through a descriptor of this thread's own, kept open so that a
writeback error on the file since it was opened is reported to this descriptor (Linux reports
each such error once to every open file description), and opened anew whenever the path names
another file than the one held (a WAL deleted and made again must never be missed); a newly
opened WAL also gets its directory fsynced.

Checkpoints run here too, on this thread's own connection (the loop's runs none:
`wal_autocheckpoint = 0`), after an fsync's outcome is reported, so they never delay a frame:
PASSIVE (it neither waits for nor holds up the loop's connection) every `checkpoint_commits`
group commits, or sooner once the -wal file grew by `checkpoint_bytes`. The WAL is reused from
its start only by a write transaction that begins when every frame is checkpointed; under
steady writes from the loop a PASSIVE checkpoint may never catch up, so once the -wal file is
past `restart_bytes` a RESTART checkpoint runs: it waits for the loop's open group to commit
and holds the loop's next write back while it copies (SQLite's autocheckpoint used to run on
the loop itself every 1000 pages), and the next write then starts the WAL over.

Never open the -shm or the database file here: closing any descriptor of a file drops every
POSIX lock the process holds on it, SQLite's included, and another process may then reset the
-shm file under this one's mapping (SIGBUS; https://www.sqlite.org/howtocorrupt.html, 2.2).
The -wal file carries no such lock, and this thread's SQLite connection shares the process's
locks through SQLite itself.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

Outcome = tuple[int, OSError | None]  # (covered up to this commit number, the fsync's error)


class WalWriter:
    """One daemon thread per journal; see the module docstring."""

    def __init__(self, db_path: Path, *, notify: Callable[[], None], checkpoint_commits: int,
                 checkpoint_bytes: int, restart_bytes: int, busy_timeout_ms: int) -> None:
        self.wal_path = db_path.with_name(db_path.name + "-wal")
        self._db_path = db_path
        self._notify = notify
        self._checkpoint_commits = checkpoint_commits
        self._checkpoint_bytes = checkpoint_bytes
        self._restart_bytes = restart_bytes
        # the commit number and the -wal file's size at the last checkpoint
        self._checkpointed_at = (0, 0)
        self._busy_timeout_ms = busy_timeout_ms
        self._cond = threading.Condition()
        self._requested = 0  # the highest commit number the loop asked to make durable
        self._done = 0  # the highest commit number whose fsync has an outcome
        self._outcomes: list[Outcome] = []
        self._closing = False
        self._fd: int | None = None
        self._ident: tuple[int, int] | None = None  # (st_dev, st_ino) of the file _fd holds
        self.fsyncs = 0  # successful fsyncs of the -wal file (tests, benchmarks)
        self.checkpoints = 0
        self.restarts = 0  # RESTART checkpoints (a PASSIVE one did not let the WAL start over)
        self._thread = threading.Thread(target=self._run, name=f"journal-writer {db_path.name}",
                                        daemon=True)
        self._thread.start()

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    def request(self, seq: int) -> None:
        """Make commit number `seq` (and every one before it) durable."""
        with self._cond:
            if seq > self._requested:
                self._requested = seq
                self._cond.notify_all()

    def take_outcomes(self) -> list[Outcome]:
        """The outcomes reported since the last call, oldest first."""
        with self._cond:
            out, self._outcomes = self._outcomes, []
        return out

    def close(self) -> None:
        """Finish every fsync asked for, run a last checkpoint, and end the thread."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join()

    def _run(self) -> None:
        conn = self._connect()
        try:
            while True:
                with self._cond:
                    while self._requested <= self._done and not self._closing:
                        self._cond.wait()
                    if self._requested <= self._done:
                        break  # closing, and nothing left to make durable
                    target = self._requested
                err = self._sync()
                with self._cond:
                    self._done = target
                    self._outcomes.append((target, err))
                self._notify()
                # After the report: a checkpoint's own I/O never delays a frame.
                if err is None and conn is not None:
                    size = self._wal_bytes()
                    commits, size_then = self._checkpointed_at
                    if size > self._restart_bytes:
                        self._checkpoint(conn, "RESTART")
                    elif (target - commits >= self._checkpoint_commits
                          or size - size_then >= self._checkpoint_bytes):
                        self._checkpoint(conn, "PASSIVE")
                    else:
                        continue
                    self._checkpointed_at = (target, size)
            if conn is not None:
                self._checkpoint(conn, "PASSIVE")
        finally:
            if conn is not None:
                conn.close()
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def _connect(self) -> sqlite3.Connection | None:
        try:
            conn = sqlite3.connect(str(self._db_path), isolation_level=None,
                                   timeout=self._busy_timeout_ms / 1000)
            return conn
        except sqlite3.Error as e:
            # Without it the WAL is checkpointed when the journal closes (its last connection).
            log.error("journal %s: no checkpoint connection: %s", self._db_path, e)
            return None

    def _sync(self) -> OSError | None:
        try:
            st = os.stat(self.wal_path)
            fresh = (st.st_dev, st.st_ino) != self._ident
            if fresh:
                if self._fd is not None:
                    os.close(self._fd)
                    self._fd = None
                fd = os.open(self.wal_path, os.O_RDONLY | os.O_CLOEXEC)
                held = os.fstat(fd)
                self._fd, self._ident = fd, (held.st_dev, held.st_ino)
            assert self._fd is not None
            os.fsync(self._fd)
            if fresh:  # the new file's name in its directory
                dfd = os.open(self.wal_path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
        except OSError as e:
            return e
        self.fsyncs += 1
        return None

    def _wal_bytes(self) -> int:
        try:
            return os.fstat(self._fd).st_size if self._fd is not None else 0
        except OSError:
            return 0

    def _checkpoint(self, conn: sqlite3.Connection, mode: str) -> None:
        try:
            conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
        except sqlite3.Error as e:
            log.warning("journal %s: checkpoint failed: %s", self._db_path, e)
            return
        self.checkpoints += 1
        if mode == "RESTART":
            self.restarts += 1
