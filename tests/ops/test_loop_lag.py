"""The event-loop lag monitor on a real loop, and its metrics on a running gateway's /metrics."""

from __future__ import annotations

import asyncio
import time

from httpget import get
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from waiting import until

from bess_gateway.demo.csms import CsmsServer
from bess_gateway.ops.loop_lag import LoopLagMonitor, RecentMax


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    assert value is not None, name
    return value


async def test_a_blocked_loop_shows_as_one_late_sample() -> None:
    registry = CollectorRegistry()
    monitor = LoopLagMonitor(registry)
    task = asyncio.create_task(monitor.run())
    try:
        await until(lambda: _value(registry, "bess_event_loop_lag_seconds_count") >= 2)
        count0 = _value(registry, "bess_event_loop_lag_seconds_count")
        over0 = count0 - _value(registry, "bess_event_loop_lag_seconds_bucket", le="0.15")
        # The monitor sleeps 50 ms at a time: a 200 ms hold leaves it at least 150 ms late.
        time.sleep(0.2)  # noqa: ASYNC251 - blocking the loop is the point
        await until(lambda: _value(registry, "bess_event_loop_lag_seconds_count") >= count0 + 3)
        count = _value(registry, "bess_event_loop_lag_seconds_count")
        over = count - _value(registry, "bess_event_loop_lag_seconds_bucket", le="0.15")
        # One sample, not one per missed interval: the next sleep starts from the late wake-up.
        assert over - over0 == 1
        assert _value(registry, "bess_event_loop_lag_seconds_sum") >= 0.15
        assert _value(registry, "bess_event_loop_lag_max_seconds") >= 0.15
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_recent_max_forgets_what_left_the_window() -> None:
    recent = RecentMax(60.0)
    assert recent.max(0.0) == 0.0
    for t, value in ((0.0, 0.010), (10.0, 0.300), (20.0, 0.020), (59.0, 0.050)):
        recent.add(t, value)
    assert recent.max(59.0) == 0.300
    assert recent.max(69.9) == 0.300  # 10.0 is 59.9 s old: still in the last minute
    assert recent.max(70.0) == 0.050  # 0.3 has left; 0.05 (t=59) is the largest of 20..59
    recent.add(75.0, 0.001)  # smaller than 0.05: 0.05 stays the maximum until t=119
    assert recent.max(118.9) == 0.050
    assert recent.max(119.0) == 0.001
    assert recent.max(500.0) == 0.0


async def _scrape(port: int) -> dict[str, float]:
    status, _, body = await get(port, "/metrics")
    assert status == 200
    return {s.name + "".join(f"{{{k}={v}}}" for k, v in sorted(s.labels.items())): s.value
            for family in text_string_to_metric_families(body.decode()) for s in family.samples
            if s.name.startswith("bess_event_loop_lag")}


async def test_gateway_serves_the_lag_metrics(gateway_factory, csms: CsmsServer) -> None:
    gw = await gateway_factory(1, metrics_listen="127.0.0.1:0")
    assert gw.metrics is not None
    await csms.wait_for(next(iter(gw.endpoints)), "BootNotification", timeout=20)
    first = await _scrape(gw.metrics.port)
    assert first["bess_event_loop_lag_seconds_bucket{le=+Inf}"] == first[
        "bess_event_loop_lag_seconds_count"]
    assert "bess_event_loop_lag_seconds_bucket{le=0.0005}" in first
    assert first["bess_event_loop_lag_max_seconds"] >= 0.0
    # It samples while the gateway runs (every 50 ms): later scrapes count more.
    async with asyncio.timeout(10):
        while (await _scrape(gw.metrics.port))["bess_event_loop_lag_seconds_count"] < first[
                "bess_event_loop_lag_seconds_count"] + 2:
            await asyncio.sleep(0.02)
