"""A 1.6J charging-station endpoint: connect, boot, heartbeat, status, and the feature blocks.

One endpoint never takes another down: everything it runs lives in its own tasks, and every
failure ends in a reconnect with back-off rather than an exception leaving ``run()``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
import ssl
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.typing import Subprotocol

from bess_gateway import __version__
from bess_gateway.aio import wait_event
from bess_gateway.config import EndpointConfig
from bess_gateway.domain.settings import SettingError
from bess_gateway.domain.station import CONNECTORS, Station, StatusReport, StopReason
from bess_gateway.domain.timefmt import iso
from bess_gateway.journal import Journal, TxRecord
from bess_gateway.ocppj.errors import CallErrorReceived
from bess_gateway.ocppj.framing import new_unique_id
from bess_gateway.ocppj.rpc import RpcConnection
from bess_gateway.security.certificates import CertificateStore
from bess_gateway.v16 import (
    authorization,
    diagnostics,
    firmware,
    provisioning,
    reservation,
    security,
    smart_charging,
    transactions,
)
from bess_gateway.v16.context import VERSION, Context

log = logging.getLogger("bess_gateway.v16")

SUBPROTOCOL = Subprotocol("ocpp1.6")
RECONNECT_GRACE_S = 2.0  # how long a reconnect waits for our CALL in flight to be answered
MAX_FRAME = 256 * 1024  # no legitimate 1.6 frame comes near; bigger ones close the socket (1009)
STATUS_RETRY_S = 1.0  # a StatusNotification that failed is sent again this soon
# Set to "1" (the test suite does), every CALL and CALLRESULT we send is schema-checked first: it
# catches our own bugs; in production what we build is trusted, which saves ~15 us per message.
VALIDATE_OUTGOING_ENV = "BESS_GATEWAY_VALIDATE_OUTGOING"


class Backoff:
    """Exponential back-off with full jitter, so many endpoints never reconnect in lockstep."""

    def __init__(self, minimum: float = 1.0, maximum: float = 60.0) -> None:
        self.minimum = minimum
        self.maximum = maximum
        self.attempt = 0

    def next_delay(self) -> float:
        ceiling = min(self.maximum, self.minimum * (2 ** self.attempt))
        self.attempt += 1
        return random.uniform(self.minimum / 2, ceiling)

    def reset(self) -> None:
        self.attempt = 0


class Endpoint16:
    def __init__(
        self,
        cfg: EndpointConfig,
        station: Station,
        journal: Journal,
        *,
        backoff: Backoff | None = None,
        certificates: CertificateStore | None = None,
    ) -> None:
        self.cfg = cfg
        self.ctx = Context(cfg=cfg, station=station, journal=journal,
                           certificates=certificates or CertificateStore(
                               journal.path.parent / "certs"))
        security.security_event(self.ctx, "StartupOfTheDevice")
        self.ctx.restart = self._restart
        self.backoff = backoff or Backoff()
        self.registration: str | None = None
        self.connected = asyncio.Event()
        self.booted = asyncio.Event()
        self.connects = 0
        self._last_status: dict[int, StatusReport] = {}
        self._ws: ClientConnection | None = None
        self._reconnect_now = False
        # The gateway swaps in a metered RpcConnection when metrics are on.
        self.rpc_factory: Callable[..., RpcConnection] = RpcConnection
        self.heartbeat_s = station.settings.int("heartbeat_interval_s")
        station.on_change(self.ctx.status_wake.set)
        station.settings.on_change(self._setting_changed)
        self.reservations = reservation.attach(self.ctx)

    @property
    def id(self) -> str:
        return self.cfg.id

    # -- connection lifecycle --------------------------------------------------------------
    # The security profile (possibly raised by the CSMS) decides URL scheme, TLS and auth.
    def _url(self) -> str:
        return security.url(self.ctx)

    def _ssl(self) -> ssl.SSLContext | None:
        return security.ssl_context(self.ctx, self._url())

    def _headers(self) -> dict[str, str]:
        return security.auth_headers(self.ctx)

    async def run(self) -> None:
        """Connect, serve, and reconnect forever (until cancelled)."""
        settings = self.ctx.station.settings
        while True:
            try:
                ping = settings.int("websocket_ping_interval_s") or None
                async with connect(
                    self._url(),
                    subprotocols=[SUBPROTOCOL],
                    additional_headers=self._headers(),
                    ssl=self._ssl(),
                    open_timeout=settings.int("connection_timeout_s"),
                    ping_interval=ping,
                    ping_timeout=ping,
                    max_size=MAX_FRAME,
                    compression=None,
                ) as ws:
                    if ws.subprotocol != SUBPROTOCOL:
                        log.error("%s: CSMS did not agree to %s (got %r); closing", self.id,
                                  SUBPROTOCOL, ws.subprotocol)
                        await ws.close(1002, "ocpp1.6 required")
                    else:
                        await self._serve(ws)
            except asyncio.CancelledError:
                raise
            except (OSError, InvalidHandshake, InvalidStatus, TimeoutError,
                    ConnectionClosed) as exc:
                security.connect_failed(self.ctx, exc)
                log.warning("%s: connection to %s failed: %s", self.id, self._url(), exc)
            except Exception:
                log.exception("%s: endpoint error; reconnecting", self.id)
            if self._reconnect_now:
                self._reconnect_now = False
                continue
            await asyncio.sleep(self.backoff.next_delay())

    async def _serve(self, ws: ClientConnection) -> None:
        ctx = self.ctx
        self._ws = ws
        self.connects += 1
        rpc = self.rpc_factory(ws, VERSION, self._handlers(), name=self.id,
                               call_timeout=float(ctx.station.settings.int("connection_timeout_s")),
                               validate_outgoing=os.environ.get(VALIDATE_OUTGOING_ENV) == "1")
        ctx.rpc = rpc
        self.connected.set()
        log.info("%s: connected to %s", self.id, self._url())
        reader = asyncio.create_task(rpc.run(), name=f"{self.id}:rpc")
        worker = asyncio.create_task(self._operate(), name=f"{self.id}:operate")
        try:
            done, _ = await asyncio.wait({reader, worker}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    exc = task.exception()
                    if isinstance(exc, BaseExceptionGroup):
                        # The TaskGroup of a connection ends with the link: that is no error.
                        _, exc = exc.split((ConnectionClosed, ConnectionError))
                    if exc is not None and not isinstance(exc, ConnectionClosed | ConnectionError):
                        log.error("%s: %s ended: %r", self.id, task.get_name(), exc)
        finally:
            ctx.accepted = False
            ctx.rpc = None
            self.connected.clear()
            self.booted.clear()
            self._ws = None
            for task in (reader, worker, *ctx.tasks):
                task.cancel()
            await asyncio.gather(reader, worker, *ctx.tasks, return_exceptions=True)
            log.info("%s: disconnected", self.id)

    async def _operate(self) -> None:
        """Boot until accepted, then run the connection's periodic work."""
        await self._boot_until_accepted()
        self.backoff.reset()
        self._last_status.clear()  # after a reconnect, the CSMS gets the current state once
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._status_reporter())
            tg.create_task(self._heartbeat())
            tg.create_task(transactions.deliver_outbox(self.ctx))
            tg.create_task(transactions.sampler(self.ctx))

    def _boot_payload(self) -> dict[str, Any]:
        return {
            "chargePointVendor": self.cfg.vendor[:20],
            "chargePointModel": self.cfg.model[:20],
            "chargePointSerialNumber": self.cfg.serial_number[:25],
            "firmwareVersion": f"bess-gateway {__version__}"[:50],
        }

    async def _boot_until_accepted(self) -> None:
        while True:
            resp = await self.ctx.call("BootNotification", self._boot_payload())
            self.registration = resp["status"]
            interval = int(resp.get("interval", 0))
            if resp["status"] == "Accepted":
                if interval > 0:
                    self._apply_heartbeat_interval(interval)
                self.ctx.accepted = True
                self.booted.set()
                log.info("%s: boot accepted (heartbeat %ss)", self.id, interval)
                return
            # Pending or Rejected: no other request until the interval passes (1.6 section 4.2).
            log.info("%s: boot %s; retrying in %ss", self.id, resp["status"], interval or 30)
            await asyncio.sleep(interval if interval > 0 else 30)

    def _apply_heartbeat_interval(self, interval: int) -> None:
        """The CSMS owns the heartbeat interval it sends at boot, even outside 30..3600 s.

        It is stored as the HeartbeatInterval setting when in range; outside it only runs.
        """
        try:
            self.ctx.station.settings.set("heartbeat_interval_s", str(interval))
        except SettingError:
            pass
        self.heartbeat_s = interval
        self.ctx.heartbeat_wake.set()

    def _setting_changed(self, name: str) -> None:
        if name == "heartbeat_interval_s":
            self.heartbeat_s = self.ctx.station.settings.int("heartbeat_interval_s")
            self.ctx.heartbeat_wake.set()

    async def _heartbeat(self) -> None:
        while True:
            self.ctx.heartbeat_wake.clear()
            if await wait_event(self.ctx.heartbeat_wake, self.heartbeat_s):
                continue  # interval changed: start a fresh period
            await self.send_heartbeat()

    async def send_heartbeat(self) -> None:
        try:
            await self.ctx.call("Heartbeat", {})
        except (CallErrorReceived, TimeoutError) as exc:
            log.warning("%s: Heartbeat failed: %s", self.id, exc)

    async def send_boot(self) -> None:
        resp = await self.ctx.call("BootNotification", self._boot_payload())
        self.registration = resp["status"]

    async def send_status(self, connector: int, *, force: bool = False) -> None:
        report = self.ctx.station.status(connector)
        if not force and self._last_status.get(connector) == report:
            return
        payload: dict[str, Any] = {"connectorId": connector, "status": str(report.status),
                                   "errorCode": "NoError",
                                   "timestamp": iso(self.ctx.station._clock())}
        alarm = report.alarm
        if alarm is not None:
            payload["errorCode"] = alarm.error_code
            payload["vendorErrorCode"] = alarm.vendor_error_code
            payload["vendorId"] = provisioning.VENDOR_ID
            payload["info"] = alarm.description[:50]
        self._last_status[connector] = report
        try:
            await self.ctx.call("StatusNotification", payload)
        except (CallErrorReceived, TimeoutError) as exc:
            self._last_status.pop(connector, None)  # send it again next time
            log.warning("%s: StatusNotification failed: %s", self.id, exc)

    async def _status_reporter(self) -> None:
        while True:
            self.ctx.status_wake.clear()
            for c in (0, *CONNECTORS):
                await self.send_status(c)
            # Wakes come on changes only; a notification that failed is tried again in 1 s.
            unsent = any(c not in self._last_status for c in (0, *CONNECTORS))
            await wait_event(self.ctx.status_wake, STATUS_RETRY_S if unsent else None)

    async def send_meter_values(self, connector: int, context: str) -> None:
        await transactions.send_meter_values(self.ctx, connector, context)

    def _handlers(self) -> dict[str, Any]:
        table: dict[str, Any] = {}
        table.update(transactions.handlers(self.ctx))
        table.update(smart_charging.handlers(self.ctx))
        table.update(reservation.handlers(self.ctx))
        table.update(authorization.handlers(self.ctx))
        table.update({**firmware.handlers(self.ctx), **diagnostics.handlers(self.ctx)})
        table.update(provisioning.handlers(
            self.ctx, boot=self.send_boot, heartbeat=self.send_heartbeat,
            status=self.send_status, meter_values=self.send_meter_values))
        # Security wraps provisioning's ChangeConfiguration: keep this line after it.
        table.update(security.handlers(self.ctx, table, reconnect=self._reconnect))
        return table

    def recover(self, records: list[TxRecord]) -> None:
        """Transactions the journal still holds open were cut by a crash or power loss.

        They end now with reason PowerLoss and the last saved register; their StopTransaction
        queues behind any StartTransaction still waiting, so the CSMS sees both in order.
        """
        st = self.ctx.station
        for rec in records:
            meter = st.core.meter(st.meter_id(rec.connector))
            stop_wh = max(rec.meter_start_wh, math.floor(float(meter["energy_wh"])))
            payload = {
                "transactionId": None if rec.transaction_id is None else int(rec.transaction_id),
                "meterStop": stop_wh,
                "timestamp": iso(st._clock()),
                "reason": str(StopReason.POWER_LOSS),
            }
            self.ctx.journal.enqueue(self.id, "StopTransaction", payload, rec.local_id,
                                     new_unique_id())
            self.ctx.journal.finish_transaction(self.id, rec.local_id)
            log.warning("%s: transaction %s was open at the last stop; ended as PowerLoss",
                        self.id, rec.local_id[:8])

    def stop_all(self, reason: StopReason) -> None:
        for c in list(self.ctx.station.transactions):
            transactions.stop_session(self.ctx, c, reason)

    async def _restart(self, kind: str) -> None:
        """Reset: sessions end (PCS to 0 for them), then the connection starts over with a boot."""
        reason = StopReason.HARD_RESET if kind == "Hard" else StopReason.SOFT_RESET
        security.security_event(self.ctx, "ResetOrReboot", f"{kind} reset by the CSMS")
        self.stop_all(reason)
        # Let the StopTransactions out while the link is still up; they stay journaled if not.
        for _ in range(50):
            if self.ctx.journal.depth(self.id) == 0:
                break
            await asyncio.sleep(0.05)
        await self._reconnect(f"{kind} reset")

    async def _reconnect(self, reason: str) -> None:
        """Close the link and connect again at once (new credentials, reset, ...)."""
        self._reconnect_now = True
        ws, rpc = self._ws, self.ctx.rpc
        if ws is None:
            return
        log.info("%s: reconnecting: %s", self.id, reason)
        # Let a CALL of ours in flight get its answer, and start no new one, before closing: a
        # CSMS whose answer to it fails on the closed socket may drop what we sent just before
        # the close (e.g. the ChangeConfiguration.conf that asked for this reconnect).
        lock = rpc._call_lock if rpc is not None else None
        held = False
        if lock is not None:
            try:
                async with asyncio.timeout(RECONNECT_GRACE_S):
                    await lock.acquire()
                held = True
            except TimeoutError:
                pass
        try:
            await ws.close(1000, reason[:120])
        finally:
            if held and lock is not None:
                lock.release()
