"""A 2.0.1 charging-station endpoint: boot, status, recovery, and the 2.0.1 functional blocks.

The connection lifecycle (connect, boot until accepted, heartbeat, reconnect with back-off) is
shared with 1.6 in ``bess_gateway.endpoint.link``; this class only says what 2.0.1 sends. Each
functional
block (A Security ... P DataTransfer) is a module of this package with ``handlers(ctx)``.
"""

from __future__ import annotations

import logging
import ssl
from typing import Any, ClassVar

from websockets.typing import Subprotocol

from bess_gateway import __version__
from bess_gateway.config import EndpointConfig
from bess_gateway.domain import smart_charging as sc
from bess_gateway.domain.station import Station, StopReason
from bess_gateway.domain.timefmt import iso
from bess_gateway.endpoint import connection_security, sessions
from bess_gateway.endpoint.link import Backoff, EndpointBase, merge_handlers
from bess_gateway.endpoint.outbox import Policy
from bess_gateway.endpoint.services import EndpointServices
from bess_gateway.endpoint.settling import StopFormat
from bess_gateway.endpoint.smart_charging_service import SmartCharging
from bess_gateway.journal import Journal, TxRecord
from bess_gateway.ocpp.v201 import (
    authorization,
    availability,
    data_transfer,
    diagnostics,
    firmware,
    network,
    provisioning,
    remote,
    reservation,
    security,
    smart_charging,
    transactions,
)
from bess_gateway.ocpp.v201.context import Context201
from bess_gateway.ocpp.v201.status import CONNECTOR_ID, EVSES, connector_status, evse_of
from bess_gateway.security.certificates import CertificateStore

log = logging.getLogger("bess_gateway.ocpp.v201")

VERSION = "2.0.1"


