"""1.6 MeterValue building from domain samples (which readings: ``domain.metering``)."""

from __future__ import annotations

from typing import Any

from bess_gateway.domain.metering import readings
from bess_gateway.domain.station import MeterSample
from bess_gateway.domain.timefmt import iso


def meter_value(sample: MeterSample, measurands: list[str], context: str) -> dict[str, Any]:
    """One MeterValue element: the timestamp and the selected measurands of this connector."""
    values: list[dict[str, Any]] = []
    for r in readings(sample, measurands):
        sv: dict[str, Any] = {
            "value": r.text,
            "context": context,
            "format": "Raw",
            "measurand": r.measurand,
            "unit": r.unit,
        }
        if r.location is not None:
            sv["location"] = r.location
        values.append(sv)
    return {"timestamp": iso(sample.timestamp), "sampledValue": values}
