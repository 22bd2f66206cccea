//! Python <-> core conversions: the params dict, command arguments, and the result dicts.

use bess_core::controller::{Command, Event, MeterReading, StepOutput};
use bess_core::measurements::Measurements;
use bess_core::metering::Direction;
use bess_core::params::{kind_of, ControlParams, ParamKind, ParamValue};
use bess_core::protection::SubLimits;
use bess_core::runtime::{Health, Snapshot};
use bess_core::schedule::Schedule;
use bess_core::site::{Calendar, SiteStatus, TouWindow, WindowMode};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString};

use crate::errors::{value_error, Error};

/// `params` dict -> ControlParams; every key optional, unknown keys and bad values name the key.
pub fn params(dict: Option<&Bound<'_, PyDict>>) -> PyResult<ControlParams> {
    let mut pairs = Vec::new();
    if let Some(dict) = dict {
        for (k, v) in dict.iter() {
            let key: String = k
                .extract()
                .map_err(|_| value_error("params", "keys must be strings"))?;
            let Some(kind) = kind_of(&key) else {
                return Err(value_error(&key, "unknown key"));
            };
            pairs.push((key.clone(), value(&key, kind, &v)?));
        }
    }
    Ok(ControlParams::from_pairs(pairs).map_err(Error::from)?)
}

fn value(key: &str, kind: ParamKind, v: &Bound<'_, PyAny>) -> PyResult<ParamValue> {
    // bool is an int in Python; `period_ms=True` is a mistake, not 1 ms.
    let is_bool = v.is_instance_of::<PyBool>();
    match kind {
        ParamKind::Int if !is_bool && v.is_instance_of::<PyInt>() => v
            .extract::<i64>()
            .map(ParamValue::Int)
            .map_err(|_| value_error(key, "integer out of range")),
        ParamKind::Int => Err(value_error(key, "must be an integer")),
        ParamKind::Float if !is_bool && v.is_instance_of::<PyInt>() => v
            .extract::<i64>()
            .map(ParamValue::Int)
            .map_err(|_| value_error(key, "number out of range")),
        ParamKind::Float if v.is_instance_of::<PyFloat>() => {
            Ok(ParamValue::Float(v.extract::<f64>()?))
        }
        ParamKind::Float => Err(value_error(key, "must be a number")),
        ParamKind::Str if v.is_instance_of::<PyString>() => Ok(ParamValue::Str(v.extract()?)),
        ParamKind::Str => Err(value_error(key, "must be a string")),
        ParamKind::Map => {
            let d = v
                .cast::<PyDict>()
                .map_err(|_| value_error(key, "must be a dict of register name -> address"))?;
            let mut entries = Vec::with_capacity(d.len());
            for (name, addr) in d.iter() {
                let name: String = name
                    .extract()
                    .map_err(|_| value_error(key, "names must be strings"))?;
                if addr.is_instance_of::<PyBool>() {
                    return Err(value_error(
                        key,
                        format!("{name}: address must be an integer"),
                    ));
                }
                let addr: i64 = addr
                    .extract()
                    .map_err(|_| value_error(key, format!("{name}: address must be an integer")))?;
                entries.push((name, addr));
            }
            Ok(ParamValue::Map(entries))
        }
    }
}

pub fn direction(direction: i64) -> PyResult<Direction> {
    Direction::from_sign(direction).ok_or_else(|| {
        value_error(
            "direction",
            format!("{direction} is not +1 (discharge) or -1 (charge)"),
        )
    })
}

pub fn start_session(meter_id: u32, dir: i64, cap_w: f64) -> PyResult<Command> {
    Ok(Command::StartSession {
        meter_id,
        direction: direction(dir)?,
        cap_w,
    })
}

/// A start with its group and schedule as one batch (see `Command::Batch`).
pub fn start_session_batch(
    meter_id: u32,
    dir: i64,
    cap_w: f64,
    group: Option<u32>,
    periods: Option<Vec<(f64, f64)>>,
) -> PyResult<Command> {
    let mut cmds = Vec::with_capacity(3);
    if group.is_some() {
        cmds.push(Command::SetMeterGroup {
            meter_id,
            group_id: group,
        });
    }
    cmds.push(start_session(meter_id, dir, cap_w)?);
    if let Some(periods) = periods {
        cmds.push(schedule(meter_id, periods)?);
    }
    Ok(Command::Batch(cmds))
}

