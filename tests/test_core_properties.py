"""Property tests of the pure control step (`_core.Controller`) over random command streams and
random PCS/BMS readings, checked against limits recomputed here from the raw registers."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule

from bess_gateway._core import Controller, default_register_map

PARAMS = {
    "ramp_kw_per_s": 300.0,
    "session_max_kw": 150.0,
    "site_max_discharge_kw": 600.0,
    "site_max_charge_kw": 400.0,
    "soc_min_pct": 5.0,
    "soc_max_pct": 95.0,
    "dc_voltage_min_v": 600.0,
    "dc_voltage_max_v": 900.0,
    "cell_temp_min_c": 0.0,
    "cell_temp_max_c": 55.0,
}
RAMP_W_PER_S = 300_000.0
SESSION_MAX_W = 150_000.0
SITE_W = {1: 600_000.0, -1: 400_000.0}
# The core ramps over at most two periods (100 ms by default): a stalled loop must not jump.
MAX_DT_S = 0.2
EPS_W = 1.0
START_S = 1_750_000_000.0

METERS = st.integers(0, 7)
CAPS = st.floats(0.0, 300_000.0, allow_nan=False)


def block(
    *,
    state: int = 2,
    soc: int = 500,
    soh: int = 1000,
    dc_v: int = 7000,
    t_max: int = 250,
    t_min: int = 200,
    bms_dis: int = 500_000,
    bms_chg: int = 500_000,
    alarms: int = 0,
    e_dis: int = 0,
    e_chg: int = 0,
    measured_w: int = 0,
) -> list[int]:
    """The 28 words from address 100 (design.md section 4), raw register units."""
    r = [0] * 28

    def put(off: int, value: int, words: int) -> None:
        for i in range(words):
            r[off + i] = (value >> (16 * (words - 1 - i))) & 0xFFFF

    r[0] = state
    put(1, measured_w & 0xFFFFFFFF, 2)
    r[3], r[4], r[5] = 4000, 5000, dc_v
    r[7], r[8] = soc, soh
    r[9], r[10] = t_max & 0xFFFF, t_min & 0xFFFF
    r[11], r[12] = 3300, 3290
    put(13, bms_dis, 2)
    put(15, bms_chg, 2)
    put(17, alarms, 2)
    put(19, e_dis, 4)
    put(23, e_chg, 4)
    return r


# Anything the wire can carry, mostly nonsense: trips of every kind.
WILD_READINGS = st.fixed_dictionaries(
    {
        "state": st.sampled_from([0, 1, 2, 3, 4, 7]),
        "soc": st.integers(0, 1100),
        "soh": st.one_of(st.just(1000), st.integers(0, 1100)),
        "dc_v": st.one_of(st.integers(5500, 9500), st.just(0)),
        "t_max": st.integers(-500, 1100),
        "t_min": st.integers(-500, 400),
        "bms_dis": st.integers(0, 800_000),
        "bms_chg": st.integers(0, 800_000),
        "alarms": st.one_of(st.just(0), st.integers(0, 2**32 - 1)),
        "d_dis": st.integers(0, 200),
        "d_chg": st.integers(0, 200),
    }
)
# A working battery near and inside its derating bands: where ramping and clamping happen.
HEALTHY_READINGS = st.fixed_dictionaries(
    {
        "state": st.sampled_from([1, 2, 2]),
        "soc": st.one_of(st.integers(0, 1000), st.integers(40, 110), st.integers(890, 960)),
        "soh": st.just(1000),
        "dc_v": st.integers(6000, 9000),
        "t_max": st.one_of(st.integers(200, 500), st.integers(500, 550)),
        "t_min": st.integers(0, 200),
        "bms_dis": st.one_of(st.just(500_000), st.integers(0, 800_000)),
        "bms_chg": st.one_of(st.just(500_000), st.integers(0, 800_000)),
        "alarms": st.just(0),
        "d_dis": st.integers(0, 50),
        "d_chg": st.integers(0, 50),
    }
)
# The generic map's "not available" values (design.md section 4, SunSpec's convention) in one
# field of an otherwise healthy reading: never a reading, always `invalid_measurement`.
SENTINELS = {
    "state": 0xFFFF, "soc": 0xFFFF, "soh": 0xFFFF, "dc_v": 0xFFFF, "t_max": -0x8000,
    "t_min": -0x8000, "bms_dis": 0xFFFFFFFF, "bms_chg": 0xFFFFFFFF, "alarms": 0xFFFFFFFF,
    "measured_w": -0x80000000,
}
SENTINEL_READINGS = st.tuples(HEALTHY_READINGS, st.sampled_from(sorted(SENTINELS))).map(
    lambda t: {**t[0], t[1]: SENTINELS[t[1]]})
READINGS = st.one_of(st.none(), WILD_READINGS, HEALTHY_READINGS, HEALTHY_READINGS,
                     SENTINEL_READINGS)


def clamp01(x: float) -> float:
    return min(max(x, 0.0), 1.0)


def reference_limits(rd: dict[str, int]) -> tuple[float, float, bool]:
    """(discharge W, charge W, must trip), from the control rules, independent of the core."""
    soc, soh = rd["soc"] / 10, rd["soh"] / 10
    t_max, t_min, dc = rd["t_max"] / 10, rd["t_min"] / 10, rd["dc_v"] / 10
    temp = min(clamp01((55.0 - t_max) / 5), clamp01((t_min - 0.0) / 5))
    dis = min(SITE_W[1], rd["bms_dis"], SITE_W[1] * clamp01((soc - 5.0) / 5), SITE_W[1] * temp)
    chg = min(SITE_W[-1], rd["bms_chg"], SITE_W[-1] * clamp01((95.0 - soc) / 5), SITE_W[-1] * temp)
    trip = (
        any(rd.get(k) == v for k, v in SENTINELS.items())
        or rd["state"] > 3
        or rd["alarms"] & 0x7FF != 0
        or rd["state"] == 3
        or (dc != 0 and not 600.0 <= dc <= 900.0)
        or t_max > 55.0
        or t_min < 0.0
        or soc > 100.0
        or soh > 100.0
        or (rd["state"] == 2 and dc == 0)
        or not (-40.0 <= t_min <= 100.0 and -40.0 <= t_max <= 100.0)
        or t_min > t_max
    )
    return dis, chg, trip


class ControllerMachine(RuleBasedStateMachine):
    """Random sessions, caps, schedules and readings; invariants after every step."""

    @initialize()
    def setup(self) -> None:
        self.ctl = Controller(PARAMS)
        self.now = START_S
        self.sessions: dict[int, tuple[int, float]] = {}  # meter -> (direction, cap)
        self.schedules: dict[int, list[tuple[float, float]]] = {}
        self.setpoint = 0.0
        self.meters: dict[int, float] = {}
        self.link_was_down = False
        self.energy = [1_000_000, 2_000_000]
        self.steps = 0
        self.holds: dict[int, tuple[int, float]] = {}  # hold -> (direction, W)
        self.member: dict[int, int] = {}  # meter -> group
        self.groups: dict[int, list[tuple[float, float]]] = {}

    @rule(meter=METERS, direction=st.sampled_from([1, -1]), cap=CAPS)
    def start_session(self, meter: int, direction: int, cap: float) -> None:
        self.ctl.start_session(meter, direction, cap)
        self.sessions[meter] = (direction, cap)
        self.schedules.pop(meter, None)

    @rule(
        meter=METERS,
        direction=st.sampled_from([1, -1]),
        cap=CAPS,
        group=st.integers(0, 2),
        limit=st.floats(0.0, 200_000.0, allow_nan=False),
    )
    def start_session_with_group_and_schedule(
        self, meter: int, direction: int, cap: float, group: int, limit: float
    ) -> None:
        schedule = [(self.now, limit)]
        self.ctl.start_session(meter, direction, cap, group=group, schedule=schedule)
        self.sessions[meter] = (direction, cap)
        self.schedules[meter] = schedule
        self.member[meter] = group

    @rule(meter=METERS, cap=CAPS)
    def set_session_cap(self, meter: int, cap: float) -> None:
        self.ctl.set_session_cap(meter, cap)
        if meter in self.sessions:
            self.sessions[meter] = (self.sessions[meter][0], cap)

    @rule(
        meter=METERS,
        offsets=st.lists(st.floats(-5.0, 30.0, allow_nan=False), max_size=4, unique=True),
        limits=st.lists(st.floats(0.0, 200_000.0, allow_nan=False), min_size=4, max_size=4),
    )
    def set_session_schedule(self, meter: int, offsets: list[float], limits: list[float]) -> None:
        periods = sorted(self.now + o for o in offsets)
        schedule = [(s, lim) for s, lim in zip(periods, limits, strict=False)]
        if any(b[0] <= a[0] for a, b in itertools.pairwise(schedule)):
            return  # two offsets collapsed to one start after adding `now`
        self.ctl.set_session_schedule(meter, schedule)
        if meter in self.sessions:
            self.schedules[meter] = schedule

    @rule(meter=METERS)
    def stop_session(self, meter: int) -> None:
        self.ctl.stop_session(meter)
        self.sessions.pop(meter, None)
        self.schedules.pop(meter, None)

    @rule(
        hold=st.integers(0, 2),
        direction=st.sampled_from([1, -1]),
        power=st.floats(0.0, 700_000.0, allow_nan=False),
    )
    def set_hold(self, hold: int, direction: int, power: float) -> None:
        self.ctl.set_hold(hold, direction, power)
        self.holds[hold] = (direction, power)

    @rule(hold=st.integers(0, 2))
    def clear_hold(self, hold: int) -> None:
        self.ctl.clear_hold(hold)
        self.holds.pop(hold, None)

    @rule(meter=METERS, group=st.one_of(st.none(), st.integers(0, 2)))
    def set_session_group(self, meter: int, group: int | None) -> None:
        self.ctl.set_session_group(meter, group)
        if group is None:
            self.member.pop(meter, None)
        else:
            self.member[meter] = group

    @rule(
        group=st.integers(0, 2),
        offsets=st.lists(st.floats(-5.0, 30.0, allow_nan=False), max_size=3, unique=True),
        limits=st.lists(st.floats(0.0, 300_000.0, allow_nan=False), min_size=3, max_size=3),
    )
    def set_group_schedule(self, group: int, offsets: list[float], limits: list[float]) -> None:
        schedule = list(zip(sorted(self.now + o for o in offsets), limits, strict=False))
        if any(b[0] <= a[0] for a, b in itertools.pairwise(schedule)):
            return
        self.ctl.set_group_schedule(group, schedule)
        self.groups[group] = schedule

    @rule(group=st.integers(0, 2))
    def clear_group(self, group: int) -> None:
        self.ctl.clear_group(group)
        self.groups.pop(group, None)

    @rule(meter=METERS, energy=st.floats(0.0, 1e6, allow_nan=False))
    def set_meter(self, meter: int, energy: float) -> None:
        self.ctl.set_meter(meter, energy)
        self.meters[meter] = energy  # the one way a meter may go down

    @rule(dt=st.floats(0.0, 2.0, allow_nan=False), reading=READINGS)
    def step(self, dt: float, reading: dict[str, int] | None) -> None:
        self.check_step(dt, reading)

    @rule(
        dts=st.lists(st.floats(0.0, 0.3, allow_nan=False), min_size=1, max_size=10),
        reading=HEALTHY_READINGS,
    )
    def run_healthy(self, dts: list[float], reading: dict[str, int]) -> None:
        for dt in dts:
            self.check_step(dt, reading)

    def in_force(self, schedule: list[tuple[float, float]]) -> float | None:
        """A schedule's limit now: its last period started, or its first before any has (a
        clock before the first period keeps the limit handed over)."""
        started = [lim for start, lim in schedule if start <= self.now]
        return started[-1] if started else (schedule[0][1] if schedule else None)

    def reference_cap(self, meter: int, cap: float) -> float:
        cap = min(cap, SESSION_MAX_W)
        scheduled = self.in_force(self.schedules.get(meter, []))
        return cap if scheduled is None else min(cap, scheduled)

    def check_step(self, dt: float, reading: dict[str, int] | None) -> None:
        prev_now = self.now
        self.now += dt
        regs = None
        if reading is not None:
            self.energy[0] += reading["d_dis"]
            self.energy[1] += reading["d_chg"]
            fields = {k: v for k, v in reading.items() if not k.startswith("d_")}
            fields.setdefault("measured_w", 0)
            regs = block(**fields, e_dis=self.energy[0], e_chg=self.energy[1])
        out = self.ctl.step(self.now, regs)
        self.steps += 1
        sp = out["setpoint_w"]
        lim_dis, lim_chg = out["limit_discharge_w"], out["limit_charge_w"]

        # The setpoint is inside every active limit, recomputed here from the raw registers.
        if reading is None:
            assert not out["link_up"]
            assert out["tripped"] and "pcs_link_lost" in out["trip_causes"]
            assert sp == 0.0
        else:
            ref_dis, ref_chg, must_trip = reference_limits(reading)
            assert out["tripped"] == must_trip, (reading, out["trip_causes"])
            if must_trip:
                assert sp == 0.0
            else:
                assert math.isclose(lim_dis, ref_dis, rel_tol=1e-9, abs_tol=1e-6)
                assert math.isclose(lim_chg, ref_chg, rel_tol=1e-9, abs_tol=1e-6)
            assert sp <= ref_dis + EPS_W
            assert -sp <= ref_chg + EPS_W
        sub = out["sub_limits"]
        assert lim_dis <= min(sub[k] for k in sub if k.endswith("_discharge")) + EPS_W
        assert lim_chg <= min(sub[k] for k in sub if k.endswith("_charge")) + EPS_W

        # The OCPP limits hold from this step on, whatever the ramp (docs/control.md, "Ramps"):
        # the setpoint is within what the sessions of its direction may have now, each capped
        # by its cap, session_max and its schedule, all tracked here from the commands.
        may = {1: 0.0, -1: 0.0}
        for meter, (direction, cap) in self.sessions.items():
            may[direction] += self.reference_cap(meter, cap)
        assert sp <= may[1] + EPS_W, ("discharge beyond the sessions' limits", sp, may)
        assert -sp <= may[-1] + EPS_W, ("charge beyond the sessions' limits", sp, may)

        # Slew: |setpoint| grows by at most ramp * dt (two periods at most) over what the previous
        # setpoint, clamped into the new limits, kept in the same direction (0 after a reversal);
        # a trip or lost link goes straight to 0, and so does the first step after the link is back.
        restored = reading is not None and self.link_was_down
        if out["tripped"] or restored:
            assert sp == 0.0
        else:
            start = min(max(self.setpoint, -lim_chg), lim_dis)
            kept = 0.0 if start * sp < 0 else abs(start)
            core_dt = 0.0 if self.steps == 1 else min(self.now - prev_now, MAX_DT_S)
            assert abs(sp) <= kept + RAMP_W_PER_S * core_dt + EPS_W, (self.setpoint, sp, dt)
        self.setpoint = sp
        self.link_was_down = not out["link_up"]

        # Allocations: each within its session's cap, each direction within its limit.
        totals = {1: 0.0, -1: 0.0}
        assert set(out["allocations"]) == set(self.sessions)
        for meter, alloc in out["allocations"].items():
            direction, cap = self.sessions[meter]
            cap = self.reference_cap(meter, cap)
            assert 0.0 <= alloc <= cap + 1e-6, (meter, alloc, cap)
            totals[direction] += alloc
        # Holds come off each direction's limit first; a group caps both directions together.
        held = {d: sum(w for hd, w in self.holds.values() if hd == d) for d in (1, -1)}
        assert out["holds_w"] == pytest.approx({"discharge": held[1], "charge": held[-1]})
        assert totals[1] <= max(lim_dis - held[1], 0.0) + EPS_W
        assert totals[-1] <= max(lim_chg - held[-1], 0.0) + EPS_W
        group_totals: dict[int, float] = {}
        for meter, alloc in out["allocations"].items():
            if meter in self.member:
                group = self.member[meter]
                group_totals[group] = group_totals.get(group, 0.0) + alloc
        for group, total in group_totals.items():
            in_force = self.in_force(self.groups.get(group, []))
            if in_force is not None:
                assert total <= in_force + 1e-6, (group, total, in_force)

        assert out["unattributed_wh"]["discharge"] >= 0.0
        assert out["unattributed_wh"]["charge"] >= 0.0

        # Meters never decrease.
        for meter, wh in out["meters"].items():
            assert wh >= self.meters.get(meter, 0.0) - 1e-9, (meter, wh)
            self.meters[meter] = wh


ControllerMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestControllerMachine = ControllerMachine.TestCase


def regs_ok(**kw: int) -> list[int]:
    return block(**kw)


def test_ramp_from_zero_at_the_configured_rate() -> None:
    c = Controller(PARAMS)
    c.start_session(0, 1, 150_000.0)
    assert c.step(START_S, regs_ok())["setpoint_w"] == 0.0
    assert c.step(START_S + 0.1, regs_ok())["setpoint_w"] == pytest.approx(30_000.0)
    # A 0.9 s gap (a stall) counts as two periods: 60 kW more, not 270.
    assert c.step(START_S + 1.0, regs_ok())["setpoint_w"] == pytest.approx(90_000.0)


def test_a_lowered_cap_holds_from_the_next_step() -> None:
    c = Controller(PARAMS)
    c.start_session(0, 1, 150_000.0)
    for i in range(10):
        out = c.step(START_S + 0.1 * i, regs_ok())
    assert out["setpoint_w"] == pytest.approx(150_000.0)
    c.set_session_cap(0, 15_000.0)
    assert c.step(START_S + 1.0, regs_ok())["setpoint_w"] == pytest.approx(15_000.0)


def test_a_sentinel_bms_limit_trips_instead_of_lifting_the_limit() -> None:
    c = Controller(PARAMS)
    c.start_session(0, 1, 150_000.0)
    out = c.step(START_S, regs_ok(bms_dis=0xFFFFFFFF))
    assert out["trip_causes"] == ["invalid_measurement"]
    assert c.step(START_S + 0.1, regs_ok(bms_dis=0xFFFFFFFF))["setpoint_w"] == 0.0


def test_trip_reports_causes_and_clears() -> None:
    c = Controller(PARAMS)
    c.start_session(1, -1, 100_000.0)
    c.step(START_S, regs_ok())
    c.step(START_S + 1, regs_ok())
    out = c.step(START_S + 1.1, regs_ok(alarms=1 << 10, t_max=600))
    assert out["setpoint_w"] == 0.0
    assert out["trip_causes"] == ["over_temperature", "emergency_stop"]
    assert out["events"] == [
        {"kind": "trip", "causes": ["over_temperature", "emergency_stop"], "time_s": START_S + 1.1}
    ]
    out = c.step(START_S + 1.2, regs_ok())
    assert [e["kind"] for e in out["events"]] == ["trip_cleared"]


def test_metering_splits_by_previous_allocation() -> None:
    c = Controller(PARAMS)
    c.start_session(0, 1, 100_000.0)
    c.start_session(2, 1, 50_000.0)
    c.set_meter(2, 1000.0)
    c.step(START_S, regs_ok(e_dis=10_000))
    out = c.step(START_S + 1, regs_ok(e_dis=10_030))
    assert out["meters"] == {0: pytest.approx(20.0), 2: pytest.approx(1010.0)}
    assert out["unattributed_wh"] == {"discharge": 0.0, "charge": 0.0}


def test_schedule_before_its_first_period_keeps_its_first_limit() -> None:
    # A wall clock stepped back to before the schedule's start must not lift the limit.
    c = Controller(PARAMS)
    c.start_session(0, 1, 100_000.0)
    c.set_session_schedule(0, [(START_S + 10, 20_000.0), (START_S + 20, 50_000.0)])
    assert c.step(START_S, regs_ok())["allocations"] == {0: 20_000.0}
    assert c.step(START_S + 20, regs_ok())["allocations"] == {0: 50_000.0}
    # The wall clock steps back 300 s; the monotonic clock goes on.
    out = c.step(START_S + 20.1, regs_ok(), wall_s=START_S - 280)
    assert out["allocations"] == {0: 20_000.0}


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"period_ms": 5}, "period_ms"),
        ({"period_ms": 1001}, "period_ms"),
        ({"period_ms": 100.0}, "period_ms"),
        ({"nope": 1}, "nope"),
        ({"ramp_kw_per_s": 0}, "ramp_kw_per_s"),
        ({"soc_min_pct": 96.0}, "soc_max_pct"),
        ({"cell_temp_max_c": float("nan")}, "cell_temp_max_c"),
        ({"pcs_port": 70000}, "pcs_port"),
        ({"pcs_host": 5}, "pcs_host"),
        ({"pcs_timeout_ms": True}, "pcs_timeout_ms"),
        ({"register_map": {"soc_pct": 1}}, "register_map"),
    ],
)
def test_bad_params_name_the_key(params: dict[str, object], key: str) -> None:
    with pytest.raises(ValueError, match=f"^{key}:"):
        Controller(params)


def test_bad_arguments_are_value_errors() -> None:
    c = Controller()
    with pytest.raises(ValueError, match="direction"):
        c.start_session(0, 2, 1.0)
    with pytest.raises(ValueError, match="cap_w"):
        c.start_session(0, 1, -1.0)
    with pytest.raises(ValueError, match="schedule"):
        c.set_session_schedule(0, [(2.0, 1.0), (1.0, 1.0)])
    with pytest.raises(ValueError, match="registers"):
        c.step(0.0, [0] * 27)
    with pytest.raises(ValueError, match="registers"):
        c.step(0.0, [70_000] * 28)


def test_holds_reserve_power_without_a_setpoint() -> None:
    c = Controller(PARAMS)
    c.set_hold(7, 1, 450_000.0)  # of the 500 kW the BMS allows
    c.step(START_S, regs_ok())
    out = c.step(START_S + 1, regs_ok())
    assert out["setpoint_w"] == 0.0 and out["holds_w"] == {"discharge": 450_000.0, "charge": 0.0}
    c.start_session(0, 1, 150_000.0)
    assert c.step(START_S + 2, regs_ok())["allocations"] == {0: pytest.approx(50_000.0)}
    c.clear_hold(7)
    assert c.step(START_S + 3, regs_ok())["allocations"] == {0: 150_000.0}
    with pytest.raises(ValueError, match="power_w"):
        c.set_hold(1, 1, -5.0)
    with pytest.raises(ValueError, match="direction"):
        c.set_hold(1, 0, 5.0)


def test_group_schedule_caps_the_group_sum() -> None:
    c = Controller(PARAMS)
    c.start_session(0, 1, 150_000.0, group=3)
    c.start_session(1, -1, 150_000.0, group=3)
    c.start_session(4, 1, 150_000.0)
    # Unlimited (a large number, as the gateway hands "no limit" over) until the period at +10 s.
    c.set_group_schedule(3, [(START_S, 1e9), (START_S + 10, 100_000.0)])
    assert c.step(START_S, regs_ok())["allocations"] == {0: 150_000.0, 1: 150_000.0, 4: 150_000.0}
    # Discharge and charge of one group count together.
    out = c.step(START_S + 10, regs_ok())
    assert out["allocations"] == {0: 50_000.0, 1: 50_000.0, 4: 150_000.0}
    c.clear_group(3)
    assert c.step(START_S + 11, regs_ok())["allocations"][0] == 150_000.0


def test_default_register_map_is_the_design_table() -> None:
    m = default_register_map()
    assert m["run"] == 0 and m["setpoint_w"] == 1 and m["watchdog"] == 3
    assert m["pcs_state"] == 100 and m["ac_current_a"] == 127
    assert len(m) == 22
    moved = {name: addr + 1000 for name, addr in m.items()}
    Controller({"register_map": moved})  # any non-overlapping map of the same shape is accepted
