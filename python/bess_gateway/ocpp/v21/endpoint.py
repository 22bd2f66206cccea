"""A 2.1 charging-station endpoint: the 2.0.1 endpoint with 2.1's subprotocol and schemas, one
bidirectional EVSE, and the Q block (V2X, bess_gateway.ocpp.v21.v2x).

Why a subclass, not a copy: 2.1 keeps every 2.0.1 message this gateway speaks in the same shape
(2.1 only adds optional fields and new messages), so each 2.0.1 functional block serves 2.1 as it
is. What differs is parametrised where it lives: the EVSE numbering (v201.status: one EVSE over
the domain's charge connector), the schema set (ocppj.schemas by version), and what this class
chooses at construction: its smart charging (`SMART_CHARGING`: V2X setpoints), its outbox policy
(`TX_POLICY`: both registers of the Ended event settle), and the 2.0.1 smart-charging block's
hooks (V201State.check_profile / annotate_composite, from v2x).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from websockets.typing import Subprotocol

from bess_gateway.endpoint.link import merge_handlers
from bess_gateway.ocpp.v21 import der, dynamic, export_settling, v2x
from bess_gateway.ocpp.v21.context import Context21, V21State
from bess_gateway.ocpp.v201 import smart_charging, transactions
from bess_gateway.ocpp.v201.endpoint import Endpoint201
from bess_gateway.ocpp.v201.status import V21_CONNECTOR

VERSION = "2.1"


class Endpoint21(Endpoint201):
    VERSION = VERSION
    SUBPROTOCOL = Subprotocol("ocpp2.1")
    STATUS_TARGETS = (V21_CONNECTOR,)  # domain connectors reported (as EVSE 1)
    CONTEXT = Context21
    SMART_CHARGING = v2x.V2XSmartCharging
    # 2.0.1's transaction delivery with a hold for both registers of the Ended event.
    TX_POLICY = dataclasses.replace(transactions.POLICY, hold=export_settling.hold)
    ctx: Context21

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.ctx.v201.check_profile = v2x.check_profile
        self.ctx.v201.annotate_composite = v2x.annotate_composite
        # Stored DER controls limit the battery from the start.
        self.ctx.v21 = V21State(der=der.open_store(self.ctx))
        b = self.ctx.services.smart_charging
        if isinstance(b, v2x.V2XSmartCharging):
            b.on_leg = self._leg
            b.offline_since = b.clock()  # not connected yet (dynamic.link_watch)

    def _leg(self, local_id: str, started: bool) -> None:
        if started:
            export_settling.leg_started(self.ctx, local_id)
        else:
            export_settling.track(self.ctx, local_id)

    def _periodic(self) -> list[Any]:
        # The outbox holds an Ended event for both legs' registers (export_settling); the
        # 2.0.1 battery-limit watch reports the charge side on EVSE 1; the setpoint watch
        # reports a V2X setpoint the core cannot meet, in either direction; K28 pulls.
        return [self.ctx.services.outbox.deliver(self.ctx), smart_charging.limit_watch(self.ctx),
                v2x.setpoint_watch(self.ctx), dynamic.pull_loop(self.ctx),
                dynamic.link_watch(self.ctx), der.start_stop_watch(self.ctx)]

    def _lifelong(self) -> list[Any]:
        return [*super()._lifelong(), lambda: dynamic.expiry_watch(self.ctx)]

    def _handlers(self) -> dict[str, Any]:
        return merge_handlers(super()._handlers(), dynamic.handlers(self.ctx),
                              der.handlers(self.ctx))
