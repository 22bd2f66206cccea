"""2.0.1 connector status: the domain's 1.6-shaped status folded into 2.0.1's five values."""

from __future__ import annotations

from bess_gateway.domain.station import ConnectorStatus

# EVSE 1 = discharge, EVSE 2 = charge, each with one connector (id 1); domain connector = EVSE id.
EVSES = (1, 2)
CONNECTOR_ID = 1

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
