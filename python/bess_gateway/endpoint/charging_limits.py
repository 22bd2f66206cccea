"""Smart charging of one endpoint, whatever its OCPP version: the glue between the domain rules
(bess_gateway.domain.smart_charging), the control core and the journal.

Each endpoint builds its station's one `SmartCharging` (`make`) when it is constructed (it
outlives connections) and keeps it in its services (`ctx.services.smart_charging`); it is
restored from the journal, where profiles are stored in the domain's neutral form, so a restart
brings them back whichever version the endpoint then speaks. The version chooses the class (2.1:
V2X setpoints, bess_gateway.ocpp.v21.v2x) and the replace rules (`Limits`). The
gateway hands the core fresh schedules every `REFRESH` whether or not the CSMS is reachable,
because profiles keep limiting power offline. The 1.6 and 2.0.1 layers (v16/smart_charging.py,
v201/smart_charging.py) only translate messages to and from what is here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, cast

from bess_gateway.domain import smart_charging as sc
from bess_gateway.domain.station import Station
from bess_gateway.endpoint.link import Context
from bess_gateway.endpoint.smart_charging_service import ScheduleCore, SmartCharging
from bess_gateway.journal import Journal, JournalError

log = logging.getLogger(__name__)


def make(st: Station, journal: Journal, kind: type[SmartCharging] = SmartCharging,
         limits: sc.Limits = sc.STATION_LIMITS) -> SmartCharging:
    """The station's smart charging, restored from the journal and wired to the station: the
    schedule a session starts with, and every change of sessions reapplied. Once per endpoint,
    at its construction. `limits`: the version's replace rule (Limits.replace_same_stack)."""

    def electrical() -> sc.Electrical:
        return sc.Electrical(phase_voltage_v=float(st.settings.int("ac_phase_voltage_v")))

    made = kind(st, cast(ScheduleCore, st.core), store=journal.profiles, limits=lambda: limits,
                electrical=electrical, clock=lambda: sc.utc(st.now()))
    st.start_schedule = made.start_schedule
    st.on_change(made.sessions_changed)
    made.sessions_changed()
    made.apply()
    return made


def refresh(ctx: Context) -> None:
    """Recompute the station's schedules for the next horizon (the gateway calls it)."""
    ctx.services.smart_charging.refresh()


# -- what the battery allows ------------------------------------------------------------------
def physical_w(st: Station, connector: int) -> float:
    """The most the battery lets through now on a connector (0: the endpoint); no profile can
    raise it."""
    snap = st.view.snapshot
    dis = min(st.session_max_w, float(snap.get("limit_discharge_w", st.session_max_w)))
    chg = min(st.session_max_w, float(snap.get("limit_charge_w", st.session_max_w)))
    # The site's limit on a session it holds back (the EMS's limit, docs/site.md).
    site_dis, site_chg = site_w(st, 1), site_w(st, 2)
    if site_dis is not None:
        dis = min(dis, site_dis)
    if site_chg is not None:
        chg = min(chg, site_chg)
    if connector == 1:
        return dis
    if connector == 2:
        return chg
    return dis + chg  # the endpoint: both directions count against its limit


def site_w(st: Station, connector: int) -> float | None:
    """What the site (the gateway's energy management, `[site]`) leaves the session on
    `connector` while it holds it below what it would get otherwise; None: it does not."""
    site = st.view.snapshot.get("site")
    if not site:
        return None
    value = (site.get("curtailed") or {}).get(st.meter_id(connector))
    return None if value is None else float(value)


def profile_w(ctx: Context, connector: int) -> float | None:
    """What the CSMS's profiles allow a session on `connector` now (None: they do not limit)."""
    b = ctx.services.smart_charging
    segs = sc.composite(b.snapshot(), connector, b.clock(), timedelta(0), b.electrical(),
                        tx_start=b.tx_start(connector), physical_w=sc.UNLIMITED_W)
    value = segs[0].limit_w
    return None if value is None or value >= sc.UNLIMITED_W else value


@dataclass(frozen=True, slots=True)
class CompositePeriod:
    start_s: int  # from the composite's start
    limit: float  # in the asked unit, one decimal (both versions' schemas allow one digit)
    phases: int | None  # given for A


def wire_periods(segs: list[Any]) -> list[dict[str, Any]]:
    """Composite segments as chargingSchedulePeriod entries (the same shape in 1.6 and 2.0.1)."""
    periods = []
    for q in segs:
        period: dict[str, Any] = {"startPeriod": q.start_s, "limit": q.limit}
        if q.phases is not None:
            period["numberPhases"] = q.phases
        periods.append(period)
    return periods


def composite(ctx: Context, connector: int, duration_s: int,
              unit: sc.RateUnit) -> tuple[datetime, int, list[CompositePeriod]]:
    """GetCompositeSchedule for a connector (0: the endpoint): its start, its duration (at most
    `COMPOSITE_MAX`) and its periods in `unit`, the battery's own limit included."""
    duration_s = min(duration_s, int(sc.COMPOSITE_MAX.total_seconds()))
    b = ctx.services.smart_charging
    el = b.electrical()
    segs = b.composite(connector, timedelta(seconds=duration_s),
                       physical_w=physical_w(ctx.station, connector))
    return segs[0].start, duration_s, composite_periods(segs, unit, el)


def composite_periods(segs: list[sc.Segment], unit: sc.RateUnit,
                      el: sc.Electrical) -> list[CompositePeriod]:
    """A composite's segments (the first at its start) as periods in `unit` on whole seconds.

    The start is "now", with its fraction of a second, while profile boundaries mostly fall on
    whole seconds: offsets are rounded, and a period rounding onto the previous one's second
    replaces it (what holds from within that second on), so startPeriod 0 comes once and starts
    always increase. An A period says the numberPhases its W were converted with: the profile
    period's, else the station's default.
    """
    start = segs[0].start
    out: list[CompositePeriod] = []
    for s in segs:
        assert s.limit_w is not None
        offset = round((s.start - start).total_seconds()) if out else 0
        phases = (s.phases or el.default_phases) if unit == sc.RateUnit.A else None
        period = CompositePeriod(offset, round(el.from_w(s.limit_w, unit, phases), 1), phases)
        if out and offset <= out[-1].start_s:
            out[-1] = replace(period, start_s=out[-1].start_s)
        else:
            out.append(period)
        if len(out) > 1 and (out[-1].limit, out[-1].phases) == (out[-2].limit, out[-2].phases):
            out.pop()  # the same as before once rounded: one period
    return out


# -- a remote start's profile -------------------------------------------------------------------
def accept_start_profile(ctx: Context, profile: sc.ChargingProfile) -> bool:
    """Install a remote start's TxProfile for the session about to start; False = Rejected."""
    try:
        ctx.services.smart_charging.set_start_profile(profile)
    except (sc.ProfileError, JournalError) as exc:
        log.info("%s: remote start's charging profile refused: %s", ctx.endpoint_id, exc)
        return False
    return True


def start_failed(ctx: Context, connector: int) -> None:
    """The remote start did not happen: its TxProfile goes."""
    ctx.services.smart_charging.drop_start_profile(connector)
