"""2.1 K28 dynamic charging profiles and Q11/Q12 offline validity.

- A Dynamic profile (chargingProfileKind Dynamic) has one period whose values the CSMS replaces:
  pushed with UpdateDynamicSchedule, or pulled by the station with PullDynamicScheduleUpdate
  every `dynUpdateInterval` seconds (from `dynUpdateTime`, else from its installation). An
  update keeps the period's operationMode and replaces the values it gives (limit,
  dischargeLimit, setpoint); the result must still pass the operation-mode tables (v2x), else it
  is Rejected and the profile stays as it was. The updated profile is stored (journal) before it
  applies, with `dynUpdateTime` = now, like any SetChargingProfile.
- `maxOfflineDuration` (Q11/Q12): while the CSMS link is down, such a profile is valid for that
  many seconds after the link went down, then not (a lower stack level, or no profile, decides).
  The end is handed to the control core as a schedule boundary the moment the link is seen down,
  so the core drops the setpoint at that instant by itself. With `invalidAfterOfflineDuration`
  the profile is removed for good once that time has passed (checked every EXPIRY_CHECK_S while
  offline, and at the reconnect). Online is the time a connection-long job (`link_watch`) runs:
  from the accepted boot until the link ends; before the first connection the endpoint counts
  as offline since its start.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from bess_gateway.domain import smart_charging as sc
from bess_gateway.endpoint.link import Context
from bess_gateway.journal import JournalError
from bess_gateway.ocpp.errors import CallErrorReceived, InvalidAnswer
from bess_gateway.ocpp.v21 import v2x
from bess_gateway.ocpp.v201 import smart_charging as sc201

log = logging.getLogger("bess_gateway.ocpp.v21")

PULL_CHECK_S = 1.0
EXPIRY_CHECK_S = 1.0
_WIRE_TO_PERIOD = {"limit": "limit", "dischargeLimit": "discharge_limit", "setpoint": "setpoint"}
_UNSUPPORTED = ("limit_L2", "limit_L3", "dischargeLimit_L2", "dischargeLimit_L3", "setpoint_L2",
                "setpoint_L3", "setpointReactive", "setpointReactive_L2", "setpointReactive_L3")


def _rejected(reason: str, info: str) -> dict[str, Any]:
    return {"status": "Rejected", "statusInfo": {"reasonCode": reason[:20],
                                                 "additionalInfo": info[:512]}}


def updated(p: sc.ChargingProfile, update: dict[str, Any], now: datetime) -> sc.ChargingProfile:
    """`p` with its one period's values replaced by a ChargingScheduleUpdateType (pure);
    ProfileError when the result breaks the operation-mode rules."""
    given = [k for k in _UNSUPPORTED if update.get(k) is not None]
    if given:
        raise sc.ProfileError(f"{', '.join(given)}: not supported here (one DC EVSE, active "
                              "power only)", "InvalidSchedule")
    (period,) = p.schedule.periods
    changes = {attr: float(update[key]) for key, attr in _WIRE_TO_PERIOD.items()
               if update.get(key) is not None}
    new = replace(period, **changes)
    wire: dict[str, Any] = {"startPeriod": 0, **new.v2x}
    if new.limit < sc.UNLIMITED_W:
        wire["limit"] = new.limit
    v2x.check_profile({"chargingProfilePurpose": sc201.PURPOSE_NAMES[p.purpose],
                       "chargingSchedule": [{"chargingSchedulePeriod": [wire]}]})
    return replace(p, schedule=replace(p.schedule, periods=(new,)), dyn_update_time=now)


def apply_update(ctx: Context, profile_id: int, update: dict[str, Any]) -> dict[str, Any]:
    """Install an update of Dynamic profile `profile_id`; the UpdateDynamicSchedule answer."""
    b = ctx.services.smart_charging
    p = b.installed.profiles.get(profile_id)
    if p is None:
        return _rejected("UnknownProfile", f"no charging profile {profile_id}")
    if p.kind != sc.Kind.DYNAMIC:
        return _rejected("InvalidProfile", f"charging profile {profile_id} is {p.kind}, "
                                           "not Dynamic")
    try:
        b.set_profile(updated(p, update, b.clock()))
    except sc.ProfileError as exc:
        return _rejected(exc.reason, str(exc))
    except JournalError as exc:
        log.error("%s: dynamic schedule update not stored: %s", ctx.endpoint_id, exc)
        return _rejected("InternalError", "the update could not be stored")
    log.info("%s: dynamic profile %d updated: %s", ctx.endpoint_id, profile_id, update)
    return {"status": "Accepted"}


def handlers(ctx: Context) -> dict[str, Any]:
    async def update_dynamic(p: dict[str, Any]) -> dict[str, Any]:
        return apply_update(ctx, int(p["chargingProfileId"]), p["scheduleUpdate"])

    return {"UpdateDynamicSchedule": update_dynamic}


def due(p: sc.ChargingProfile, installed_at: datetime | None, now: datetime) -> bool:
    """Whether Dynamic profile `p` is due a pull (pure)."""
    if p.kind != sc.Kind.DYNAMIC or not p.dyn_update_interval_s:
        return False
    last = p.dyn_update_time or installed_at
    return last is None or now >= last + timedelta(seconds=p.dyn_update_interval_s)


async def pull_loop(ctx: Context) -> None:
    """The connection-long job that pulls each Dynamic profile every dynUpdateInterval."""
    while True:
        b = ctx.services.smart_charging
        now = b.clock()
        for p in list(b.installed):
            if not due(p, b.installed_at.get(p.profile_id), now):
                continue
            try:
                answer = await ctx.call("PullDynamicScheduleUpdate",
                                        {"chargingProfileId": p.profile_id})
            except (CallErrorReceived, InvalidAnswer, TimeoutError) as exc:
                log.warning("%s: PullDynamicScheduleUpdate %d failed: %s", ctx.endpoint_id,
                            p.profile_id, exc)
                answer = {}
            current = b.installed.profiles.get(p.profile_id)
            if current is None:
                continue  # cleared meanwhile
            update = answer.get("scheduleUpdate")
            if answer.get("status") == "Accepted" and update:
                result = apply_update(ctx, p.profile_id, update)
                if result["status"] == "Accepted":
                    continue
                log.warning("%s: pulled update of profile %d refused: %s", ctx.endpoint_id,
                            p.profile_id, result["statusInfo"]["additionalInfo"])
            # Nothing (new) to apply: the next pull is an interval from now, not at once.
            try:
                b.set_profile(replace(current, dyn_update_time=b.clock()))
            except (sc.ProfileError, JournalError) as exc:
                log.warning("%s: profile %d pull time not kept: %s", ctx.endpoint_id,
                            p.profile_id, exc)
        await asyncio.sleep(PULL_CHECK_S)


async def expiry_watch(ctx: Context) -> None:
    """The endpoint-long job that removes invalidAfterOfflineDuration profiles whose offline
    time has passed while the link is still down (the schedules already ended them on time)."""
    while True:
        await asyncio.sleep(EXPIRY_CHECK_S)
        b = ctx.services.smart_charging
        if isinstance(b, v2x.V2XSmartCharging) and b.offline_since is not None:
            b.drop_expired()


async def link_watch(ctx: Context) -> None:
    """A connection-long job (it starts once the boot is accepted and is cancelled the moment
    the link ends): online while it runs, offline from its end, exactly."""
    b = ctx.services.smart_charging
    if not isinstance(b, v2x.V2XSmartCharging):
        return
    b.set_offline(None)
    try:
        await asyncio.Event().wait()  # until the connection's jobs are cancelled
    finally:
        b.set_offline(b.clock())
