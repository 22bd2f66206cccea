//! One control cycle against a PCS, with the I/O and the clocks passed in: read the profile's
//! blocks -> decode -> `Controller::step_at` -> the profile's writes. The control thread
//! (`runtime`) runs it with the Modbus client and the system clocks; tests run it with a register
//! image and clocks they step, so the integer that reaches the PCS registers is checked without a
//! socket or a sleep.
//!
//! The rules that live here, not in the pure step (docs/control.md):
//! - Link: no valid answer for `pcs_timeout_ms` -> the step runs with `LinkLost` (setpoint 0);
//!   shorter silences hold the last write and retry next cycle.
//! - First write: the first write on every new connection, and after every (re)discovery of a
//!   SunSpec layout, is 0 W; the ramp goes on from there.
//! - Write faults: writes refused (Modbus exception, e.g. a PCS in local mode) or unanswered for
//!   `pcs_timeout_ms` while reads succeed trip `pcs_write_fault`, apart from a lost link.
//! - SunSpec reversion: WSetRvrtTms is derived from the period and the timeout so that no live
//!   gateway is ever reverted by jitter (`revert_s`).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::client::{Client, ClientError, ClientStats};
use crate::controller::{Controller, Input, StepOutput, Time};
use crate::gridmeter::{self, MeterMap, MeterProfile};
use crate::params::ControlParams;
use crate::profile::{PcsMap, PcsProfile};
use crate::site::GridError;
use crate::sunspec;

/// Even at a 10 ms period a request may take this long before the loop gives up on it.
pub const MIN_REQUEST_BUDGET: Duration = Duration::from_millis(50);

/// What the engine needs from a PCS connection (`Client` in production).
pub trait Pcs {
    fn read_holding(
        &mut self,
        address: u16,
        count: u16,
        deadline: Instant,
    ) -> Result<Vec<u16>, ClientError>;
    fn write_multiple(
        &mut self,
        address: u16,
        values: &[u16],
        deadline: Instant,
    ) -> Result<(), ClientError>;
    fn is_connected(&self) -> bool;
    fn stats(&self) -> ClientStats;
    /// Allows a connection attempt now even while backing off (for the final write).
    fn skip_backoff(&mut self);
    fn close(&mut self);
}

impl Pcs for Client {
    fn read_holding(
        &mut self,
        address: u16,
        count: u16,
        deadline: Instant,
    ) -> Result<Vec<u16>, ClientError> {
        Client::read_holding(self, address, count, deadline)
    }
    fn write_multiple(
        &mut self,
        address: u16,
        values: &[u16],
        deadline: Instant,
    ) -> Result<(), ClientError> {
        Client::write_multiple(self, address, values, deadline)
    }
    fn is_connected(&self) -> bool {
        Client::is_connected(self)
    }
    fn stats(&self) -> ClientStats {
        Client::stats(self)
    }
    fn skip_backoff(&mut self) {
        Client::skip_backoff(self);
    }
    fn close(&mut self) {
        Client::close(self);
    }
}

/// The two clocks of a cycle.
pub trait Clock {
    fn now(&self) -> Instant;
    /// UTC epoch seconds, as the wall clock says now (it may step).
    fn wall_s(&self) -> f64;
}

/// The system's monotonic and wall clocks.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
    fn wall_s(&self) -> f64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    }
}

/// Loop health, as published with each snapshot.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Health {
    pub running: bool,
    pub cycles: u64,
    /// Cycles run at once for a command rather than at a tick.
    pub command_cycles: u64,
    pub overruns: u64,
    pub jitter_us_p99: u64,
    pub jitter_us_max: u64,
    pub last_cycle_us: u64,
    pub writes: u64,
    /// The last block written (run, setpoint W as encoded, watchdog, fault reset).
    pub last_write: Option<(bool, i32, u16, bool)>,
    pub pcs: ClientStats,
    pub events_dropped: u64,
    /// The last discovery or decode problem of the PCS profile, cleared by a good reading.
    pub pcs_error: Option<String>,
    /// Cycles whose writes did not all go through, and the last reason.
    pub write_failures: u64,
    pub write_error: Option<String>,
    /// How the control thread is scheduled: "SCHED_FIFO 10", or "normal (...why...)".
    pub scheduling: String,
    /// Why the control thread ended on its own (a panic), if it did.
    pub failure: Option<String>,
}

/// WSetRvrtTms in whole seconds: twice the longest gap between two writes of a live gateway (a
/// period plus a silence it rides out, `pcs_timeout_ms`), so neither jitter nor a hiccup reverts
/// it, while a dead gateway is reverted to 0 W within seconds.
pub fn revert_s(period_ms: u32, pcs_timeout_ms: u32) -> u32 {
    (2 * (period_ms + pcs_timeout_ms)).div_ceil(1000).max(1)
}

/// What one cycle did, for the thread to publish.
pub enum Cycle {
    /// The PCS was silent for less than the timeout: nothing stepped, nothing written.
    Held,
    Stepped(Box<StepOutput>),
}

/// The shortest wait for a grid-meter answer, whatever the period.
const METER_MIN_BUDGET: Duration = Duration::from_millis(20);

