"""One endpoint's services, typed and built once when the endpoint is constructed.

The version packages (v16, v201, v21) translate OCPP messages into calls on these and back; the
state each service keeps lives in the service, not in the blocks or in module registries:

- `outbox`: delivery of the journaled messages, with the version's Policy
  (bess_gateway.endpoint.outbox).
- `settling`: the stops waiting for their final register, in the version's stop formats
  (bess_gateway.endpoint.settling).
- `smart_charging`: the station's installed profiles and the schedules they hand the core, the
  class (2.1: V2X) and replace rules chosen by the version
  (bess_gateway.endpoint.charging_limits.make).
- `reservations`: the reservation store's expiry timer (bess_gateway.endpoint.reservation_service).
- `authorizer`: local list, cache, then the CSMS (bess_gateway.endpoint.authorizer).
- `sessions`, `kept`: the session loops' wakes and the kept-meter-values rule
  (bess_gateway.endpoint.sessions).
- `maintenance`: the gateway's firmware and diagnostics service, shared by every endpoint; the
  gateway makes it after the endpoints and hands it over once (None until then).

Blocks reach them as ``ctx.services``: the context is what every block is handed already, so no
signature changes with a service, and a block can only reach what its endpoint was given.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from bess_gateway.domain import smart_charging as sc
from bess_gateway.endpoint import charging_limits
from bess_gateway.endpoint.authorizer import Authorizer
from bess_gateway.endpoint.link import Context
from bess_gateway.endpoint.outbox import Outbox, Policy
from bess_gateway.endpoint.reservation_service import ExpiryTimer
from bess_gateway.endpoint.sessions import KeptValues, SessionState
from bess_gateway.endpoint.settling import Settling, StopFormat
from bess_gateway.endpoint.smart_charging_service import SmartCharging
from bess_gateway.maintenance.service import Maintenance


@dataclass(eq=False)
class EndpointServices:
    """The services of one endpoint (see the module docstring)."""

    outbox: Outbox
    settling: Settling
    smart_charging: SmartCharging
    reservations: ExpiryTimer
    authorizer: Authorizer
    sessions: SessionState
    kept: KeptValues
    maintenance: Maintenance | None = None

    @classmethod
    def build(cls, ctx: Context, *, policy: Policy, stop_formats: Iterable[StopFormat],
              smart_charging: type[SmartCharging], limits: sc.Limits,
              reservations: ExpiryTimer) -> EndpointServices:
        """Build them for the endpoint of `ctx` and hand them to it (`ctx.services`).

        `reservations` is attached by the version first (its restored reservations may be
        reported at once, after the endpoint's start-up security event); smart charging is
        made last, restored from the journal and applied to the core."""
        st, journal = ctx.station, ctx.journal
        made = cls(
            outbox=Outbox(policy),
            settling=Settling(st, journal, stop_formats),
            smart_charging=charging_limits.make(st, journal, smart_charging, limits),
            reservations=reservations,
            authorizer=Authorizer(st, journal, lambda: ctx.online),
            sessions=SessionState(st.settings, ctx.tx_wake),
            kept=KeptValues(st.settings),
        )
        ctx.services = made
        return made
