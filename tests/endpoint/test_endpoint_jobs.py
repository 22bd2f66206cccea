"""An endpoint's background jobs (Context.spawn): they end with the connection or the endpoint,
none is created and dropped, and a failure is logged, never lost."""

from __future__ import annotations

import asyncio
import inspect
import logging

import pytest
from waiting import booted, until

from bess_gateway.demo.csms import CsmsServer
from bess_gateway.endpoint.link import Context
from tests.conftest import GatewayFactory


async def endpoint_context(gateway_factory: GatewayFactory, csms: CsmsServer) -> Context:
    gw = await gateway_factory(1, ocpp="2.0.1")
    (sid,) = await booted(gw, csms)
    return gw.endpoints[sid].ctx


async def test_a_job_cancelled_before_it_ran_is_closed_not_dropped(
        gateway_factory: GatewayFactory, csms: CsmsServer) -> None:
    ctx = await endpoint_context(gateway_factory, csms)
    ran = []

    async def job() -> None:
        ran.append(True)

    coro = job()
    task = ctx.spawn(coro, "never-runs")
    assert task is not None and task in ctx.tasks
    await ctx.cancel_jobs()  # before the job's first step (the link went right after a boot)
    assert task.cancelled() and not ctx.tasks and not ran
    # Closed, so no "coroutine ... was never awaited" when it is collected.
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED
    # A new connection's jobs start again.
    again = ctx.spawn(job(), "runs")
    assert again is not None
    await again
    assert ran == [True]


async def test_spawn_on_a_stopping_endpoint_refuses_and_closes_the_coroutine(
        gateway_factory: GatewayFactory, csms: CsmsServer) -> None:
    ctx = await endpoint_context(gateway_factory, csms)
    started, spawned_late = asyncio.Event(), []

    async def late_spawner() -> None:
        """A job that, being cancelled, tries to start another (as a handler might)."""
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            late = asyncio.sleep(0)
            spawned_late.append((late, ctx.spawn(late, "too-late")))

    assert ctx.spawn(late_spawner(), "spawner") is not None
    await started.wait()
    await ctx.cancel_jobs(for_good=True)
    ((late, task),) = spawned_late
    assert task is None and inspect.getcoroutinestate(late) == inspect.CORO_CLOSED
    assert not ctx.tasks
    # Stopped for good: nothing starts any more.
    refused = asyncio.sleep(0)
    assert ctx.spawn(refused, "after-stop") is None
    assert inspect.getcoroutinestate(refused) == inspect.CORO_CLOSED


async def test_a_failing_job_is_logged_with_its_traceback(
        gateway_factory: GatewayFactory, csms: CsmsServer,
        caplog: pytest.LogCaptureFixture) -> None:
    ctx = await endpoint_context(gateway_factory, csms)

    async def broken() -> None:
        raise RuntimeError("job broke")

    with caplog.at_level(logging.ERROR, logger="bess_gateway.endpoint.link"):
        task = ctx.spawn(broken(), "broken")
        assert task is not None
        await until(lambda: task.done() and task not in ctx.tasks)
    (record,) = [r for r in caplog.records
                 if r.name == "bess_gateway.endpoint.link" and r.levelno >= logging.ERROR]
    assert record.getMessage() == f"{ctx.endpoint_id}: broken failed"
    assert record.exc_info is not None and str(record.exc_info[1]) == "job broke"


async def test_a_stopped_gateway_s_endpoints_start_no_job(
        gateway_factory: GatewayFactory, csms: CsmsServer) -> None:
    """Every 2.0.1 boot spawns a firmware-installed check; after the stop none may start."""
    gw = await gateway_factory(2, ocpp="2.0.1")
    endpoints = list(gw.endpoints.values())
    await until(lambda: all(e.booted.is_set() for e in endpoints), 20)
    await gw.stop(drain_s=0)
    assert all(e.ctx.closing and not e.ctx.tasks for e in endpoints)
    check = asyncio.sleep(0)
    assert endpoints[0].ctx.spawn(check, "firmware-installed") is None
    assert inspect.getcoroutinestate(check) == inspect.CORO_CLOSED
