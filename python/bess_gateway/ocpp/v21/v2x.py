"""2.1 Q block (V2X): charging-profile operation modes turned into what the control core runs.

The battery is one bidirectional EVSE (design.md section 9). Its transaction is a session on the
domain's charge connector (2); while it runs, a second core session on the discharge connector's
meter (1, direction +1) is its discharge leg. Both are ordinary core sessions, so protection, the
site's limits, the ChargingStationMaxProfile group cap, the ramp and the metering apply to a
setpoint exactly as to any session: a setpoint is a target inside every limit, never above one.
The import register is the charge leg's meter, the export register the discharge leg's.

What each operation mode makes of the leading Tx/TxDefault period (2.1 signs: + charges):

| operationMode       | charge leg target            | discharge leg target                   |
|---------------------|------------------------------|----------------------------------------|
| (none)/ChargingOnly | `limit`                      | 0                                      |
| CentralSetpoint     | max(setpoint, 0) <= `limit`  | max(-setpoint, 0) <= -`dischargeLimit` |
| Idle                | 0                            | 0                                      |
| ExternalSetpoint    | the site's setpoint: none -> 0 (no one sets a target: 0 W)            |
| ExternalLimits,     | `limit` (the site may lower  | 0: without a site energy management    |
| LocalLoadBalancing  | it, core precedence)         | nothing local asks for discharge       |
| Central/LocalFrequency | refused at SetChargingProfile: the PCS offers no frequency droop |

Which modes each purpose allows is 2.1 part 2's table (operationMode per chargingProfilePurpose)
and what a mode requires is its "limits and setpoints per operation mode" table; a profile that
breaks either is Rejected with reasonCode InvalidSchedule and a sentence in additionalInfo.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from bess_gateway.domain import smart_charging as sc
from bess_gateway.domain.station import (
    CHARGE_CONNECTOR,
    DISCHARGE_CONNECTOR,
    Direction,
    Station,
    Transaction,
)
from bess_gateway.domain.timefmt import iso
from bess_gateway.endpoint import charging_limits
from bess_gateway.endpoint.sessions import SEND_ERRORS
from bess_gateway.endpoint.smart_charging_service import SmartCharging
from bess_gateway.ocpp.errors import CallErrorReceived
from bess_gateway.ocpp.v21.context import Context
from bess_gateway.ocpp.v201 import smart_charging as sc201
from bess_gateway.ocpp.v201 import transactions

log = logging.getLogger("bess_gateway.ocpp.v21")

VERSION = "2.1"
FREQUENCY_MODES = frozenset({"CentralFrequency", "LocalFrequency"})
# 2.1 part 2, operationMode per chargingProfilePurpose (the purposes a CSMS may set here).
MODES_BY_PURPOSE: dict[str, frozenset[str]] = {
    "TxProfile": frozenset({"ChargingOnly", "CentralSetpoint", "ExternalSetpoint",
                            "ExternalLimits", "CentralFrequency", "LocalFrequency",
                            "LocalLoadBalancing", "Idle"}),
    "TxDefaultProfile": frozenset({"ChargingOnly", "CentralSetpoint", "ExternalSetpoint",
                                   "ExternalLimits", "CentralFrequency", "LocalFrequency",
                                   "LocalLoadBalancing", "Idle"}),
    "ChargingStationMaxProfile": frozenset({"ChargingOnly"}),
    "PriorityCharging": frozenset({"ChargingOnly"}),
    "ChargingStationExternalConstraints": frozenset({"ChargingOnly", "ExternalLimits",
                                                     "ExternalSetpoint"}),
    "LocalGeneration": frozenset({"ChargingOnly", "ExternalLimits"}),
}
# ... and what each mode requires ("limits and setpoints per operation mode").
REQUIRED: dict[str, tuple[str, ...]] = {
    "ChargingOnly": ("limit",),
    "CentralSetpoint": ("setpoint",),
    "CentralFrequency": ("setpoint",),
}
# Fields a mode has no use for: given anyway, the CSMS expects something we would not do.
NOT_USED: dict[str, tuple[str, ...]] = {
    "ChargingOnly": ("setpoint", "dischargeLimit"),
    "Idle": ("setpoint",),
    "ExternalLimits": ("setpoint",),
    "LocalLoadBalancing": ("setpoint",),
}


def check_profile(p: dict[str, Any]) -> None:
    """A 2.1 ChargingProfileType against the operation-mode tables; ProfileError if refused."""
    purpose = p["chargingProfilePurpose"]
    allowed = MODES_BY_PURPOSE.get(purpose, frozenset({"ChargingOnly"}))
    for s in p["chargingSchedule"]:
        for q in s["chargingSchedulePeriod"]:
            mode = q.get("operationMode", "ChargingOnly")
            where = f"period at {q['startPeriod']} s"
            if mode not in allowed:
                raise sc.ProfileError(f"{where}: operationMode {mode} is not allowed in a "
                                      f"{purpose} (OCPP 2.1 operationMode per purpose)",
                                      "InvalidSchedule")
            if mode in FREQUENCY_MODES:
                raise sc.ProfileError(f"{where}: {mode} is not supported: the PCS has no "
                                      "frequency measurement or droop control this gateway "
                                      "can drive (docs/ocpp21.md)", "InvalidSchedule")
            for key in REQUIRED.get(mode, ()):
                if q.get(key) is None:
                    raise sc.ProfileError(f"{where}: operationMode {mode} requires {key}",
                                          "InvalidSchedule")
            for key in NOT_USED.get(mode, ()):
                if q.get(key) is not None:
                    raise sc.ProfileError(f"{where}: operationMode {mode} takes no {key}",
                                          "InvalidSchedule")
            if p.get("chargingProfileKind") == "Dynamic" and len(s["chargingSchedulePeriod"]) != 1:
                raise sc.ProfileError("a Dynamic profile has one period (its values are what "
                                      "UpdateDynamicSchedule replaces)", "InvalidSchedule")
            for key in ("limit_L2", "limit_L3", "dischargeLimit_L2", "dischargeLimit_L3",
                        "setpoint_L2", "setpoint_L3", "setpointReactive",
                        "setpointReactive_L2", "setpointReactive_L3", "v2xFreqWattCurve",
                        "v2xSignalWattCurve", "v2xBaseline", "preconditioningRequest",
                        "evseSleep"):
                if q.get(key) is not None:
                    raise sc.ProfileError(f"{where}: {key} is not supported here (one DC "
                                          "EVSE, active power only)", "InvalidSchedule")


def legs(mode: str | None, limit_w: float | None, setpoint_w: float | None,
         discharge_limit_w: float | None) -> tuple[float, float]:
    """(charge leg W, discharge leg W) a period asks for, both >= 0; None limits = no limit.
    Pure: the table of the module docstring."""
    charge_cap = sc.UNLIMITED_W if limit_w is None else max(0.0, limit_w)
    discharge_cap = sc.UNLIMITED_W if discharge_limit_w is None else max(0.0, -discharge_limit_w)
    if mode in (None, "ChargingOnly", "ExternalLimits", "LocalLoadBalancing"):
        return charge_cap, 0.0
    if mode == "CentralSetpoint":
        s = setpoint_w or 0.0
        return min(max(s, 0.0), charge_cap), min(max(-s, 0.0), discharge_cap)
    return 0.0, 0.0  # Idle, ExternalSetpoint without a site setpoint, anything unknown


@dataclass(frozen=True, slots=True)
class Target:
    start: datetime
    mode: str | None
    charge_w: float
    discharge_w: float
    setpoint_w: float | None  # W, 2.1 sign; None: the period has none
    limit_w: float | None
    discharge_limit_w: float | None  # W, <= 0


def _to_w(value: float | None, p: sc.ChargingProfile, q: sc.Period,
          el: sc.Electrical) -> float | None:
    if value is None:
        return None
    w = el.to_w(abs(value), p.schedule.unit, q.phases)
    return w if value >= 0 else -w


def target_at(stack: list[sc.Stack], at: datetime, el: sc.Electrical) -> Target:
    lead = stack[0].leading_at(at) if stack else None
    if lead is None:
        return Target(at, None, sc.UNLIMITED_W, 0.0, None, None, None)
    p, q = lead
    limit = None if q.limit >= sc.UNLIMITED_W else _to_w(q.limit, p, q, el)
    setpoint = _to_w(q.setpoint, p, q, el)
    dlim = _to_w(q.discharge_limit, p, q, el)
    charge, discharge = legs(q.operation_mode, limit, setpoint, dlim)
    return Target(at, q.operation_mode, charge, discharge, setpoint, limit, dlim)


def plan(stack: list[sc.Stack], now: datetime, horizon: timedelta,
         el: sc.Electrical, *, discharge_cap: Callable[[datetime], float | None] | None = None,
         cap_times: list[datetime] | None = None) -> list[Target]:
    """The targets from `now` over `horizon`, piecewise constant (one per change). Pure.
    `discharge_cap`: a further cap on the discharge leg at a time (DER control, v21/der.py),
    changing only at `cap_times`."""
    end = now + horizon
    times = {now, *(t for t in cap_times or () if now < t < end)}
    for layer in stack:
        times.update(t for t in layer.boundaries(now, end) if now < t < end)
    out: list[Target] = []
    for t in sorted(times):
        target = target_at(stack, t, el)
        cap = None if discharge_cap is None else discharge_cap(t)
        if cap is not None and target.discharge_w > cap:
            target = replace(target, discharge_w=cap)
        if not out or (out[-1].mode, out[-1].charge_w, out[-1].discharge_w,
                       out[-1].setpoint_w) != (target.mode, target.charge_w,
                                               target.discharge_w, target.setpoint_w):
            out.append(target)
    return out


def _core(targets: list[Target], leg: Callable[[Target], float]) -> list[tuple[float, float]]:
    return [(t.start.timestamp(), leg(t)) for t in targets]


class V2XSmartCharging(SmartCharging):
    """The domain's smart charging with the 2.1 transaction's two legs driven by its profiles."""

    def __init__(self, station: Station, *args: Any, **kw: Any) -> None:
        self.offline_since: datetime | None = None  # the CSMS link is down since (Q11/Q12)
        # DER control (v21/der.py): a cap on the discharge leg at a time, and when it changes.
        self.discharge_cap: Callable[[datetime], float | None] | None = None
        self.cap_boundaries: Callable[[], list[datetime]] = list
        # (local id, started) when the discharge leg of a transaction starts or stops
        # (v21/export_settling.py: its Ended event's export register).
        self.on_leg: Callable[[str, bool], None] | None = None
        # The control core's cycle count read just after apply() handed over the legs' schedules
        # (settled_target): set before super().__init__, which may apply already.
        self._handover_cycles = 0
        super().__init__(station, *args, **kw)
        self._leg_for: str | None = None  # local id of the transaction the discharge leg serves

    # -- Q11/Q12: a profile's validity while the CSMS link is down (v21/dynamic.py) -----------
    def _offline_end(self, p: sc.ChargingProfile) -> datetime | None:
        if self.offline_since is None or p.max_offline_s is None:
            return None
        return self.offline_since + timedelta(seconds=p.max_offline_s)

    def snapshot(self) -> sc.StationProfiles:
        sp = super().snapshot()
        if self.offline_since is None:
            return sp
        bounded = []
        for p in sp.profiles:
            end = self._offline_end(p)
            if end is not None and (p.valid_to is None or end < p.valid_to):
                p = replace(p, valid_to=end)
            bounded.append(p)
        return replace(sp, profiles=tuple(bounded))

    def set_offline(self, since: datetime | None) -> None:
        """The link went down at `since` (None: it is up again); the core gets schedules that
        end each maxOfflineDuration profile on time."""
        if since is None:
            self.drop_expired()
        self.offline_since = since
        self.apply()

    def drop_expired(self) -> None:
        """invalidAfterOfflineDuration profiles whose offline time has passed go for good."""
        now = self.clock()
        gone = [p.profile_id for p in self.installed
                if p.invalid_after_offline and (end := self._offline_end(p)) is not None
                and now >= end]
        for pid in gone:
            log.info("%s: charging profile %d invalid after %s s offline: removed",
                     self.station.endpoint_id, pid, self.installed.profiles[pid].max_offline_s)
            self.clear(profile_id=pid)

    def _targets(self, now: datetime) -> list[Target]:
        sp = self.snapshot()
        stack = sp.session_stack(CHARGE_CONNECTOR, self.tx_start(CHARGE_CONNECTOR) or now)
        return plan(stack, now, sc.HORIZON, self.electrical(),
                    discharge_cap=self.discharge_cap, cap_times=self.cap_boundaries())

    def start_schedule(self, connector: int) -> list[tuple[float, float]]:
        if connector != CHARGE_CONNECTOR:
            return super().start_schedule(connector)
        return _core(self._targets(self.clock()), lambda t: t.charge_w)

    def sessions_changed(self) -> None:
        tx = self.station.transactions.get(CHARGE_CONNECTOR)
        leg_meter = self.station.meter_id(DISCHARGE_CONNECTOR)
        if tx is None and self._leg_for is not None:
            self.core_port().stop_session(leg_meter)
            if self.on_leg is not None:
                self.on_leg(self._leg_for, False)
            self._leg_for = None
        super().sessions_changed()
        if tx is not None and self._leg_for != tx.local_id:
            # Starts at 0 W; apply() gives it its schedule at once (the same call).
            self.core_port().start_session(leg_meter, int(Direction.DISCHARGE),
                                           self.station.session_max_w, self.station.index,
                                           [(self.clock().timestamp(), 0.0)])
            self._leg_for = tx.local_id
            if self.on_leg is not None:
                self.on_leg(tx.local_id, True)
            self.apply()
            # The mode at the start is the baseline of OperationModeChanged (setpoint_watch).
            if tx.facts.operation_mode is None:
                tx.facts.operation_mode = self.target_now().mode or "ChargingOnly"

    def core_port(self) -> Any:
        return self.station.core

    def apply(self) -> None:
        """The station cap (group) as the domain's, then each leg's V2X schedule once: the core
        acts on every command, so an intermediate limit-only schedule would be written."""
        now = self.clock()
        group = sc.to_core(sc.endpoint_schedule(self.snapshot(), now, sc.HORIZON,
                                                self.electrical()), sc.UNLIMITED_W)
        if group:
            self.core.set_group_schedule(self.station.index, group)
        else:
            self.core.clear_group(self.station.index)
        tx = self.station.transactions.get(CHARGE_CONNECTOR)
        if tx is None:
            return
        targets = self._targets(now)
        if self._leg_for == tx.local_id:
            # Decreases first: a leg that lowers goes before the other one rises.
            legs_now = [(DISCHARGE_CONNECTOR, lambda t: t.discharge_w),
                        (CHARGE_CONNECTOR, lambda t: t.charge_w)]
            if targets[0].discharge_w > 0:
                legs_now.reverse()
        else:
            legs_now = [(CHARGE_CONNECTOR, lambda t: t.charge_w)]
        for connector, leg in legs_now:
            self.core.set_session_schedule(self.station.meter_id(connector),
                                           _core(targets, leg))
        self._handover_cycles = int(self.core_port().snapshot()["cycles"])

    refresh = apply

    def target_now(self) -> Target:
        return self._targets(self.clock())[0]

    def settled_target(self, snap: dict[str, Any]) -> Target | None:
        """The target the core's step in `snap` (a core snapshot) ran with; None while that step
        may predate the schedules apply() last handed over, its allocations then answering the
        old profiles (setpoint_watch would tell the CSMS of a limit nobody set).

        The core applies every queued command before a cycle and counts a cycle when it
        publishes it: cycle n + 1 may have been under way when the count n was read, so cycle
        n + 2 is the first certain to have run with the new schedules. The target is taken at the
        step's own time, as the core follows period boundaries by its clock."""
        if int(snap.get("cycles", 0)) < self._handover_cycles + 2:
            return None
        return self._targets(datetime.fromtimestamp(float(snap["now_s"]), UTC))[0]