pub fn schedule(meter_id: u32, periods: Vec<(f64, f64)>) -> PyResult<Command> {
    let schedule = Schedule::new(periods).map_err(Error::from)?;
    Ok(Command::SetSessionSchedule { meter_id, schedule })
}

pub fn group_schedule(group_id: u32, periods: Vec<(f64, f64)>) -> PyResult<Command> {
    let schedule = Schedule::new(periods).map_err(Error::from)?;
    Ok(Command::SetGroupSchedule { group_id, schedule })
}

pub fn hold(hold_id: u32, dir: i64, power_w: f64) -> PyResult<Command> {
    Ok(Command::SetHold {
        hold_id,
        direction: direction(dir)?,
        power_w,
    })
}

/// A register block from Python: exactly the words of the read block, each 0..=65535.
pub fn registers(regs: Option<&Bound<'_, PyAny>>, expected: usize) -> PyResult<Option<Vec<u16>>> {
    let Some(regs) = regs.filter(|r| !r.is_none()) else {
        return Ok(None);
    };
    let words: Vec<i64> = regs
        .extract()
        .map_err(|_| value_error("registers", "must be a list of ints or None"))?;
    if words.len() != expected {
        return Err(value_error(
            "registers",
            format!("{} words, expected {expected}", words.len()),
        ));
    }
    words
        .into_iter()
        .map(|w| {
            u16::try_from(w)
                .map_err(|_| value_error("registers", format!("{w} is not a 16-bit word")))
        })
        .collect::<PyResult<Vec<u16>>>()
        .map(Some)
}

fn sub_limits<'py>(
    py: Python<'py>,
    dis: &SubLimits,
    chg: &SubLimits,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("site_discharge", dis.site)?;
    d.set_item("bms_discharge", dis.bms)?;
    d.set_item("soc_discharge", dis.soc)?;
    d.set_item("temperature_discharge", dis.temperature)?;
    d.set_item("site_charge", chg.site)?;
    d.set_item("bms_charge", chg.bms)?;
    d.set_item("soc_charge", chg.soc)?;
    d.set_item("temperature_charge", chg.temperature)?;
    Ok(d)
}

pub fn event<'py>(py: Python<'py>, time_s: f64, e: &Event) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    match e {
        Event::LinkLost => d.set_item("kind", "link_lost")?,
        Event::LinkRestored => d.set_item("kind", "link_restored")?,
        Event::Trip(causes) => {
            d.set_item("kind", "trip")?;
            d.set_item(
                "causes",
                causes.iter().map(|c| c.code()).collect::<Vec<_>>(),
            )?;
        }
        Event::TripCleared => d.set_item("kind", "trip_cleared")?,
        Event::ControlFailed(message) => {
            d.set_item("kind", "control_failed")?;
            d.set_item("message", message.as_str())?;
        }
        Event::GridMeterLost(message) => {
            d.set_item("kind", "grid_meter_lost")?;
            d.set_item("message", message.as_str())?;
        }
        Event::GridMeterRestored => d.set_item("kind", "grid_meter_restored")?,
        Event::SiteConstraints(c) => {
            d.set_item("kind", "site_constraints")?;
            d.set_item(
                "constraints",
                c.iter().map(|c| c.code()).collect::<Vec<_>>(),
            )?;
        }
    }
    d.set_item("time_s", time_s)?;
    Ok(d)
}

/// The keys shared by `Controller.step()` and `ControlLoop.snapshot()`.
fn step_common<'py>(py: Python<'py>, o: &StepOutput) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("now_s", o.now_s)?;
    d.set_item("setpoint_w", o.setpoint_w)?;
    d.set_item("run", o.run)?;
    d.set_item("fault_reset", o.fault_reset)?;
    d.set_item("limit_discharge_w", o.limit_discharge_w)?;
    d.set_item("limit_charge_w", o.limit_charge_w)?;
    d.set_item(
        "sub_limits",
        sub_limits(py, &o.sub_limits.discharge, &o.sub_limits.charge)?,
    )?;
    d.set_item("tripped", o.tripped())?;
    d.set_item(
        "trip_causes",
        o.trip_causes.iter().map(|c| c.code()).collect::<Vec<_>>(),
    )?;
    d.set_item("link_up", o.link_up)?;
    let alloc = PyDict::new(py);
    for (id, w) in &o.allocations {
        alloc.set_item(id, w)?;
    }
    d.set_item("allocations", alloc)?;
    let meters = PyDict::new(py);
    for m in &o.meters {
        meters.set_item(m.meter_id, m.energy_wh)?;
    }
    d.set_item("meters", meters)?;
    let un = PyDict::new(py);
    un.set_item("discharge", o.unattributed_wh.0)?;
    un.set_item("charge", o.unattributed_wh.1)?;
    d.set_item("unattributed_wh", un)?;
    let holds = PyDict::new(py);
    holds.set_item("discharge", o.holds_w.0)?;
    holds.set_item("charge", o.holds_w.1)?;
    d.set_item("holds_w", holds)?;
    if let Some(site) = &o.site {
        d.set_item("site", site_status(py, site)?)?;
    }
    Ok(d)
}

