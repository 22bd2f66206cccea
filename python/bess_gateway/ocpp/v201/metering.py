"""2.0.1 J Metering: domain meter samples as 2.0.1 MeterValue / SampledValue.

Which readings a sample yields is ``domain.metering`` (shared with 1.6); here they only take
2.0.1's shape: a number value, unitOfMeasure {unit}, and no Temperature (2.0.1's
MeasurandEnumType has none; the BMS temperature is a device-model variable instead).

Non-transaction MeterValues go out on TriggerMessage and, with AlignedDataCtrlr.SendDuringIdle,
at every clock-aligned instant for an EVSE without a transaction (a session's aligned values
travel in its TransactionEvent, ``v201.transactions``).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from bess_gateway.domain.metering import readings
from bess_gateway.domain.station import DISCHARGE_CONNECTOR, MeterSample
from bess_gateway.domain.timefmt import iso
from bess_gateway.endpoint.link import Context
from bess_gateway.ocpp.v201.status import V21_CONNECTOR, evse_of, evses

log = logging.getLogger("bess_gateway.ocpp.v201")

# 2.0.1 MeasurandEnumType lacks these domain measurands.
NOT_IN_201 = frozenset({"Temperature"})


def meter_value(sample: MeterSample, measurands: list[str], context: str) -> dict[str, Any]:
    """One 2.0.1 MeterValue: the timestamp and the selected measurands of this EVSE."""
    values: list[dict[str, Any]] = []
    for r in readings(sample, [m for m in measurands if m not in NOT_IN_201]):
        sv: dict[str, Any] = {
            "value": r.value,
            "context": context,
            "measurand": r.measurand,
            "unitOfMeasure": {"unit": r.unit},
        }
        if r.location is not None:
            sv["location"] = r.location
        values.append(sv)
    return {"timestamp": iso(sample.timestamp), "sampledValue": values}


def has_values(mv: dict[str, Any]) -> bool:
    """A MeterValue needs at least one sampledValue (minItems 1)."""
    return bool(mv["sampledValue"])


def evse_meter_value(ctx: Context, sample: MeterSample, measurands: list[str],
                     context: str) -> dict[str, Any]:
    """`meter_value` of an EVSE's sample; on 2.1's bidirectional EVSE (the domain's charge
    connector) the discharge leg's *.Export readings join the *.Import ones, so one MeterValue
    carries both registers and both powers (design.md section 9)."""
    mv = meter_value(sample, measurands, context)
    if ctx.version == "2.1" and sample.connector == V21_CONNECTOR:
        # The battery's discharge is Export on 2.1's one EVSE (design.md section 9), whatever
        # the endpoint's `discharge_as` (which names a 1.6/2.0.1 discharge connector's flow).
        leg = replace(ctx.station.sample(DISCHARGE_CONNECTOR), flow="Export")
        exports = [m for m in measurands if ".Export" in m]
        mv["sampledValue"].extend(meter_value(leg, exports, context)["sampledValue"])
    return mv


async def send_meter_values(ctx: Context, evse: int, context: str, measurands: list[str]) -> bool:
    """MeterValues for one EVSE (a domain connector) now (not transaction-bound); False when
    there is nothing to say."""
    mv = evse_meter_value(ctx, ctx.station.sample(evse), measurands, context)
    if not has_values(mv):
        return False
    await ctx.call("MeterValues", {"evseId": evse_of(ctx, evse), "meterValue": [mv]})
    return True


async def send_idle_aligned(ctx: Context) -> None:
    """Clock-aligned MeterValues for the EVSEs without a session (SendDuringIdle)."""
    st = ctx.station
    if not ctx.online or not st.settings.bool("aligned_data_send_during_idle"):
        return
    measurands = st.settings.items("meter_values_aligned_data")
    for evse in evses(ctx):
        if evse not in st.transactions:
            await send_meter_values(ctx, evse, "Sample.Clock", measurands)