def annotate_composite(ctx: Context, connector: int, start: datetime,
                       periods: list[dict[str, Any]], unit: sc.RateUnit) -> list[dict[str, Any]]:
    """GetCompositeSchedule on the 2.1 EVSE: each period also says its operationMode, setpoint
    and dischargeLimit (W or A as asked); the discharge limit includes the battery's own."""
    b = ctx.services.smart_charging
    if connector != CHARGE_CONNECTOR or not isinstance(b, V2XSmartCharging):
        return periods
    el = b.electrical()
    sp = b.snapshot()
    stack = sp.session_stack(CHARGE_CONNECTOR, b.tx_start(CHARGE_CONNECTOR))
    battery_dis = charging_limits.physical_w(ctx.station, DISCHARGE_CONNECTOR)
    out = []
    for period in periods:
        t = target_at(stack, start + timedelta(seconds=period["startPeriod"]), el)
        mode = t.mode or "ChargingOnly"
        extra: dict[str, Any] = {"operationMode": mode}
        phases = period.get("numberPhases") or el.default_phases
        if t.setpoint_w is not None:
            sign = 1.0 if t.setpoint_w >= 0 else -1.0
            extra["setpoint"] = sign * round(el.from_w(abs(t.setpoint_w), unit, phases), 1)
        dis = battery_dis if t.discharge_limit_w is None else min(battery_dis,
                                                                   -t.discharge_limit_w)
        der_cap = None if b.discharge_cap is None else b.discharge_cap(t.start)
        if der_cap is not None:
            dis = min(dis, der_cap)
        if mode != "ChargingOnly":
            extra["dischargeLimit"] = -round(el.from_w(dis, unit, phases), 1)
        out.append({**period, **extra})
    return out


