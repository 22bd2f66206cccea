"""What the 2.0.1 functional blocks share: the endpoint context (bess_gateway.endpoint.link) with
the
2.0.1 endpoint's own state in one typed place (`V201State`), made with the endpoint.

The 2.1 endpoint extends both (bess_gateway.ocpp.v21.context): every 2.0.1 block serves 2.1 as is.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bess_gateway.endpoint import link

if TYPE_CHECKING:
    from bess_gateway.ocpp.v201.availability import AlarmEvents


@dataclass
class V201State:
    """Per-endpoint state of the 2.0.1 blocks; it outlives connections."""

    # BootNotification reason: PowerUp after a process start; blocks set it before a restart
    # (RemoteReset, FirmwareUpdate), the boot after it sets it back (endpoint).
    boot_reason: str = "PowerUp"
    # A Reset OnIdle waits for the last session to end (provisioning.reset_when_idle); the
    # station watch that runs it is installed once (`reset_watch`).
    reset_pending: bool = False
    reset_watch: bool = False
    # The network profile slot connected through, and failed attempts on it (network).
    active_slot: int = 0
    network_failures: int = 0
    # Trips reported as NotifyEvent (availability.watch), made at construction.
    alarms: AlarmEvents | None = None
    # What NotifyChargingLimit last told the CSMS per EVSE, battery and site (smart_charging).
    battery_limit_reported: dict[int, float] = field(default_factory=dict)
    site_limit_reported: dict[int, float] = field(default_factory=dict)
    # Set on every station change for the ChargingRateChanged watch (made when it first runs).
    rate_wake: asyncio.Event | None = None
    # What a later version adds to the smart-charging block, set by its endpoint (2.1, v21.v2x):
    # a check of the wire profile before it is translated (ProfileError), and GetComposite-
    # Schedule period annotations.
    check_profile: Callable[[dict[str, Any]], None] | None = None
    annotate_composite: Callable[..., list[dict[str, Any]]] | None = None


@dataclass
class Context201(link.Context):
    """The endpoint context of a 2.0.1 (or 2.1) endpoint."""

    v201: V201State = field(default_factory=V201State)


# What the 2.0.1 blocks call their context (as v16.context names the 1.6 one).
Context = Context201

__all__ = ["Context", "Context201", "V201State"]
