"""`_core.ControlLoop` and `control.ControlCore` against a real Modbus TCP server on loopback.

The server is a few lines of socketserver so the tests can make it fall silent on demand and see
every write as it arrives. Waits are on conditions (the server's writes, the event fd, an
asyncio queue) with bounded timeouts; nothing sleeps to let time pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import os
import resource
import select
import socket
import socketserver
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bess_gateway._core import ControlLoop
from bess_gateway.control import ControlCore, CoreEvent

RAMP_W_PER_S = 300_000.0


@dataclasses.dataclass(frozen=True)
class Write:
    """One FC16 write of the block at 0..4, as the PCS received it."""

    at: float
    run: int
    setpoint_w: int
    watchdog: int
    fault_reset: int
    epoch: int  # times the server was unmuted before this write arrived


def healthy_block() -> list[int]:
    r = [0] * 28
    r[0] = 2  # running
    r[3], r[4], r[5] = 4000, 5000, 7000
    r[7], r[8], r[9], r[10] = 500, 1000, 250, 200
    r[11], r[12] = 3300, 3290
    r[13], r[14] = divmod(500_000, 0x10000)
    r[15], r[16] = divmod(500_000, 0x10000)
    return r


class FakePcs:
    """Holding registers 0..255 over Modbus TCP (FC3, FC16), with a mute switch."""

    def __init__(self) -> None:
        self.regs = [0] * 256
        self.regs[100:128] = healthy_block()
        self.writes: list[Write] = []
        self.cond = threading.Condition()
        self.muted = False
        self.epoch = 0
        pcs = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                pcs.serve(self.request)

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port: int = self.server.server_address[1]
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def serve(self, sock: socket.socket) -> None:
        buf = b""
        while True:
            try:
                data = sock.recv(512)
            except OSError:
                return
            if not data:
                return
            buf += data
            while len(buf) >= 7:
                tid, _proto, length, unit = struct.unpack(">HHHB", buf[:7])
                if len(buf) < 6 + length:
                    break
                pdu, buf = buf[7 : 6 + length], buf[6 + length :]
                reply = self.answer(pdu)
                if reply is None:
                    continue
                sock.sendall(struct.pack(">HHHB", tid, 0, len(reply) + 1, unit) + reply)

    def answer(self, pdu: bytes) -> bytes | None:
        with self.cond:
            if self.muted:
                return None
            fc = pdu[0]
            if fc == 3:
                addr, count = struct.unpack(">HH", pdu[1:5])
                words = self.regs[addr : addr + count]
                return bytes([3, 2 * count]) + struct.pack(f">{count}H", *words)
            if fc == 16:
                addr, count, _n = struct.unpack(">HHB", pdu[1:6])
                words = list(struct.unpack(f">{count}H", pdu[6 : 6 + 2 * count]))
                self.regs[addr : addr + count] = words
                if addr == 0:
                    sp = struct.unpack(">i", struct.pack(">HH", words[1], words[2]))[0]
                    w = Write(time.monotonic(), words[0], sp, words[3], words[4], self.epoch)
                    self.writes.append(w)
                    self.cond.notify_all()
                return struct.pack(">BHH", 16, addr, count)
            return bytes([fc | 0x80, 1])

    def wait_writes(self, pred: Callable[[list[Write]], bool], timeout: float = 5.0) -> list[Write]:
        with self.cond:
            ok = self.cond.wait_for(lambda: pred(self.writes), timeout)
            assert ok, f"condition not met in {timeout} s; last writes {self.writes[-3:]}"
            return list(self.writes)

    def set_muted(self, muted: bool) -> None:
        with self.cond:
            if not muted:
                self.epoch += 1
            self.muted = muted

    def set_alarm_bits(self, bits: int) -> None:
        with self.cond:
            self.regs[117], self.regs[118] = divmod(bits, 0x10000)


@pytest.fixture
def pcs() -> Iterator[FakePcs]:
    server = FakePcs()
    try:
        yield server
    finally:
        server.close()


def params(pcs: FakePcs, **kw: object) -> dict[str, object]:
    return {"pcs_port": pcs.port, "period_ms": 20, "pcs_timeout_ms": 300, **kw}


@contextlib.contextmanager
def running(p: dict[str, object]) -> Iterator[ControlLoop]:
    loop = ControlLoop(p)
    loop.start()
    try:
        yield loop
    finally:
        loop.stop()


def wait_snapshot(loop: ControlLoop, pred: Callable[[dict[str, Any]], bool],
                  timeout: float = 5.0) -> dict[str, Any]:
    """Polls the loop's snapshot (bounded) until `pred` holds; returns that snapshot."""
    deadline = time.monotonic() + timeout
    while not pred(snap := loop.snapshot()):
        assert time.monotonic() < deadline, f"snapshot condition not met in {timeout} s: {snap}"
        time.sleep(0.005)
    return snap