# -- a setpoint that cannot be met is told -------------------------------------------------------
SETPOINT_CHECK_S = 1.0




def charging_needs(ctx: Context) -> dict[str, Any]:
    """NotifyEVChargingNeeds of the "vehicle" that is the battery itself: bidirectional DC, its
    power limits now (protection and BMS, at most the session maximum) and its SoC.

    Energy requests are left out: the gateway is not told the battery's capacity in Wh (no
    configuration key, and neither PCS profile reports it), and an invented number would be a
    promise nobody checked."""
    st = ctx.station
    snap = st.view.snapshot
    max_charge = charging_limits.physical_w(st, CHARGE_CONNECTOR)
    max_discharge = charging_limits.physical_w(st, DISCHARGE_CONNECTOR)
    needs: dict[str, Any] = {
        "requestedEnergyTransfer": "DC_BPT",
        "availableEnergyTransfer": ["DC_BPT"],
        "controlMode": "DynamicControl",
        "v2xChargingParameters": {"minChargePower": 0.0, "maxChargePower": round(max_charge, 1),
                                  "minDischargePower": 0.0,
                                  "maxDischargePower": round(max_discharge, 1)},
    }
    voltage = snap.get("dc_voltage_v")
    if voltage is not None and float(voltage) > 0:
        dc: dict[str, Any] = {"evMaxVoltage": round(float(voltage), 1),
                              "evMaxCurrent": round(max_charge / float(voltage), 1),
                              "evMaxPower": round(max_charge, 1)}
        if snap.get("soc_pct") is not None:
            dc["stateOfCharge"] = max(0, min(100, round(float(snap["soc_pct"]))))
        needs["dcChargingParameters"] = dc
    return {"evseId": 1, "timestamp": iso(st.now()), "chargingNeeds": needs}


