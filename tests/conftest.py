"""Real parts for tests: the PCS simulator over Modbus TCP, a CSMS over WebSocket, SQLite files."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import inspect
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bess_gateway.config import Config, ControlConfig, PcsConfig
from bess_gateway.demo.csms import CsmsServer
from bess_gateway.demo.run import demo_config
from bess_gateway.endpoint.link import VALIDATE_OUTGOING_ENV
from bess_gateway.gateway import Gateway
from bess_gateway.sim.server import SimulatorThread

# What the gateway sends is schema-checked in every test (gateway subprocesses inherit it).
os.environ[VALIDATE_OUTGOING_ENV] = "1"


class _AsyncioErrors(logging.Handler):
    """What asyncio's default exception handler logs: a task's exception nobody retrieved, a
    pending task destroyed, a callback that raised. Logged, not raised, so a test would pass."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


_asyncio_errors = _AsyncioErrors()
logging.getLogger("asyncio").addHandler(_asyncio_errors)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``starts_first`` go to the front, the rest keep their order.

    The suite runs in parallel (pytest-xdist, ``-n`` in pyproject's addopts), and a test that
    takes several times longer than any other, drawn near the end of the random order, would
    run alone on one worker after the others are done. pytest-randomly shuffles before this
    hook runs (its hook wraps the others), and the sort is stable: the order is still the one
    the seed gives, so ``--randomly-seed`` replays it.
    """
    items.sort(key=lambda item: item.get_closest_marker("starts_first") is None)


@pytest.fixture(autouse=True)
def no_unhandled_asyncio_errors(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test during which asyncio reported an error no code handled.

    Sync and autouse, so it is torn down after the test's event loop is closed; the garbage
    collection then brings out the tasks the test dropped while it is still this test's. Only
    after a coroutine test: a full collection costs 25-100 ms, about 1.5 minutes over the suite
    if run after every test, and a sync test has no loop of its own (a task one drops anyway is
    still reported, at the next collection).
    """
    _asyncio_errors.records.clear()
    yield
    if inspect.iscoroutinefunction(getattr(request.node, "obj", None)):
        gc.collect()
    found, _asyncio_errors.records[:] = list(_asyncio_errors.records), []
    if found:
        text = "\n".join(logging.Formatter().format(r) for r in found)
        pytest.fail(f"asyncio reported errors nobody handled:\n{text}", pytrace=False)


@pytest.fixture(autouse=True)
def logging_restored() -> Iterator[None]:
    """Logging is process-wide: what a test sets up (the CLI's ``setup_logging``: the root
    logger at ERROR or DEBUG, a handler on stderr) must not decide what a later test's caplog
    sees. Levels come back, and the handlers ``setup_logging`` added go (pytest's own stay)."""
    # bess_gateway too: the gateway's file logs set it while open and put back what they found,
    # which is a level caplog set if its fixture was torn down first.
    loggers = [logging.getLogger(name) for name in ("", "websockets", "bess_gateway")]
    levels, handlers = [lg.level for lg in loggers], list(loggers[0].handlers)
    yield
    for lg, level in zip(loggers, levels, strict=True):
        lg.setLevel(level)
    root = loggers[0]
    for handler in [h for h in root.handlers if h not in handlers]:
        if type(handler).__module__ == "bess_gateway.ops.logs":
            root.removeHandler(handler)
            handler.close()


@pytest.fixture
def sim() -> Iterator[SimulatorThread]:
    s = SimulatorThread()
    s.start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
async def csms() -> AsyncIterator[CsmsServer]:
    server = CsmsServer()
    await server.start()
    try:
        yield server
    finally:
        async with asyncio.timeout(10):
            await server.stop()


GatewayFactory = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def gateway_factory(tmp_path: Path, sim: SimulatorThread,
                          csms: CsmsServer) -> AsyncIterator[GatewayFactory]:
    """Start gateways against the real simulator and CSMS; each stops at teardown."""
    running: list[Gateway] = []

    async def make(n: int = 1, *, data_dir: Path | None = None, sample_s: int = 1,
                   pcs_timeout_ms: int = 400, metrics_listen: str = "",
                   pcs_profile: str = "generic", ocpp: str = "1.6",
                   **control: Any) -> Gateway:
        """``ocpp``: "1.6", "2.0.1" or "mixed" (DEMO-01 1.6, DEMO-02 2.0.1, ...)."""
        cfg: Config = demo_config(data_dir or tmp_path / "var", csms.url, sim.port, n,
                                  sample_s=sample_s, ocpp=ocpp)
        cfg = dataclasses.replace(
            cfg,
            control=dataclasses.replace(ControlConfig(), **control),
            pcs=dataclasses.replace(PcsConfig(), port=sim.port, timeout_ms=pcs_timeout_ms,
                                    profile=pcs_profile),
            gateway=dataclasses.replace(cfg.gateway, metrics_listen=metrics_listen),
        )
        gw = Gateway(cfg)
        await gw.start()
        running.append(gw)
        return gw

    yield make
    for gw in running:
        async with asyncio.timeout(10):
            await gw.stop(drain_s=0)
