"""Chaos scenario (issue 5): sessions on both connectors of many endpoints while, in a loop, the
CSMS restarts, sockets are cut, the PCS stops answering and the gateway is SIGKILLed and
restarted. Afterwards every transaction has exactly one start and one end at the CSMS, no
transaction message is lost, duplicated or sent under an id that another message already had,
and the energy the transactions report matches the PCS energy registers.

Real parts only: the gateway is a `bess-gateway run` process, the simulator runs in a thread of
this process (it outlives the gateway's kills; its watchdog stops the battery while the gateway is
down), the CSMS is a WebSocket server here that records every CALL with its unique id and keeps
its records across its own restarts (as a real CSMS keeps its database).

    python tests/chaos.py --endpoints 50 --duration 300

A stall (`csms_stall`, issue 13) is a CSMS that keeps its sockets but answers nothing for several
times the gateway's MessageTimeout (set short by the CSMS at the start: MessageTimeout 5 s,
transaction messages retried after 1 s x n, TransactionMessageAttempts 1): every CALL that arrives
meanwhile is lost unanswered, as in a hung backend, so each transaction message waiting then is
left unanswered more often than the attempts allow, and must still arrive once the CSMS answers
again.

`tests/test_chaos.py` runs a short form in the suite. The first half of the endpoints speak
1.6J, the rest 2.0.1 (`--v201`: how many): the CSMS answers each by its subprotocol. A 2.0.1
transaction is its TransactionEvents by transactionId: Started is its start, Ended its end, energy
from their Transaction.Begin/End Energy.Active.*.Register values; an event whose (transactionId,
seqNo) came before under another unique id is a duplicate.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from waiting import until
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from bess_gateway.sim.server import SimulatorThread

log = logging.getLogger("chaos")

TX_ACTIONS = ("StartTransaction", "StopTransaction", "MeterValues", "TransactionEvent")
VERSIONS = ("1.6", "2.0.1")
CHARGE_CAP_W = 3_000.0  # the lighter direction's sessions, so power flows (the net is metered)
QUEUED_AFTER_S = 2.0  # a transaction message this much older than its receipt waited in a queue
# What the CSMS sets at the start (real OCPP configuration): short enough for a stall of a few
# MessageTimeouts to fit a test, and TransactionMessageAttempts below the unanswered sends a stall
# causes.
MESSAGE_TIMEOUT_S = 5  # the setting's minimum
RETRY_INTERVAL_S = 1
ATTEMPTS = 1  # every message a stall leaves unanswered has had as many unanswered sends
STALL_S = 2.2 * MESSAGE_TIMEOUT_S  # a message sent as it begins is left unanswered twice


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _age_s(timestamp: str) -> float:
    t = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    return (datetime.now(UTC) - t).total_seconds()


# -- the recording CSMS ----------------------------------------------------------------------
@dataclass
class Tx:
    id: int | str  # 1.6: the CSMS's; 2.0.1: the station's transactionId
    station: str
    connector: int
    meter_start: int
    started: float  # monotonic, at the CSMS
    version: str = "1.6"
    start_uids: set[str] = field(default_factory=set)
    stop_uids: set[str] = field(default_factory=set)
    meter_stop: int | None = None
    reason: str | None = None


@dataclass
class Records:
    """What the CSMS saw; kept across CSMS restarts."""

    by_uid: dict[str, bytes] = field(default_factory=dict)  # unique id -> action + payload
    deliveries: int = 0  # CALLs received, resends included
    resends: int = 0  # the same unique id and content again (a resend after a lost answer)
    id_reuse: int = 0  # a unique id seen again with other content: a different message
    tx_messages: int = 0  # distinct transaction messages (Start/Stop/MeterValues)
    queued: int = 0  # of those, delivered QUEUED_AFTER_S or more after their timestamp
    duplicates: int = 0  # a message delivered again under a new unique id
    unknown_stops: int = 0
    stalled: int = 0  # CALLs left unanswered (and unprocessed) during a stall
    stalled_uids: dict[str, int] = field(default_factory=dict)  # tx message id -> times so
    txs: dict[int | str, Tx] = field(default_factory=dict)  # in the order their starts came
    start_keys: dict[tuple[str, int, str], int] = field(default_factory=dict)
    meter_keys: dict[tuple[str, Any, str], str] = field(default_factory=dict)  # -> unique id
    event_keys: dict[tuple[str, int], str] = field(default_factory=dict)  # 2.0.1 seqNo -> uid


Handler = Callable[[str, str, str, dict[str, Any]], dict[str, Any] | None]


def _register(event: dict[str, Any], context: str) -> int | None:
    """The Energy.Active.*.Register (Wh) of a TransactionEvent's meter values for `context`."""
    for mv in event.get("meterValue") or []:
        for sv in mv.get("sampledValue") or []:
            measurand = str(sv.get("measurand", ""))
            if (sv.get("context") == context and measurand.startswith("Energy.Active.")
                    and measurand.endswith(".Register")):
                unit = sv.get("unitOfMeasure") or {}
                assert unit.get("unit", "Wh") == "Wh" and not unit.get("multiplier"), sv
                return int(sv["value"])
    return None


