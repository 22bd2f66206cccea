"""Replay pacing end to end: many endpoints reconnect together with a backlog; the CSMS sees the
queued messages at the gateway-wide rate, each endpoint's in order, none lost.

A behaviour test, not a benchmark: counts per window with generous margins.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from scripted_csms import ScriptedCsms, booted, remote_start, scripted_csms, start_gateway
from waiting import until

from bess_gateway.gateway import Gateway
from bess_gateway.sim.server import SimulatorThread

RATE = 20.0
ENDPOINTS = 24


def record_takes(gw: Gateway) -> list[float]:
    """The times (time.monotonic, the pacer's clock) at which the gateway's shared pacer hands
    out its tokens from now on."""
    pacers = {id(e.ctx.pacer): e.ctx.pacer for e in gw.endpoints.values()}
    assert len(pacers) == 1, "one pacer for the whole gateway"
    (pacer,) = pacers.values()
    assert pacer is not None
    taken: list[float] = []
    take = pacer.take

    async def recorded() -> None:
        await take()
        taken.append(time.monotonic())  # no await since the token was taken: the same instant

    pacer.take = recorded  # type: ignore[method-assign]
    return taken


@pytest.fixture
async def csms() -> AsyncIterator[ScriptedCsms]:
    async with scripted_csms() as server:
        yield server


@pytest.fixture
async def gw(tmp_path, sim: SimulatorThread, csms: ScriptedCsms) -> AsyncIterator[Gateway]:
    gateway = await start_gateway(tmp_path / "var", csms, sim.port, ENDPOINTS, sample_s=1,
                                  replay_rate_per_s=RATE)
    try:
        yield gateway
    finally:
        async with asyncio.timeout(10):
            await gateway.stop(drain_s=0)


async def test_endpoints_reconnecting_together_replay_at_the_gateway_rate(
        gw: Gateway, csms: ScriptedCsms) -> None:
    ids = await booted(gw)
    for sid in ids:
        await remote_start(csms, sid, 1)
    await until(lambda: all(s.transactions.get(1) and s.transactions[1].transaction_id
                            for s in gw.stations.values()), 20)
    j = gw.journal
    assert j is not None
    await csms.stop()
    # Offline, every endpoint queues its samples: a backlog of 4 or more each.
    await until(lambda: all(j.outbox.depth(sid) >= 4 for sid in ids), 30)
    # Sampling slows down (as a ChangeConfiguration would make it), so the backlog is finite:
    # at 24 samples/s the live traffic alone would exceed the replay rate.
    for station in gw.stations.values():
        station.settings.set("meter_sample_interval_s", "300")
    await asyncio.sleep(1.1)  # the sample already due is taken
    backlog = j.outbox.depth()
    after = len(csms.received)
    taken = record_takes(gw)
    # They come back together (the premise: an unpaced backlog would arrive all at once): the
    # CSMS answers no boot until every endpoint is connected, then all at once.
    csms.boot_gate = asyncio.Event()
    await csms.start()
    await until(lambda: all(csms.online(sid) for sid in ids), 20)
    csms.boot_gate.set()
    await until(lambda: j.outbox.depth() == 0, 60)

    replay = [g for g in csms.received[after:] if g.action == "MeterValues"]
    assert len(replay) >= backlog
    # When each queued message took its token, by the pacer's clock: no one-second window
    # holds more than the rate plus the bucket's burst (RATE / 5); 24 endpoints unpaced would
    # send their backlog at once. (What the CSMS reads can bunch on a busy machine: a stalled
    # reader finds several messages waiting; the bound is on what the gateway sends.)
    assert len(taken) >= backlog
    pacer = gw.endpoints[ids[0]].ctx.pacer
    assert pacer is not None and pacer.burst == RATE / 5
    busiest = max(sum(1 for t in taken if t0 <= t < t0 + 1.0) for t0 in taken)
    assert busiest <= RATE + pacer.burst
    # ... and the backlog took as long as the rate says at least: the burst, then 1 / RATE s
    # for each further token.
    assert taken[-1] - taken[0] >= (len(taken) - pacer.burst) / RATE - 1e-6
    # Every endpoint's messages arrived in the order they were taken, with their session's id.
    for sid in ids:
        mine = [g for g in replay if g.station == sid]
        stamps = [g.payload["meterValue"][0]["timestamp"] for g in mine]
        assert stamps == sorted(stamps)
        tx_id = int(gw.stations[sid].transactions[1].transaction_id or 0)
        assert {g.payload["transactionId"] for g in mine} == {tx_id}
    # Endpoints were served side by side, not one backlog after another: each one's first
    # message came in the first half of the replay.
    first_of = {sid: next(i for i, g in enumerate(replay) if g.station == sid) for sid in ids}
    assert max(first_of.values()) < len(replay) / 2