def wait_event(loop: ControlLoop, kind: str, timeout: float = 5.0) -> list[CoreEvent]:
    """Blocks on the event fd (bounded) until an event of `kind` arrives; returns all drained."""
    seen: list[CoreEvent] = []
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        select.select([loop.event_fd()], [], [], left)
        seen += loop.drain_events()
        if any(e["kind"] == kind for e in seen):
            return seen
    raise AssertionError(f"no {kind} event within {timeout} s; got {seen}")


def test_session_ramps_the_written_setpoint(pcs: FakePcs) -> None:
    with running(params(pcs)) as loop:
        loop.start_session(0, 1, 100_000.0)
        writes = pcs.wait_writes(lambda w: bool(w) and w[-1].setpoint_w == 100_000)
        ramp = [w for w in writes if w.run == 1]
        assert len(ramp) >= 5, "100 kW at 300 kW/s takes several 20 ms cycles"
        for a, b in itertools.pairwise(ramp):
            assert b.setpoint_w >= a.setpoint_w
            # Server-side timestamps; one period of slack for when each side saw the cycle.
            assert b.setpoint_w - a.setpoint_w <= RAMP_W_PER_S * (b.at - a.at + 0.02) + 1
        for a, b in itertools.pairwise(writes):
            assert b.watchdog == (a.watchdog + 1) % 0x10000
        snap = loop.snapshot()
        assert snap["link_up"] and snap["allocations"] == {0: 100_000.0}
        assert snap["soc_pct"] == pytest.approx(50.0)
        assert snap["cycles"] > 0 and snap["jitter_us_max"] >= snap["jitter_us_p99"] >= 0
        meter = loop.meter(0)
        assert meter["active"] and meter["allocated_w"] == 100_000.0
        assert meter["voltage_v"] == pytest.approx(400.0)
    last = pcs.writes[-1]
    assert (last.run, last.setpoint_w) == (0, 0), "stop writes 0 W and standby"


def test_command_is_written_by_a_cycle_of_its_own(pcs: FakePcs) -> None:
    # A command wakes the loop at once: its write comes from a command cycle, not the next 1 s
    # tick. How fast is the load benchmark's business (cmd->PCS); this checks which cycle.
    with running(params(pcs, period_ms=1000, pcs_timeout_ms=1000)) as loop:
        pcs.wait_writes(lambda w: len(w) >= 1)
        # A cycle publishes its snapshot once its write is answered: the server has the write
        # first, so the snapshot is waited for (on a busy machine it came after the assert).
        before = wait_snapshot(loop, lambda s: s["cycles"] >= 1)
        assert before["command_cycles"] == 0
        loop.start_session(1, -1, 50_000.0)
        pcs.wait_writes(lambda w: any(x.run == 1 for x in w))
        after = wait_snapshot(loop, lambda s: s["cycles"] > before["cycles"])
        assert after["command_cycles"] == 1


def test_trip_and_fault_reset(pcs: FakePcs) -> None:
    with running(params(pcs)) as loop:
        loop.start_session(0, 1, 100_000.0)
        pcs.wait_writes(lambda w: bool(w) and w[-1].setpoint_w > 0)
        pcs.set_alarm_bits(1 << 10)
        events = wait_event(loop, "trip")
        trip = next(e for e in events if e["kind"] == "trip")
        assert trip["causes"] == ["emergency_stop"]
        writes = pcs.wait_writes(lambda w: w[-1].setpoint_w == 0)
        assert writes[-1].run == 0
        with pcs.cond:
            pcs.regs[100] = 3  # fault state, alarms still set: no reset yet
        pcs.wait_writes(lambda w: w[-1].fault_reset == 0 and len(w) > len(writes) + 2)
        pcs.set_alarm_bits(0)
        pcs.wait_writes(lambda w: w[-1].fault_reset == 1)
        with pcs.cond:
            pcs.regs[100] = 2
        wait_event(loop, "trip_cleared")
        pcs.wait_writes(lambda w: w[-1].setpoint_w > 0 and w[-1].fault_reset == 0)


