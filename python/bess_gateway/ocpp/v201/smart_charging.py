"""2.0.1 K Smart Charging: SetChargingProfile, ClearChargingProfile, GetChargingProfiles ->
ReportChargingProfiles, GetCompositeSchedule, a RequestStartTransaction's TxProfile,
NotifyChargingLimit / ClearedChargingLimit when the battery limits an EVSE below the CSMS, and
TransactionEvent Updated ChargingRateChanged when a session's allowed power moves.

A translation onto the engine 1.6 uses: the rules are in bess_gateway.domain.smart_charging, the
per-endpoint glue (core, journal, 12 h refresh) in bess_gateway.endpoint.charging_limits. What
2.0.1 adds
is said here: its names (ChargingStationMaxProfile on EVSE 0), its checks that 1.6 does not have
(K01.FR.03 a TxProfile names its transaction, K01.FR.40/41 startSchedule by kind, one schedule
per profile, no phaseToUse), statusInfo reasons, and the replace-by-id rule (domain LIMITS_201).
EVSE 1 = discharge, EVSE 2 = charge: the domain's connector number is the EVSE id.

NotifyChargingLimit: the battery's own protection (BMS power limit, SoC window, temperature
derating: the core's `sub_limits`) is no CSMS limit and no energy management system, so it is
reported with chargingLimitSource "Other" and isGridCritical false. An EVSE counts as limited when
that limit is below what the CSMS's profiles (and the session maximum) allow by more than
LimitChangeSignificance; while limited, a move of more than the significance is reported again;
the limit clears (ClearedChargingLimit) only once the battery allows at least what the CSMS
does. That band is the hysteresis: a limit hovering at an edge sends nothing.

NotifyChargingLimit with chargingLimitSource "EMS": the gateway's own site energy management
(`[site]`, docs/site.md) holding a session below what it would get otherwise (the connection's
hard limits, the demand target, a time-of-use window) is an energy management system's limit.
It is reported when it starts and when it moves by more than LimitChangeSignificance, with
isGridCritical true while a hard limit of the grid connection is what binds, and cleared
(ClearedChargingLimit, "EMS") once the site no longer holds the session back.

ChargingRateChanged: a running transaction whose allowed power (its allocation in the control
core, whatever moved it: a profile, the battery, another session's share) moved by more than
LimitChangeSignificance of the rate last reported gets one TransactionEvent Updated with that
trigger and the new rate as Power.Offered, through the transaction layer's send-or-queue path.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from bess_gateway.domain import smart_charging as sc
from bess_gateway.domain.station import DIRECTION
from bess_gateway.domain.timefmt import iso, parse_iso
from bess_gateway.endpoint import charging_limits
from bess_gateway.endpoint.sessions import SEND_ERRORS
from bess_gateway.journal import JournalError
from bess_gateway.ocpp.errors import CallErrorReceived
from bess_gateway.ocpp.rpc import Reply
from bess_gateway.ocpp.v201 import transactions
from bess_gateway.ocpp.v201.context import Context
from bess_gateway.ocpp.v201.device_model import Variable
from bess_gateway.ocpp.v201.status import connector_of, evse_of, evses

log = logging.getLogger("bess_gateway.ocpp.v201")

PURPOSES: dict[str, sc.Purpose] = {
    "ChargingStationMaxProfile": sc.Purpose.CHARGE_POINT_MAX,
    "TxDefaultProfile": sc.Purpose.TX_DEFAULT,
    "TxProfile": sc.Purpose.TX,
}
PURPOSE_NAMES = {v: k for k, v in PURPOSES.items()}
SOURCE = "CSO"  # every profile installed here came from the CSMS
BATTERY_SOURCE = "Other"  # see the module docstring
EMS_SOURCE = "EMS"  # the site's energy management, see the module docstring
LIMIT_CHECK_S = 1.0  # the core view is refreshed every second (gateway.VIEW_REFRESH_S)
REPORT_PER_MESSAGE = 10  # profiles per ReportChargingProfiles; more go in parts with tbc

# SmartChargingCtrlr's other variables are rows of v201/device_model.py; this one is live.
VARIABLES: list[Variable] = [
    Variable("SmartChargingCtrlr", "Entries", instance="ChargingProfiles",
             mutability="ReadOnly", data_type="integer",
             max_limit=float(sc.LIMITS_201.max_installed),
             read=lambda ctx: str(len(ctx.services.smart_charging.installed))),
]


# -- translation ----------------------------------------------------------------------------
def _time(text: str | None) -> datetime | None:
    return None if text is None else parse_iso(text)


def profile_from_201(evse: int, p: dict[str, Any], *, start: bool = False) -> sc.ChargingProfile:
    """A 2.0.1 ChargingProfileType on `evse` -> the domain profile; ProfileError (with its
    statusInfo reason) for what the schema lets through but 2.0.1 or this station refuses.
    `start`: the profile of a RequestStartTransaction (its transaction has no id yet)."""
    purpose = p["chargingProfilePurpose"]
    if purpose not in PURPOSES:
        # K01.FR.22 family: only the station itself sets ChargingStationExternalConstraints.
        raise sc.ProfileError(f"{purpose} is set by the station, not the CSMS")
    if purpose == "ChargingStationMaxProfile" and evse != 0:
        raise sc.ProfileError("a ChargingStationMaxProfile belongs on evseId 0")
    if purpose == "TxProfile" and evse == 0:
        raise sc.ProfileError("a TxProfile needs an EVSE")
    if purpose == "TxProfile" and not start and p.get("transactionId") is None:
        raise sc.ProfileError("a TxProfile names its transaction (K01.FR.03)", "MissingParam")
    schedules = p["chargingSchedule"]
    if len(schedules) != 1:
        # Three schedules are for an ISO 15118 EV choosing one (not offered here).
        raise sc.ProfileError("one chargingSchedule per profile", "InvalidSchedule")
    s = schedules[0]
    kind = p["chargingProfileKind"]
    if kind not in ("Relative", "Dynamic") and s.get("startSchedule") is None:
        raise sc.ProfileError(f"an {kind} profile needs a startSchedule (K01.FR.40)",
                              "InvalidSchedule")
    if kind == "Relative" and s.get("startSchedule") is not None:
        raise sc.ProfileError("a Relative profile has no startSchedule (K01.FR.41)",
                              "InvalidSchedule")
    if any(q.get("phaseToUse") is not None for q in s["chargingSchedulePeriod"]):
        raise sc.ProfileError("phaseToUse: no AC phase switching here", "InvalidSchedule")
    try:
        return sc.ChargingProfile(
            profile_id=int(p["id"]),
            connector=evse,
            stack_level=int(p["stackLevel"]),
            purpose=PURPOSES[purpose],
            kind=sc.Kind(kind),
            recurrency=None if p.get("recurrencyKind") is None
            else sc.Recurrency(p["recurrencyKind"]),
            valid_from=_time(p.get("validFrom")),
            valid_to=_time(p.get("validTo")),
            transaction_id=p.get("transactionId"),
            dyn_update_interval_s=p.get("dynUpdateInterval"),
            dyn_update_time=_time(p.get("dynUpdateTime")),
            max_offline_s=p.get("maxOfflineDuration"),
            invalid_after_offline=p.get("invalidAfterOfflineDuration"),
            schedule=sc.Schedule(
                unit=sc.RateUnit(s["chargingRateUnit"]),
                duration_s=s.get("duration"),
                start=_time(s.get("startSchedule")),
                min_rate=s.get("minChargingRate"),
                schedule_id=int(s["id"]),
                # 2.1 may leave `limit` out (setpoint modes): no limit of this period then.
                periods=tuple(sc.Period(int(q["startPeriod"]),
                                        float(q.get("limit", sc.UNLIMITED_W)),
                                        q.get("numberPhases"),
                                        operation_mode=q.get("operationMode"),
                                        setpoint=q.get("setpoint"),
                                        discharge_limit=q.get("dischargeLimit"))
                              for q in s["chargingSchedulePeriod"]),
            ),
        )
    except ValueError as exc:
        raise sc.ProfileError(str(exc)) from exc


def profile_to_201(p: sc.ChargingProfile, transaction_id: str | None = None) -> dict[str, Any]:
    """The domain profile as a 2.0.1 ChargingProfileType (GetChargingProfiles reports it).

    A profile stored by a 1.6 endpoint has no schedule id; it reports its profile id there.
    """
    s = p.schedule
    periods = []
    for q in s.periods:
        period: dict[str, Any] = {"startPeriod": q.start_s, **q.v2x}
        if q.limit < sc.UNLIMITED_W:
            period["limit"] = q.limit
        if q.phases is not None:
            period["numberPhases"] = q.phases
        periods.append(period)
    schedule: dict[str, Any] = {
        "id": p.profile_id if s.schedule_id is None else s.schedule_id,
        "chargingRateUnit": str(s.unit),
        "chargingSchedulePeriod": periods,
    }
    if s.start is not None:
        schedule["startSchedule"] = iso(s.start)
    if s.duration_s is not None:
        schedule["duration"] = s.duration_s
    if s.min_rate is not None:
        schedule["minChargingRate"] = s.min_rate
    out: dict[str, Any] = {
        "id": p.profile_id, "stackLevel": p.stack_level,
        "chargingProfilePurpose": PURPOSE_NAMES[p.purpose],
        "chargingProfileKind": str(p.kind), "chargingSchedule": [schedule],
    }
    if p.recurrency is not None:
        out["recurrencyKind"] = str(p.recurrency)
    if p.valid_from is not None:
        out["validFrom"] = iso(p.valid_from)
    if p.valid_to is not None:
        out["validTo"] = iso(p.valid_to)
    tx_id = p.transaction_id or transaction_id
    if p.purpose == sc.Purpose.TX and tx_id is not None:
        out["transactionId"] = tx_id
    for key, value in (("dynUpdateInterval", p.dyn_update_interval_s),
                       ("dynUpdateTime", None if p.dyn_update_time is None
                        else iso(p.dyn_update_time)),
                       ("maxOfflineDuration", p.max_offline_s),
                       ("invalidAfterOfflineDuration", p.invalid_after_offline)):
        if value is not None:
            out[key] = value  # only 2.1 profiles carry them
    return out


def _rejected(reason: str, info: str) -> dict[str, Any]:
    # The domain's texts speak 1.6's purpose names; a 2.0.1 CSMS reads its own.
    for domain_name, name_201 in PURPOSE_NAMES_201.items():
        info = info.replace(domain_name, name_201)
    return {"status": "Rejected", "statusInfo": {"reasonCode": reason[:20],
                                                 "additionalInfo": info[:512]}}


PURPOSE_NAMES_201: Final = {str(sc.Purpose.CHARGE_POINT_MAX): "ChargingStationMaxProfile"}


# -- RequestStartTransaction's profile (v201/transactions.py) --------------------------------
def accept_start_profile(ctx: Context, connector: int, profile: dict[str, Any]) -> bool:
    """Install a RequestStartTransaction's TxProfile for the session about to start on EVSE
    `connector`; False = the request is Rejected."""
    try:
        check = ctx.v201.check_profile
        if check is not None:
            check(profile)
        parsed = profile_from_201(connector, profile, start=True)
    except sc.ProfileError as exc:
        log.info("%s: RequestStartTransaction charging profile refused: %s", ctx.endpoint_id,
                 exc)
        return False
    return charging_limits.accept_start_profile(ctx, parsed)


start_failed = charging_limits.start_failed
refresh = charging_limits.refresh


# -- GetChargingProfiles --------------------------------------------------------------------
def select(profiles: list[sc.ChargingProfile], evse: int | None,
           criterion: dict[str, Any]) -> list[sc.ChargingProfile]:
    """The installed profiles a GetChargingProfilesRequest asks for (K09).

    No evseId: every EVSE's and the station's; evseId 0: the station-wide ones. Every given
    criterion must match (an omitted one does not filter). Only CSO profiles are installed here.
    """
    sources = criterion.get("chargingLimitSource")
    if sources is not None and SOURCE not in sources:
        return []
    ids = criterion.get("chargingProfileId")
    purpose = criterion.get("chargingProfilePurpose")
    stack = criterion.get("stackLevel")
    out = []
    for p in profiles:
        if evse is not None and p.connector != evse:
            continue
        if ids is not None and p.profile_id not in ids:
            continue
        if purpose is not None and PURPOSE_NAMES[p.purpose] != purpose:
            continue
        if stack is not None and p.stack_level != stack:
            continue
        out.append(p)
    return sorted(out, key=lambda p: (p.connector, p.profile_id))


def report_messages(request_id: int, found: list[sc.ChargingProfile],
                    tx_id: Callable[[int], str | None],
                    evse_id: Callable[[int], int] = lambda c: c) -> list[dict[str, Any]]:
    """ReportChargingProfiles payloads: one EVSE per message, at most REPORT_PER_MESSAGE
    profiles each, tbc on every one but the last."""
    parts: list[tuple[int, list[sc.ChargingProfile]]] = []
    for p in found:
        if not parts or parts[-1][0] != p.connector or len(parts[-1][1]) >= REPORT_PER_MESSAGE:
            parts.append((p.connector, []))
        parts[-1][1].append(p)
    return [{"requestId": request_id, "chargingLimitSource": SOURCE, "evseId": evse_id(evse),
             "chargingProfile": [profile_to_201(p, tx_id(evse)) for p in group],
             "tbc": i < len(parts) - 1}
            for i, (evse, group) in enumerate(parts)]


# -- CSMS -> CS handlers ----------------------------------------------------------------------
def handlers(ctx: Context) -> dict[str, Any]:
    st = ctx.station
    b = ctx.services.smart_charging

    def tx_id(evse: int) -> str | None:
        tx = st.transactions.get(evse)
        return None if tx is None else tx.transaction_id

    async def set_profile(p: dict[str, Any]) -> dict[str, Any]:
        connector = connector_of(ctx, int(p["evseId"]))
        if connector is None:
            return _rejected("UnknownEvse", f"no EVSE {p['evseId']}")
        try:
            check = ctx.v201.check_profile
            if check is not None:
                check(p["chargingProfile"])
            profile = profile_from_201(connector, p["chargingProfile"])
            b.set_profile(profile)
        except sc.ProfileError as exc:
            log.info("%s: SetChargingProfile refused: %s", ctx.endpoint_id, exc)
            return _rejected(exc.reason, str(exc))
        except JournalError as exc:
            log.error("%s: SetChargingProfile not stored: %s", ctx.endpoint_id, exc)
            return _rejected("InternalError", "the profile could not be stored")
        log.info("%s: charging profile %d (%s, stack %d) on EVSE %d", ctx.endpoint_id,
                 profile.profile_id, profile.purpose, profile.stack_level, p["evseId"])
        return {"status": "Accepted"}

    async def clear_profile(p: dict[str, Any]) -> dict[str, Any]:
        crit = p.get("chargingProfileCriteria") or {}
        purpose = crit.get("chargingProfilePurpose")
        if p.get("chargingProfileId") is None and purpose is not None \
                and purpose not in PURPOSES:
            return {"status": "Unknown"}  # external constraints are not the CSMS's to clear
        evse = crit.get("evseId")
        connector = None if evse is None else connector_of(ctx, int(evse))
        if evse is not None and connector is None:
            return {"status": "Unknown"}
        gone = b.clear(profile_id=p.get("chargingProfileId"), connector=connector,
                       purpose=None if purpose is None else PURPOSES[purpose],
                       stack_level=crit.get("stackLevel"))
        return {"status": "Accepted" if gone else "Unknown"}

    async def get_profiles(p: dict[str, Any]) -> dict[str, Any] | Reply:
        evse = p.get("evseId")
        connector = None if evse is None else connector_of(ctx, int(evse))
        found = [] if evse is not None and connector is None else \
            select(list(b.installed), connector, p["chargingProfile"])
        if not found:
            return {"status": "NoProfiles"}
        messages = report_messages(int(p["requestId"]), found, tx_id,
                                   lambda c: evse_of(ctx, c))

        async def report() -> None:
            for msg in messages:
                await ctx.call("ReportChargingProfiles", msg)

        return Reply({"status": "Accepted"}, report)

    async def composite(p: dict[str, Any]) -> dict[str, Any]:
        evse = int(p["evseId"])
        duration = int(p["duration"])
        unit = sc.RateUnit(p.get("chargingRateUnit") or "W")
        connector = connector_of(ctx, evse)
        if connector is None:
            return _rejected("UnknownEvse", f"no EVSE {evse}")
        if duration < 0:
            return _rejected("InvalidValue", "negative duration")
        start, duration, segs = charging_limits.composite(ctx, connector, duration, unit)
        periods = charging_limits.wire_periods(segs)
        annotate = ctx.v201.annotate_composite
        if annotate is not None:
            periods = annotate(ctx, connector, start, periods, unit)
        return {"status": "Accepted", "schedule": {
            "evseId": evse, "duration": duration, "scheduleStart": iso(start),
            "chargingRateUnit": str(unit), "chargingSchedulePeriod": periods}}

    return {
        "SetChargingProfile": set_profile,
        "ClearChargingProfile": clear_profile,
        "GetChargingProfiles": get_profiles,
        "GetCompositeSchedule": composite,
    }


# -- NotifyChargingLimit ----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class LimitChange:
    notify_w: float | None  # report this limit (W)
    cleared: bool = False  # report that the limit cleared


def limit_change(battery_w: float, allowed_w: float, reported_w: float | None,
                 significance: float) -> LimitChange | None:
    """What to tell the CSMS about an EVSE's battery limit (None: nothing). Pure.

    `battery_w`: what protection allows; `allowed_w`: what the CSMS's profiles and the session
    maximum allow; `reported_w`: the limit last reported (None: not limited as far as the CSMS
    knows); `significance`: LimitChangeSignificance as a fraction.
    """
    band = significance * allowed_w
    if reported_w is None:
        if battery_w < allowed_w - band:
            return LimitChange(battery_w)
        return None
    if battery_w >= allowed_w:
        return LimitChange(None, cleared=True)
    if abs(battery_w - reported_w) > band:
        return LimitChange(battery_w)
    return None


def battery_w(ctx: Context, evse: int) -> float | None:
    """What the battery's protection alone allows on `evse` now (None: no reading yet)."""
    subs = ctx.station.view.snapshot.get("sub_limits")
    if not subs:
        return None
    side = "discharge" if DIRECTION[evse] > 0 else "charge"
    values = [subs.get(f"{k}_{side}") for k in ("bms", "soc", "temperature")]
    known = [float(v) for v in values if v is not None]
    return min(known) if known else None


