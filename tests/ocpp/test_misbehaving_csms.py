"""A CSMS that misbehaves: wrong unique ids, no answer at all, its own CALL while ours waits.

The CSMS here is a real WebSocket server speaking OCPP-J 1.6 by hand (the demo CSMS is built on
the `ocpp` library, which cannot be made to misbehave); the gateway is real (simulator, SQLite
journal). Nothing is lost: transaction messages wait in the journal and are re-sent under their
own unique id until the CSMS answers them properly.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import orjson
import pytest
from waiting import until
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from bess_gateway.config import Config, ControlConfig, PcsConfig
from bess_gateway.demo.run import demo_config
from bess_gateway.gateway import Gateway
from bess_gateway.sim.server import SimulatorThread

Mode = Literal["normal", "wrong_id", "silent", "hold"]
CALL_TIMEOUT_S = 0.5  # our CALLs give up this soon here (production: MessageTimeout)


@dataclass
class Got:
    station: str
    unique_id: str
    action: str
    payload: dict[str, Any]


@dataclass
class ScriptedCsms:
    """OCPP-J 1.6 by hand: answers per `mode`, records every CALL, sends CALLs of its own."""

    mode: Mode = "normal"
    calls: list[Got] = field(default_factory=list)
    replies: dict[str, list[Any]] = field(default_factory=dict)  # answers to our CALLs
    conns: dict[str, ServerConnection] = field(default_factory=dict)
    held: list[tuple[ServerConnection, Got]] = field(default_factory=list)
    connections: int = 0
    tx_by_uid: dict[str, int] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _server: Server | None = None

    async def start(self) -> str:
        self._server = await serve(self._handle, "127.0.0.1", 0, subprotocols=["ocpp1.6"])
        return f"ws://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/ocpp"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        sid = ws.request.path.rstrip("/").rsplit("/", 1)[-1]
        self.conns[sid] = ws
        self.connections += 1
        try:
            async for raw in ws:
                frame = orjson.loads(raw)
                if frame[0] == 2:
                    got = Got(sid, frame[1], frame[2], frame[3])
                    self.calls.append(got)
                    await self._answer(ws, got)
                else:
                    self.replies[frame[1]] = frame
        except ConnectionClosed:
            pass

    async def _answer(self, ws: ServerConnection, got: Got) -> None:
        if got.action == "BootNotification" or self.mode == "normal":
            await ws.send(orjson.dumps([3, got.unique_id, self._payload(got)]).decode())
        elif self.mode == "wrong_id":
            # A CALLRESULT and a CALLERROR, both for ids we never used.
            wrong = "not-" + got.unique_id[:30]
            await ws.send(orjson.dumps([3, wrong, self._payload(got)]).decode())
            await ws.send(orjson.dumps([4, wrong[::-1], "InternalError", "", {}]).decode())
        elif self.mode == "hold":
            self.held.append((ws, got))
        # "silent": nothing, ever

    async def release(self) -> None:
        """Answer the held CALLs (late, but with their right ids)."""
        held, self.held = self.held, []
        for ws, got in held:
            await ws.send(orjson.dumps([3, got.unique_id, self._payload(got)]).decode())

    def _payload(self, got: Got) -> dict[str, Any]:
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        match got.action:
            case "BootNotification":
                return {"status": "Accepted", "currentTime": now, "interval": 300}
            case "Heartbeat":
                return {"currentTime": now}
            case "Authorize":
                return {"idTagInfo": {"status": "Accepted"}}
            case "StartTransaction":
                # A repeat under the same unique id is the same transaction: same id again.
                tx = self.tx_by_uid.setdefault(got.unique_id, next(self._ids))
                return {"transactionId": tx, "idTagInfo": {"status": "Accepted"}}
            case "DataTransfer":
                return {"status": "UnknownVendorId"}
            case _:
                return {}

    async def call(self, sid: str, action: str, payload: dict[str, Any]) -> list[Any]:
        uid = f"csms-{next(self._ids)}"
        await self.conns[sid].send(orjson.dumps([2, uid, action, payload]).decode())
        return await until(lambda: self.replies.get(uid), 10)

    def of(self, sid: str, action: str) -> list[Got]:
        return [g for g in self.calls if g.station == sid and g.action == action]


@pytest.fixture
async def scripted() -> AsyncIterator[tuple[ScriptedCsms, str]]:
    csms = ScriptedCsms()
    url = await csms.start()
    try:
        yield csms, url
    finally:
        await csms.stop()


@pytest.fixture
async def rig(tmp_path: Path, sim: SimulatorThread,
              scripted: tuple[ScriptedCsms, str]) -> AsyncIterator[tuple[Gateway, ScriptedCsms]]:
    csms, url = scripted
    cfg: Config = demo_config(tmp_path / "var", url, sim.port, 2, sample_s=60)
    cfg = dataclasses.replace(cfg, control=ControlConfig(),
                              pcs=dataclasses.replace(PcsConfig(), port=sim.port, timeout_ms=400))
    gw = Gateway(cfg)
    await gw.start()
    try:
        for sid, ep in gw.endpoints.items():
            await until(lambda e=ep: e.booted.is_set(), 20)
            assert ep.ctx.rpc is not None
            ep.ctx.rpc.call_timeout = CALL_TIMEOUT_S
            # Keep transaction messages for as long as the test needs, retried every second.
            for key, value in (("TransactionMessageAttempts", "10"),
                               ("TransactionMessageRetryInterval", "1")):
                r = await csms.call(sid, "ChangeConfiguration", {"key": key, "value": value})
                assert r[2] == {"status": "Accepted"}
        yield gw, csms
    finally:
        async with asyncio.timeout(10):
            await gw.stop(drain_s=0)


async def remote_start(csms: ScriptedCsms, sid: str, connector: int = 1) -> None:
    r = await csms.call(sid, "RemoteStartTransaction", {"idTag": "TAG-1",
                                                         "connectorId": connector})
    assert r[2] == {"status": "Accepted"}


async def test_wrong_unique_ids_are_ignored_and_the_start_is_resent_under_its_own_id(
        rig: tuple[Gateway, ScriptedCsms], sim: SimulatorThread) -> None:
    gw, csms = rig
    sid, other = list(gw.endpoints)
    ep = gw.endpoints[sid]
    csms.mode = "wrong_id"
    await remote_start(csms, sid)
    # Answers under wrong ids settle nothing: the StartTransaction times out and is resent.
    await until(lambda: len(csms.of(sid, "StartTransaction")) >= 2, 10)
    assert ep.ctx.rpc is not None and ep.ctx.rpc.stats.replies_dropped >= 2
    assert gw.journal is not None and gw.journal.outbox.depth(sid) >= 1
    # The session runs meanwhile (the CSMS's bookkeeping lags, the battery does not).
    await until(lambda: sim.written.setpoint_w > 0)
    csms.mode = "normal"
    await until(lambda: gw.journal is not None and gw.journal.outbox.depth(sid) == 0, 10)
    starts = csms.of(sid, "StartTransaction")
    assert len({s.unique_id for s in starts}) == 1  # every attempt under the one id
    assert len({orjson.dumps(s.payload) for s in starts}) == 1  # ... and the same message
    assert len(csms.tx_by_uid) == 1
    # The transaction id the CSMS gave is the one the stop carries: nothing lost, nothing stale.
    (tx_id,) = csms.tx_by_uid.values()
    await csms.call(sid, "RemoteStopTransaction", {"transactionId": tx_id})
    await until(lambda: csms.of(sid, "StopTransaction"), 10)
    assert csms.of(sid, "StopTransaction")[0].payload["transactionId"] == tx_id
    assert ep.connects == 1 and gw.endpoints[other].connects == 1


async def test_a_csms_that_never_answers_times_out_our_calls_but_keeps_the_queue(
        rig: tuple[Gateway, ScriptedCsms]) -> None:
    gw, csms = rig
    sid, other = list(gw.endpoints)
    ep = gw.endpoints[sid]
    assert ep.ctx.rpc is not None and gw.journal is not None
    await remote_start(csms, sid)
    await until(lambda: gw.journal is not None and gw.journal.outbox.depth(sid) == 0, 10)
    (tx_id,) = csms.tx_by_uid.values()

    csms.mode = "silent"
    r = await csms.call(sid, "TriggerMessage", {"requestedMessage": "Heartbeat"})
    assert r[2] == {"status": "Accepted"}
    await until(lambda: ep.ctx.rpc is not None and ep.ctx.rpc.stats.timeouts >= 1, 10)
    # The stop is journaled and waits; it is sent (and unanswered) again and again.
    await csms.call(sid, "RemoteStopTransaction", {"transactionId": tx_id})
    await until(lambda: len(csms.of(sid, "StopTransaction")) >= 2, 10)
    assert gw.journal.outbox.depth(sid) >= 1
    # The connection stays up and usable in the other direction.
    r = await csms.call(sid, "GetConfiguration", {"key": ["HeartbeatInterval"]})
    assert r[0] == 3 and r[2]["configurationKey"][0]["key"] == "HeartbeatInterval"
    assert ep.connects == 1 and csms.connections == 2

    csms.mode = "normal"
    await until(lambda: gw.journal is not None and gw.journal.outbox.depth(sid) == 0, 10)
    stops = csms.of(sid, "StopTransaction")
    assert len({s.unique_id for s in stops}) == 1 and stops[0].payload["transactionId"] == tx_id
    assert gw.endpoints[other].connects == 1


async def test_a_csms_call_while_ours_is_outstanding_is_answered_and_ours_completes(
        rig: tuple[Gateway, ScriptedCsms]) -> None:
    gw, csms = rig
    sid = next(iter(gw.endpoints))
    ep = gw.endpoints[sid]
    rpc = ep.ctx.rpc
    assert rpc is not None
    rpc.call_timeout = 10.0  # ours must wait long enough for the CSMS's own exchange
    timeouts = rpc.stats.timeouts
    csms.mode = "hold"
    heartbeats = len(csms.of(sid, "Heartbeat"))
    r = await csms.call(sid, "TriggerMessage", {"requestedMessage": "Heartbeat"})
    assert r[2] == {"status": "Accepted"}
    await until(lambda: csms.held and csms.held[-1][1].action == "Heartbeat", 10)
    assert len(csms.of(sid, "Heartbeat")) == heartbeats + 1
    # Our Heartbeat is outstanding; the CSMS asks something and gets its answer.
    r = await csms.call(sid, "DataTransfer", {"vendorId": "acme"})
    assert r[:3] == [3, r[1], {"status": "UnknownVendorId"}]
    r = await csms.call(sid, "GetConfiguration", {"key": ["MeterValueSampleInterval"]})
    assert r[0] == 3
    csms.mode = "normal"
    held_uid = csms.held[-1][1].unique_id
    await csms.release()
    # Our CALL completed with the late (right-id) answer: no timeout, nothing dropped.
    await until(lambda: rpc.stats.results_in.get("Heartbeat", 0) >= 1, 10)
    assert rpc.stats.timeouts == timeouts
    assert held_uid not in csms.replies  # we never answer a CALLRESULT
    assert ep.connects == 1
