"""1.6 Smart Charging: SetChargingProfile, ClearChargingProfile, GetCompositeSchedule, and the
TxProfile of a RemoteStartTransaction. A thin translation: every rule is in
bess_gateway.domain.smart_charging, which 2.0.1 shares.

Each station gets one domain `SmartCharging` the first time its handlers are built (it outlives
connections); the gateway hands the core fresh schedules every `REFRESH` whether or not the
CSMS is reachable, because profiles keep limiting power offline.
"""

from __future__ import annotations

import logging
import weakref
from datetime import datetime, timedelta
from typing import Any, cast

from bess_gateway.domain import smart_charging as sc
from bess_gateway.domain.station import Station
from bess_gateway.domain.timefmt import iso
from bess_gateway.journal import JournalError
from bess_gateway.v16.config_keys import SC_LIMITS
from bess_gateway.v16.context import Context

log = logging.getLogger("bess_gateway.v16")

_blocks: weakref.WeakKeyDictionary[Station, sc.SmartCharging] = weakref.WeakKeyDictionary()


def block(ctx: Context) -> sc.SmartCharging:
    """The station's smart charging, made (and restored from the journal) on first use."""
    st = ctx.station
    found = _blocks.get(st)
    if found is not None:
        return found

    def electrical() -> sc.Electrical:
        return sc.Electrical(phase_voltage_v=float(st.settings.int("ac_phase_voltage_v")))

    made = sc.SmartCharging(
        st, cast(sc.ScheduleCore, st.core), store=ctx.journal, limits=lambda: SC_LIMITS,
        electrical=electrical, clock=lambda: sc.utc(st._clock()))
    _blocks[st] = made
    st.start_schedule = made.start_schedule
    st.on_change(made.sessions_changed)
    made.sessions_changed()
    made.apply()
    return made


# -- translation ----------------------------------------------------------------------------
def _time(text: str | None) -> datetime | None:
    return None if text is None else sc.utc(datetime.fromisoformat(text.replace("Z", "+00:00")))


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


def _physical_w(st: Station, connector: int) -> float:
    """The most the battery lets through now (no profile can raise it)."""
    snap = st.view.snapshot
    dis = min(st.session_max_w, float(snap.get("limit_discharge_w", st.session_max_w)))
    chg = min(st.session_max_w, float(snap.get("limit_charge_w", st.session_max_w)))
    if connector == 1:
        return dis
    if connector == 2:
        return chg
    return dis + chg  # the endpoint: both directions count against its limit


def composite_16(ctx: Context, connector: int, duration_s: int,
                 unit: sc.RateUnit) -> dict[str, Any]:
    b = block(ctx)
    el = b.electrical()
    segs = b.composite(connector, timedelta(seconds=duration_s),
                       physical_w=_physical_w(ctx.station, connector))
    start = segs[0].start
    periods = []
    for s in segs:
        assert s.limit_w is not None
        limit = el.from_w(s.limit_w, unit)
        period: dict[str, Any] = {"startPeriod": int((s.start - start).total_seconds()),
                                  "limit": round(limit, 1)}
        if unit == sc.RateUnit.A:
            period["numberPhases"] = el.default_phases
        periods.append(period)
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
        block(ctx).set_start_profile(profile_from_16(connector, profile))
    except (sc.ProfileError, JournalError) as exc:
        log.info("%s: RemoteStart charging profile refused: %s", ctx.endpoint_id, exc)
        return False
    return True


def start_failed(ctx: Context, connector: int) -> None:
    block(ctx).drop_start_profile(connector)


# -- CSMS -> CP handlers ----------------------------------------------------------------------
def handlers(ctx: Context) -> dict[str, Any]:
    st = ctx.station
    b = block(ctx)

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
        duration = min(duration, int(sc.COMPOSITE_MAX.total_seconds()))
        return composite_16(ctx, connector, duration, unit)

    return {
        "SetChargingProfile": set_profile,
        "ClearChargingProfile": clear_profile,
        "GetCompositeSchedule": composite,
    }


def refresh(ctx: Context) -> None:
    """Recompute the station's schedules for the next horizon (called by the gateway)."""
    block(ctx).refresh()