async def send_needs(ctx: Context) -> None:
    """Once per transaction, and again when a power limit moved by more than
    LimitChangeSignificance (the "vehicle" renegotiates, Q block)."""
    st = ctx.station
    tx = st.transactions.get(CHARGE_CONNECTOR)
    if tx is None or not ctx.online or not tx.facts.is_started:
        return
    max_charge = charging_limits.physical_w(st, CHARGE_CONNECTOR)
    max_discharge = charging_limits.physical_w(st, DISCHARGE_CONNECTOR)
    sent = ctx.v21.needs_sent
    sig = st.settings.int("limit_change_significance_pct") / 100.0
    if sent is not None and sent[0] == tx.local_id and all(
            abs(now - before) <= sig * max(before, 1.0)
            for now, before in ((max_charge, sent[1]), (max_discharge, sent[2]))):
        return
    ctx.v21.needs_sent = (tx.local_id, max_charge, max_discharge)
    answer = await ctx.call("NotifyEVChargingNeeds", charging_needs(ctx))
    log.info("%s: NotifyEVChargingNeeds %s", ctx.endpoint_id, answer.get("status"))


async def setpoint_watch(ctx: Context) -> None:
    """While a CentralSetpoint asks for power the core cannot give (protection, the site, the
    station cap, another session's share), the CSMS hears NotifyChargingLimit with what is
    possible (source Other, the battery side); ClearedChargingLimit once the setpoint is met.
    Compared with the allocator's target (before the ramp), with LimitChangeSignificance as
    the band, so a ramp in progress or a tiny shortfall sends nothing."""
    st = ctx.station
    while True:
        await asyncio.sleep(SETPOINT_CHECK_S)
        try:
            await send_needs(ctx)
        except (CallErrorReceived, TimeoutError, ConnectionError) as exc:
            log.warning("%s: NotifyEVChargingNeeds failed: %s", ctx.endpoint_id, exc)
        b = ctx.services.smart_charging
        tx = st.transactions.get(CHARGE_CONNECTOR)
        if tx is None or not isinstance(b, V2XSmartCharging):
            ctx.v21.setpoint_reported = None
            continue
        try:
            await mode_changed(ctx, tx, b.target_now().mode or "ChargingOnly")
        except SEND_ERRORS as exc:
            log.info("%s: OperationModeChanged not sent: %s", ctx.endpoint_id, exc)
        # The allocations below come from the view (refreshed every second): the target they
        # are judged against is the one of the same core step, not of now.
        t = b.settled_target(st.view.snapshot)
        if t is None:
            continue
        want = t.charge_w if t.charge_w > 0 else -t.discharge_w
        charge = st.view.allocation(st.meter_id(CHARGE_CONNECTOR)) or 0.0
        discharge = st.view.allocation(st.meter_id(DISCHARGE_CONNECTOR)) or 0.0
        got = charge - discharge
        sig = st.settings.int("limit_change_significance_pct") / 100.0
        short = t.mode == "CentralSetpoint" and abs(want) < sc.UNLIMITED_W and \
            abs(got) < abs(want) - sig * abs(want)
        reported = ctx.v21.setpoint_reported
        try:
            if short and (reported is None or abs(got - reported) > sig * abs(want)):
                await ctx.notify("NotifyChargingLimit", _limit_payload(ctx, got, want))
                ctx.v21.setpoint_reported = got
            elif not short and reported is not None:
                await ctx.notify("ClearedChargingLimit", {
                    "chargingLimitSource": sc201.BATTERY_SOURCE, "evseId": 1})
                ctx.v21.setpoint_reported = None
        except (CallErrorReceived, TimeoutError, ConnectionError) as exc:
            log.warning("%s: setpoint limit report failed: %s", ctx.endpoint_id, exc)


