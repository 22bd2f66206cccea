"""A pure battery + PCS model: time is a parameter, there is no clock and no I/O.

``BatteryModel.step(dt_s, command)`` advances the model by ``dt_s`` seconds under a constant
command and returns the new ``BatteryState``. Tests jump time by calling ``step`` with any ``dt``;
the server calls it every tick with the measured loop time.

Modelling choices (deliberately simple, but each quantity moves the way a real one does):

- Efficiency is lumped at the AC/DC boundary: discharging ``P_ac`` draws ``P_ac / eta_d`` from the
  cells, charging stores ``|P_ac| * eta_c``. The internal resistance only shapes the DC voltage
  and heats the cells; it is not a second loss term in the energy balance.
- The PCS follows its target with a first-order lag. The lag is integrated exactly (closed form),
  so energy counters and SoC do not depend on how time is sliced.
- Slow couplings (SoC -> BMS limits, current -> temperature) are integrated in sub-steps of at
  most ``max_substep_s`` so that a large time jump still derates and heats plausibly.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from enum import IntEnum, IntFlag
from typing import Final

__all__ = [
    "ALL_ALARMS",
    "LFP_OCV_CURVE",
    "Alarm",
    "BatteryModel",
    "BatteryParams",
    "BatteryState",
    "PcsCommand",
    "PcsState",
    "interpolate",
]


class PcsState(IntEnum):
    OFF = 0  # never produced by the model: the simulated PCS is always powered
    STANDBY = 1
    RUNNING = 2
    FAULT = 3


class Alarm(IntFlag):
    """Alarm bits of register ``alarm_bits`` (design.md section 4)."""

    CELL_OVER_VOLTAGE = 1 << 0
    CELL_UNDER_VOLTAGE = 1 << 1
    OVER_TEMPERATURE = 1 << 2
    UNDER_TEMPERATURE = 1 << 3
    OVER_CURRENT = 1 << 4
    INSULATION_FAULT = 1 << 5
    PCS_INTERNAL_FAULT = 1 << 6
    GRID_FAULT = 1 << 7
    CONTACTOR_FAILURE = 1 << 8
    BMS_COMM_FAILURE = 1 << 9
    EMERGENCY_STOP = 1 << 10


ALL_ALARMS: Final[int] = (1 << 11) - 1

#: LFP cell open-circuit voltage (V) over SoC (%): the long flat plateau around 3.3 V and the
#: steep knees at both ends are what make LFP SoC hard to read from voltage.
LFP_OCV_CURVE: Final[tuple[tuple[float, float], ...]] = (
    (0.0, 2.90),
    (2.0, 3.05),
    (5.0, 3.17),
    (10.0, 3.21),
    (20.0, 3.25),
    (30.0, 3.27),
    (40.0, 3.285),
    (50.0, 3.29),
    (60.0, 3.30),
    (70.0, 3.315),
    (80.0, 3.33),
    (90.0, 3.34),
    (95.0, 3.36),
    (98.0, 3.40),
    (100.0, 3.45),
)


def interpolate(table: Sequence[tuple[float, float]], x: float) -> float:
    """Piecewise-linear interpolation in a table sorted by x, held flat beyond its ends."""
    if x <= table[0][0]:
        return table[0][1]
    for (x0, y0), (x1, y1) in itertools.pairwise(table):
        if x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return table[-1][1]


def _clamp(x: float, lo: float, hi: float) -> float:
    return lo if x < lo else hi if x > hi else x


def _ramp_factor(distance: float, band: float) -> float:
    """1 when ``distance`` from an edge is at least ``band``, falling linearly to 0 at the edge."""
    if band <= 0:
        return 1.0 if distance > 0 else 0.0
    return _clamp(distance / band, 0.0, 1.0)


@dataclass(frozen=True, slots=True)
class BatteryParams:
    capacity_wh: float = 1_000_000.0
    initial_soc_pct: float = 50.0
    soh_pct: float = 98.0
    charge_efficiency: float = 0.96
    discharge_efficiency: float = 0.96
    cells_in_series: int = 240
    ocv_curve: tuple[tuple[float, float], ...] = LFP_OCV_CURVE
    # Whole-pack resistance: about 34 V of sag at full power, i.e. 0.14 V per cell.
    internal_resistance_ohm: float = 0.04
    cell_voltage_spread_v: float = 0.005  # max - mean (and mean - min) cell voltage

    pcs_rating_w: float = 600_000.0
    pcs_time_constant_s: float = 0.2
    ac_voltage_v: float = 400.0
    ac_frequency_hz: float = 50.0

    ambient_c: float = 25.0
    thermal_time_constant_s: float = 900.0
    # Steady-state rise per watt of I^2 R loss: ~15 C at full power with the default resistance,
    # i.e. a pack with working HVAC.
    thermal_resistance_c_per_w: float = 5e-4
    cell_temp_spread_c: float = 1.0  # max - mean (and mean - min) cell temperature

    # BMS limits: full PCS rating inside these windows, linear to 0 over the band at each edge.
    soc_derate_band_pct: float = 5.0
    charge_temp_window_c: tuple[float, float] = (0.0, 55.0)
    discharge_temp_window_c: tuple[float, float] = (-10.0, 55.0)
    temp_derate_band_c: float = 5.0

    # Alarm thresholds (strictly beyond them raises the bit).
    cell_v_max_alarm_v: float = 3.65
    cell_v_min_alarm_v: float = 2.50
    temp_max_alarm_c: float = 60.0
    temp_min_alarm_c: float = -10.0
    over_current_alarm_a: float = 1100.0

    watchdog_timeout_s: float = 2.0
    max_substep_s: float = 1.0

    def __post_init__(self) -> None:
        positive = (
            "capacity_wh",
            "charge_efficiency",
            "discharge_efficiency",
            "cells_in_series",
            "pcs_rating_w",
            "pcs_time_constant_s",
            "ac_voltage_v",
            "ac_frequency_hz",
            "thermal_time_constant_s",
            "watchdog_timeout_s",
            "max_substep_s",
        )
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in positive and not value > 0:
                raise ValueError(f"BatteryParams.{f.name} must be > 0, got {value!r}")
        for name in ("charge_efficiency", "discharge_efficiency"):
            if getattr(self, name) > 1:
                raise ValueError(f"BatteryParams.{name} must be <= 1")
        if not 0 <= self.initial_soc_pct <= 100:
            raise ValueError("BatteryParams.initial_soc_pct must be within 0..100")
        xs = [x for x, _ in self.ocv_curve]
        if len(xs) < 2 or xs != sorted(set(xs)):
            raise ValueError("BatteryParams.ocv_curve needs >= 2 points with increasing SoC")
        for name in ("internal_resistance_ohm", "thermal_resistance_c_per_w"):
            if getattr(self, name) < 0:
                raise ValueError(f"BatteryParams.{name} must be >= 0")


@dataclass(frozen=True, slots=True)
class PcsCommand:
    """What the gateway last wrote (registers 0..4)."""

    run: bool = False
    setpoint_w: float = 0.0  # + discharge, - charge
    watchdog: int = 0
    fault_reset: bool = False
    # False: the PCS runs under its own control (local mode, SunSpec WSetEna = 0), where no
    # controller heartbeat applies, so the watchdog neither runs nor stops it.
    supervised: bool = True


@dataclass(frozen=True, slots=True)
class BatteryState:
    """One snapshot. Field names match the register names of the generic profile."""

    t_s: float  # model time: the sum of all dt stepped so far
    pcs_state: PcsState
    target_w: float  # the setpoint after clamping, which the PCS follows
    measured_w: float
    ac_voltage_v: float
    ac_frequency_hz: float
    ac_current_a: float
    dc_voltage_v: float
    dc_current_a: float
    soc_pct: float
    soh_pct: float
    cell_temp_max_c: float
    cell_temp_min_c: float
    cell_v_max_mv: float
    cell_v_min_mv: float
    bms_max_discharge_w: float
    bms_max_charge_w: float
    alarm_bits: int
    energy_discharged_wh: float
    energy_charged_wh: float
    fault_latched: bool
    watchdog_expired: bool

    @property
    def alarms(self) -> Alarm:
        return Alarm(self.alarm_bits & ALL_ALARMS)


class BatteryModel:
    """Battery + BMS + PCS. Mutable state, deterministic: the same steps give the same states."""

    def __init__(self, params: BatteryParams | None = None) -> None:
        self._p = params or BatteryParams()
        p = self._p
        self._t = 0.0
        self._stored_wh = p.capacity_wh * p.initial_soc_pct / 100.0
        self._power_w = 0.0
        self._target_w = 0.0
        self._temp_c = p.ambient_c
        self._energy_dis_wh = 0.0
        self._energy_chg_wh = 0.0
        self._fault_latched = False
        self._watchdog_value: int | None = None
        self._watchdog_age_s = 0.0
        self._watchdog_expired = False
        self._running = False
        self._forced_alarm_bits = 0
        self._forced_temp_c: float | None = None
        self._dc_current_a = 0.0
        self._dc_voltage_v = self._ocv_pack()

    # -- fault injection ------------------------------------------------------------------------

    @property
    def params(self) -> BatteryParams:
        return self._p

    @property
    def forced_alarm_bits(self) -> int:
        return self._forced_alarm_bits

    @forced_alarm_bits.setter
    def forced_alarm_bits(self, mask: int) -> None:
        if not 0 <= mask <= 0xFFFF_FFFF:
            raise ValueError(f"alarm mask {mask} does not fit the u32 alarm register")
        self._forced_alarm_bits = mask
        self._latch_if_alarmed()

    @property
    def forced_temperature_c(self) -> float | None:
        return self._forced_temp_c

    @forced_temperature_c.setter
    def forced_temperature_c(self, value: float | None) -> None:
        # Forcing pins the temperature sensors; the thermal state underneath keeps evolving, so
        # releasing the force returns to where the physics would be.
        self._forced_temp_c = value
        self._latch_if_alarmed()

    def set_soc(self, pct: float) -> None:
        if not 0 <= pct <= 100:
            raise ValueError(f"SoC {pct} outside 0..100 %")
        self._stored_wh = self._p.capacity_wh * pct / 100.0
        self._update_electrical(self._power_w)

    # -- the step -------------------------------------------------------------------------------

    def step(self, dt_s: float, command: PcsCommand) -> BatteryState:
        if not dt_s >= 0 or math.isinf(dt_s):
            raise ValueError(f"dt_s must be finite and >= 0, got {dt_s!r}")
        self._observe_watchdog(command)
        if command.fault_reset and self._fault_latched and self._alarm_bits() == 0:
            self._fault_latched = False
        self._latch_if_alarmed()
        remaining = dt_s
        while remaining > 0:
            h = min(remaining, self._p.max_substep_s)
            if command.run and command.supervised and not self._watchdog_expired:
                # End a sub-step at the expiry instant so the revert starts exactly on time.
                h = min(h, self._p.watchdog_timeout_s - self._watchdog_age_s)
            self._substep(h, command)
            remaining -= h
        # What the PCS follows from now on; also applies a command on a zero step.
        self._target_w = self._choose_target(command)
        self._running = self._is_running(command)
        return self.state()

    def state(self) -> BatteryState:
        p = self._p
        soc = self.soc_pct
        t_max, t_min = self._cell_temps()
        cell_mean_v = self._dc_voltage_v / p.cells_in_series
        dis_lim, chg_lim = self._bms_limits()
        if self._fault_latched:
            pcs_state = PcsState.FAULT
        elif self._running:
            pcs_state = PcsState.RUNNING
        else:
            pcs_state = PcsState.STANDBY
        return BatteryState(
            t_s=self._t,
            pcs_state=pcs_state,
            target_w=self._target_w,
            measured_w=self._power_w,
            ac_voltage_v=p.ac_voltage_v,
            ac_frequency_hz=p.ac_frequency_hz,
            ac_current_a=abs(self._power_w) / (math.sqrt(3.0) * p.ac_voltage_v),
            dc_voltage_v=self._dc_voltage_v,
            dc_current_a=self._dc_current_a,
            soc_pct=soc,
            soh_pct=p.soh_pct,
            cell_temp_max_c=t_max,
            cell_temp_min_c=t_min,
            cell_v_max_mv=(cell_mean_v + p.cell_voltage_spread_v) * 1000.0,
            cell_v_min_mv=(cell_mean_v - p.cell_voltage_spread_v) * 1000.0,
            bms_max_discharge_w=dis_lim,
            bms_max_charge_w=chg_lim,
            alarm_bits=self._alarm_bits(),
            energy_discharged_wh=self._energy_dis_wh,
            energy_charged_wh=self._energy_chg_wh,
            fault_latched=self._fault_latched,
            watchdog_expired=self._watchdog_expired,
        )

    @property
    def soc_pct(self) -> float:
        return self._stored_wh / self._p.capacity_wh * 100.0

    # -- internals ------------------------------------------------------------------------------

    def _observe_watchdog(self, command: PcsCommand) -> None:
        # The timer only runs while the gateway asks for power: a standby PCS has nothing to
        # revert, and a fresh run command must not inherit the time spent idle.
        if not command.run or not command.supervised or command.watchdog != self._watchdog_value:
            self._watchdog_age_s = 0.0
            self._watchdog_expired = False
        self._watchdog_value = command.watchdog

    def _is_running(self, command: PcsCommand) -> bool:
        return command.run and not self._watchdog_expired and not self._fault_latched

    def _choose_target(self, command: PcsCommand) -> float:
        if not self._is_running(command):
            return 0.0
        dis_lim, chg_lim = self._bms_limits()
        # Clamp as a real PCS does: it will not exceed its rating or what the BMS allows.
        return _clamp(command.setpoint_w, -chg_lim, dis_lim)

    def _substep(self, h: float, command: PcsCommand) -> None:
        p = self._p
        target = self._choose_target(command)
        self._target_w = target
        p0 = self._power_w
        tau = p.pcs_time_constant_s
        decay = math.exp(-h / tau)
        p1 = target + (p0 - target) * decay
        e_dis_ws, e_chg_ws = _split_energy(p0, target, tau, h)

        # Energy balance with efficiency at the AC/DC boundary; the SoC clamp is a safety net
        # for huge steps (the BMS limits reach 0 before the edges).
        delta_wh = (-e_dis_ws / p.discharge_efficiency + e_chg_ws * p.charge_efficiency) / 3600.0
        new_stored = self._stored_wh + delta_wh
        if new_stored < 0.0 and delta_wh < 0.0:
            scale = self._stored_wh / -delta_wh
            e_dis_ws *= scale
            e_chg_ws *= scale
            new_stored = 0.0
            p1 = min(p1, 0.0)
        elif new_stored > p.capacity_wh and delta_wh > 0.0:
            scale = (p.capacity_wh - self._stored_wh) / delta_wh
            e_dis_ws *= scale
            e_chg_ws *= scale
            new_stored = p.capacity_wh
            p1 = max(p1, 0.0)
        self._stored_wh = new_stored
        self._energy_dis_wh += e_dis_ws / 3600.0
        self._energy_chg_wh += e_chg_ws / 3600.0
        self._power_w = p1
        self._update_electrical(p1)

        loss_w = self._dc_current_a**2 * p.internal_resistance_ohm
        t_ss = p.ambient_c + loss_w * p.thermal_resistance_c_per_w
        self._temp_c = t_ss + (self._temp_c - t_ss) * math.exp(-h / p.thermal_time_constant_s)

        if command.run and command.supervised and not self._watchdog_expired:
            self._watchdog_age_s += h
            # The tolerance stops float residue from producing an endless run of tiny steps.
            if self._watchdog_age_s >= p.watchdog_timeout_s - 1e-9:
                self._watchdog_expired = True
        self._t += h
        self._latch_if_alarmed()

    def _update_electrical(self, ac_power_w: float) -> None:
        p = self._p
        if ac_power_w >= 0:
            dc_power = ac_power_w / p.discharge_efficiency
        else:
            dc_power = ac_power_w * p.charge_efficiency
        voc = self._ocv_pack()
        r = p.internal_resistance_ohm
        if r == 0:
            current = dc_power / voc
        else:
            # P = (Voc - I R) I, the root near P / Voc; past the maximum-power point pin I there.
            disc = voc * voc - 4.0 * r * dc_power
            current = (voc - math.sqrt(disc)) / (2.0 * r) if disc > 0 else voc / (2.0 * r)
        self._dc_current_a = current
        self._dc_voltage_v = voc - current * r

    def _ocv_pack(self) -> float:
        return interpolate(self._p.ocv_curve, self.soc_pct) * self._p.cells_in_series

    def _cell_temps(self) -> tuple[float, float]:
        if self._forced_temp_c is not None:
            return self._forced_temp_c, self._forced_temp_c
        s = self._p.cell_temp_spread_c
        return self._temp_c + s, self._temp_c - s

    def _bms_limits(self) -> tuple[float, float]:
        p = self._p
        soc = self.soc_pct
        t_max, t_min = self._cell_temps()
        band = p.temp_derate_band_c

        def temp_factor(window: tuple[float, float]) -> float:
            lo, hi = window
            return min(_ramp_factor(t_min - lo, band), _ramp_factor(hi - t_max, band))

        dis = p.pcs_rating_w * min(
            _ramp_factor(soc, p.soc_derate_band_pct), temp_factor(p.discharge_temp_window_c)
        )
        chg = p.pcs_rating_w * min(
            _ramp_factor(100.0 - soc, p.soc_derate_band_pct), temp_factor(p.charge_temp_window_c)
        )
        return dis, chg

    def _alarm_bits(self) -> int:
        p = self._p
        bits = 0
        cell_mean_v = self._dc_voltage_v / p.cells_in_series
        if cell_mean_v + p.cell_voltage_spread_v > p.cell_v_max_alarm_v:
            bits |= Alarm.CELL_OVER_VOLTAGE
        if cell_mean_v - p.cell_voltage_spread_v < p.cell_v_min_alarm_v:
            bits |= Alarm.CELL_UNDER_VOLTAGE
        t_max, t_min = self._cell_temps()
        if t_max > p.temp_max_alarm_c:
            bits |= Alarm.OVER_TEMPERATURE
        if t_min < p.temp_min_alarm_c:
            bits |= Alarm.UNDER_TEMPERATURE
        if abs(self._dc_current_a) > p.over_current_alarm_a:
            bits |= Alarm.OVER_CURRENT
        return int(bits) | self._forced_alarm_bits

    def _latch_if_alarmed(self) -> None:
        if self._alarm_bits():
            self._fault_latched = True
            self._running = False


def _split_energy(p0: float, target: float, tau: float, h: float) -> tuple[float, float]:
    """Energy (W*s) of a first-order transition p0 -> target over h, as (discharged, charged).

    The power can cross zero once (e.g. a swing from charge to discharge); the crossing time is
    solved exactly so that each lifetime counter only ever receives its own sign.
    """

    def integral(t: float) -> float:
        return target * t + (p0 - target) * tau * (1.0 - math.exp(-t / tau))

    total = integral(h)
    if p0 * target < 0:
        t_cross = tau * math.log((p0 - target) / -target)
        if t_cross < h:
            first = integral(t_cross)
            second = total - first
            parts = (first, second)
            dis = sum(x for x in parts if x > 0)
            chg = -sum(x for x in parts if x < 0)
            return dis, chg
    return (total, 0.0) if total >= 0 else (0.0, -total)
