"""A 1.6J and 2.0.1 CSMS on a real WebSocket whose answers a test scripts: outages, CALLERRORs, a
socket cut right before or after an answer, a CALL left unanswered on a live link. Each station is
answered in the version its subprotocol names. Every CALL it gets is checked against the official
schema of that version and recorded with its arrival time, so tests can check order, ids and
pacing from the CSMS's side.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import orjson
from waiting import until
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from bess_gateway.config import PcsConfig
from bess_gateway.demo.run import demo_config
from bess_gateway.endpoint.link import Backoff
from bess_gateway.gateway import Gateway
from bess_gateway.ocpp.schemas import validator

# What the CSMS does with the next CALL of an action: answer; answer with a CALLERROR; go down
# without answering ("outage": every socket cut, no new connection until start() again); answer,
# then go down ("answer_then_outage"); never answer it, the link staying up ("silent"); answer
# off the schema ("invalid": a property the schema forbids, or for a 1.6 StartTransaction an
# idTagInfo status it does not know, its transactionId intact; "invalid_no_id": a 1.6
# StartTransaction.conf without its transactionId).
Step = Literal["answer", "error", "outage", "answer_then_outage", "silent", "invalid",
               "invalid_no_id"]


@dataclass(frozen=True, slots=True)
class Got:
    station: str
    action: str
    payload: dict[str, Any]
    unique_id: str
    at: float  # time.monotonic()
    answered: Step
    version: str = "1.6"


@dataclass
class ScriptedCsms:
    port: int = 0
    received: list[Got] = field(default_factory=list)
    # action -> steps for its next CALLs (any station); empty or absent: "answer"
    script: dict[str, list[Step]] = field(default_factory=lambda: defaultdict(list))
    # transactionId the CSMS gave, per StartTransaction unique id (the same id for a resend)
    tx_ids: dict[str, int] = field(default_factory=dict)
    invalid: list[str] = field(default_factory=list)  # CALLs that broke their schema
    connected_at: list[tuple[str, float]] = field(default_factory=list)
    # Set: BootNotifications are answered only once it is set (stations that reconnected one
    # by one all start their work at the same moment).
    boot_gate: asyncio.Event | None = None
    _server: Server | None = None
    _conns: dict[str, ServerConnection] = field(default_factory=dict)
    _pending: dict[str, asyncio.Future[Any]] = field(default_factory=dict)
    _ids: Any = field(default_factory=lambda: itertools.count(100))
    _call_ids: Any = field(default_factory=lambda: itertools.count(1))

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ocpp"

    async def start(self) -> None:
        self._server = await serve(self._handle, "127.0.0.1", self.port,
                                   subprotocols=["ocpp1.6", "ocpp2.0.1"],  # type: ignore[list-item]
                                   compression=None)
        self.port = self._server.sockets[0].getsockname()[1]

    def _go_down(self) -> None:
        if self._server is not None:
            self._server.close(close_connections=False)
        for ws in list(self._conns.values()):
            ws.transport.abort()
        self._conns.clear()

    async def stop(self) -> None:
        """An outage: stop listening and cut every socket (no close handshake)."""
        self._go_down()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def online(self, station: str) -> bool:
        return station in self._conns

    def of(self, station: str | None = None, *actions: str) -> list[Got]:
        return [g for g in self.received
                if (station is None or g.station == station)
                and (not actions or g.action in actions)]

    async def call(self, station: str, action: str, payload: dict[str, Any]) -> Any:
        ws = self._conns[station]
        uid = f"csms-{next(self._call_ids)}"
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[uid] = fut
        await ws.send(orjson.dumps([2, uid, action, payload]).decode())
        async with asyncio.timeout(10):
            return await fut

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        station = ws.request.path.rstrip("/").rsplit("/", 1)[-1]
        self._conns[station] = ws
        self.connected_at.append((station, time.monotonic()))
        try:
            async for raw in ws:
                msg = orjson.loads(raw)
                if msg[0] == 2:
                    if await self._on_call(ws, station, msg[1], msg[2], msg[3]):
                        return
                elif msg[0] in (3, 4):
                    fut = self._pending.pop(msg[1], None)
                    if fut is not None and not fut.done():
                        fut.set_result(msg[2] if msg[0] == 3 else msg)
        except ConnectionClosed:
            pass
        finally:
            if self._conns.get(station) is ws:
                del self._conns[station]

    async def _on_call(self, ws: ServerConnection, station: str, uid: str, action: str,
                       payload: dict[str, Any]) -> bool:
        """Answer one CALL; True when the socket was cut."""
        version = "2.0.1" if ws.subprotocol == "ocpp2.0.1" else "1.6"
        try:
            validator(version).request(action, payload)
        except Exception as exc:
            self.invalid.append(f"{action} {payload}: {exc}")
        steps = self.script.get(action)
        step: Step = steps.pop(0) if steps else "answer"
        self.received.append(Got(station, action, payload, uid, time.monotonic(), step, version))
        if action == "BootNotification" and self.boot_gate is not None:
            await self.boot_gate.wait()
        if step == "outage":
            self._go_down()
            return True
        if step == "error":
            await ws.send(orjson.dumps(
                [4, uid, "InternalError", "scripted failure", {}]).decode())
            return False
        if step == "silent":
            return False
        answer = self._answer(uid, action) if version == "1.6" else self._answer201(action)
        if step == "invalid":
            if "idTagInfo" in answer and "transactionId" in answer:
                answer = {**answer, "idTagInfo": {"status": "Bogus"}}
            else:
                answer = {**answer, "unexpected": True}
        elif step == "invalid_no_id":
            answer = {k: v for k, v in answer.items() if k != "transactionId"}
        await ws.send(orjson.dumps([3, uid, answer]).decode())
        if step == "answer_then_outage":
            # The answer reaches the gateway; nothing after it is read or answered.
            await asyncio.sleep(0.2)
            self._go_down()
            return True
        return False

    def _answer(self, uid: str, action: str) -> dict[str, Any]:
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        if action == "BootNotification":
            return {"status": "Accepted", "currentTime": now, "interval": 300}
        if action == "Heartbeat":
            return {"currentTime": now}
        if action == "Authorize":
            return {"idTagInfo": {"status": "Accepted"}}
        if action == "StartTransaction":
            tx_id = self.tx_ids.setdefault(uid, next(self._ids))
            return {"transactionId": tx_id, "idTagInfo": {"status": "Accepted"}}
        return {}

    @staticmethod
    def _answer201(action: str) -> dict[str, Any]:
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        if action == "BootNotification":
            return {"status": "Accepted", "currentTime": now, "interval": 300}
        if action == "Heartbeat":
            return {"currentTime": now}
        if action == "Authorize":
            return {"idTokenInfo": {"status": "Accepted"}}
        if action == "TransactionEvent":
            return {"idTokenInfo": {"status": "Accepted"}}
        return {}


async def start_gateway(data_dir: Path, csms: ScriptedCsms, sim_port: int, n: int = 1, *,
                        sample_s: int = 1, ocpp: str = "1.6", **gateway_keys: Any) -> Gateway:
    """A gateway of `n` endpoints (`ocpp`: "1.6", "2.0.1" or "mixed") against `csms` and the
    simulator; [gateway] keys as kwargs. Reconnects are quick (the back-off rule is unchanged,
    only its parameters are shorter)."""
    cfg = demo_config(data_dir, csms.url, sim_port, n, sample_s=sample_s, ocpp=ocpp)
    cfg = dataclasses.replace(
        cfg, pcs=dataclasses.replace(PcsConfig(), port=sim_port, timeout_ms=400),
        gateway=dataclasses.replace(cfg.gateway, **gateway_keys))
    gw = Gateway(cfg)
    await gw.start()
    for ep in gw.endpoints.values():
        ep.backoff = Backoff(0.05, 0.25, 0)  # the same rule, bounds short enough for a test
    return gw


async def booted(gw: Gateway) -> list[str]:
    for ep in gw.endpoints.values():
        await until(ep.booted.is_set, 20)
    return list(gw.endpoints)


async def remote_start(csms: ScriptedCsms, station: str, connector: int,
                       tag: str = "TAG-1") -> None:
    r = await csms.call(station, "RemoteStartTransaction",
                        {"idTag": tag, "connectorId": connector})
    assert r == {"status": "Accepted"}


@contextlib.asynccontextmanager
async def scripted_csms() -> AsyncIterator[ScriptedCsms]:
    """A started ScriptedCsms, stopped at the end, which then checks that nothing the gateway
    sent broke its schema (what a test module's `csms` fixture yields)."""
    server = ScriptedCsms()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
        assert server.invalid == []  # nothing the gateway sent broke its schema
