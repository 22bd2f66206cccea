"""2.0.x connector status and EVSE numbering: the domain's 1.6-shaped status folded into the
five 2.0.1 values, and which domain connector each EVSE id on the wire stands for.

2.0.1: EVSE 1 = discharge, EVSE 2 = charge, each with one connector (id 1); the domain connector
number is the EVSE id. 2.1 (design.md section 9): one bidirectional EVSE 1 whose transactions,
status and reservations are the domain's charge connector (2.1 "charging the vehicle" = the
battery charging); the discharge direction of its V2X setpoints is driven by bess_gateway.ocpp.v21.
The 2.0.1 blocks ask these functions instead of assuming the identity, so 2.1 reuses them.
"""

from __future__ import annotations

from typing import Protocol

from bess_gateway.domain.station import CHARGE_CONNECTOR, ConnectorStatus

EVSES = (1, 2)  # 2.0.1's EVSE ids (= domain connectors)
CONNECTOR_ID = 1
V21_EVSE = 1  # 2.1's one EVSE
V21_CONNECTOR = CHARGE_CONNECTOR  # ... and the domain connector behind it


class _Versioned(Protocol):
    version: str


def _v21(ctx: _Versioned) -> bool:
    return ctx.version == "2.1"


def evses(ctx: _Versioned) -> tuple[int, ...]:
    """The domain connectors that are EVSEs on the wire for `ctx`'s version."""
    return (V21_CONNECTOR,) if _v21(ctx) else EVSES


def evse_of(ctx: _Versioned, connector: int) -> int:
    """The wire EVSE id of a domain connector (0, the station, stays 0)."""
    if _v21(ctx) and connector != 0:
        return V21_EVSE
    return connector


def connector_of(ctx: _Versioned, evse: int) -> int | None:
    """The domain connector of a wire EVSE id (0 stays 0); None: no such EVSE here."""
    if evse == 0:
        return 0
    if _v21(ctx):
        return V21_CONNECTOR if evse == V21_EVSE else None
    return evse if evse in EVSES else None


STATUS_201: dict[ConnectorStatus, str] = {
    ConnectorStatus.AVAILABLE: "Available",
    ConnectorStatus.PREPARING: "Occupied",
    ConnectorStatus.CHARGING: "Occupied",
    ConnectorStatus.SUSPENDED_EVSE: "Occupied",
    ConnectorStatus.FINISHING: "Occupied",
    ConnectorStatus.RESERVED: "Reserved",
    ConnectorStatus.UNAVAILABLE: "Unavailable",
    ConnectorStatus.FAULTED: "Faulted",
}


def connector_status(status: ConnectorStatus) -> str:
    return STATUS_201[status]