async def limit_watch(ctx: Context) -> None:
    """The connection-long job that reports battery limits (NotifyChargingLimit) and their end
    (ClearedChargingLimit); what was reported is kept across reconnects (V201State)."""
    reported = ctx.v201.battery_limit_reported
    st = ctx.station
    while True:
        for evse in evses(ctx):
            now_w = battery_w(ctx, evse)
            if now_w is None or (now_w >= st.session_max_w and evse not in reported):
                continue  # nothing read yet, or the battery allows more than any session gets
            profile = charging_limits.profile_w(ctx, evse)
            allowed = st.session_max_w if profile is None else min(profile, st.session_max_w)
            sig = st.settings.int("limit_change_significance_pct") / 100.0
            change = limit_change(now_w, allowed, reported.get(evse), sig)
            if change is None:
                continue
            try:
                if change.cleared:
                    await ctx.notify("ClearedChargingLimit", {
                        "chargingLimitSource": BATTERY_SOURCE,
                        "evseId": evse_of(ctx, evse)})
                    reported.pop(evse, None)
                else:
                    assert change.notify_w is not None
                    await ctx.notify("NotifyChargingLimit",
                                     _notify_payload(ctx, evse, change.notify_w))
                    reported[evse] = change.notify_w
            except (CallErrorReceived, TimeoutError) as exc:
                log.warning("%s: charging limit report failed: %s", ctx.endpoint_id, exc)
        await _site_limits(ctx)
        await asyncio.sleep(LIMIT_CHECK_S)


