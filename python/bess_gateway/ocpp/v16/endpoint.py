"""A 1.6J charging-station endpoint: boot, status, recovery, and the 1.6 feature blocks.

The connection lifecycle (connect, boot until accepted, heartbeat, reconnect with back-off) is
shared with 2.0.1 in ``bess_gateway.endpoint.link``; this class only says what 1.6 sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

from websockets.typing import Subprotocol

from bess_gateway import __version__
from bess_gateway.config import EndpointConfig
from bess_gateway.domain import smart_charging as sc
from bess_gateway.domain.station import CONNECTORS, Station, StopReason
from bess_gateway.domain.timefmt import iso
from bess_gateway.domain.transaction_facts import TxFacts
from bess_gateway.endpoint import sessions
from bess_gateway.endpoint.link import VALIDATE_OUTGOING_ENV, Backoff, EndpointBase, merge_handlers
from bess_gateway.endpoint.services import EndpointServices
from bess_gateway.endpoint.settling import StopFormat
from bess_gateway.endpoint.smart_charging_service import SmartCharging
from bess_gateway.journal import Journal, TxRecord
from bess_gateway.ocpp.framing import new_unique_id
from bess_gateway.ocpp.v16 import (
    authorization,
    diagnostics,
    firmware,
    provisioning,
    reservation,
    security,
    smart_charging,
    transactions,
)
from bess_gateway.ocpp.v16.context import VERSION
from bess_gateway.security.certificates import CertificateStore

log = logging.getLogger("bess_gateway.ocpp.v16")

__all__ = ["VALIDATE_OUTGOING_ENV", "Backoff", "Endpoint16"]

FIRMWARE_STATUS_WAIT_S = 60.0  # how long a resumed firmware job's status waits for the boot


class Endpoint16(EndpointBase):
    VERSION = VERSION
    SUBPROTOCOL = Subprotocol("ocpp1.6")
    STATUS_TARGETS = (0, *CONNECTORS)
    # How its stop message carries the final register (bess_gateway.endpoint.settling).
    STOP_FORMATS: ClassVar[tuple[StopFormat, ...]] = (transactions.STOP_FORMAT,)

    def __init__(
        self,
        cfg: EndpointConfig,
        station: Station,
        journal: Journal,
        *,
        backoff: Backoff | None = None,
        certificates: CertificateStore | None = None,
    ) -> None:
        super().__init__(cfg, station, journal, backoff=backoff, certificates=certificates)
        security.security_event(self.ctx, "StartupOfTheDevice")
        self.ctx.restart = self._restart
        EndpointServices.build(self.ctx, policy=transactions.POLICY,
                               stop_formats=self.STOP_FORMATS, smart_charging=SmartCharging,
                               limits=sc.STATION_LIMITS,
                               reservations=reservation.attach(self.ctx))

    # The security profile (possibly raised by the CSMS) decides URL scheme, TLS and auth.
    def _url(self) -> str:
        return security.url(self.ctx)

    def _ssl(self) -> ssl.SSLContext | None:
        return security.ssl_context(self.ctx, self._url())

    def _headers(self) -> dict[str, str]:
        return security.auth_headers(self.ctx)

    def _connect_failed(self, exc: BaseException) -> None:
        security.connect_failed(self.ctx, exc)

    def _periodic(self) -> list[Any]:
        return [self.ctx.services.outbox.deliver(self.ctx)]

    def _lifelong(self) -> list[Any]:
        # Meter values are taken offline too: they queue (and are thinned if the queue fills).
        return [lambda: transactions.sampler(self.ctx), lambda: transactions.aligned(self.ctx),
                lambda: transactions.keep_stop_values(self.ctx),
                lambda: sessions.preparing_watch(self.ctx)]

    def _boot_payload(self) -> dict[str, Any]:
        return {
            "chargePointVendor": self.cfg.vendor[:20],
            "chargePointModel": self.cfg.model[:20],
            "chargePointSerialNumber": self.cfg.serial_number[:25],
            "firmwareVersion": f"bess-gateway {__version__}"[:50],
        }

    async def send_status(self, connector: int, *, force: bool = False) -> None:
        report = self.ctx.station.status(connector)
        if not force and self._last_status.get(connector) == report:
            return
        payload: dict[str, Any] = {"connectorId": connector, "status": str(report.status),
                                   "errorCode": "NoError",
                                   "timestamp": iso(self.ctx.station.now())}
        alarm = report.alarm
        if alarm is not None:
            payload["errorCode"] = alarm.error_code
            payload["vendorErrorCode"] = alarm.vendor_error_code
            payload["vendorId"] = provisioning.VENDOR_ID
            payload["info"] = alarm.description[:50]
        await self._notify_status(connector, report, payload)

    async def send_meter_values(self, connector: int, context: str) -> None:
        await transactions.send_meter_values(self.ctx, connector, context)

    def _handlers(self) -> dict[str, Any]:
        ctx = self.ctx
        core = provisioning.handlers(ctx, boot=self.send_boot, heartbeat=self.send_heartbeat,
                                     status=self.send_status,
                                     meter_values=self.send_meter_values)
        # Security owns two configuration keys and hands the rest to provisioning's
        # ChangeConfiguration; its ExtendedTriggerMessage forwards to the Core TriggerMessage.
        secure = security.handlers(ctx, change_configuration=core.pop("ChangeConfiguration"),
                                   trigger_message=core["TriggerMessage"],
                                   reconnect=self._reconnect)
        return merge_handlers(
            transactions.handlers(ctx), smart_charging.handlers(ctx), reservation.handlers(ctx),
            authorization.handlers(ctx), firmware.handlers(ctx), diagnostics.handlers(ctx),
            core, secure)

    def recover(self, records: list[TxRecord]) -> None:
        """Transactions the journal still holds open were cut by a crash or power loss.

        They end now with reason PowerLoss and their register as restored at start-up: the last
        save plus their share of what the PCS registers counted since (gateway.py
        `_attribute_outage`); their StopTransaction queues behind any StartTransaction still
        waiting, so the CSMS sees both in order.
        """
        st = self.ctx.station
        for rec in records:
            meter = st.core.meter(st.meter_id(rec.connector))
            stop_wh = max(rec.meter_start_wh, math.floor(float(meter["energy_wh"])))
            payload = {
                "transactionId": None if rec.transaction_id is None else int(rec.transaction_id),
                "meterStop": stop_wh,
                "timestamp": iso(st.now()),
                "reason": str(StopReason.POWER_LOSS),
            }
            # What was kept for it before the crash (StopTxnIntermediateData).
            kept = transactions.stop_values(self.ctx, TxFacts.from_dict(rec.data).kept,
                                            rec.connector, payload, [])
            if kept:
                payload["transactionData"] = kept
            self.ctx.journal.outbox.enqueue(self.id, "StopTransaction", payload, rec.local_id,
                                     new_unique_id())
            self.ctx.journal.transactions.finish_transaction(self.id, rec.local_id)
            log.warning("%s: transaction %s was open at the last stop; ended as PowerLoss",
                        self.id, rec.local_id[:8])

    def refresh_schedules(self) -> None:
        smart_charging.refresh(self.ctx)

    def firmware_notify(self) -> Callable[[str], Awaitable[None]]:
        notify = firmware.plain_notifier(self.ctx)

        async def when_booted(status: str) -> None:
            # A job resumed at start-up: its first status waits (bounded) for the boot.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FIRMWARE_STATUS_WAIT_S):
                    await self.booted.wait()
            await notify(status)

        return when_booted

    def shut_down(self) -> None:
        self.ctx.services.reservations.cancel()

    def stop_all(self, reason: StopReason) -> None:
        for c in list(self.ctx.station.transactions):
            transactions.stop_session(self.ctx, c, reason)

    async def _restart(self, kind: str) -> None:
        """Reset: sessions end (PCS to 0 for them), then the connection starts over with a boot."""
        reason = StopReason.HARD_RESET if kind == "Hard" else StopReason.SOFT_RESET
        security.security_event(self.ctx, "ResetOrReboot", f"{kind} reset by the CSMS")
        self.stop_all(reason)
        # Let the StopTransactions out while the link is still up; they stay journaled if not.
        await self._drain_outbox()
        await self._reconnect(f"{kind} reset")
