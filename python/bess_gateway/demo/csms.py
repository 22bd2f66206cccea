"""A small CSMS on the `ocpp` library: the demo's central system and the tests' real peer.

It speaks 1.6J and 2.0.1 (whichever subprotocol a station asks for; the 2.0.1 station class is in
``demo.station201``), so one server drives a mixed gateway.

Built on the independent `ocpp` implementation (not on our own framing) so that everything the
gateway sends is parsed and schema-validated by someone else's code. It records every CALL it
receives and lets a caller send any CALL, or raw text, to a connected station.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID
from ocpp.charge_point import (
    camel_to_snake_case,
    remove_nones,
    serialize_as_dict,
    snake_to_camel_case,
)
from ocpp.exceptions import InternalError
from ocpp.exceptions import NotImplementedError as OcppNotImplemented
from ocpp.routing import on
from ocpp.v16 import ChargePoint as CP16
from ocpp.v16 import call as call16
from ocpp.v16 import call_result as result16
from ocpp.v21 import call as call21
from ocpp.v201 import call as call201
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from bess_gateway.demo.policy import Policy
from bess_gateway.demo.recording import RecordsFrames
from bess_gateway.demo.station21 import Station21
from bess_gateway.demo.station201 import Station201, energy_wh

log = logging.getLogger("bess_gateway.csms")


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Received:
    """One CALL a station sent us."""

    station: str
    action: str
    payload: dict[str, Any]
    at: float  # time.monotonic()
    seq: int
    unique_id: str = ""  # the CALL's message id (a resend of the same message keeps it)


@dataclass
class Transaction:
    id: int | str  # 1.6: ours (int); 2.0.1: the station's transactionId (str)
    station: str
    connector: int
    id_tag: str
    meter_start: int
    meter_stop: int | None = None
    reason: str | None = None
    meter_values: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)  # 2.0.1 TransactionEvents
    # 2.1's one bidirectional EVSE: the export register too (meter_* are the import one).
    export_start: int | None = None
    export_stop: int | None = None


class _Station16(RecordsFrames, CP16):
    """A 1.6 station as the CSMS sees it; handlers answer per the server's policy."""

    version = "1.6"

    def __init__(self, station_id: str, ws: ServerConnection, server: CsmsServer) -> None:
        super().__init__(station_id, ws, response_timeout=15)
        self._start_recording(server)

    @on("BootNotification")
    def on_boot(self, **_: Any) -> result16.BootNotification:
        p = self.server.policy
        return result16.BootNotification(current_time=_now(), interval=p.heartbeat_interval,
                                         status=p.boot_status)

    @on("Heartbeat")
    def on_heartbeat(self) -> result16.Heartbeat:
        return result16.Heartbeat(current_time=_now())

    @on("StatusNotification")
    def on_status(self, **_: Any) -> result16.StatusNotification:
        return result16.StatusNotification()

    @on("Authorize")
    def on_authorize(self, id_tag: str) -> result16.Authorize:
        if self.server.policy.authorize_fails:
            raise InternalError(description="authorization backend down (test policy)")
        return result16.Authorize(id_tag_info={"status": self.server.tag_status(id_tag)})

    @on("StartTransaction")
    def on_start(self, connector_id: int, id_tag: str, meter_start: int, timestamp: str,
                 **_: Any) -> result16.StartTransaction:
        tx = self.server.new_transaction(self.id, connector_id, id_tag, meter_start)
        return result16.StartTransaction(transaction_id=tx.id,
                                         id_tag_info={"status": self.server.tag_status(id_tag)})

    @on("StopTransaction")
    def on_stop(self, meter_stop: int, timestamp: str, transaction_id: int,
                **kw: Any) -> result16.StopTransaction:
        tx = self.server.transactions.get(transaction_id)
        if tx is not None:
            tx.meter_stop = meter_stop
            tx.reason = kw.get("reason", "Local")
        return result16.StopTransaction()

    @on("MeterValues")
    def on_meter_values(self, connector_id: int, meter_value: list[Any],
                        **kw: Any) -> result16.MeterValues:
        tx = self.server.transactions.get(kw.get("transaction_id", -1))
        if tx is not None:
            tx.meter_values += 1
        return result16.MeterValues()

    @on("DataTransfer")
    def on_data_transfer(self, vendor_id: str, **_: Any) -> result16.DataTransfer:
        return result16.DataTransfer(status="UnknownVendorId")

    @on("DiagnosticsStatusNotification")
    def on_diag(self, **_: Any) -> result16.DiagnosticsStatusNotification:
        return result16.DiagnosticsStatusNotification()

    @on("FirmwareStatusNotification")
    def on_fw(self, **_: Any) -> result16.FirmwareStatusNotification:
        return result16.FirmwareStatusNotification()

    @on("SecurityEventNotification")
    def on_security_event(self, **_: Any) -> result16.SecurityEventNotification:
        if not self.server.policy.security_extension:
            raise OcppNotImplemented(description="Security extension not supported")
        return result16.SecurityEventNotification()

    @on("SignCertificate")
    def on_sign_certificate(self, **_: Any) -> result16.SignCertificate:
        return result16.SignCertificate(status=self.server.policy.sign_certificate_status)

    @on("SignedFirmwareStatusNotification")
    def on_signed_fw(self, **_: Any) -> result16.SignedFirmwareStatusNotification:
        return result16.SignedFirmwareStatusNotification()

    @on("LogStatusNotification")
    def on_log_status(self, **_: Any) -> result16.LogStatusNotification:
        return result16.LogStatusNotification()