/// The `site` dict (the contract in control.py `SiteStatus`).
fn site_status<'py>(py: Python<'py>, s: &SiteStatus) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("grid_w", s.grid_w)?;
    d.set_item("grid_valid", s.grid_valid)?;
    d.set_item("grid_meter_error", s.grid_meter_error.as_deref())?;
    d.set_item("load_w", s.load_w)?;
    d.set_item("battery_w", s.battery_w)?;
    d.set_item("site_w", s.site_w)?;
    d.set_item("window_start_s", s.window_start_s)?;
    d.set_item("window_avg_w", s.window_avg_w)?;
    d.set_item("window_target_w", s.window_target_w)?;
    d.set_item("window_allowed_w", s.window_allowed_w)?;
    d.set_item(
        "constraints",
        s.constraints.iter().map(|c| c.code()).collect::<Vec<_>>(),
    )?;
    d.set_item("soc_pct", s.soc_pct)?;
    let curtailed = PyDict::new(py);
    for (id, w) in &s.curtailed {
        curtailed.set_item(id, w)?;
    }
    d.set_item("curtailed", curtailed)?;
    d.set_item("site_discharged_wh", s.site_discharged_wh)?;
    d.set_item("site_charged_wh", s.site_charged_wh)?;
    Ok(d)
}

/// `(offsets, windows)` from Python -> the site's calendar command.
pub fn calendar(
    offsets: Vec<(f64, f64)>,
    windows: Vec<(f64, f64, String, f64)>,
) -> PyResult<Command> {
    let mut out = Vec::with_capacity(windows.len());
    for (start_s, end_s, mode, power_w) in windows {
        let mode = WindowMode::parse(&mode).ok_or_else(|| {
            value_error(
                "windows",
                format!("{mode:?}: mode must be discharge, charge or hold"),
            )
        })?;
        out.push(TouWindow {
            start_s,
            end_s,
            mode,
            power_w,
        });
    }
    Ok(Command::SetSiteCalendar(Calendar {
        offsets,
        windows: out,
    }))
}

pub fn step<'py>(py: Python<'py>, o: &StepOutput) -> PyResult<Bound<'py, PyDict>> {
    let d = step_common(py, o)?;
    let events = PyList::empty(py);
    for e in &o.events {
        events.append(event(py, o.now_s, e)?)?;
    }
    d.set_item("events", events)?;
    Ok(d)
}

/// The measurement keys appear with the first valid reading; before it they are absent, so
/// `snapshot().get("soc_pct")` is None and never a made-up 0.
fn measurements(d: &Bound<'_, PyDict>, m: Option<&Measurements>) -> PyResult<()> {
    let Some(m) = m else {
        return Ok(());
    };
    // A point the PCS does not report (NaN or None, sunspec) is left out, never shown as 0.
    let reported = |key: &str, v: Option<f64>| -> PyResult<()> {
        match v {
            Some(x) if !x.is_nan() => d.set_item(key, x),
            _ => Ok(()),
        }
    };
    d.set_item("soc_pct", m.soc_pct)?;
    reported("soh_pct", Some(m.soh_pct))?;
    d.set_item("dc_voltage_v", m.dc_voltage_v)?;
    reported("dc_current_a", Some(m.dc_current_a))?;
    reported("ac_voltage_v", Some(m.ac_voltage_v))?;
    reported("ac_current_a", Some(m.ac_current_a))?;
    reported("ac_frequency_hz", Some(m.ac_frequency_hz))?;
    d.set_item("measured_w", m.measured_w)?;
    d.set_item("pcs_state", m.pcs_state)?;
    reported("cell_temp_max_c", m.cell_temp_max_c)?;
    reported("cell_temp_min_c", m.cell_temp_min_c)?;
    reported("cell_v_max_mv", Some(m.cell_v_max_mv))?;
    reported("cell_v_min_mv", Some(m.cell_v_min_mv))?;
    d.set_item("bms_max_discharge_w", m.bms_max_discharge_w)?;
    d.set_item("bms_max_charge_w", m.bms_max_charge_w)?;
    d.set_item("alarm_bits", m.alarm_bits)?;
    d.set_item("energy_discharged_wh", m.energy_discharged_wh)?;
    d.set_item("energy_charged_wh", m.energy_charged_wh)?;
    Ok(())
}