def site_change(site_w: float | None, reported_w: float | None,
                significance: float) -> LimitChange | None:
    """What to tell the CSMS about the site's limit on an EVSE (None: nothing). Pure.

    `site_w`: what the site leaves the session while it holds it back (None: it does not);
    `reported_w`: the limit last reported (None: none as far as the CSMS knows)."""
    if site_w is None:
        return None if reported_w is None else LimitChange(None, cleared=True)
    if reported_w is None or abs(site_w - reported_w) > significance * max(reported_w, 1.0):
        return LimitChange(site_w)
    return None


async def _site_limits(ctx: Context) -> None:
    """One pass over the EVSEs for the site's (EMS) limits; kept across reconnects."""
    reported = ctx.v201.site_limit_reported
    st = ctx.station
    site = st.view.snapshot.get("site")
    if site is None and not reported:
        return
    critical = bool({"grid_import_max", "grid_export_max"}
                    & set((site or {}).get("constraints") or []))
    sig = st.settings.int("limit_change_significance_pct") / 100.0
    # 2.1 has one EVSE on the wire: its charge leg's site limit is the one reported
    for evse in evses(ctx):
        change = site_change(charging_limits.site_w(st, evse), reported.get(evse), sig)
        if change is None:
            continue
        try:
            if change.cleared:
                await ctx.notify("ClearedChargingLimit", {
                    "chargingLimitSource": EMS_SOURCE, "evseId": evse_of(ctx, evse)})
                reported.pop(evse, None)
            else:
                assert change.notify_w is not None
                await ctx.notify("NotifyChargingLimit", _notify_payload(
                    ctx, evse, change.notify_w, source=EMS_SOURCE, critical=critical))
                reported[evse] = change.notify_w
        except (CallErrorReceived, TimeoutError) as exc:
            log.warning("%s: site limit report failed: %s", ctx.endpoint_id, exc)