class Endpoint201(EndpointBase):
    VERSION = VERSION
    SUBPROTOCOL = Subprotocol("ocpp2.0.1")
    STATUS_TARGETS = EVSES
    CONTEXT = Context201
    # What this version's services are built with (2.1 chooses its own).
    STOP_FORMATS: ClassVar[tuple[StopFormat, ...]] = (transactions.STOP_FORMAT,)
    TX_POLICY: ClassVar[Policy] = transactions.POLICY
    SMART_CHARGING: ClassVar[type[SmartCharging]] = SmartCharging
    ctx: Context201

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
        connection_security.security_event(self.ctx, "StartupOfTheDevice")
        self.ctx.restart = self._restart
        network.start(self.ctx)  # the network profile to connect through (slot 0 = config)
        availability.watch(self.ctx)  # trips are NotifyEvents from the start
        EndpointServices.build(self.ctx, policy=self.TX_POLICY, stop_formats=self.STOP_FORMATS,
                               smart_charging=self.SMART_CHARGING, limits=sc.LIMITS_201,
                               # restored reservations hold power at once
                               reservations=reservation.attach(self.ctx))
        # Charging-state changes (ChargingStateChanged) are looked for on every station change.
        station.on_change(self.ctx.tx_wake.set)
        # BootNotification reason: PowerUp after a process start; blocks set it before a restart.
        self.ctx.v201.boot_reason = firmware.boot_reason(self.ctx) or "PowerUp"
        self.ctx.triggers.update({
            "BootNotification": lambda _evse: self.send_boot(),
            "Heartbeat": lambda _evse: self.send_heartbeat(),
            "StatusNotification": self._trigger_status,
        })

    def _url(self) -> str:
        return connection_security.url(self.ctx)

    def _ssl(self) -> ssl.SSLContext | None:
        return connection_security.ssl_context(self.ctx, self._url())

    def _headers(self) -> dict[str, str]:
        return connection_security.auth_headers(self.ctx)

    def _connect_failed(self, exc: BaseException) -> None:
        connection_security.connect_failed(self.ctx, exc)
        network.connect_failed(self.ctx)

    def _periodic(self) -> list[Any]:
        return [self.ctx.services.outbox.deliver(self.ctx), smart_charging.limit_watch(self.ctx)]

    def _lifelong(self) -> list[Any]:
        # Sessions are sampled with or without a link: events made offline queue (offline flag).
        return [lambda: transactions.sampler(self.ctx), lambda: transactions.aligned(self.ctx),
                lambda: smart_charging.rate_watch(self.ctx),
                lambda: transactions.keep_ended_values(self.ctx),
                lambda: sessions.preparing_watch(self.ctx)]

    def shut_down(self) -> None:
        super().shut_down()
        self.ctx.services.reservations.cancel()

    def _boot_payload(self) -> dict[str, Any]:
        return {
            "reason": self.ctx.v201.boot_reason,
            "chargingStation": {
                "vendorName": self.cfg.vendor[:50],
                "model": self.cfg.model[:20],
                "serialNumber": self.cfg.serial_number[:25],
                "firmwareVersion": f"bess-gateway {__version__}"[:50],
            },
        }

    async def _boot_until_accepted(self) -> None:
        await super()._boot_until_accepted()
        network.connected(self.ctx)
        self.ctx.v201.boot_reason = "PowerUp"  # a later reconnect is no reset
        self.ctx.spawn(firmware.after_boot(self.ctx), "firmware-installed")

    async def send_status(self, evse: int, *, force: bool = False) -> None:
        report = self.ctx.station.status(evse)
        last = self._last_status.get(evse)
        # 2.0.1 folds Preparing, Charging, Suspended* and Finishing into Occupied: a change
        # between them (a remote start: Preparing -> Charging within a control cycle) is no
        # change to report.
        if not force and last is not None and (
                connector_status(last.status) == connector_status(report.status)):
            return
        payload = {"timestamp": iso(self.ctx.station.now()),
                   "connectorStatus": connector_status(report.status),
                   "evseId": evse_of(self.ctx, evse), "connectorId": CONNECTOR_ID}
        await self._notify_status(evse, report, payload)

    def _offline_threshold_s(self) -> float | None:
        return float(self.ctx.station.settings.int("offline_threshold_s"))

    async def _trigger_status(self, evse: int | None) -> None:
        for e in self.STATUS_TARGETS if evse is None else (evse,):
            await self.send_status(e, force=True)

    def refresh_schedules(self) -> None:
        smart_charging.refresh(self.ctx)

    def _handlers(self) -> dict[str, Any]:
        ctx = self.ctx
        variables, control = provisioning.handlers(ctx), remote.handlers(ctx)
        # Security answers SetVariables and TriggerMessage through provisioning's and remote's
        # handlers, handed to it here (BasicAuthPassword changes, signing triggers).
        secure = security.handlers(ctx, set_variables=variables.pop("SetVariables"),
                                   trigger_message=control.pop("TriggerMessage"),
                                   reconnect=self._reconnect)
        return merge_handlers(
            transactions.handlers(ctx), smart_charging.handlers(ctx), reservation.handlers(ctx),
            control, authorization.handlers(ctx), availability.handlers(ctx),
            firmware.handlers(ctx), diagnostics.handlers(ctx), data_transfer.handlers(ctx),
            variables, secure)

    def recover(self, records: list[TxRecord]) -> None:
        transactions.recover(self.ctx, records)

    def stop_all(self, reason: StopReason) -> None:
        for c in list(self.ctx.station.transactions):
            transactions.stop_session(self.ctx, c, reason)

    async def _restart(self, kind: str) -> None:
        """Reset: sessions end (PCS to 0 for them), then the connection starts over with a boot."""
        connection_security.security_event(self.ctx, "ResetOrReboot", f"{kind} reset by the CSMS")
        self.stop_all(StopReason.HARD_RESET)
        self.ctx.v201.boot_reason = "RemoteReset"
        await self._drain_outbox()
        await self._reconnect(f"{kind} reset")
