"""A 2.1 station as the demo CSMS sees it, on the `ocpp` library's ``ocpp.v21``.

2.1 keeps the 2.0.1 shape of every message the 2.0.1 twin answers (``demo.station201``), so this
class reuses its handlers and only swaps the library's 2.1 message set and schemas: every CALL the
gateway sends is validated by the library against the 2.1 JSON schemas before a handler sees it.
It adds the answers to what only 2.1 stations send (NotifyEVChargingNeeds, PullDynamicSchedule-
Update, NotifyDERStartStop).
"""

from __future__ import annotations

from typing import Any

from ocpp.routing import on
from ocpp.v21 import call as call21
from ocpp.v21 import call_result as result21

from bess_gateway.demo.station201 import Station201


class Station21(Station201):
    version = "2.1"
    _call = call21
    _call_result = result21
    _ocpp_version = "2.1"

    @on("NotifyEVChargingNeeds")
    def on_ev_charging_needs(self, **_: Any) -> result21.NotifyEVChargingNeeds:
        return result21.NotifyEVChargingNeeds(status="Accepted")

    @on("PullDynamicScheduleUpdate")
    def on_pull_dynamic(self, **_: Any) -> result21.PullDynamicScheduleUpdate:
        update = self.server.policy.dynamic_schedule_update
        return result21.PullDynamicScheduleUpdate(status="Accepted", schedule_update=update)

    @on("NotifyDERStartStop")
    def on_der_start_stop(self, **_: Any) -> result21.NotifyDERStartStop:
        return result21.NotifyDERStartStop()
