//! `bess_gateway._core`: thin Python bindings over `bess-core`.
//!
//! Classes are frozen with `&self` methods; state lives behind the core's own mutexes, atomics
//! and channels. Only `ControlLoop.stop()` can block (it joins the thread), and it releases the
//! GIL while it does. Every conversion is in `convert`, every error mapping in `errors`.

mod convert;
mod errors;

use std::sync::{Mutex, PoisonError};

use bess_core::controller::{Command, Controller as CoreController, Time};
use bess_core::regmap::RegisterMap;
use bess_core::runtime::Runtime;
use bess_core::site::GridError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::errors::Error;

/// The control thread that owns the PCS link.
#[pyclass(frozen, module = "bess_gateway._core")]
struct ControlLoop {
    rt: Runtime,
}

impl ControlLoop {
    fn send(&self, cmd: Command) -> PyResult<()> {
        Ok(self.rt.send(cmd).map_err(Error::from)?)
    }
}

#[pymethods]
impl ControlLoop {
    #[new]
    #[pyo3(signature = (params = None))]
    fn new(params: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        let params = convert::params(params)?;
        Ok(Self {
            rt: Runtime::new(params).map_err(Error::from)?,
        })
    }

    fn start(&self) -> PyResult<()> {
        Ok(self.rt.start().map_err(Error::from)?)
    }

    /// Writes setpoint 0 + standby (best effort) and joins the thread, without the GIL.
    fn stop(&self, py: Python<'_>) {
        py.detach(|| self.rt.stop());
    }

    /// With `group`, the meter joins that group and with `schedule` the session starts with
    /// it, all in one command: no control cycle sees the session without them.
    #[pyo3(signature = (meter_id, direction, cap_w, group = None, schedule = None))]
    fn start_session(
        &self,
        meter_id: u32,
        direction: i64,
        cap_w: f64,
        group: Option<u32>,
        schedule: Option<Vec<(f64, f64)>>,
    ) -> PyResult<()> {
        self.send(convert::start_session_batch(
            meter_id, direction, cap_w, group, schedule,
        )?)
    }

    /// Group membership belongs to the meter (outlives sessions); `None` leaves any group.
    #[pyo3(signature = (meter_id, group_id))]
    fn set_session_group(&self, meter_id: u32, group_id: Option<u32>) -> PyResult<()> {
        self.send(Command::SetMeterGroup { meter_id, group_id })
    }

    fn set_group_schedule(&self, group_id: u32, schedule: Vec<(f64, f64)>) -> PyResult<()> {
        self.send(convert::group_schedule(group_id, schedule)?)
    }

    fn clear_group(&self, group_id: u32) -> PyResult<()> {
        self.send(Command::ClearGroup { group_id })
    }

    fn set_hold(&self, hold_id: u32, direction: i64, power_w: f64) -> PyResult<()> {
        self.send(convert::hold(hold_id, direction, power_w)?)
    }

    fn clear_hold(&self, hold_id: u32) -> PyResult<()> {
        self.send(Command::ClearHold { hold_id })
    }

    fn set_session_cap(&self, meter_id: u32, cap_w: f64) -> PyResult<()> {
        self.send(Command::SetSessionCap { meter_id, cap_w })
    }

    fn set_session_schedule(&self, meter_id: u32, schedule: Vec<(f64, f64)>) -> PyResult<()> {
        self.send(convert::schedule(meter_id, schedule)?)
    }

    fn stop_session(&self, meter_id: u32) -> PyResult<()> {
        self.send(Command::StopSession { meter_id })
    }

    /// The site's calendar: `offsets` = [(utc_from_s, utc_offset_s)] ascending, `windows` =
    /// [(start_s, end_s, mode, power_w)] in UTC epoch seconds (see control.py).
    fn set_site_calendar(
        &self,
        offsets: Vec<(f64, f64)>,
        windows: Vec<(f64, f64, String, f64)>,
    ) -> PyResult<()> {
        self.send(convert::calendar(offsets, windows)?)
    }

    fn set_meter(&self, meter_id: u32, energy_wh: f64) -> PyResult<()> {
        self.send(Command::SetMeter {
            meter_id,
            energy_wh,
        })
    }

    fn meter<'py>(&self, py: Python<'py>, meter_id: u32) -> PyResult<Bound<'py, PyDict>> {
        // Copy out under the lock, build Python objects after releasing it.
        let (reading, context) = self
            .rt
            .with_step(|s| (s.meter(meter_id).cloned(), convert::meter_context(s)));
        convert::meter(py, meter_id, reading, context)
    }

    fn snapshot<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        convert::snapshot(py, &self.rt.snapshot())
    }

    /// Fault injection for tests: the control thread panics in its next cycle, so a test can see
    /// what a real panic does (best-effort 0 W, `running` false, a `control_failed` event).
    fn _inject_panic(&self) -> PyResult<()> {
        Ok(self.rt.inject_panic().map_err(Error::from)?)
    }

    fn event_fd(&self) -> i32 {
        self.rt.event_fd()
    }

    fn drain_events<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let list = PyList::empty(py);
        for e in self.rt.drain_events() {
            list.append(convert::event(py, e.time_s, &e.event)?)?;
        }
        Ok(list)
    }
}

