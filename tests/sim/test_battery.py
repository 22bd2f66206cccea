"""The pure model, driven by time jumps: nothing here sleeps."""

import math

import pytest

from bess_gateway.sim.battery import (
    Alarm,
    BatteryModel,
    BatteryParams,
    PcsCommand,
    PcsState,
    interpolate,
)

RUN_100KW = PcsCommand(run=True, setpoint_w=100_000.0, watchdog=1)


def settled(model: BatteryModel, command: PcsCommand) -> None:
    """Let the PCS reach its target (50 time constants), the watchdog counter moving."""
    for i in range(10):
        model.step(1.0, PcsCommand(command.run, command.setpoint_w, command.watchdog + i))


def test_starts_in_standby_at_rest():
    s = BatteryModel().state()
    assert s.pcs_state is PcsState.STANDBY
    assert s.measured_w == 0
    assert s.soc_pct == 50.0
    assert s.cell_temp_max_c == 26.0 and s.cell_temp_min_c == 24.0
    assert 600 < s.dc_voltage_v < 900
    assert s.alarm_bits == 0
    assert s.ac_voltage_v == 400.0 and s.ac_frequency_hz == 50.0


def test_first_order_response_reaches_63_percent_after_200_ms():
    model = BatteryModel()
    s = model.step(0.2, RUN_100KW)
    assert s.pcs_state is PcsState.RUNNING
    assert s.measured_w == pytest.approx(100_000 * (1 - math.exp(-1)), rel=1e-9)


def test_response_does_not_depend_on_how_time_is_sliced():
    coarse, fine = BatteryModel(), BatteryModel()
    coarse.step(0.5, RUN_100KW)
    for _ in range(25):
        fine.step(0.02, RUN_100KW)
    a, b = coarse.state(), fine.state()
    assert a.measured_w == pytest.approx(b.measured_w, rel=1e-9)
    assert a.energy_discharged_wh == pytest.approx(b.energy_discharged_wh, rel=1e-9)


@pytest.mark.parametrize(
    ("setpoint_w", "expected_delta_pct"),
    [
        (100_000.0, -100.0 / 0.96 / 1000.0 * 100.0),  # 100 kWh out costs 104.2 kWh stored
        (-100_000.0, 100.0 * 0.96 / 1000.0 * 100.0),  # 100 kWh in stores 96 kWh
    ],
)
def test_soc_moves_by_energy_over_capacity_with_efficiency(setpoint_w, expected_delta_pct):
    model = BatteryModel()
    command = PcsCommand(run=True, setpoint_w=setpoint_w, watchdog=1)
    settled(model, command)
    before = model.state()
    # One hour, the watchdog counter changing every second as a live gateway's would.
    for i in range(3600):
        after = model.step(1.0, PcsCommand(True, setpoint_w, watchdog=i))
    assert after.soc_pct - before.soc_pct == pytest.approx(expected_delta_pct, rel=1e-6)
    if setpoint_w > 0:
        assert after.energy_discharged_wh - before.energy_discharged_wh == pytest.approx(100_000)
        assert after.energy_charged_wh == before.energy_charged_wh
    else:
        assert after.energy_charged_wh - before.energy_charged_wh == pytest.approx(100_000)
        assert after.energy_discharged_wh == before.energy_discharged_wh


def test_setpoint_is_clamped_to_rating():
    model = BatteryModel()
    s = model.step(0.0, PcsCommand(run=True, setpoint_w=900_000.0, watchdog=1))
    assert s.target_w == 600_000
    s = model.step(0.0, PcsCommand(run=True, setpoint_w=-900_000.0, watchdog=2))
    assert s.target_w == -600_000


@pytest.mark.parametrize(
    ("soc", "discharge_w", "charge_w"),
    [
        (50.0, 600_000, 600_000),
        (5.0, 600_000, 600_000),
        (2.5, 300_000, 600_000),
        (0.0, 0, 600_000),
        (97.5, 600_000, 300_000),
        (99.0, 600_000, 120_000),
        (100.0, 600_000, 0),
    ],
)
def test_bms_limits_derate_linearly_over_the_last_5_percent(soc, discharge_w, charge_w):
    model = BatteryModel()
    model.set_soc(soc)
    s = model.state()
    assert s.bms_max_discharge_w == pytest.approx(discharge_w)
    assert s.bms_max_charge_w == pytest.approx(charge_w)


def test_setpoint_is_clamped_to_bms_limit():
    model = BatteryModel()
    model.set_soc(1.0)
    s = model.step(0.0, PcsCommand(run=True, setpoint_w=500_000.0, watchdog=1))
    assert s.target_w == pytest.approx(120_000)