class Csms:
    """A 1.6J and 2.0.1 CSMS on a fixed loopback port that can be stopped and started again."""

    def __init__(self) -> None:
        self.rec = Records()
        self.port = 0
        self.conns: dict[str, ServerConnection] = {}
        self._server: Server | None = None
        self._ids = itertools.count(1)
        self._pending: dict[str, asyncio.Future[Any]] = {}
        self.handlers: dict[str, Handler] = {"ocpp1.6": self._handle16,
                                             "ocpp2.0.1": self._handle201}
        self.stalling = False  # a stall: CALLs are read and left unanswered, unprocessed

    async def start(self) -> None:
        self._server = await serve(self._serve, "127.0.0.1", self.port,
                                   subprotocols=list(self.handlers), compression=None)  # type: ignore[arg-type]
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ocpp"

    def cut(self, n: int, rng: random.Random) -> int:
        """Abort `n` stations' sockets as a network failure would (no close handshake)."""
        victims = rng.sample(sorted(self.conns), min(n, len(self.conns)))
        for station in victims:
            self.conns[station].transport.abort()
        return len(victims)

    async def _serve(self, ws: ServerConnection) -> None:
        station = ws.request.path.rstrip("/").rsplit("/", 1)[-1] if ws.request else "?"
        handler = self.handlers[ws.subprotocol or "ocpp1.6"]
        self.conns[station] = ws
        try:
            async for raw in ws:
                msg = orjson.loads(raw)
                if msg[0] == 2:
                    _, uid, action, payload = msg
                    if self.stalling:
                        self.rec.stalled += 1
                        if action in TX_ACTIONS:
                            self.rec.stalled_uids[uid] = self.rec.stalled_uids.get(uid, 0) + 1
                        continue
                    reply = self._record(station, uid, action, payload, handler)
                    if reply is None:
                        out = [4, uid, "NotImplemented", "", {}]
                    else:
                        out = [3, uid, reply]
                    await ws.send(orjson.dumps(out).decode())
                elif msg[0] in (3, 4):
                    fut = self._pending.pop(msg[1], None)
                    if fut is not None and not fut.done():
                        fut.set_result(msg)
        except ConnectionClosed:
            pass
        finally:
            if self.conns.get(station) is ws:
                del self.conns[station]

    def _record(self, station: str, uid: str, action: str, payload: dict[str, Any],
                handler: Handler) -> dict[str, Any] | None:
        r = self.rec
        r.deliveries += 1
        content = orjson.dumps([station, action, payload], option=orjson.OPT_SORT_KEYS)
        seen = r.by_uid.get(uid)
        if seen is not None:
            if seen != content:
                r.id_reuse += 1
                log.error("unique id %s reused: %s then %s", uid, seen[:200], content[:200])
            else:
                r.resends += 1
        else:
            r.by_uid[uid] = content
            if action in TX_ACTIONS:
                r.tx_messages += 1
                stamp = payload.get("timestamp") or (payload.get("meterValue") or [{}])[0].get(
                    "timestamp")
                if stamp and _age_s(stamp) >= QUEUED_AFTER_S:
                    r.queued += 1
        return handler(station, uid, action, payload)

    def _handle16(self, station: str, uid: str, action: str,
                  payload: dict[str, Any]) -> dict[str, Any] | None:
        r = self.rec
        if action == "BootNotification":
            return {"status": "Accepted", "currentTime": _now(), "interval": 60}
        if action == "Heartbeat":
            return {"currentTime": _now()}
        if action in ("StatusNotification", "SecurityEventNotification"):
            return {}
        if action == "Authorize":
            return {"idTagInfo": {"status": "Accepted"}}
        if action == "StartTransaction":
            key = (station, int(payload["connectorId"]), str(payload["timestamp"]))
            tx_id = r.start_keys.get(key)
            if tx_id is None:
                tx_id = next(self._ids)
                r.start_keys[key] = tx_id
                r.txs[tx_id] = Tx(tx_id, station, key[1], int(payload["meterStart"]),
                                  time.monotonic())
            tx = r.txs[tx_id]
            if uid not in tx.start_uids and tx.start_uids:
                r.duplicates += 1  # the same start again under a new id
                log.error("duplicate StartTransaction %s for tx %d", uid, tx_id)
            tx.start_uids.add(uid)
            return {"transactionId": tx_id, "idTagInfo": {"status": "Accepted"}}
        if action == "StopTransaction":
            stopped = r.txs.get(int(payload["transactionId"]))
            if stopped is None:
                r.unknown_stops += 1
                log.error("StopTransaction for unknown transaction %s", payload)
                return {}
            if uid not in stopped.stop_uids and stopped.stop_uids:
                r.duplicates += 1
                log.error("duplicate StopTransaction %s for tx %d", uid, stopped.id)
            stopped.stop_uids.add(uid)
            stopped.meter_stop = int(payload["meterStop"])
            stopped.reason = payload.get("reason", "Local")
            return {}
        if action == "MeterValues":
            first = (payload.get("meterValue") or [{}])[0]
            mkey = (station, payload.get("transactionId"),
                    f'{payload["connectorId"]}/{first.get("timestamp")}')
            if r.meter_keys.setdefault(mkey, uid) != uid:
                r.duplicates += 1
                log.error("duplicate MeterValues %s: %s", uid, mkey)
            return {}
        if action == "DataTransfer":
            return {"status": "Accepted"}
        return None

    def _handle201(self, station: str, uid: str, action: str,
                   payload: dict[str, Any]) -> dict[str, Any] | None:
        if action == "BootNotification":
            return {"status": "Accepted", "currentTime": _now(), "interval": 60}
        if action == "Heartbeat":
            return {"currentTime": _now()}
        if action in ("StatusNotification", "SecurityEventNotification", "MeterValues",
                      "NotifyEvent", "NotifyReport"):
            return {}
        if action == "Authorize":
            return {"idTokenInfo": {"status": "Accepted"}}
        if action == "TransactionEvent":
            return self._transaction_event(station, uid, payload)
        return None

    def _transaction_event(self, station: str, uid: str,
                           payload: dict[str, Any]) -> dict[str, Any]:
        r = self.rec
        tid = str(payload["transactionInfo"]["transactionId"])
        kind = payload["eventType"]
        if r.event_keys.setdefault((tid, int(payload["seqNo"])), uid) != uid:
            r.duplicates += 1  # the same event again under a new unique id
            log.error("duplicate TransactionEvent %s: %s seqNo %s", uid, tid, payload["seqNo"])
        tx = r.txs.get(tid)
        if kind == "Started":
            if tx is None:
                begin = _register(payload, "Transaction.Begin")
                assert begin is not None, payload
                tx = r.txs[tid] = Tx(tid, station, int(payload["evse"]["id"]), begin,
                                     time.monotonic(), version="2.0.1")
            elif uid not in tx.start_uids:
                r.duplicates += 1
                log.error("duplicate Started %s for tx %s", uid, tid)
            tx.start_uids.add(uid)
            return {"idTokenInfo": {"status": "Accepted"}}
        if tx is None:
            if kind == "Ended":
                r.unknown_stops += 1
                log.error("Ended for unknown transaction %s", tid)
            return {}
        if kind == "Ended":
            if uid not in tx.stop_uids and tx.stop_uids:
                r.duplicates += 1
                log.error("duplicate Ended %s for tx %s", uid, tid)
            tx.stop_uids.add(uid)
            end = _register(payload, "Transaction.End")
            assert end is not None, payload
            tx.meter_stop = end
            tx.reason = payload["transactionInfo"].get("stoppedReason", "Local")
        return {}

    async def call(self, station: str, action: str, payload: dict[str, Any],
                   timeout: float = 10.0) -> dict[str, Any] | None:
        """A CALL to a station; None when it is not connected, fails or does not answer."""
        ws = self.conns.get(station)
        if ws is None:
            return None
        uid = f"csms-{next(self._ids)}"
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[uid] = fut
        try:
            await ws.send(orjson.dumps([2, uid, action, payload]).decode())
            async with asyncio.timeout(timeout):
                msg = await fut
        except (ConnectionClosed, TimeoutError):
            return None
        finally:
            self._pending.pop(uid, None)
        return msg[2] if msg[0] == 3 else None

    def open_tx(self, station: str, connector: int) -> Tx | None:
        for tx in self.rec.txs.values():
            if tx.station == station and tx.connector == connector and tx.meter_stop is None:
                return tx
        return None