fn health(d: &Bound<'_, PyDict>, h: &Health) -> PyResult<()> {
    d.set_item("running", h.running)?;
    d.set_item("cycles", h.cycles)?;
    d.set_item("command_cycles", h.command_cycles)?;
    d.set_item("overruns", h.overruns)?;
    d.set_item("jitter_us_p99", h.jitter_us_p99)?;
    d.set_item("jitter_us_max", h.jitter_us_max)?;
    d.set_item("scheduling", h.scheduling.as_str())?;
    d.set_item("last_cycle_us", h.last_cycle_us)?;
    d.set_item("writes", h.writes)?;
    match h.last_write {
        Some((run, setpoint_w, watchdog, fault_reset)) => {
            let w = PyDict::new(d.py());
            w.set_item("run", run)?;
            w.set_item("setpoint_w", setpoint_w)?;
            w.set_item("watchdog", watchdog)?;
            w.set_item("fault_reset", fault_reset)?;
            d.set_item("last_write", w)?;
        }
        None => d.set_item("last_write", d.py().None())?,
    }
    d.set_item("pcs_requests", h.pcs.requests)?;
    d.set_item("pcs_errors", h.pcs.errors)?;
    d.set_item("pcs_connects", h.pcs.connects)?;
    d.set_item("pcs_stale_replies", h.pcs.stale_replies)?;
    d.set_item("events_dropped", h.events_dropped)?;
    d.set_item("pcs_error", h.pcs_error.as_deref())?;
    d.set_item("pcs_write_failures", h.write_failures)?;
    d.set_item("pcs_write_error", h.write_error.as_deref())?;
    d.set_item("failure", h.failure.as_deref())?;
    Ok(())
}

pub fn snapshot<'py>(py: Python<'py>, s: &Snapshot) -> PyResult<Bound<'py, PyDict>> {
    let d = step_common(py, &s.step)?;
    measurements(&d, s.step.measurements.as_ref())?;
    health(&d, &s.health)?;
    Ok(d)
}

/// What `meter()` shows besides the meter itself: AC voltage, SoC, max cell temperature (the
/// last absent when the profile has none).
pub type MeterContext = Option<(f64, f64, Option<f64>)>;

pub fn meter_context(s: &StepOutput) -> MeterContext {
    s.measurements
        .as_ref()
        .map(|m| (m.ac_voltage_v, m.soc_pct, m.cell_temp_max_c))
}

/// `meter()` dict; a meter that was never started or restored reads as 0 Wh and inactive.
pub fn meter<'py>(
    py: Python<'py>,
    meter_id: u32,
    reading: Option<MeterReading>,
    context: MeterContext,
) -> PyResult<Bound<'py, PyDict>> {
    let r = reading.unwrap_or(MeterReading {
        meter_id,
        ..MeterReading::default()
    });
    // 0 until the first reading: MeterValues always need a number. A temperature the profile
    // does not have stays out of the dict (None), so no Temperature sample is invented.
    let (voltage_v, soc_pct, temperature_c) = context.unwrap_or((0.0, 0.0, Some(0.0)));
    let d = PyDict::new(py);
    d.set_item("energy_wh", r.energy_wh)?;
    d.set_item("power_w", r.power_w)?;
    // NaN: the PCS does not report it (sunspec point not implemented); left out like above.
    if !r.current_a.is_nan() {
        d.set_item("current_a", r.current_a)?;
    }
    if !voltage_v.is_nan() {
        d.set_item("voltage_v", voltage_v)?;
    }
    d.set_item("soc_pct", soc_pct)?;
    if let Some(t) = temperature_c {
        d.set_item("temperature_c", t)?;
    }
    d.set_item("allocated_w", r.allocated_w)?;
    d.set_item("active", r.active)?;
    d.set_item("settling", r.settling)?;
    d.set_item("direction", r.direction.map(|d| d.sign() as i64))?;
    Ok(d)
}