@pytest.mark.parametrize(
    ("temp_c", "discharge_w", "charge_w"),
    [
        (25.0, 600_000, 600_000),
        (52.5, 300_000, 300_000),  # 2.5 C before the 55 C edge
        (55.0, 0, 0),
        (2.5, 600_000, 300_000),  # LFP is not charged near 0 C
        (-7.5, 300_000, 0),
    ],
)
def test_bms_limits_derate_near_temperature_edges(temp_c, discharge_w, charge_w):
    model = BatteryModel()
    model.forced_temperature_c = temp_c
    s = model.state()
    assert s.cell_temp_max_c == temp_c == s.cell_temp_min_c
    assert s.bms_max_discharge_w == pytest.approx(discharge_w)
    assert s.bms_max_charge_w == pytest.approx(charge_w)
    assert s.alarm_bits == 0


def test_forced_alarm_trips_and_fault_latches_until_cleared_and_reset():
    model = BatteryModel()
    settled(model, RUN_100KW)
    model.forced_alarm_bits = Alarm.EMERGENCY_STOP
    s = model.step(0.0, RUN_100KW)
    assert s.pcs_state is PcsState.FAULT
    assert s.alarm_bits == Alarm.EMERGENCY_STOP
    assert s.target_w == 0
    s = model.step(4.0, RUN_100KW)
    assert abs(s.measured_w) < 1.0  # the PCS has followed its target to 0

    # A reset while the alarm is present is ignored.
    s = model.step(0.1, PcsCommand(True, 100_000.0, 5, fault_reset=True))
    assert s.pcs_state is PcsState.FAULT

    # Clearing the alarm alone does not restart the PCS.
    model.forced_alarm_bits = 0
    s = model.step(0.1, PcsCommand(True, 100_000.0, 6))
    assert s.pcs_state is PcsState.FAULT and s.alarm_bits == 0

    s = model.step(0.2, PcsCommand(True, 100_000.0, 7, fault_reset=True))
    assert s.pcs_state is PcsState.RUNNING
    assert s.measured_w > 60_000


def test_over_temperature_is_computed_from_state():
    model = BatteryModel()
    model.forced_temperature_c = 61.0
    s = model.step(0.0, RUN_100KW)
    assert s.alarms == Alarm.OVER_TEMPERATURE
    assert s.pcs_state is PcsState.FAULT
    model.forced_temperature_c = -11.0
    assert model.state().alarms == Alarm.UNDER_TEMPERATURE
    model.forced_temperature_c = None
    assert model.state().alarm_bits == 0
    assert model.state().pcs_state is PcsState.FAULT  # latched


def test_cell_voltage_alarm_is_computed_from_state():
    model = BatteryModel(BatteryParams(cell_v_max_alarm_v=3.29))  # below the 50 % OCV
    s = model.step(0.0, PcsCommand())
    assert s.alarms == Alarm.CELL_OVER_VOLTAGE
    assert s.pcs_state is PcsState.FAULT


def test_watchdog_reverts_to_standby_after_2_s_unchanged_while_running():
    model = BatteryModel()
    s = model.step(1.9, RUN_100KW)
    assert s.pcs_state is PcsState.RUNNING and not s.watchdog_expired
    s = model.step(0.2, RUN_100KW)  # 2.1 s with the same counter
    assert s.pcs_state is PcsState.STANDBY and s.watchdog_expired
    assert s.target_w == 0
    s = model.step(1.0, RUN_100KW)
    # Decaying since exactly t = 2.0 s: 1.1 s = 5.5 time constants.
    assert s.measured_w == pytest.approx(100_000 * math.exp(-5.5), rel=0.01)
    # The gateway comes back: the counter moves and the PCS follows the run command again.
    s = model.step(0.5, PcsCommand(True, 100_000.0, watchdog=2))
    assert s.pcs_state is PcsState.RUNNING and s.measured_w > 90_000


def test_watchdog_does_not_run_in_standby():
    model = BatteryModel()
    model.step(10.0, PcsCommand(run=False, watchdog=1))
    s = model.step(0.5, RUN_100KW)  # same counter value, but the run is fresh
    assert s.pcs_state is PcsState.RUNNING


def test_watchdog_changes_keep_it_running():
    model = BatteryModel()
    for i in range(50):
        s = model.step(0.5, PcsCommand(True, 50_000.0, watchdog=i))
    assert s.pcs_state is PcsState.RUNNING


