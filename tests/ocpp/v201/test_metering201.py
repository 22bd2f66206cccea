"""The 2.0.1 MeterValue translation of domain samples (pure)."""

from __future__ import annotations

from datetime import UTC, datetime

from bess_gateway.domain.settings import MEASURANDS
from bess_gateway.domain.station import MeterSample
from bess_gateway.domain.timefmt import iso
from bess_gateway.ocpp.schemas import Validator
from bess_gateway.ocpp.v16.meter import meter_value as meter_value_16
from bess_gateway.ocpp.v201.metering import meter_value

AT = datetime(2026, 11, 24, 5, 0, 0, tzinfo=UTC)


def sample(connector: int, **kw: float | None) -> MeterSample:
    base: dict[str, float | None] = dict(energy_wh=1234.9, power_w=149_600.4, current_a=210.04,
                                         voltage_v=712.26, soc_pct=55.34, temperature_c=31.0)
    base.update(kw)
    return MeterSample(timestamp=AT, connector=connector, **base)  # type: ignore[arg-type]


def test_each_evse_reports_its_direction_with_units_and_numbers() -> None:
    mv = meter_value(sample(1), list(MEASURANDS), "Sample.Periodic")
    assert mv["timestamp"] == iso(AT)
    by = {v["measurand"]: v for v in mv["sampledValue"]}
    assert set(by) == {"Voltage", "Current.Export", "Power.Active.Export", "SoC",
                       "Energy.Active.Export.Register"}  # no Import, no Temperature in 2.0.1
    assert by["Energy.Active.Export.Register"]["value"] == 1234  # floored like meterStart/Stop
    assert by["Energy.Active.Export.Register"]["unitOfMeasure"] == {"unit": "Wh"}
    assert by["Power.Active.Export"]["value"] == 149_600
    assert by["SoC"]["value"] == 55.3
    assert by["SoC"]["unitOfMeasure"] == {"unit": "Percent"} and "location" not in by["SoC"]
    assert by["Voltage"]["location"] == "Outlet"
    assert all(v["context"] == "Sample.Periodic" for v in by.values())
    charge = {v["measurand"] for v in meter_value(sample(2), list(MEASURANDS), "Trigger")[
        "sampledValue"]}
    assert "Energy.Active.Import.Register" in charge and "Current.Export" not in charge


def test_unreported_quantities_are_left_out_and_16_agrees() -> None:
    s = sample(2, voltage_v=None, soc_pct=None, current_a=None)
    mv = meter_value(s, list(MEASURANDS), "Sample.Clock")
    assert {v["measurand"] for v in mv["sampledValue"]} == {
        "Power.Active.Import", "Energy.Active.Import.Register"}
    # The same readings as 1.6 (plus its Temperature), only shaped differently.
    mv16 = meter_value_16(s, list(MEASURANDS), "Sample.Clock")
    assert {v["measurand"] for v in mv16["sampledValue"]} == {
        "Power.Active.Import", "Energy.Active.Import.Register", "Temperature"}
    assert {float(v["value"]) for v in mv16["sampledValue"] if v["measurand"] != "Temperature"} \
        == {float(v["value"]) for v in mv["sampledValue"]}


def test_a_transaction_event_built_from_it_is_schema_valid() -> None:
    mv = meter_value(sample(1), list(MEASURANDS), "Transaction.Begin")
    Validator("2.0.1").request("TransactionEvent", {
        "eventType": "Started", "timestamp": mv["timestamp"], "triggerReason": "RemoteStart",
        "seqNo": 0, "transactionInfo": {"transactionId": "x", "chargingState": "Charging"},
        "meterValue": [mv]})
    Validator("2.0.1").request("MeterValues", {"evseId": 1, "meterValue": [mv]})