/// The grid meter's link (`[site]`): a second Modbus client with its own deadline, read once per
/// stepped cycle; a SunSpec layout is discovered on every new connection.
pub struct GridMeterLink {
    pub client: Box<dyn Pcs + Send>,
    profile: MeterProfile,
    map: Option<MeterMap>,
    budget: Duration,
}

impl GridMeterLink {
    /// `timeout` bounds each request; the loop never waits longer than `max(period / 2, 20 ms)`
    /// for the meter (one on the hub's LAN answers in a few ms), so a dead meter delays a cycle
    /// by at most that, and then only once per back-off interval (50 ms doubling to 1 s).
    pub fn new(
        client: Box<dyn Pcs + Send>,
        profile: MeterProfile,
        timeout: Duration,
        period: Duration,
    ) -> Self {
        Self {
            client,
            profile,
            map: match profile {
                MeterProfile::Generic => Some(MeterMap::Generic),
                MeterProfile::SunSpec => None,
            },
            budget: timeout.min((period / 2).max(METER_MIN_BUDGET)),
        }
    }

    /// One reading in W (+ import), or why there is none: no answer (`Silent`) or an answer
    /// that is no reading (`Invalid`: "not available", a wrong size, another model).
    pub fn read<C: Clock>(&mut self, clock: &C) -> Result<f64, GridError> {
        if self.profile == MeterProfile::SunSpec && !self.client.is_connected() {
            self.map = None;
        }
        let map = match self.map {
            Some(m) => m,
            None => {
                let (client, budget) = (&mut self.client, self.budget);
                let m = gridmeter::discover(|a, n| {
                    client
                        .read_holding(a, n, clock.now() + budget)
                        .map_err(|e| e.to_string())
                })
                .map_err(|e| GridError::Silent(e.to_string()))?;
                self.map = Some(m);
                m
            }
        };
        let (address, count) = map.read();
        let block = self
            .client
            .read_holding(address, count, clock.now() + self.budget)
            .map_err(|e| GridError::Silent(format!("grid meter: {e}")))?;
        map.decode(&block).map_err(|e| {
            if matches!(e, gridmeter::MeterError::ModelChanged { .. }) {
                self.map = None;
            }
            GridError::Invalid(e.to_string())
        })
    }
}

pub struct Engine<P: Pcs, C: Clock> {
    pub ctl: Controller,
    pub pcs: P,
    pub clock: C,
    pub health: Health,
    profile: PcsProfile,
    /// `None` until a sunspec layout is discovered on the current connection.
    map: Option<PcsMap>,
    revert_s: u32,
    pcs_timeout: Duration,
    request_budget: Duration,
    origin: Instant,
    last_ok: Instant,
    /// Since when writes have been failing while reads succeed.
    write_failing_since: Option<Instant>,
    /// The connection (by `ClientStats::connects`) that has taken a write. Until the current
    /// one has, every step is told the connection is new, so the first setpoint the PCS takes
    /// on it is 0 W even if the first write attempts failed.
    confirmed_connection: u64,
    watchdog: u16,
    grid: Option<GridMeterLink>,
}

impl<P: Pcs, C: Clock> Engine<P, C> {
    /// Reads the grid meter every stepped cycle (`[site]`).
    pub fn set_grid_meter(&mut self, link: GridMeterLink) {
        self.grid = Some(link);
    }

    pub fn new(params: ControlParams, pcs: P, clock: C) -> Self {
        let period = Duration::from_millis(u64::from(params.period_ms));
        let pcs_timeout = Duration::from_millis(u64::from(params.pcs_timeout_ms));
        let profile = params.pcs_profile;
        let map = match profile {
            PcsProfile::Generic => Some(PcsMap::Generic(params.register_map.clone())),
            PcsProfile::SunSpec => None,
        };
        let now = clock.now();
        Self {
            revert_s: revert_s(params.period_ms, params.pcs_timeout_ms),
            ctl: Controller::new(params),
            pcs,
            clock,
            health: Health {
                running: true,
                ..Health::default()
            },
            profile,
            map,
            pcs_timeout,
            request_budget: pcs_timeout.min(period.max(MIN_REQUEST_BUDGET)),
            origin: now,
            last_ok: now,
            write_failing_since: None,
            confirmed_connection: 0,
            watchdog: 0,
            grid: None,
        }
    }

    pub fn revert_seconds(&self) -> u32 {
        self.revert_s
    }

    fn deadline(&self) -> Instant {
        self.clock.now() + self.request_budget
    }

