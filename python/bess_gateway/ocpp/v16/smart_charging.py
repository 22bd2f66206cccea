"""1.6 Smart Charging: SetChargingProfile, ClearChargingProfile, GetCompositeSchedule, and the
TxProfile of a RemoteStartTransaction. A thin translation: the rules are in
bess_gateway.domain.smart_charging and the per-endpoint glue (core, journal, refresh) in
bess_gateway.endpoint.charging_limits, both shared with 2.0.1.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from bess_gateway.domain import smart_charging as sc
from bess_gateway.domain.timefmt import iso, parse_iso
from bess_gateway.endpoint import charging_limits
from bess_gateway.journal import JournalError
from bess_gateway.ocpp.v16.context import Context

log = logging.getLogger("bess_gateway.ocpp.v16")

__all__ = ["accept_start_profile", "handlers", "refresh", "start_failed"]


# -- translation ----------------------------------------------------------------------------
def _time(text: str | None) -> datetime | None:
    return None if text is None else parse_iso(text)


def profile_from_16(connector: int, p: dict[str, Any]) -> sc.ChargingProfile:
    """csChargingProfiles -> the domain profile; ProfileError for what the schema lets through
    but the domain cannot read (bad timestamps)."""
    s = p["chargingSchedule"]
    try:
        return sc.ChargingProfile(
            profile_id=int(p["chargingProfileId"]),
            connector=connector,
            stack_level=int(p["stackLevel"]),
            purpose=sc.Purpose(p["chargingProfilePurpose"]),
            kind=sc.Kind(p["chargingProfileKind"]),
            recurrency=None if p.get("recurrencyKind") is None
            else sc.Recurrency(p["recurrencyKind"]),
            valid_from=_time(p.get("validFrom")),
            valid_to=_time(p.get("validTo")),
            transaction_id=None if p.get("transactionId") is None else str(p["transactionId"]),
            schedule=sc.Schedule(
                unit=sc.RateUnit(s["chargingRateUnit"]),
                duration_s=s.get("duration"),
                start=_time(s.get("startSchedule")),
                min_rate=s.get("minChargingRate"),
                periods=tuple(sc.Period(int(q["startPeriod"]), float(q["limit"]),
                                        q.get("numberPhases"))
                              for q in s["chargingSchedulePeriod"]),
            ),
        )
    except ValueError as exc:
        raise sc.ProfileError(str(exc)) from exc


def composite_16(ctx: Context, connector: int, duration_s: int,
                 unit: sc.RateUnit) -> dict[str, Any]:
    start, duration_s, segs = charging_limits.composite(ctx, connector, duration_s, unit)
    periods = charging_limits.wire_periods(segs)
    return {
        "status": "Accepted",
        "connectorId": connector,
        "scheduleStart": iso(start),
        "chargingSchedule": {
            "duration": duration_s,
            "startSchedule": iso(start),
            "chargingRateUnit": str(unit),
            "chargingSchedulePeriod": periods,
        },
    }


# -- RemoteStartTransaction's profile -------------------------------------------------------
def accept_start_profile(ctx: Context, connector: int, profile: dict[str, Any]) -> bool:
    """Install a RemoteStart's TxProfile for the session about to start; False = Rejected."""
    try:
        parsed = profile_from_16(connector, profile)
    except sc.ProfileError as exc:
        log.info("%s: RemoteStart charging profile refused: %s", ctx.endpoint_id, exc)
        return False
    return charging_limits.accept_start_profile(ctx, parsed)


start_failed = charging_limits.start_failed
refresh = charging_limits.refresh


# -- CSMS -> CP handlers ----------------------------------------------------------------------
def handlers(ctx: Context) -> dict[str, Any]:
    st = ctx.station
    b = ctx.services.smart_charging

    async def set_profile(p: dict[str, Any]) -> dict[str, Any]:
        connector = int(p["connectorId"])
        try:
            profile = profile_from_16(connector, p["csChargingProfiles"])
            b.set_profile(profile)
        except sc.ProfileError as exc:
            log.info("%s: SetChargingProfile refused: %s", ctx.endpoint_id, exc)
            return {"status": "Rejected"}
        except JournalError as exc:
            log.error("%s: SetChargingProfile not stored: %s", ctx.endpoint_id, exc)
            return {"status": "Rejected"}
        log.info("%s: charging profile %d (%s, stack %d) on connector %d", ctx.endpoint_id,
                 profile.profile_id, profile.purpose, profile.stack_level, connector)
        return {"status": "Accepted"}

    async def clear_profile(p: dict[str, Any]) -> dict[str, Any]:
        purpose = p.get("chargingProfilePurpose")
        gone = b.clear(profile_id=p.get("id"), connector=p.get("connectorId"),
                       purpose=None if purpose is None else sc.Purpose(purpose),
                       stack_level=p.get("stackLevel"))
        return {"status": "Accepted" if gone else "Unknown"}

    async def composite(p: dict[str, Any]) -> dict[str, Any]:
        connector = int(p["connectorId"])
        duration = int(p["duration"])
        unit = sc.RateUnit(p.get("chargingRateUnit") or "W")
        if (connector != 0 and not st.valid_connector(connector)) or duration < 0:
            return {"status": "Rejected"}
        return composite_16(ctx, connector, duration, unit)

    return {
        "SetChargingProfile": set_profile,
        "ClearChargingProfile": clear_profile,
        "GetCompositeSchedule": composite,
    }