def test_lifetime_counters_are_monotonic_across_direction_changes():
    model = BatteryModel()
    prev = model.state()
    setpoints = [200_000, -150_000, 0, 600_000, -600_000, 50_000, -50_000]
    for i in range(200):
        sp = float(setpoints[i % len(setpoints)])
        s = model.step(0.05 + (i % 7) * 0.13, PcsCommand(True, sp, watchdog=i))
        assert s.energy_discharged_wh >= prev.energy_discharged_wh
        assert s.energy_charged_wh >= prev.energy_charged_wh
        prev = s
    assert prev.energy_discharged_wh > 0 and prev.energy_charged_wh > 0


def test_zero_crossing_splits_energy_between_counters():
    model = BatteryModel()
    settled(model, PcsCommand(True, -100_000.0, 1))
    s0 = model.state()
    s1 = model.step(1.0, PcsCommand(True, 100_000.0, 99))
    # Power goes -100 kW -> +100 kW crossing 0 at tau*ln 2; both counters must move.
    charged = s1.energy_charged_wh - s0.energy_charged_wh
    discharged = s1.energy_discharged_wh - s0.energy_discharged_wh
    tau = 0.2
    t_cross = tau * math.log(2)

    def integral(t: float) -> float:
        return 100_000 * t - 200_000 * tau * (1 - math.exp(-t / tau))

    assert charged == pytest.approx(-integral(t_cross) / 3600, rel=1e-9)
    assert discharged == pytest.approx((integral(1.0) - integral(t_cross)) / 3600, rel=1e-9)


def test_dc_side_stays_in_window_across_soc_at_full_power():
    for soc in (0.0, 5.0, 50.0, 95.0, 100.0):
        for sp in (-600_000.0, 600_000.0):
            model = BatteryModel()
            model.set_soc(soc)
            s = model.step(2.0, PcsCommand(True, sp, 1))
            assert 600 <= s.dc_voltage_v <= 900, (soc, sp, s.dc_voltage_v)
            assert s.alarm_bits == 0, (soc, sp, s.alarms)
            mean_mv = s.dc_voltage_v / 240 * 1000
            assert s.cell_v_min_mv < mean_mv < s.cell_v_max_mv
            assert 2500 <= s.cell_v_min_mv and s.cell_v_max_mv <= 3650


def test_currents_follow_power():
    model = BatteryModel()
    s = model.step(5.0, PcsCommand(True, 300_000.0, 1))
    assert s.ac_current_a == pytest.approx(s.measured_w / (math.sqrt(3) * 400.0))
    assert s.dc_current_a > 0
    # DC power = AC power / discharge efficiency.
    assert s.dc_voltage_v * s.dc_current_a == pytest.approx(s.measured_w / 0.96, rel=1e-9)
    s = model.step(5.0, PcsCommand(True, -300_000.0, 2))
    assert s.dc_current_a < 0 and s.ac_current_a > 0


def test_cells_heat_under_load_with_a_minutes_time_constant():
    model = BatteryModel()
    start = model.state().cell_temp_max_c
    for i in range(60):  # one minute at 600 kW
        s = model.step(1.0, PcsCommand(True, 600_000.0, i))
    one_minute = s.cell_temp_max_c - start
    for i in range(60, 1800):  # half an hour
        s = model.step(1.0, PcsCommand(True, 600_000.0, i))
    half_hour = s.cell_temp_max_c - start
    assert 0 < one_minute < half_hour < 20
    # At rest it cools back toward ambient.
    for i in range(3600):
        s = model.step(1.0, PcsCommand(False, 0.0, i))
    assert s.cell_temp_max_c - start < 0.2 * half_hour


def test_soc_never_leaves_0_100_on_huge_jumps():
    model = BatteryModel()
    model.set_soc(3.0)
    s = model.step(100_000.0, PcsCommand(True, 600_000.0, 1))
    assert 0.0 <= s.soc_pct < 3.0
    model.set_soc(97.0)
    for i in range(10):
        s = model.step(10_000.0, PcsCommand(True, -600_000.0, i))
    assert 97.0 < s.soc_pct <= 100.0


@pytest.mark.parametrize("dt", [-0.1, math.nan, math.inf])
def test_bad_dt_is_rejected(dt):
    with pytest.raises(ValueError, match="dt_s"):
        BatteryModel().step(dt, PcsCommand())


def test_bad_params_are_rejected():
    with pytest.raises(ValueError, match="capacity_wh"):
        BatteryParams(capacity_wh=0)
    with pytest.raises(ValueError, match="charge_efficiency"):
        BatteryParams(charge_efficiency=1.2)
    with pytest.raises(ValueError, match="SoC"):
        BatteryModel().set_soc(101)


def test_interpolate_holds_flat_beyond_the_table():
    table = ((0.0, 1.0), (10.0, 2.0))
    assert interpolate(table, -5) == 1.0
    assert interpolate(table, 5) == 1.5
    assert interpolate(table, 50) == 2.0
