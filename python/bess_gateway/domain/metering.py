"""Which readings a meter sample yields, whatever the OCPP version (1.6 and 2.0.1 only format).

Each virtual connector reports the energy that flows through it. Connector 2 (charge: into the
battery) names its energy and power `*.Import`. Connector 1 (discharge: out of the battery to
the EV side) names them as its endpoint's `discharge_as` says:

- `import` (the default): `Energy.Active.Import.Register`, `Power.Active.Import`,
  `Current.Import`. A connector's own delivered energy is what CSMSs read as Import: measured
  against independent CSMSs, Home Assistant's `ocpp` integration showed 0.0 kWh for discharge
  sessions reported as Export, and `arthexis` and `ocpp-csms` compute a session's
  energy from the Import register only.
- `export`: the same quantities as `*.Export` (the battery's point of view), for a CSMS that
  bills the discharge connector from the Export register.

meterStart/meterStop (1.6) and the Started/Ended register (2.0.1) are the connector's own
register either way; only the measurand names change. Both connectors report Voltage, SoC and
Temperature (not in 2.0.1). A quantity the PCS/BMS does not report is left out rather than
reported as 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from bess_gateway.domain.station import DISCHARGE_CONNECTOR, MeterSample
from bess_gateway.domain.transaction_facts import BEGIN, CLOCK, PERIODIC, KeptSamples, KeptSeries

T = TypeVar("T")

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
    "Power.Offered": ("W", "Outlet"),
}


@dataclass(frozen=True, slots=True)
class Reading:
    measurand: str
    value: float  # already rounded as it goes out (registers: whole Wh, floored)
    text: str  # the same value as 1.6 writes it
    unit: str
    location: str | None


def flow_of(sample: MeterSample) -> str:
    """The measurand word of the sample's connector's own flow (MeterSample.flow)."""
    if sample.flow is not None:
        return sample.flow
    return "Export" if sample.connector == DISCHARGE_CONNECTOR else "Import"


def applies(measurand: str, sample: MeterSample) -> bool:
    """A directional measurand applies only in the word its connector's flow is named by."""
    if ".Export" in measurand:
        return flow_of(sample) == "Export"
    if ".Import" in measurand:
        return flow_of(sample) == "Import"
    return True


def _value(measurand: str, s: MeterSample) -> tuple[float, str] | None:
    if measurand.startswith("Energy"):
        # Registers go out as whole Wh, floored, so they agree with meterStart/meterStop.
        wh = math.floor(s.energy_wh)
        return float(wh), str(wh)
    if measurand == "Power.Offered":
        if s.offered_w is None:
            return None  # no session: nothing is offered
        return float(round(s.offered_w)), f"{s.offered_w:.0f}"
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
        if m not in UNITS or not applies(m, sample):
            continue
        value = _value(m, sample)
        if value is None:
            continue  # not measured by this PCS
        unit, location = UNITS[m]
        out.append(Reading(m, value[0], value[1], unit, location))
    return out


# -- values kept for the stop message (1.6 StopTxn*Data, 2.0.1 TxEnded*) ----------------------
# A session's intermediate samples travel in its stop message (1.6 StopTransaction
# transactionData, 2.0.1 Ended meterValue) and are kept in the transaction's journal record
# (TxFacts.kept -> TxRecord.data) so a transaction ended after a crash still carries them.
# Both are bounded: at most MAX_KEPT samples per kind, thinned evenly (every other one dropped,
# then only every 2nd, 4th, ... new sample kept): a 12 h session at 10 s keeps 67 samples, one
# per 640 s, in a record of ~10 kB at most; the stop message is further thinned to fit
# STOP_MESSAGE_BYTES.
# BEGIN, PERIODIC and CLOCK (the kinds kept) come from domain.transaction_facts.
END = "Transaction.End"
MAX_KEPT = 96  # per kind; even, so thinning keeps the samples evenly spaced
# The largest stop message we make with intermediate values: our advertised
# DeviceDataCtrlr.BytesPerMessage, well under the 1 MiB frames CSMSs commonly accept.
STOP_MESSAGE_BYTES = 65_536


def _pack(s: MeterSample) -> list[Any]:
    def r(v: float | None) -> float | None:
        return None if v is None else round(v, 2)

    # Whole ms, truncated as iso() writes them, so a kept time renders exactly as it would have.
    ms = int(s.timestamp.timestamp()) * 1000 + s.timestamp.microsecond // 1000
    return [ms, round(s.energy_wh, 3), r(s.power_w),
            r(s.current_a), r(s.voltage_v), r(s.soc_pct), r(s.temperature_c)]


def _unpack(row: list[Any], connector: int, flow: str | None) -> MeterSample:
    ms, energy, power, current, voltage, soc, temperature = row
    ts = datetime.fromtimestamp(int(ms) // 1000, UTC).replace(microsecond=int(ms) % 1000 * 1000)
    return MeterSample(timestamp=ts, connector=connector, flow=flow,
                       energy_wh=float(energy), power_w=float(power or 0.0), current_a=current,
                       voltage_v=voltage, soc_pct=soc, temperature_c=temperature)


def keep_begin(store: KeptSamples, sample: MeterSample) -> None:
    """Keep the sample at the transaction's start (Transaction.Begin)."""
    store.begin = _pack(sample)


def keep(store: KeptSamples, context: str, sample: MeterSample) -> bool:
    """Keep an intermediate sample (PERIODIC or CLOCK); False when thinning skipped it (the
    record need not be written again)."""
    series = store.series.setdefault(context, KeptSeries())
    n = series.n
    series.n = n + 1
    if n % series.stride:
        return False
    series.rows.append(_pack(sample))
    if len(series.rows) > MAX_KEPT:
        series.rows = series.rows[::2]
        series.stride *= 2
    return True


def kept(store: KeptSamples, connector: int,
         flow: str | None = None) -> list[tuple[str, MeterSample]]:
    """(context, sample) of what was kept: the Begin sample first, then the intermediate ones
    in time order; `flow` as MeterSample.flow (the station's, as the values go out now)."""
    out = [(c, _unpack(row, connector, flow)) for c in (PERIODIC, CLOCK)
           for row in store.series.get(c, KeptSeries()).rows]
    out.sort(key=lambda cs: cs[1].timestamp)
    if store.begin is not None:
        out.insert(0, (BEGIN, _unpack(store.begin, connector, flow)))
    return out


def fit(values: list[T], size: Callable[[list[T]], int], fixed: Callable[[T], bool],
        budget: int = STOP_MESSAGE_BYTES) -> list[T]:
    """`values` with every other intermediate one (not `fixed`) dropped until `size` of what
    is left fits the budget (or only the fixed ones are left)."""
    while size(values) > budget:
        loose = [i for i, v in enumerate(values) if not fixed(v)]
        if not loose:
            break
        drop = set(loose[1::2]) if len(loose) > 1 else set(loose)
        values = [v for i, v in enumerate(values) if i not in drop]
    return values
