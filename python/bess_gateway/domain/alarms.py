"""The one table from control-core trip causes to what OCPP reports.

The Rust core names *why* it cut power (a cause code); this table is the only place that says how
each version reports it, so 1.6 error codes and 2.0.1 device-model events cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class AlarmReport:
    """How one trip cause is reported.

    ``error_code`` is a 1.6 ``ChargePointErrorCode``; ``vendor_error_code`` carries the exact cause
    where the 1.6 code is generic. ``component``/``variable`` are the 2.0.1 device-model location
    for NotifyEvent.
    """

    cause: str
    alarm_bit: int | None
    error_code: str
    vendor_error_code: str
    component: str
    variable: str
    description: str


_TABLE: tuple[AlarmReport, ...] = (
    # Not a core trip: the gateway's own verdict when the control thread died (gateway.py). It
    # outranks every trip, since no trip can be acted on any more; the process then restarts.
    AlarmReport("control_failed", None, "InternalError", "ControlLoopFailed",
                "ChargingStation", "Problem",
                "the gateway's control thread failed; the gateway restarts"),
    AlarmReport("cell_over_voltage", 0, "OverVoltage", "CellOverVoltage",
                "BatteryBank", "Voltage", "BMS: cell over-voltage"),
    AlarmReport("cell_under_voltage", 1, "UnderVoltage", "CellUnderVoltage",
                "BatteryBank", "Voltage", "BMS: cell under-voltage"),
    AlarmReport("over_temperature", 2, "HighTemperature", "OverTemperature",
                "BatteryBank", "Temperature", "battery over-temperature"),
    AlarmReport("under_temperature", 3, "OtherError", "UnderTemperature",
                "BatteryBank", "Temperature", "battery under-temperature"),
    AlarmReport("over_current", 4, "OverCurrentFailure", "OverCurrent",
                "BatteryBank", "Current", "BMS: over-current"),
    AlarmReport("insulation_fault", 5, "GroundFailure", "InsulationFault",
                "ElectricalFeed", "Problem", "ground / insulation fault"),
    AlarmReport("pcs_internal_fault", 6, "InternalError", "PcsInternalFault",
                "PowerConverter", "Problem", "PCS internal fault"),
    AlarmReport("grid_fault", 7, "OtherError", "GridFault",
                "ElectricalFeed", "Problem", "grid voltage or frequency out of range"),
    AlarmReport("contactor_failure", 8, "PowerSwitchFailure", "ContactorFailure",
                "PowerContactor", "Problem", "contactor failure"),
    AlarmReport("bms_comm_failure", 9, "InternalError", "BmsCommFailure",
                "BatteryBank", "Problem", "BMS-PCS communication failure"),
    AlarmReport("emergency_stop", 10, "OtherError", "EmergencyStop",
                "EmergencyStop", "Tripped", "emergency stop pressed"),
    AlarmReport("dc_over_voltage", None, "OverVoltage", "DcOverVoltage",
                "BatteryBank", "Voltage", "DC voltage above the protection window"),
    AlarmReport("dc_under_voltage", None, "UnderVoltage", "DcUnderVoltage",
                "BatteryBank", "Voltage", "DC voltage below the protection window"),
    AlarmReport("pcs_fault_state", None, "InternalError", "PcsFaultState",
                "PowerConverter", "Problem", "PCS reports fault state"),
    AlarmReport("invalid_measurement", None, "PowerMeterFailure", "InvalidMeasurement",
                "PowerConverter", "Problem", "implausible PCS/BMS reading"),
    AlarmReport("pcs_link_lost", None, "InternalError", "PcsLinkLost",
                "PowerConverter", "Problem", "no answer from the PCS over Modbus"),
    AlarmReport("pcs_write_fault", None, "InternalError", "PcsWriteFault",
                "PowerConverter", "Problem",
                "PCS refuses or does not acknowledge setpoint writes (local mode?)"),
)

ALARMS: dict[str, AlarmReport] = {a.cause: a for a in _TABLE}

_UNKNOWN = AlarmReport("unknown", None, "InternalError", "Unknown", "PowerConverter", "Problem",
                       "unknown protection cause")

# 1.6 prefers the most specific code when several causes trip at once; table order is priority.
_PRIORITY = {a.cause: i for i, a in enumerate(_TABLE)}


def report_for(cause: str) -> AlarmReport:
    """The report for a cause; an unknown cause is still reported, as InternalError."""
    return ALARMS.get(cause, AlarmReport(cause, None, _UNKNOWN.error_code, cause[:50],
                                         _UNKNOWN.component, _UNKNOWN.variable, cause))


def primary(causes: list[str] | tuple[str, ...]) -> AlarmReport | None:
    """The cause that 1.6's single errorCode should carry, or None when nothing tripped."""
    if not causes:
        return None
    return report_for(min(causes, key=lambda c: _PRIORITY.get(c, len(_PRIORITY))))
