"""sd_notify from run_gateway, received on a real unix datagram socket as systemd would."""

from __future__ import annotations

import asyncio
import dataclasses
import socket

from waiting import until

from bess_gateway.demo.csms import CsmsServer
from bess_gateway.demo.run import demo_config
from bess_gateway.gateway import run_gateway
from bess_gateway.ops import sdnotify
from bess_gateway.sim.server import SimulatorThread


def test_no_socket_means_no_op(monkeypatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.notify("READY=1") is False
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    assert sdnotify.watchdog_interval() is None


def test_watchdog_for_another_pid_is_ignored(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    monkeypatch.setenv("WATCHDOG_PID", "1")
    assert sdnotify.watchdog_interval() is None
    monkeypatch.delenv("WATCHDOG_PID")
    assert sdnotify.watchdog_interval() == 2.0


async def test_ready_watchdog_stopping(monkeypatch, tmp_path, sim: SimulatorThread,
                                       csms: CsmsServer) -> None:
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # ping every 0.1 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    got: list[str] = []

    def drain() -> list[str]:
        while True:
            try:
                got.append(sock.recv(4096).decode())
            except BlockingIOError:
                return got

    cfg = demo_config(tmp_path / "var", csms.url, sim.port, 1, sample_s=1)
    cfg = dataclasses.replace(cfg, pcs=dataclasses.replace(cfg.pcs, timeout_ms=400))
    stop = asyncio.Event()
    task = asyncio.create_task(run_gateway(cfg, stop=stop))
    try:
        await until(lambda: any(m.startswith("READY=1") for m in drain()), 20)
        await until(lambda: sum(m == "WATCHDOG=1" for m in drain()) >= 3, 10)
        stop.set()
        assert await asyncio.wait_for(task, 20) == 0
        drain()
        assert got.index("STOPPING=1") > max(i for i, m in enumerate(got) if m.startswith("READY"))
        assert "STATUS=running 1 endpoints" in got[0]
    finally:
        stop.set()
        if not task.done():
            await asyncio.wait_for(task, 20)
        sock.close()


async def test_abstract_socket_address(monkeypatch) -> None:
    name = f"bess-gateway-test-{id(monkeypatch)}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sdnotify.notify("STATUS=hello") is True
        assert sock.recv(100) == b"STATUS=hello"
    finally:
        sock.close()


async def test_start_failure_is_reported_and_not_ready(monkeypatch, tmp_path,
                                                       sim: SimulatorThread,
                                                       csms: CsmsServer) -> None:
    """A register-map file as pcs.profile is refused by the gateway (its control core takes the
    built-in profiles only): exit 1, a STATUS line for `systemctl status`, and never READY=1."""
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    cfg = demo_config(tmp_path / "var", csms.url, sim.port, 1, sample_s=1)
    cfg = dataclasses.replace(cfg, pcs=dataclasses.replace(cfg.pcs,
                                                           profile=str(tmp_path / "pcs.toml")))
    try:
        assert await asyncio.wait_for(run_gateway(cfg), 20) == 1
        message = sock.recv(4096).decode()
        assert message.startswith("STATUS=could not start") and "register-map" in message
        sock.setblocking(False)
        try:
            extra = sock.recv(4096)
        except BlockingIOError:
            extra = b""
        assert b"READY=1" not in extra
    finally:
        sock.close()