    /// Discovers the sunspec layout and writes its reversion settings; a no-op once known.
    fn ensure_map(&mut self) -> Result<PcsMap, String> {
        // Every transport error closes the socket: a new connection may be a different (or
        // reconfigured) device, so its layout and scale factors are read again.
        if self.profile == PcsProfile::SunSpec && !self.pcs.is_connected() {
            self.map = None;
        }
        if let Some(map) = &self.map {
            return Ok(map.clone());
        }
        let budget = self.request_budget;
        let (pcs, clock) = (&mut self.pcs, &self.clock);
        let found = sunspec::discover(|address, count| {
            pcs.read_holding(address, count, clock.now() + budget)
                .map_err(|e| e.to_string())
        })
        .map_err(|e| e.to_string())?;
        let map = PcsMap::SunSpec(found);
        for (address, words) in map.connect_writes(self.revert_s) {
            let deadline = self.deadline();
            self.pcs
                .write_multiple(address, &words, deadline)
                .map_err(|e| format!("writing the SunSpec reversion settings: {e}"))?;
        }
        // A layout found anew may be another device: its first setpoint is 0 W.
        self.ctl.note_new_connection();
        self.map = Some(map.clone());
        Ok(map)
    }

    /// The cycle's reads; `Err` when the PCS did not answer them all.
    fn read_blocks(&mut self) -> Result<(PcsMap, Vec<Vec<u16>>), String> {
        let map = self.ensure_map().inspect_err(|e| {
            // Only a device that answers but does not fit is a profile problem; a link that
            // fails is reported as such (`pcs_link_lost`), not as a missing marker.
            if self.pcs.is_connected() {
                self.health.pcs_error = Some(e.clone());
            }
        })?;
        let mut blocks = Vec::new();
        for (address, count) in map.reads() {
            let deadline = self.deadline();
            let regs = self
                .pcs
                .read_holding(address, count, deadline)
                .map_err(|e| e.to_string())?;
            blocks.push(regs);
        }
        Ok((map, blocks))
    }

    /// One cycle: read, step, write.
    pub fn cycle(&mut self) -> Cycle {
        let read = self.read_blocks();
        let read_at = self.clock.now();
        let (map, input) = match read {
            Ok((map, blocks)) => {
                self.last_ok = read_at;
                if self.pcs.stats().connects != self.confirmed_connection {
                    self.ctl.note_new_connection();
                }
                let input = match map.decode(&blocks) {
                    Ok(m) => {
                        self.health.pcs_error = None;
                        Input::Reading(m)
                    }
                    Err(e) => {
                        self.health.pcs_error = Some(e.to_string());
                        Input::Invalid
                    }
                };
                (Some(map), input)
            }
            // Silence shorter than the timeout: hold the last write, try again next cycle.
            Err(_) if read_at.duration_since(self.last_ok) < self.pcs_timeout => {
                return Cycle::Held;
            }
            Err(_) => {
                // A lost link is its own fault; writes are judged afresh once it is back.
                self.write_failing_since = None;
                self.ctl.set_write_fault(false);
                (None, Input::LinkLost)
            }
        };
        if let Some(grid) = &mut self.grid {
            let reading = grid.read(&self.clock);
            let at = self.clock.now().duration_since(self.origin).as_secs_f64();
            self.ctl.grid_reading(at, reading);
        }
        let t = Time {
            mono_s: read_at.duration_since(self.origin).as_secs_f64(),
            wall_s: self.clock.wall_s(),
        };
        let out = self.ctl.step_at(t, input);
        if let Some(map) = map {
            self.watchdog = self.watchdog.wrapping_add(1);
            match self.write_all(&map, out.run, out.setpoint_w, out.fault_reset) {
                Ok(()) => {
                    self.confirmed_connection = self.pcs.stats().connects;
                    let now = self.clock.now();
                    self.last_ok = now;
                    self.write_failing_since = None;
                    self.ctl.set_write_fault(false);
                    self.health.writes += 1;
                    let written = map.written_w(out.run, out.setpoint_w) as i32;
                    self.health.last_write =
                        Some((out.run, written, self.watchdog, out.fault_reset));
                }
                Err(e) => {
                    let now = self.clock.now();
                    self.health.write_failures += 1;
                    self.health.write_error = Some(e.to_string());
                    let since = *self.write_failing_since.get_or_insert(now);
                    if now.duration_since(since) >= self.pcs_timeout {
                        self.ctl.set_write_fault(true);
                    }
                }
            }
        }
        self.health.pcs = self.pcs.stats();
        Cycle::Stepped(Box::new(out))
    }

    /// The profile's writes in order; stops at the first failure.
    fn write_all(
        &mut self,
        map: &PcsMap,
        run: bool,
        setpoint_w: f64,
        fault_reset: bool,
    ) -> Result<(), ClientError> {
        for (address, words) in map.writes(run, setpoint_w, self.watchdog, fault_reset) {
            let deadline = self.deadline();
            self.pcs.write_multiple(address, &words, deadline)?;
        }
        Ok(())
    }

    /// Best effort: setpoint 0 and standby, so the PCS does not wait for its watchdog (or, for
    /// sunspec, its WSetRvrtTms). Without a discovered layout there is nothing safe to write.
    pub fn final_write(&mut self) -> bool {
        self.watchdog = self.watchdog.wrapping_add(1);
        self.pcs.skip_backoff();
        let written = match self.map.clone() {
            Some(map) => self.write_all(&map, false, 0.0, false).is_ok(),
            None => false,
        };
        if written {
            self.health.writes += 1;
            self.health.last_write = Some((false, 0, self.watchdog, false));
        }
        self.pcs.close();
        self.health.pcs = self.pcs.stats();
        written
    }
}