async def mode_changed(ctx: Context, tx: Transaction, mode: str) -> None:
    """TransactionEvent Updated, triggerReason OperationModeChanged, when the leading period's
    operationMode changes during a transaction (the first one seen is the baseline)."""
    if not tx.facts.is_started:
        return
    before = tx.facts.operation_mode
    tx.facts.operation_mode = mode
    if before is not None and before != mode:
        await transactions.send_updated(ctx, tx, "OperationModeChanged",
                                        info={"operationMode": mode})


def _limit_payload(ctx: Context, got_w: float, want_w: float) -> dict[str, Any]:
    period: dict[str, Any] = {"startPeriod": 0, "operationMode": "CentralSetpoint",
                              "setpoint": round(got_w, 1)}
    if want_w >= 0:
        period["limit"] = round(max(got_w, 0.0), 1)
    else:
        period["dischargeLimit"] = round(min(got_w, 0.0), 1)
    log.info("%s: setpoint %.0f W cannot be met: %.0f W possible", ctx.endpoint_id, want_w,
             got_w)
    return {"evseId": 1,
            "chargingLimit": {"chargingLimitSource": sc201.BATTERY_SOURCE,
                              "isGridCritical": False},
            "chargingSchedule": [{"id": 1, "chargingRateUnit": "W",
                                  "startSchedule": iso(ctx.station.now()),
                                  "chargingSchedulePeriod": [period]}]}
