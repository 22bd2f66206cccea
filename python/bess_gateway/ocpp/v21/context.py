"""What the 2.1 blocks share: the 2.0.1 context (bess_gateway.ocpp.v201.context) with the 2.1
endpoint's own state (`V21State`), made with the endpoint (v21.endpoint)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bess_gateway.ocpp.v201.context import Context201

if TYPE_CHECKING:
    from bess_gateway.ocpp.v21.der import DerStore
    from bess_gateway.ocpp.v21.export_settling import ExportPending


@dataclass
class V21State:
    """Per-endpoint state of the 2.1 blocks; it outlives connections."""

    # The endpoint's DER controls (v21.der), restored from the journal at construction.
    der: DerStore
    # Ids of the scheduled DER controls last reported as started (NotifyDERStartStop).
    der_active: set[str] = field(default_factory=set)
    # The NotifyEVChargingNeeds last sent: (local id, max charge W, max discharge W) (v2x).
    needs_sent: tuple[str, float, float] | None = None
    # The power last reported by NotifyChargingLimit for a setpoint not met (v2x); None: none.
    setpoint_reported: float | None = None
    # Ended events waiting for their discharge leg's final export register (export_settling).
    export_pending: dict[str, ExportPending] = field(default_factory=dict)


@dataclass
class Context21(Context201):
    """The endpoint context of a 2.1 endpoint; `v21` is set by the endpoint at construction."""

    v21: V21State = field(init=False, repr=False)


# What the 2.1 blocks call their context (as v16.context and v201.context do).
Context = Context21

__all__ = ["Context", "Context21", "V21State"]