class CsmsServer:
    """A WebSocket CSMS on loopback speaking OCPP 1.6J and 2.0.1 through the `ocpp` library."""

    def __init__(self, policy: Policy | None = None) -> None:
        self.policy = policy or Policy()
        self.stations: dict[str, _Station16 | Station201] = {}
        self.received: list[Received] = []
        self.transactions: dict[int | str, Transaction] = {}
        self.connections = 0
        self.refused = 0  # handshakes answered 401/403
        # station id -> the close code of each of its connections, as the station sent it
        # (None: the socket ended without a close frame)
        self.close_codes: dict[str, list[int | None]] = {}
        self.peer_certs: dict[str, bytes] = {}  # station id -> DER of its last client cert
        self._tx_ids = itertools.count(1)
        self._seq = itertools.count()
        self._handled: set[int] = set()  # seq of the CALLs whose handler has run
        self._server: Server | None = None
        self._tls = False
        self.port = 0

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self, host: str = "127.0.0.1", port: int = 0,
                    ssl_context: ssl.SSLContext | None = None) -> None:
        self._tls = ssl_context is not None
        self._server = await serve(self._handle, host, port,
                                   subprotocols=["ocpp2.1", "ocpp2.0.1", "ocpp1.6"],
                                   process_request=self._check_auth, ssl=ssl_context,
                                   compression=None)
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"{'wss' if self._tls else 'ws'}://127.0.0.1:{self.port}/ocpp"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def drop(self, station_id: str) -> None:
        """Cut one station's socket as a network failure would (no close handshake)."""
        st = self.stations.get(station_id)
        if st is not None:
            st._connection.transport.abort()

    def _check_auth(self, conn: ServerConnection, request: Request) -> Response | None:
        station = request.path.rstrip("/").rsplit("/", 1)[-1]
        if self.policy.client_cert_cn and not self._client_cert_ok(conn, station):
            self.refused += 1
            return conn.respond(HTTPStatus.FORBIDDEN, "client certificate required\n")
        if self.policy.passwords is None:
            return None
        expected = self.policy.passwords.get(station)
        header = request.headers.get("Authorization", "")
        secret = expected.encode() if isinstance(expected, str) else expected
        token = base64.b64encode(station.encode() + b":" + (secret or b"")).decode()
        if expected is None or header != f"Basic {token}":
            self.refused += 1
            return conn.respond(HTTPStatus.UNAUTHORIZED, "unauthorized\n")
        return None

    def _client_cert_ok(self, conn: ServerConnection, station: str) -> bool:
        """The TLS layer verified the chain (the ssl_context's CA); the CN names the station."""
        ssl_object = conn.transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if not der:
            return False
        cert = x509.load_der_x509_certificate(der)
        cns = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        if cns != [station]:
            return False
        self.peer_certs[station] = der
        return True

    async def _handle(self, ws: ServerConnection) -> None:
        station_id = ws.request.path.rstrip("/").rsplit("/", 1)[-1] if ws.request else "?"
        cp: _Station16 | Station201
        if ws.subprotocol == "ocpp2.1":
            cp = Station21(station_id, ws, self)
        elif ws.subprotocol == "ocpp2.0.1":
            cp = Station201(station_id, ws, self)
        else:
            cp = _Station16(station_id, ws, self)
        self.stations[station_id] = cp
        self.connections += 1
        try:
            await cp.start()
        except ConnectionClosed as exc:  # how every session ends
            self.close_codes.setdefault(station_id, []).append(
                None if exc.rcvd is None else exc.rcvd.code)
        except Exception:
            log.exception("csms: %s handler failed", station_id)
        finally:
            if self.stations.get(station_id) is cp:
                del self.stations[station_id]

    # -- what stations send ----------------------------------------------------------------
    def record_call(self, station: str, action: str, payload: dict[str, Any],
                unique_id: str = "") -> Received:
        """A CALL as it arrives, before its handler runs (`received` keeps the arrival order)."""
        received = Received(station, action, payload, time.monotonic(), next(self._seq),
                            unique_id)
        self.received.append(received)
        return received

    def mark_done(self, received: Received) -> None:
        """The CALL's handler has run (answered, refused or failed): the state it changes, e.g.
        `transactions`, is up to date."""
        self._handled.add(received.seq)

    def tag_status(self, id_tag: str) -> str:
        return "Blocked" if id_tag in self.policy.blocked_id_tags else "Accepted"

    def new_transaction(self, station: str, connector: int, id_tag: str,
                         meter_start: int) -> Transaction:
        tx = Transaction(next(self._tx_ids), station, connector, id_tag, meter_start)
        self.transactions[tx.id] = tx
        return tx

    def transaction_event(self, station: str, event: dict[str, Any]) -> None:
        """A 2.0.1 TransactionEvent: one transaction per transactionId, whatever the order."""
        info = event.get("transactionInfo") or {}
        tx_id = str(info.get("transactionId"))
        tx = self.transactions.get(tx_id)
        if tx is None:
            evse = event.get("evse") or {}
            token = (event.get("idToken") or {}).get("idToken", "")
            tx = Transaction(tx_id, station, int(evse.get("id", 0)), token, -1)
            self.transactions[tx_id] = tx
        tx.events.append(event)
        # 2.1's one EVSE carries both registers; a 2.0.1 EVSE only its own direction's.
        v21 = getattr(self.stations.get(station), "version", "") == "2.1"
        if event.get("eventType") == "Started":
            start = energy_wh(event, "Transaction.Begin")
            if start is not None:
                tx.meter_start = start
            if v21:
                tx.meter_start = energy_wh(event, "Transaction.Begin",
                                           "Energy.Active.Import") or tx.meter_start
                tx.export_start = energy_wh(event, "Transaction.Begin", "Energy.Active.Export")
        elif event.get("eventType") == "Ended":
            tx.meter_stop = energy_wh(event, "Transaction.End")
            if v21:
                tx.meter_stop = energy_wh(event, "Transaction.End", "Energy.Active.Import")
                tx.export_stop = energy_wh(event, "Transaction.End", "Energy.Active.Export")
            tx.reason = info.get("stoppedReason", "Local")
        if any(mv for mv in event.get("meterValue") or []) and event.get("eventType") == "Updated":
            tx.meter_values += 1

    async def wait_until(self, predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Wait until ``predicate()`` is truthy (re-checked on every message); return it."""
        # A bounded poll: some state (transactions) changes after the message is recorded, and
        # asyncio.wait_for in a loop can swallow cancellation on Python 3.11.
        async with asyncio.timeout(timeout):
            while not (value := predicate()):  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            return value

    async def wait_for(self, station: str, action: str,
                       where: Callable[[dict[str, Any]], bool] = lambda p: True,
                       *, after: int = -1, timeout: float = 10.0) -> Received:
        """The first CALL ``action`` from ``station`` with seq > ``after`` matching ``where``,
        once its handler has run: what it changes (a transaction's meterStop) can be read."""

        def find() -> Received | None:
            for m in self.received:
                if m.seq > after and m.station == station and m.action == action and where(
                        m.payload):
                    return m if m.seq in self._handled else None
            return None

        return await self.wait_until(find, timeout)

    def last_seq(self) -> int:
        return self.received[-1].seq if self.received else -1

    def of(self, station: str, action: str) -> list[Received]:
        return [m for m in self.received if m.station == station and m.action == action]

    # -- what we send ----------------------------------------------------------------------
    async def call(self, station_id: str, action: str, payload: dict[str, Any] | None = None,
                   ) -> dict[str, Any]:
        """Send a CALL (camelCase payload) and return the camelCase response payload.

        A CALLERROR raises the `ocpp` library's OCPPError subclass for its code.
        """
        cp = self.stations[station_id]
        calls = {"2.0.1": call201, "2.1": call21}.get(cp.version, call16)
        request = getattr(calls, action)(**camel_to_snake_case(payload or {}))
        response = await cp.call(request, suppress=False)
        return remove_nones(snake_to_camel_case(serialize_as_dict(response)))

    async def send_raw(self, station_id: str, text: str, unique_id: str,
                       timeout: float = 10.0) -> list[Any]:
        """Send any text and wait for the reply frame carrying ``unique_id``."""
        cp = self.stations[station_id]
        cp.raw_replies.pop(unique_id, None)
        await cp._connection.send(text)
        async with asyncio.timeout(timeout):
            while unique_id not in cp.raw_replies:
                cp.reply_event.clear()
                await cp.reply_event.wait()
        return list(cp.raw_replies.pop(unique_id))