# -- the gateway process ---------------------------------------------------------------------
class GatewayProcess:
    def __init__(self, workdir: Path, csms_url: str, pcs_port: int, endpoints: int,
                 v201: int = 0) -> None:
        self.data_dir = workdir / "var"
        self.config = workdir / "gateway.toml"
        self.log_path = workdir / "gateway.log"
        blocks = [(1, endpoints - v201, "1.6"), (endpoints - v201 + 1, v201, "2.0.1")]
        self.config.write_text(f"""
[gateway]
data_dir = "{self.data_dir}"
metrics_listen = ""

[pcs]
port = {pcs_port}
""" + "".join(f"""
[[endpoint]]
id = "CHAOS-{{n:03}}"
count = {count}
start = {start}
ocpp_version = "{version}"
csms_url = "{csms_url}"
meter_sample_interval_s = 5
""" for start, count, version in blocks if count > 0))
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log_path.open("a") as out:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bess_gateway", "run", "--config", str(self.config),
                stdout=out, stderr=subprocess.STDOUT)

    async def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        await self.proc.wait()

    async def terminate(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(timeout):
            return await self.proc.wait()

    def meters(self) -> dict[tuple[str, int], float]:
        """The connector registers the gateway saved when it stopped."""
        db = sqlite3.connect(f"file:{self.data_dir / 'journal.sqlite'}?mode=ro", uri=True)
        try:
            rows = db.execute("SELECT endpoint_id, connector, energy_wh FROM meters").fetchall()
        finally:
            db.close()
        return {(e, int(c)): float(wh) for e, c, wh in rows}

    def journal_leftovers(self) -> tuple[int, int]:
        """(transaction messages still queued, transactions still open) in the journal."""
        db = sqlite3.connect(f"file:{self.data_dir / 'journal.sqlite'}?mode=ro", uri=True)
        try:
            marks = ",".join("?" * len(TX_ACTIONS))
            queued = db.execute(f"SELECT count(*) FROM outbox WHERE action IN ({marks})",
                                TX_ACTIONS).fetchone()[0]
            open_tx = db.execute("SELECT count(*) FROM transactions").fetchone()[0]
        finally:
            db.close()
        return int(queued), int(open_tx)


# -- the scenario ----------------------------------------------------------------------------
@dataclass
class Result:
    endpoints: int
    duration_s: float
    csms_outages: int = 0
    csms_stalls: int = 0
    stalled_calls: int = 0  # CALLs the stalled CSMS left unanswered
    # transaction messages left unanswered more times than TransactionMessageAttempts during a
    # stall, that still reached the CSMS afterwards (the old outbox gave them up)
    outlived_attempts: int = 0
    socket_cuts: int = 0
    pcs_silences: int = 0
    kills: int = 0
    transactions: int = 0
    power_loss_ends: int = 0
    tx_messages: int = 0
    queued: int = 0
    deliveries: int = 0
    resends: int = 0
    losses: int = 0
    duplicates: int = 0
    id_reuse: int = 0
    bad_tx: int = 0  # transactions without exactly one start and one end
    # per OCPP version: endpoints, transactions, ended PowerLoss, bad_tx
    by_version: dict[str, dict[str, int]] = field(default_factory=dict)
    flowed_wh: dict[str, float] = field(default_factory=dict)
    billed_wh: dict[str, float] = field(default_factory=dict)
    # energy counted on a connector after its last meterStop: the fraction of a Wh the whole-Wh
    # meterStop leaves for the connector's next transaction (anything more would be a loss)
    unbilled_wh: dict[str, float] = field(default_factory=dict)
    worst_unbilled_wh: float = 0.0
    energy_error_pct: dict[str, float] = field(default_factory=dict)
    # A connector's next transaction starting at another register than its last one stopped
    # at: energy billed twice (below) or to nobody (above). Each as "station/connector: ...".
    register_breaks: list[str] = field(default_factory=list)

    @property
    def worst_energy_error_pct(self) -> float:
        return max(self.energy_error_pct.values(), default=0.0)

    def table(self) -> str:
        rows = [
            ("endpoints", self.endpoints), ("duration s", f"{self.duration_s:.0f}"),
            ("CSMS outages", self.csms_outages), ("CSMS stalls", self.csms_stalls),
            ("  CALLs left unanswered", self.stalled_calls),
            ("  tx messages unanswered >= attempts, delivered", self.outlived_attempts),
            ("socket cuts", self.socket_cuts),
            ("PCS silences", self.pcs_silences), ("gateway kills", self.kills),
            ("transactions", self.transactions), ("  ended PowerLoss", self.power_loss_ends),
            ("tx messages delivered", self.tx_messages), ("  of them queued", self.queued),
            ("deliveries (all CALLs)", self.deliveries), ("  resends, same id", self.resends),
            ("losses", self.losses), ("duplicates", self.duplicates),
            ("ids reused", self.id_reuse), ("tx without 1 start + 1 end", self.bad_tx),
        ]
        for version, counts in sorted(self.by_version.items()):
            rows.append((f"OCPP {version}: endpoints / tx / PowerLoss / bad",
                         f"{counts['endpoints']} / {counts['transactions']} / "
                         f"{counts['power_loss_ends']} / {counts['bad_tx']}"))
        for side in ("discharge", "charge"):
            rows.append((f"{side} Wh flowed / billed + in registers",
                         f"{self.flowed_wh.get(side, 0):.1f} / {self.billed_wh.get(side, 0):.0f}"
                         f" + {self.unbilled_wh.get(side, 0):.1f}"))
        rows.append(("worst register after last stop Wh", f"{self.worst_unbilled_wh:.3f}"))
        rows.append(("register breaks between transactions", len(self.register_breaks)))
        rows.extend(("  ", b) for b in self.register_breaks[:10])
        rows.append(("worst energy error %", f"{self.worst_energy_error_pct:.4f}"))
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


async def _until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    await until(predicate, timeout)
    log.info("ok: %s", what)


class Scenario:
    def __init__(self, workdir: Path, endpoints: int, duration_s: float, seed: int = 5,
                 events: int | None = None, kinds: list[str] | None = None,
                 v201: int | None = None) -> None:
        self.workdir = workdir
        self.n = endpoints
        self.duration_s = duration_s
        self.events = events
        self.kinds = kinds or ["csms_outage", "socket_cuts", "pcs_silence", "gateway_kill"]
        self.rng = random.Random(seed)
        self.stations = [f"CHAOS-{i:03}" for i in range(1, endpoints + 1)]
        self.v201 = endpoints // 2 if v201 is None else max(0, min(endpoints, v201))
        # The last `v201` endpoints speak 2.0.1 (GatewayProcess writes them as a second block).
        self.version = {s: "2.0.1" if i >= endpoints - self.v201 else "1.6"
                        for i, s in enumerate(self.stations)}
        self._remote_start_ids = itertools.count(1)
        self.csms = Csms()
        self.sim = SimulatorThread()
        self.result = Result(endpoints, duration_s)
        self._starting: dict[tuple[str, int], float] = {}
        self._heavy: dict[tuple[str, int], bool] = {}  # started uncapped (the heavy side)?
        self._tasks: set[asyncio.Task[Any]] = set()
        self._phase = 1  # 0: discharge is the heavy side, 1: charge (see CHARGE_CAP_W)

    # -- sessions -----------------------------------------------------------------------------
    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _start(self, station: str, connector: int) -> None:
        tag = f"TAG-{station[-3:]}-{connector}"
        heavy = connector == (1 if self._phase == 0 else 2)
        self._heavy[(station, connector)] = heavy
        self._starting[(station, connector)] = time.monotonic()
        profile_id = self.rng.randint(1, 1_000_000)
        period = [{"startPeriod": 0, "limit": CHARGE_CAP_W}]
        if self.version[station] == "2.0.1":
            payload: dict[str, Any] = {"idToken": {"idToken": tag, "type": "Central"},
                                       "evseId": connector,
                                       "remoteStartId": next(self._remote_start_ids)}
            if not heavy:
                payload["chargingProfile"] = {
                    "id": profile_id, "stackLevel": 0, "chargingProfilePurpose": "TxProfile",
                    "chargingProfileKind": "Relative", "chargingSchedule": [{
                        "id": 1, "chargingRateUnit": "W", "chargingSchedulePeriod": period}]}
            await self.csms.call(station, "RequestStartTransaction", payload)
            return
        payload = {"idTag": tag, "connectorId": connector}
        if not heavy:
            payload["chargingProfile"] = {
                "chargingProfileId": profile_id, "stackLevel": 0,
                "chargingProfilePurpose": "TxProfile", "chargingProfileKind": "Relative",
                "chargingSchedule": {"chargingRateUnit": "W", "chargingSchedulePeriod": period}}
        await self.csms.call(station, "RemoteStartTransaction", payload)

    async def _stop(self, tx: Tx) -> None:
        action = "RequestStopTransaction" if tx.version == "2.0.1" else "RemoteStopTransaction"
        await self.csms.call(tx.station, action, {"transactionId": tx.id})

    def flip(self) -> None:
        """The other direction becomes the heavy one: sessions started for the old split stop
        (a burst of stops), their successors start with the new one."""
        self._phase ^= 1
        for tx in [t for t in self.csms.rec.txs.values() if t.meter_stop is None]:
            heavy = tx.connector == (1 if self._phase == 0 else 2)
            if self._heavy.get((tx.station, tx.connector)) != heavy:
                self._spawn(self._stop(tx))

    async def drive(self) -> None:
        """Keep most connectors busy with sessions of 5-20 s."""
        while True:
            now = time.monotonic()
            for station in self.rng.sample(self.stations, max(1, self.n // 3)):
                connector = self.rng.choice((1, 2))
                tx = self.csms.open_tx(station, connector)
                if tx is None:
                    # one RemoteStart at a time per connector (its StartTransaction may be queued)
                    if now - self._starting.get((station, connector), -1e9) > 3.0:
                        self._spawn(self._start(station, connector))
                elif now - tx.started > self.rng.uniform(5.0, 20.0):
                    self._spawn(self._stop(tx))
            await asyncio.sleep(0.5)

    # -- chaos --------------------------------------------------------------------------------
    async def csms_outage(self) -> None:
        await self.csms.stop()
        await asyncio.sleep(self.rng.uniform(1.0, 3.0))
        await self.csms.start()
        self.result.csms_outages += 1

    async def csms_stall(self) -> None:
        """The CSMS keeps its sockets but answers nothing for several MessageTimeouts."""
        self.csms.stalling = True
        await asyncio.sleep(STALL_S)
        self.csms.stalling = False
        self.result.csms_stalls += 1

    async def socket_cuts(self) -> None:
        self.result.socket_cuts += self.csms.cut(max(1, self.n // 5), self.rng)

    async def pcs_silence(self) -> None:
        self.sim.set_silent(True)
        await asyncio.sleep(self.rng.uniform(2.5, 4.0))  # past the PCS watchdog (2 s)
        self.sim.set_silent(False)
        self.result.pcs_silences += 1

    async def gateway_kill(self) -> None:
        await self.gateway.kill()
        await asyncio.sleep(self.rng.uniform(0.5, 2.0))
        await self.gateway.start()
        self.result.kills += 1

    # -- the run ------------------------------------------------------------------------------
    async def run(self) -> Result:
        self.sim.start()
        await self.csms.start()
        self.gateway = GatewayProcess(self.workdir, self.csms.url, self.sim.port, self.n,
                                      self.v201)
        try:
            await self._run()
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            if self.gateway.proc is not None and self.gateway.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    await self.gateway.kill()
            await self.csms.stop()
            self.sim.stop()
        return self.result

    async def _run(self) -> None:
        await self.gateway.start()
        await _until(lambda: len(self.csms.conns) == self.n, 60, "all endpoints connected")
        await _until(lambda: abs(self.sim.state.measured_w) < 1.0, 10, "PCS idle")
        if "csms_stall" in self.kinds:
            await self._configure_timeouts()
        e0 = self._registers()
        driver = asyncio.ensure_future(self.drive())
        chaos = [getattr(self, kind) for kind in self.kinds]
        n_events = self.events if self.events is not None else max(4, int(self.duration_s / 12))
        gap = self.duration_s / (n_events + 1)
        try:
            for i in range(n_events):
                await asyncio.sleep(gap)
                if i % 2 == 1:
                    self.flip()
                # Each round of kinds starts two later: with the flip every second event, every
                # kind then hits each direction's heavy phase (a PCS silence only in discharge
                # phases left the short form too little discharge to resolve 0.1 %).
                event = chaos[(i + 2 * (i // len(chaos))) % len(chaos)]
                log.info("chaos: %s", event.__name__)
                await event()
            await asyncio.sleep(gap)
        finally:
            driver.cancel()
            await asyncio.gather(driver, return_exceptions=True)
        await self._wind_down()
        self._tally(e0, self._registers())

    async def _configure_timeouts(self) -> None:
        """MessageTimeout, the retry interval and the attempts, as a CSMS sets them (stored in
        the gateway's journal: they outlive its kills)."""
        values = {"MessageTimeout": MESSAGE_TIMEOUT_S,
                  "TransactionMessageRetryInterval": RETRY_INTERVAL_S,
                  "TransactionMessageAttempts": ATTEMPTS}
        variables = {"MessageTimeout": ("MessageTimeout", "Default"),
                     "TransactionMessageRetryInterval": ("MessageAttemptInterval",
                                                         "TransactionEvent"),
                     "TransactionMessageAttempts": ("MessageAttempts", "TransactionEvent")}

        async def configure(station: str) -> bool:
            if self.version[station] == "1.6":
                answers = [await self.csms.call(station, "ChangeConfiguration",
                                                {"key": k, "value": str(v)})
                           for k, v in values.items()]
                return all(a == {"status": "Accepted"} for a in answers)
            answer = await self.csms.call(station, "SetVariables", {"setVariableData": [
                {"component": {"name": "OCPPCommCtrlr"},
                 "variable": {"name": variables[k][0], "instance": variables[k][1]},
                 "attributeValue": str(v)} for k, v in values.items()]})
            return answer is not None and all(
                r["attributeStatus"] == "Accepted" for r in answer["setVariableResult"])

        todo = set(self.stations)
        async with asyncio.timeout(60):
            while todo:
                done = await asyncio.gather(*(configure(s) for s in sorted(todo)))
                todo -= {s for s, ok in zip(sorted(todo), done, strict=True) if ok}
                if todo:
                    await asyncio.sleep(0.5)  # not booted yet
        log.info("ok: MessageTimeout %d s, retries %d s x n, %d attempts", MESSAGE_TIMEOUT_S,
                 RETRY_INTERVAL_S, ATTEMPTS)

    def _registers(self) -> tuple[int, int]:
        """The PCS lifetime energy registers (whole Wh, as the gateway reads them)."""
        words = self.sim.registers(119, 8)
        return (int.from_bytes(b"".join(w.to_bytes(2, "big") for w in words[:4]), "big"),
                int.from_bytes(b"".join(w.to_bytes(2, "big") for w in words[4:]), "big"))

    async def _wind_down(self) -> None:
        """Stop every session, let every message out, then stop the gateway cleanly."""
        await _until(lambda: len(self.csms.conns) == self.n, 60, "all endpoints back")
        await asyncio.sleep(2.0)  # RemoteStarts still in flight become transactions
        async with asyncio.timeout(90):
            while open_txs := [t for t in self.csms.rec.txs.values() if t.meter_stop is None]:
                await asyncio.gather(*(self._stop(t) for t in open_txs))
                await asyncio.sleep(1.0)
        await _until(lambda: abs(self.sim.state.measured_w) < 1.0, 20, "PCS idle at the end")
        await asyncio.sleep(1.0)
        code = await self.gateway.terminate()
        log.info("gateway exited with %d", code)

    def _tally(self, e0: tuple[int, int], e1: tuple[int, int]) -> None:
        r, rec = self.result, self.csms.rec
        txs = list(rec.txs.values())
        r.transactions = len(txs)
        r.power_loss_ends = sum(t.reason == "PowerLoss" for t in txs)
        r.tx_messages, r.queued = rec.tx_messages, rec.queued
        r.deliveries, r.resends, r.id_reuse = rec.deliveries, rec.resends, rec.id_reuse
        r.duplicates = rec.duplicates
        r.stalled_calls = rec.stalled
        r.outlived_attempts = sum(n >= ATTEMPTS and uid in rec.by_uid
                                  for uid, n in rec.stalled_uids.items())
        r.bad_tx = sum(len(t.start_uids) != 1 or len(t.stop_uids) != 1 for t in txs)
        for version in VERSIONS:
            mine = [t for t in txs if t.version == version]
            r.by_version[version] = {
                "endpoints": sum(v == version for v in self.version.values()),
                "transactions": len(mine),
                "power_loss_ends": sum(t.reason == "PowerLoss" for t in mine),
                "bad_tx": sum(len(t.start_uids) != 1 or len(t.stop_uids) != 1 for t in mine)}
        queued, still_open = self.gateway.journal_leftovers()
        r.losses = sum(t.meter_stop is None for t in txs) + queued + still_open + \
            rec.unknown_stops
        last_stop: dict[tuple[str, int], int] = {}
        last_reason: dict[tuple[str, int], str | None] = {}
        for t in txs:  # in the order the CSMS saw them start
            key = (t.station, t.connector)
            if key in last_stop and t.meter_start != last_stop[key]:
                r.register_breaks.append(
                    f"{t.station}/{t.connector}: stop {last_stop[key]} ({last_reason[key]}) "
                    f"then start {t.meter_start}")
            last_stop[key] = t.meter_stop or t.meter_start
            last_reason[key] = t.reason
        left = {k: wh - last_stop.get(k, 0) for k, wh in self.gateway.meters().items()}
        r.worst_unbilled_wh = max((abs(v) for v in left.values()), default=0.0)
        for side, connector, before, after in (("discharge", 1, e0[0], e1[0]),
                                               ("charge", 2, e0[1], e1[1])):
            billed = sum((t.meter_stop or t.meter_start) - t.meter_start
                         for t in txs if t.connector == connector)
            unbilled = sum(v for (_, c), v in left.items() if c == connector)
            flowed = after - before
            r.flowed_wh[side], r.billed_wh[side] = flowed, float(billed)
            r.unbilled_wh[side] = unbilled
            error = abs(billed + unbilled - flowed)
            r.energy_error_pct[side] = 100.0 * error / flowed if flowed > 0 else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoints", type=int, default=50)
    parser.add_argument("--duration", type=float, default=300.0, help="chaos phase, seconds")
    parser.add_argument("--events", type=int, default=None,
                        help="chaos events (default: one every ~12 s)")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--v201", type=int, default=None,
                        help="how many endpoints speak 2.0.1 (default: half)")
    parser.add_argument("--only", default=None,
                        help="comma-separated chaos kinds: csms_outage, socket_cuts, "
                             "pcs_silence, gateway_kill, csms_stall (default: all but the "
                             "stall, in turn)")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("websockets").setLevel(logging.WARNING)
    os.environ.setdefault("BESS_GATEWAY_VALIDATE_OUTGOING", "1")
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        kinds = args.only.split(",") if args.only else None
        scenario = Scenario(workdir, args.endpoints, args.duration, args.seed, args.events,
                            kinds, args.v201)
        result = asyncio.run(scenario.run())
    print(result.table())
    ok = (result.losses == result.duplicates == result.id_reuse == result.bad_tx == 0
          and result.worst_energy_error_pct <= 0.1 and result.worst_unbilled_wh < 1.0)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