/// The pure control step, for property tests and benchmarks: no thread, no socket, no clock.
#[pyclass(frozen, module = "bess_gateway._core")]
struct Controller {
    inner: Mutex<CoreController>,
    read_count: usize,
}

impl Controller {
    fn apply(&self, cmd: Command) -> PyResult<()> {
        let mut c = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(c.apply(cmd).map_err(Error::from)?)
    }
}

#[pymethods]
impl Controller {
    #[new]
    #[pyo3(signature = (params = None))]
    fn new(params: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        let params = convert::params(params)?;
        let read_count = usize::from(params.register_map.read_count);
        Ok(Self {
            inner: Mutex::new(CoreController::new(params)),
            read_count,
        })
    }

    /// With `group`, the meter joins that group and with `schedule` the session starts with
    /// it, all in one command: no control cycle sees the session without them.
    #[pyo3(signature = (meter_id, direction, cap_w, group = None, schedule = None))]
    fn start_session(
        &self,
        meter_id: u32,
        direction: i64,
        cap_w: f64,
        group: Option<u32>,
        schedule: Option<Vec<(f64, f64)>>,
    ) -> PyResult<()> {
        self.apply(convert::start_session_batch(
            meter_id, direction, cap_w, group, schedule,
        )?)
    }

    /// Group membership belongs to the meter (outlives sessions); `None` leaves any group.
    #[pyo3(signature = (meter_id, group_id))]
    fn set_session_group(&self, meter_id: u32, group_id: Option<u32>) -> PyResult<()> {
        self.apply(Command::SetMeterGroup { meter_id, group_id })
    }

    fn set_group_schedule(&self, group_id: u32, schedule: Vec<(f64, f64)>) -> PyResult<()> {
        self.apply(convert::group_schedule(group_id, schedule)?)
    }

    fn clear_group(&self, group_id: u32) -> PyResult<()> {
        self.apply(Command::ClearGroup { group_id })
    }

    fn set_hold(&self, hold_id: u32, direction: i64, power_w: f64) -> PyResult<()> {
        self.apply(convert::hold(hold_id, direction, power_w)?)
    }

    fn clear_hold(&self, hold_id: u32) -> PyResult<()> {
        self.apply(Command::ClearHold { hold_id })
    }

    fn set_session_cap(&self, meter_id: u32, cap_w: f64) -> PyResult<()> {
        self.apply(Command::SetSessionCap { meter_id, cap_w })
    }

    fn set_session_schedule(&self, meter_id: u32, schedule: Vec<(f64, f64)>) -> PyResult<()> {
        self.apply(convert::schedule(meter_id, schedule)?)
    }

    fn stop_session(&self, meter_id: u32) -> PyResult<()> {
        self.apply(Command::StopSession { meter_id })
    }

    fn set_site_calendar(
        &self,
        offsets: Vec<(f64, f64)>,
        windows: Vec<(f64, f64, String, f64)>,
    ) -> PyResult<()> {
        self.apply(convert::calendar(offsets, windows)?)
    }

    fn set_meter(&self, meter_id: u32, energy_wh: f64) -> PyResult<()> {
        self.apply(Command::SetMeter {
            meter_id,
            energy_wh,
        })
    }

    /// One step at `now_s` (monotonic seconds; also the wall clock unless `wall_s` is given:
    /// schedules are evaluated at the wall clock).
    /// `grid_w` is this step's grid-meter reading (W, + import; None = no reading), used with
    /// a `[site]` table only.
    #[pyo3(signature = (now_s, registers, wall_s = None, grid_w = None))]
    fn step<'py>(
        &self,
        py: Python<'py>,
        now_s: f64,
        registers: Option<&Bound<'py, PyAny>>,
        wall_s: Option<f64>,
        grid_w: Option<f64>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let regs = convert::registers(registers, self.read_count)?;
        let out = {
            let mut c = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            let reading = grid_w.ok_or_else(|| GridError::Silent("no reading".to_string()));
            c.grid_reading(now_s, reading);
            let t = Time {
                mono_s: now_s,
                wall_s: wall_s.unwrap_or(now_s),
            };
            c.step_registers(t, regs.as_deref())
        };
        convert::step(py, &out)
    }
}

/// The `generic` register map: name -> zero-based holding-register address.
#[pyfunction]
fn default_register_map(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let d = PyDict::new(py);
    for (name, addr) in RegisterMap::generic().entries() {
        d.set_item(name, addr)?;
    }
    Ok(d)
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", bess_core::version())?;
    m.add_class::<ControlLoop>()?;
    m.add_class::<Controller>()?;
    m.add_function(wrap_pyfunction!(default_register_map, m)?)?;
    Ok(())
}