def _notify_payload(ctx: Context, evse: int, limit_w: float, *, source: str = BATTERY_SOURCE,
                    critical: bool = False) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "evseId": evse_of(ctx, evse),
        "chargingLimit": {"chargingLimitSource": source, "isGridCritical": critical},
    }
    if ctx.station.settings.bool("notify_charging_limit_with_schedules"):
        payload["chargingSchedule"] = [{
            "id": evse, "chargingRateUnit": "W", "startSchedule": iso(ctx.station.now()),
            "chargingSchedulePeriod": [{"startPeriod": 0, "limit": round(limit_w, 1)}],
        }]
    return payload


# -- TransactionEvent ChargingRateChanged --------------------------------------------------------
RATE_CHECK_S = 1.0  # the allocations are read from the core view, refreshed every second


def rate_changed(rate_w: float, reported_w: float, significance: float) -> bool:
    """Whether a running transaction's rate moved by more than LimitChangeSignificance
    (`significance`, a fraction) of the rate last reported. Pure.

    Measured against the last *reported* rate, so a rate drifting in small steps (a SoC or
    temperature derating) reports once per significant move, not once per step. Moves to or
    from 0 are no rate change but a charging-state change (Charging <-> SuspendedEVSE), which
    the ChargingStateChanged event already tells."""
    if rate_w <= 0.0 or reported_w <= 0.0:
        return False
    return abs(rate_w - reported_w) > significance * reported_w


