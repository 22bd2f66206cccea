"""Which readings a meter sample yields, whatever the OCPP version (1.6 and 2.0.1 only format).

Each virtual connector meters its own direction: connector 1 (discharge) reports the *.Export
measurands, connector 2 (charge) the *.Import ones; both report Voltage, SoC and Temperature.
A quantity the PCS/BMS does not report is left out rather than reported as 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bess_gateway.domain.station import CHARGE_CONNECTOR, DISCHARGE_CONNECTOR, MeterSample

UNITS: dict[str, tuple[str, str | None]] = {
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


@dataclass(frozen=True, slots=True)
class Reading:
    measurand: str
    value: float  # already rounded as it goes out (registers: whole Wh, floored)
    text: str  # the same value as 1.6 writes it
    unit: str
    location: str | None


def applies(measurand: str, connector: int) -> bool:
    if ".Export" in measurand:
        return connector == DISCHARGE_CONNECTOR
    if ".Import" in measurand:
        return connector == CHARGE_CONNECTOR
    return True


def _value(measurand: str, s: MeterSample) -> tuple[float, str] | None:
    if measurand.startswith("Energy"):
        # Registers go out as whole Wh, floored, so they agree with meterStart/meterStop.
        wh = math.floor(s.energy_wh)
        return float(wh), str(wh)
    if measurand.startswith("Power"):
        return float(round(s.power_w)), f"{s.power_w:.0f}"
    reading = {"Voltage": s.voltage_v, "SoC": s.soc_pct, "Temperature": s.temperature_c}.get(
        measurand, s.current_a)
    if reading is None:
        return None
    return round(reading, 1), f"{reading:.1f}"


def readings(sample: MeterSample, measurands: list[str]) -> list[Reading]:
    """The selected measurands this connector has, in the order asked."""
    out: list[Reading] = []
    for m in measurands:
        if m not in UNITS or not applies(m, sample.connector):
            continue
        value = _value(m, sample)
        if value is None:
            continue  # not measured by this PCS
        unit, location = UNITS[m]
        out.append(Reading(m, value[0], value[1], unit, location))
    return out
