"""1.6 MeterValue building from domain samples.

Each virtual connector meters its own direction: connector 1 (discharge) reports the *.Export
measurands, connector 2 (charge) the *.Import ones; both report Voltage, SoC and Temperature.
"""

from __future__ import annotations

import math
from typing import Any

from bess_gateway.domain.station import CHARGE_CONNECTOR, DISCHARGE_CONNECTOR, MeterSample
from bess_gateway.domain.timefmt import iso

_UNITS: dict[str, tuple[str, str | None]] = {
    # measurand: (unit, location)
    "Voltage": ("V", "Outlet"),
    "Current.Export": ("A", "Outlet"),
    "Current.Import": ("A", "Outlet"),
    "Power.Active.Export": ("W", "Outlet"),
    "Power.Active.Import": ("W", "Outlet"),
    "SoC": ("Percent", None),
    "Temperature": ("Celsius", "Body"),
    "Energy.Active.Export.Register": ("Wh", "Outlet"),
    "Energy.Active.Import.Register": ("Wh", "Outlet"),
}


def _applies(measurand: str, connector: int) -> bool:
    if ".Export" in measurand:
        return connector == DISCHARGE_CONNECTOR
    if ".Import" in measurand:
        return connector == CHARGE_CONNECTOR
    return True


def _value(measurand: str, s: MeterSample) -> str | None:
    """The measurand's text, or None when the PCS/BMS does not report that quantity."""
    if measurand.startswith("Energy"):
        # Registers go out as whole Wh, floored, so they agree with meterStart/meterStop.
        return str(math.floor(s.energy_wh))
    if measurand.startswith("Power"):
        return f"{s.power_w:.0f}"
    reading = {"Voltage": s.voltage_v, "SoC": s.soc_pct, "Temperature": s.temperature_c}.get(
        measurand, s.current_a)
    return None if reading is None else f"{reading:.1f}"


def meter_value(sample: MeterSample, measurands: list[str], context: str) -> dict[str, Any]:
    """One MeterValue element: the timestamp and the selected measurands of this connector."""
    values: list[dict[str, Any]] = []
    for m in measurands:
        if m not in _UNITS or not _applies(m, sample.connector):
            continue
        value = _value(m, sample)
        if value is None:
            continue  # not measured by this PCS: left out rather than reported as 0
        unit, location = _UNITS[m]
        sv: dict[str, Any] = {
            "value": value,
            "context": context,
            "format": "Raw",
            "measurand": m,
            "unit": unit,
        }
        if location is not None:
            sv["location"] = location
        values.append(sv)
    return {"timestamp": iso(sample.timestamp), "sampledValue": values}