async def test_control_core_delivers_link_events(pcs: FakePcs) -> None:
    core = ControlCore(params(pcs))
    queue: asyncio.Queue[CoreEvent] = asyncio.Queue()
    failures: list[CoreEvent] = []

    def broken(event: CoreEvent) -> None:
        failures.append(event)
        raise RuntimeError("subscriber bug")

    core.subscribe(broken)
    unsubscribe_later = core.subscribe(queue.put_nowait)
    core.start()
    try:

        async def next_kind(kind: str) -> CoreEvent:
            async with asyncio.timeout(5):
                while (event := await queue.get())["kind"] != kind:
                    pass
            return event

        core.start_session(0, 1, 150_000.0)
        await asyncio.to_thread(pcs.wait_writes, lambda w: bool(w) and w[-1].setpoint_w > 50_000)

        muted_at = time.monotonic()
        pcs.set_muted(True)
        await next_kind("link_lost")
        took = time.monotonic() - muted_at
        # Not before the 0.3 s timeout (a slow box only makes it later; how much later is a
        # latency, not a rule).
        assert took >= 0.3 - 0.05, f"link_lost after {took:.3f} s, timeout 0.3 s"
        snap = core.snapshot()
        assert not snap["link_up"] and snap["setpoint_w"] == 0.0
        assert snap["allocations"] == {0: 0.0}, "sessions suspended"

        pcs.set_muted(False)
        await next_kind("link_restored")
        writes = await asyncio.to_thread(
            pcs.wait_writes, lambda w: sum(x.epoch == 1 for x in w) >= 3
        )
        after = [w for w in writes if w.epoch == 1]
        assert after[0].setpoint_w == 0, "first write after the link is back is 0"
        assert after[2].setpoint_w > 0
        assert failures, "the failing subscriber was called too"
    finally:
        unsubscribe_later()
        await core.stop()
    assert pcs.writes[-1].setpoint_w == 0


async def test_control_core_stop_does_not_block_the_loop(pcs: FakePcs) -> None:
    core = ControlCore(params(pcs, period_ms=1000))
    core.start()
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    try:
        await core.stop()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert ticks > 0


async def test_wait_ready_reports_the_first_verdict_on_the_link(pcs: FakePcs) -> None:
    core = ControlCore(params(pcs))
    assert not core.snapshot()["link_up"], "nothing is known before the first cycle"
    core.start()
    try:
        assert await core.wait_ready(5.0)
        assert core.snapshot()["link_up"]
    finally:
        await core.stop()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nobody listens here once the socket is closed
    silent = ControlCore({"pcs_port": port, "period_ms": 20, "pcs_timeout_ms": 100})
    silent.start()
    try:
        assert await silent.wait_ready(5.0)
        assert not silent.snapshot()["link_up"]
    finally:
        await silent.stop()


def test_loop_state_errors(pcs: FakePcs) -> None:
    loop = ControlLoop(params(pcs))
    loop.start()
    with pytest.raises(RuntimeError):
        loop.start()
    loop.stop()
    loop.stop()
    with pytest.raises(RuntimeError):
        loop.start()
    with pytest.raises(ValueError, match="cap_w"):
        ControlLoop(params(pcs)).start_session(0, 1, float("nan"))


def control_thread_id() -> int:
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError):
            if Path(f"/proc/self/task/{tid}/comm").read_text().strip() == "bess-control":
                return int(tid)
    raise AssertionError("no bess-control thread")


def test_control_thread_reports_the_scheduling_it_has(pcs: FakePcs) -> None:
    with running(params(pcs)) as loop:
        pcs.wait_writes(lambda w: len(w) >= 1)  # the thread has set itself up and cycled
        how = loop.snapshot()["scheduling"]  # published before the first cycle
        tid = control_thread_id()
        # SCHED_FIFO where permitted (root, CAP_SYS_NICE, RLIMIT_RTPRIO); it says which it got
        if how == "SCHED_FIFO 10":
            assert os.sched_getscheduler(tid) == os.SCHED_FIFO
            assert os.sched_getparam(tid).sched_priority == 10
        else:
            assert how.startswith("normal (SCHED_FIFO 10 not permitted")
            assert os.sched_getscheduler(tid) == os.SCHED_OTHER
        assert os.sched_getscheduler(threading.get_native_id()) == os.SCHED_OTHER  # only it


CHILD = """
import sys, time
from bess_gateway._core import ControlLoop
loop = ControlLoop({"pcs_port": int(sys.argv[1]), "period_ms": 20, "pcs_timeout_ms": 300})
loop.start()
while loop.snapshot()["cycles"] < 5:
    time.sleep(0.01)
print(loop.snapshot()["scheduling"])
loop.stop()
"""


def test_without_permission_the_loop_runs_as_a_normal_thread(pcs: FakePcs) -> None:
    def no_rt() -> None:
        resource.setrlimit(resource.RLIMIT_RTPRIO, (0, 0))

    # root bypasses RLIMIT_RTPRIO through CAP_SYS_NICE: take that away too
    drop = (["setpriv", "--bounding-set=-sys_nice", "--inh-caps=-sys_nice"]
            if os.geteuid() == 0 else [])
    out = subprocess.run([*drop, sys.executable, "-c", CHILD, str(pcs.port)],
                         preexec_fn=no_rt, capture_output=True, text=True, timeout=30,
                         check=True)
    assert out.stdout.strip().startswith("normal (SCHED_FIFO 10 not permitted")
    assert pcs.writes, "the loop ran its cycles all the same"