def offered_value(rate_w: float) -> dict[str, Any]:
    """The new rate as a sampledValue: what the station offers the session (Power.Offered)."""
    return {"value": float(round(rate_w)), "context": "Other", "measurand": "Power.Offered",
            "location": "Outlet", "unitOfMeasure": {"unit": "W"}}


async def check_rates(ctx: Context) -> None:
    """One pass: an Updated event (ChargingRateChanged) for each started transaction whose
    allowed power moved significantly. The rate is the session's allocation in the control
    core: its cap, the CSMS's profiles, the battery's limits and the fair share in one number
    (the allocator's target, before the ramp, so a ramp moving sends nothing)."""
    st = ctx.station
    sig = st.settings.int("limit_change_significance_pct") / 100.0
    for tx in list(st.transactions.values()):
        if not tx.facts.is_started:
            continue  # TxStartPoint not reached: no transaction the CSMS knows of
        rate = st.view.allocation(st.meter_id(tx.connector))
        if rate is None:
            continue  # the core has not stepped with this session yet
        reported = tx.facts.rate_reported_w  # the rate the CSMS last heard of
        if reported is None or not rate_changed(rate, reported, sig):
            if reported is None or rate <= 0.0 or reported <= 0.0:
                tx.facts.rate_reported_w = rate  # the baseline, or a state change's new rate
            continue
        tx.facts.rate_reported_w = rate  # recorded (journal) with the event's seqNo
        await transactions.send_updated(ctx, tx, "ChargingRateChanged", context="Other",
                                        extra_values=[offered_value(rate)])


async def rate_watch(ctx: Context) -> None:
    """The endpoint-long job behind ChargingRateChanged; runs with or without a link (events
    made offline queue with the others, in seqNo order). Without a session it sleeps until the
    station changes (a start), so idle endpoints cost no timer."""
    wake = ctx.v201.rate_wake
    if wake is None:
        wake = ctx.v201.rate_wake = asyncio.Event()  # set on every station change
        ctx.station.on_change(wake.set)
    while True:
        wake.clear()
        if not ctx.station.transactions:
            await wake.wait()
            continue
        try:
            await check_rates(ctx)
        except SEND_ERRORS as exc:
            log.info("%s: ChargingRateChanged not sent: %s", ctx.endpoint_id, exc)
        await asyncio.sleep(RATE_CHECK_S)
