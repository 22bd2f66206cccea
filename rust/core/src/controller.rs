//! The control step, pure: commands change the session table; `step(now, registers)` runs one
//! cycle in fixed phases (inputs -> protection -> allocation -> ramp -> metering) and says what to
//! write. No clock, no I/O: time and the register block are arguments, so tests can jump the clock
//! and feed any reading.

use std::collections::BTreeMap;
use std::fmt;

use crate::allocation::{group_caps, water_fill};
use crate::measurements::{decode, Measurements, PCS_FAULT};
use crate::metering::{Direction, EnergyRegisters, Metering};
use crate::params::ControlParams;
use crate::protection::{assess, assess_link_lost, Assessment, Limits, TripCause};
use crate::ramp::{next_setpoint, RampInput};
use crate::schedule::Schedule;
use crate::site::{Calendar, Constraint, GridError, Site, SiteEvent, SiteInput, SiteStatus};

/// Pseudo-meters that own the battery power used for the site (one per direction), so the
/// metering never bills it to a session. They never appear in `allocations` or `meters`.
pub const SITE_DISCHARGE_METER: u32 = u32::MAX;
pub const SITE_CHARGE_METER: u32 = u32::MAX - 1;

fn is_site_meter(id: u32) -> bool {
    id >= SITE_CHARGE_METER
}

/// The longest time step the ramp will honour, in control periods. A loop that stalled for
/// seconds must not turn its next step into a jump of `ramp * stall`: after a stall the setpoint
/// moves at most what the ramp allows over two periods.
pub const MAX_DT_PERIODS: f64 = 2.0;

/// The two clocks of a step (docs/control.md, "Time base").
///
/// - `mono_s`: a monotonic clock (any origin). Every duration comes from it: the ramp's dt, tail
///   ages, the meter plausibility bound. A wall-clock step never shows up as a jump in dt.
/// - `wall_s`: the wall clock (UTC epoch seconds), read every cycle. Schedules are evaluated at
///   it, because OCPP schedules are wall-clock times and the gateway builds them from the same
///   clock; it is also the time stamped on the step's output and events.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Time {
    pub mono_s: f64,
    pub wall_s: f64,
}

impl Time {
    /// One clock for both (tests, simulated time).
    pub fn same(t: f64) -> Self {
        Self {
            mono_s: t,
            wall_s: t,
        }
    }
}

/// Rounds of group allocation per step (see `allocate`): enough for a group whose session of
/// one direction is held back by that direction's limit to pass its share to the other.
const GROUP_ROUNDS: usize = 3;

/// Energy that may always appear between two readings regardless of elapsed time, so register
/// granularity and rounding never look like a corrupt read.
const METER_JUMP_SLACK_WH: f64 = 1000.0;

#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// Starts (or replaces) the session on `meter_id`; the schedule starts empty.
    StartSession {
        meter_id: u32,
        direction: Direction,
        cap_w: f64,
    },
    SetSessionCap {
        meter_id: u32,
        cap_w: f64,
    },
    SetSessionSchedule {
        meter_id: u32,
        schedule: Schedule,
    },
    StopSession {
        meter_id: u32,
    },
    /// Restores a meter register (from the journal at start-up).
    SetMeter {
        meter_id: u32,
        energy_wh: f64,
    },
    /// Puts a meter in a group (or takes it out with `None`). Membership belongs to the meter,
    /// not to a session: it outlives stops and starts, so it is set once per connector.
    SetMeterGroup {
        meter_id: u32,
        group_id: Option<u32>,
    },
    /// Caps the sum of the allocations of the group's sessions, discharge and charge together
    /// (an endpoint's limit is on all the power through it), with a schedule (no limit before
    /// its first period). An empty schedule never limits.
    SetGroupSchedule {
        group_id: u32,
        schedule: Schedule,
    },
    ClearGroup {
        group_id: u32,
    },
    /// Sets aside power of one direction (a reservation): the holds of a direction are taken off
    /// that direction's limit before the sessions share it. A hold never makes a setpoint.
    SetHold {
        hold_id: u32,
        direction: Direction,
        power_w: f64,
    },
    ClearHold {
        hold_id: u32,
    },
    /// The site's wall-clock calendar (UTC offsets of its timezone, time-of-use windows for the
    /// days ahead); ignored without a `[site]` table.
    SetSiteCalendar(Calendar),
    /// Commands applied together, so no control cycle runs between them (a session that starts
    /// with its schedule and group never runs a cycle without them).
    Batch(Vec<Command>),
}

/// What one cycle got from the PCS.
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    /// No valid answer for `pcs_timeout_ms`.
    LinkLost,
    /// The PCS answered, but the answer is not a usable reading (wrong size, a required point
    /// not implemented): trips `invalid_measurement`.
    Invalid,
    Reading(Measurements),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandError {
    pub field: &'static str,
    pub message: String,
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for CommandError {}

impl Command {
    /// Checks the values a command carries; run before a command is queued, so the caller gets
    /// the error instead of the control thread.
    fn meter_id(&self) -> Option<u32> {
        match self {
            Self::StartSession { meter_id, .. } | Self::SetMeterGroup { meter_id, .. } => {
                Some(*meter_id)
            }
            _ => None,
        }
    }

    pub fn validate(&self) -> Result<(), CommandError> {
        let non_negative = |field: &'static str, v: f64| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(CommandError {
                    field,
                    message: format!("{v} must be a finite value >= 0"),
                })
            }
        };
        if self.meter_id().is_some_and(is_site_meter) {
            return Err(CommandError {
                field: "meter_id",
                message: "ids from 4294967294 are the site's own meters".to_string(),
            });
        }
        match self {
            Self::StartSession { cap_w, .. } | Self::SetSessionCap { cap_w, .. } => {
                non_negative("cap_w", *cap_w)
            }
            Self::SetMeter { energy_wh, .. } => non_negative("energy_wh", *energy_wh),
            Self::SetSiteCalendar(c) => {
                let ok = c.offsets.iter().all(|o| o.0.is_finite() && o.1.is_finite())
                    && c.offsets.windows(2).all(|w| w[0].0 < w[1].0)
                    && c.windows.iter().all(|w| {
                        w.start_s.is_finite()
                            && w.end_s.is_finite()
                            && w.start_s < w.end_s
                            && w.power_w.is_finite()
                            && w.power_w >= 0.0
                    });
                if ok {
                    Ok(())
                } else {
                    Err(CommandError {
                        field: "calendar",
                        message: "offsets must be finite and ascending, windows finite with start < end and power >= 0".to_string(),
                    })
                }
            }
            Self::SetHold { power_w, .. } => non_negative("power_w", *power_w),
            Self::Batch(cmds) => cmds.iter().try_for_each(Command::validate),
            Self::SetSessionSchedule { .. }
            | Self::StopSession { .. }
            | Self::SetMeterGroup { .. }
            | Self::SetGroupSchedule { .. }
            | Self::ClearGroup { .. }
            | Self::ClearHold { .. } => Ok(()),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// No answer for the link timeout (also when the PCS never answered since start).
    LinkLost,
    /// The PCS answers again after a loss, or for the first time since start.
    LinkRestored,
    /// The set of trip causes became non-empty or changed while non-empty.
    Trip(Vec<TripCause>),
    TripCleared,
    /// The control thread ended on its own (a panic, with its message): nothing controls the
    /// PCS any more; the process should report every connector Faulted and exit.
    ControlFailed(String),
    /// The grid meter's reading went stale (with why): site power stops, sessions are held.
    GridMeterLost(String),
    GridMeterRestored,
    /// The set of active site constraints changed (for the log: why power is what it is).
    SiteConstraints(Vec<Constraint>),
}

#[derive(Clone, Debug, PartialEq)]
struct Session {
    direction: Direction,
    cap_w: f64,
    schedule: Schedule,
}

/// One meter as seen after a step.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MeterReading {
    pub meter_id: u32,
    pub energy_wh: f64,
    /// The session's share of the measured AC power (W, >= 0) and current (A).
    pub power_w: f64,
    pub current_a: f64,
    pub allocated_w: f64,
    pub active: bool,
    /// The session stopped but power it had is still flowing (ramp-down, PCS response): the
    /// meter still counts it, so its final value is not known yet (`metering`).
    pub settling: bool,
    /// Direction of the running session, if any.
    pub direction: Option<Direction>,
}

/// What one step decided. `Default` is the state before any step: link down, nothing allowed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepOutput {
    pub now_s: f64,
    /// + discharge, W.
    pub setpoint_w: f64,
    pub run: bool,
    /// Write 1 to the fault-reset register: the PCS sits in fault while no alarm is active.
    pub fault_reset: bool,
    /// Effective limits (0 while tripped) and every sub-limit.
    pub limit_discharge_w: f64,
    pub limit_charge_w: f64,
    pub sub_limits: Limits,
    pub trip_causes: Vec<TripCause>,
    pub link_up: bool,
    /// By meter id, ascending.
    pub allocations: Vec<(u32, f64)>,
    /// Every meter ever started or restored, by meter id.
    pub meters: Vec<MeterReading>,
    /// (discharge, charge) energy that flowed with no session of that direction allocated.
    pub unattributed_wh: (f64, f64),
    /// (discharge, charge) power set aside by holds, as requested (before any clamping).
    pub holds_w: (f64, f64),
    pub events: Vec<Event>,
    /// The last valid reading (kept through a lost link so the operator sees the last state).
    pub measurements: Option<Measurements>,
    /// Site energy management (`None` without a `[site]` table).
    pub site: Option<SiteStatus>,
}

impl StepOutput {
    pub fn tripped(&self) -> bool {
        !self.trip_causes.is_empty()
    }

    pub fn meter(&self, meter_id: u32) -> Option<&MeterReading> {
        self.meters
            .binary_search_by_key(&meter_id, |m| m.meter_id)
            .ok()
            .map(|i| &self.meters[i])
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    /// No answer and no timeout yet: neither event has a meaning.
    Unknown,
    Up,
    Down,
}

#[derive(Clone, Debug)]
pub struct Controller {
    params: ControlParams,
    sessions: BTreeMap<u32, Session>,
    metering: Metering,
    setpoint_w: f64,
    last_now: Option<f64>,
    link: Link,
    /// The next write is the first on a new PCS connection (or layout): it must be 0 W.
    fresh_connection: bool,
    /// The runtime's writes have failed for the link timeout (`TripCause::PcsWriteFault`).
    write_fault: bool,
    causes: Vec<TripCause>,
    /// Allocations of the previous step: the ones in force while the energy of the next reading
    /// flowed.
    previous: Vec<(u32, Direction, f64)>,
    last_measurements: Option<Measurements>,
    last_reading_at: Option<f64>,
    meter_groups: BTreeMap<u32, u32>,
    groups: BTreeMap<u32, Schedule>,
    holds: BTreeMap<u32, (Direction, f64)>,
    site: Option<Site>,
}

impl Controller {
    pub fn new(params: ControlParams) -> Self {
        Self {
            sessions: BTreeMap::new(),
            metering: Metering::default(),
            setpoint_w: 0.0,
            last_now: None,
            link: Link::Unknown,
            fresh_connection: false,
            write_fault: false,
            causes: Vec::new(),
            previous: Vec::new(),
            last_measurements: None,
            last_reading_at: None,
            meter_groups: BTreeMap::new(),
            groups: BTreeMap::new(),
            holds: BTreeMap::new(),
            site: params.site.clone().map(Site::new),
            params,
        }
    }

    /// One grid-meter read of this cycle (W, + import), or why there is none. Without a
    /// `[site]` table it is ignored.
    pub fn grid_reading(&mut self, mono_s: f64, reading: Result<f64, GridError>) {
        if let Some(site) = &mut self.site {
            site.grid_reading(mono_s, reading);
        }
    }

    pub fn params(&self) -> &ControlParams {
        &self.params
    }

    /// The PCS connection (or its discovered layout) is new: the next step writes 0 W whatever
    /// the previous setpoint was, and ramps from there.
    pub fn note_new_connection(&mut self) {
        self.fresh_connection = true;
    }

    /// Whether the PCS has refused or not acknowledged our writes for the link timeout. While it
    /// has, the step trips `pcs_write_fault`: power the PCS does not take must not be reported
    /// as flowing.
    pub fn set_write_fault(&mut self, faulted: bool) {
        self.write_fault = faulted;
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    pub fn rebaselines(&self) -> u64 {
        self.metering.rebaselines()
    }

    /// Applies a command. Commands for a meter without a session (cap, schedule, stop) are
    /// ignored rather than errors: through the control thread they arrive asynchronously, so a
    /// cap change racing a stop is normal, and there is nothing left to change.
    pub fn apply(&mut self, cmd: Command) -> Result<(), CommandError> {
        cmd.validate()?;
        match cmd {
            Command::StartSession {
                meter_id,
                direction,
                cap_w,
            } => {
                self.metering.ensure(meter_id);
                // What flows from now on is the new session's.
                self.metering.end_tail(meter_id);
                self.sessions.insert(
                    meter_id,
                    Session {
                        direction,
                        cap_w,
                        schedule: Schedule::default(),
                    },
                );
            }
            Command::SetSessionCap { meter_id, cap_w } => {
                if let Some(s) = self.sessions.get_mut(&meter_id) {
                    s.cap_w = cap_w;
                }
            }
            Command::SetSessionSchedule { meter_id, schedule } => {
                if let Some(s) = self.sessions.get_mut(&meter_id) {
                    s.schedule = schedule;
                }
            }
            Command::StopSession { meter_id } => {
                self.sessions.remove(&meter_id);
            }
            Command::SetMeter {
                meter_id,
                energy_wh,
            } => self.metering.set(meter_id, energy_wh),
            Command::SetMeterGroup { meter_id, group_id } => match group_id {
                Some(g) => {
                    self.meter_groups.insert(meter_id, g);
                }
                None => {
                    self.meter_groups.remove(&meter_id);
                }
            },
            Command::SetGroupSchedule { group_id, schedule } => {
                self.groups.insert(group_id, schedule);
            }
            Command::ClearGroup { group_id } => {
                self.groups.remove(&group_id);
            }
            Command::SetHold {
                hold_id,
                direction,
                power_w,
            } => {
                self.holds.insert(hold_id, (direction, power_w));
            }
            Command::ClearHold { hold_id } => {
                self.holds.remove(&hold_id);
            }
            Command::SetSiteCalendar(calendar) => {
                if let Some(site) = &mut self.site {
                    site.set_calendar(calendar);
                }
            }
            Command::Batch(cmds) => {
                for c in cmds {
                    self.apply(c)?;
                }
            }
        }
        Ok(())
    }

    /// One control cycle at `now_s` (one clock for both, `Time::same`) with the generic map's
    /// measurement block, or `None` when the PCS link is lost (the caller decides when silence
    /// has lasted long enough).
    pub fn step(&mut self, now_s: f64, registers: Option<&[u16]>) -> StepOutput {
        self.step_registers(Time::same(now_s), registers)
    }

    /// `step` with both clocks.
    pub fn step_registers(&mut self, t: Time, registers: Option<&[u16]>) -> StepOutput {
        let input = match registers {
            None => Input::LinkLost,
            // A block of the wrong size or with a "not available" value cannot be trusted.
            Some(regs) => {
                decode(&self.params.register_map, regs).map_or(Input::Invalid, Input::Reading)
            }
        };
        self.step_at(t, input)
    }

    /// One control cycle with a reading already decoded by the PCS profile (`profile::PcsMap`),
    /// one clock for both.
    pub fn step_input(&mut self, now_s: f64, input: Input) -> StepOutput {
        self.step_at(Time::same(now_s), input)
    }

    /// One control cycle at `t`.
    pub fn step_at(&mut self, t: Time, input: Input) -> StepOutput {
        let (mono_s, now_s) = (t.mono_s, t.wall_s);
        let max_dt = MAX_DT_PERIODS * f64::from(self.params.period_ms) / 1000.0;
        let elapsed = match self.last_now {
            Some(prev) if mono_s.is_finite() => (mono_s - prev).max(0.0),
            _ => 0.0,
        };
        let dt = elapsed.min(max_dt);
        if mono_s.is_finite() {
            self.last_now = Some(mono_s);
        }
        let mut events = Vec::new();

        // Phase 1: inputs and protection.
        let mut link_restored = false;
        let mut flow_w = None;
        let assessment = match input {
            Input::LinkLost => {
                if self.link != Link::Down {
                    events.push(Event::LinkLost);
                }
                self.link = Link::Down;
                assess_link_lost(&self.params.protection)
            }
            reading => {
                // The first answer ever is announced too: until then the link state was unknown
                // (snapshots say link_up = false), and a consumer waiting for the link must hear it.
                if self.link != Link::Up {
                    events.push(Event::LinkRestored);
                }
                link_restored = self.link == Link::Down;
                self.link = Link::Up;
                if let Input::Reading(m) = &reading {
                    flow_w = Some((m.measured_w.max(0.0), (-m.measured_w).max(0.0)));
                }
                self.read(mono_s, reading)
            }
        };
        let mut assessment = assessment;
        if self.write_fault && self.link != Link::Down {
            assessment.causes.push(TripCause::PcsWriteFault);
            assessment.causes.sort_unstable();
            assessment.causes.dedup();
        }
        if assessment.causes != self.causes {
            if assessment.causes.is_empty() {
                events.push(Event::TripCleared);
            } else {
                events.push(Event::Trip(assessment.causes.clone()));
            }
            self.causes.clone_from(&assessment.causes);
        }
        let tripped = assessment.tripped();
        let (limit_dis, limit_chg) = if tripped {
            (0.0, 0.0)
        } else {
            (
                assessment.limits.discharge.effective(),
                assessment.limits.charge.effective(),
            )
        };

        // Phase 2: allocation, each direction on its own; then the site (design.md section 8)
        // bounds the sessions' totals and adds its own power, all inside the limits.
        let soc = self.last_measurements.as_ref().map(|m| m.soc_pct);
        let reserve = self.site.as_mut().is_some_and(|s| s.reserve_blocks(soc));
        let budgets = (if reserve { 0.0 } else { f64::INFINITY }, f64::INFINITY);
        let mut allocations = self.allocate(now_s, limit_dis, limit_chg, budgets);
        let mut site_w = 0.0;
        let mut curtailed = Vec::new();
        if let Some(site) = &mut self.site {
            let sum = |dir: Direction| -> f64 {
                allocations.iter().filter(|a| a.1 == dir).map(|a| a.2).sum()
            };
            let input = SiteInput {
                mono_s,
                wall_s: now_s,
                battery_w: match (self.link, &self.last_measurements) {
                    (Link::Up, Some(m)) => Some(m.measured_w),
                    _ => None,
                },
                limit_discharge_w: limit_dis,
                limit_charge_w: limit_chg,
                sessions_discharge_w: sum(Direction::Discharge),
                sessions_charge_w: sum(Direction::Charge),
                period_s: f64::from(self.params.period_ms) / 1000.0,
            };
            let mut site_events = Vec::new();
            let d = site.decide(&input, &mut site_events);
            events.extend(site_events.into_iter().map(|e| match e {
                SiteEvent::GridMeterLost(why) => Event::GridMeterLost(why),
                SiteEvent::GridMeterRestored => Event::GridMeterRestored,
                SiteEvent::Constraints(c) => Event::SiteConstraints(c),
            }));
            let (dis, chg) = (input.sessions_discharge_w, input.sessions_charge_w);
            if d.discharge_budget_w < dis - 1e-9 || d.charge_budget_w < chg - 1e-9 {
                let b = (
                    d.discharge_budget_w.min(budgets.0),
                    d.charge_budget_w.min(budgets.1),
                );
                let before = std::mem::take(&mut allocations);
                allocations = self.allocate(now_s, limit_dis, limit_chg, b);
                curtailed = before
                    .iter()
                    .zip(&allocations)
                    .filter(|(a, b)| b.2 < a.2 - 1e-6)
                    .map(|(_, b)| (b.0, b.2))
                    .collect();
            }
            if !tripped {
                site_w = d.site_w;
            }
        }
        let target: f64 = allocations
            .iter()
            .map(|(_, d, a)| d.sign() * a)
            .sum::<f64>()
            + site_w;
        // The site's power is metered apart, as its own pseudo-meter of its direction.
        if site_w > 0.0 {
            allocations.push((SITE_DISCHARGE_METER, Direction::Discharge, site_w));
        } else if site_w < 0.0 {
            allocations.push((SITE_CHARGE_METER, Direction::Charge, -site_w));
        }

        // Phase 3: ramp. The first write after a lost link comes back, and the first on any new
        // connection, is 0 whatever the target.
        let fresh = std::mem::take(&mut self.fresh_connection);
        self.setpoint_w = next_setpoint(
            self.setpoint_w,
            &RampInput {
                target_w: target,
                lo_w: -limit_chg,
                hi_w: limit_dis,
                ramp_w_per_s: self.params.ramp_w_per_s,
                dt_s: dt,
                force_zero: tripped || link_restored || fresh,
            },
        );

        let link_up = self.link == Link::Up;
        // Phase 4: metering. Power a meter had and lost is still its own while it flows.
        self.metering
            .retarget(elapsed, &self.previous, &allocations, flow_w);
        let meters = self.meter_readings(&allocations);
        self.previous = allocations;
        let m = self.last_measurements.as_ref();
        StepOutput {
            now_s,
            setpoint_w: self.setpoint_w,
            run: link_up
                && !tripped
                && (!self.sessions.is_empty() || self.setpoint_w != 0.0 || site_w != 0.0),
            fault_reset: link_up
                && m.is_some_and(|m| m.pcs_state == PCS_FAULT && m.alarm_bits == 0),
            limit_discharge_w: limit_dis,
            limit_charge_w: limit_chg,
            sub_limits: assessment.limits,
            trip_causes: assessment.causes,
            link_up,
            allocations: self
                .previous
                .iter()
                .filter(|(id, _, _)| !is_site_meter(*id))
                .map(|(id, _, a)| (*id, *a))
                .collect(),
            meters,
            unattributed_wh: self.metering.unattributed_wh(),
            holds_w: (
                self.held_w(Direction::Discharge),
                self.held_w(Direction::Charge),
            ),
            events,
            measurements: self.last_measurements.clone(),
            site: self.site.as_mut().map(|s| {
                let e = |id| self.metering.energy(id).unwrap_or(0.0);
                s.set_energy(e(SITE_DISCHARGE_METER), e(SITE_CHARGE_METER));
                let mut st = s.status().clone();
                st.soc_pct = self.last_measurements.as_ref().map(|m| m.soc_pct);
                st.curtailed = curtailed;
                st
            }),
        }
    }

    /// Decodes a block, meters its energy, and assesses it.
    fn read(&mut self, now_s: f64, input: Input) -> Assessment {
        let Input::Reading(m) = input else {
            return Assessment {
                limits: Limits::default(),
                causes: vec![TripCause::InvalidMeasurement],
            };
        };
        let p = &self.params.protection;
        let elapsed_h = self
            .last_reading_at
            .map_or(0.0, |t| (now_s - t).max(0.0) / 3600.0);
        let max_increase =
            2.0 * p.site_max_discharge_w.max(p.site_max_charge_w) * elapsed_h + METER_JUMP_SLACK_WH;
        self.metering.update(
            EnergyRegisters {
                discharged_wh: m.energy_discharged_wh,
                charged_wh: m.energy_charged_wh,
            },
            &self.previous,
            max_increase,
        );
        self.last_reading_at = Some(now_s);
        let a = assess(p, &m);
        self.last_measurements = Some(m);
        a
    }

    fn held_w(&self, dir: Direction) -> f64 {
        self.holds
            .values()
            .filter(|(d, _)| *d == dir)
            .map(|(_, w)| w)
            .sum()
    }

    /// Sessions' allocations; `budgets` (discharge, charge) bound each direction's total on top of
    /// the limits (the site's curtailment, the reserve).
    fn allocate(
        &self,
        now_s: f64,
        limit_dis: f64,
        limit_chg: f64,
        budgets: (f64, f64),
    ) -> Vec<(u32, Direction, f64)> {
        let group_limits: BTreeMap<u32, f64> = self
            .groups
            .iter()
            .filter_map(|(g, s)| s.limit_at(now_s).map(|l| (*g, l)))
            .collect();
        let ids: Vec<(u32, Direction)> = self
            .sessions
            .iter()
            .map(|(id, s)| (*id, s.direction))
            .collect();
        let mut caps: Vec<f64> = self
            .sessions
            .values()
            .map(|s| self.cap_of(s, now_s))
            .collect();
        let groups: Vec<Option<u32>> = ids
            .iter()
            .map(|(id, _)| self.meter_groups.get(id).copied())
            .collect();
        let available = |dir: Direction| {
            let (limit, budget) = if dir == Direction::Discharge {
                (limit_dis, budgets.0)
            } else {
                (limit_chg, budgets.1)
            };
            (limit - self.held_w(dir)).max(0.0).min(budget.max(0.0))
        };
        let mut shares = vec![0.0; ids.len()];
        for _ in 0..GROUP_ROUNDS {
            // Phase 2a: group limits over both directions at once (`Command::SetGroupSchedule`);
            // they only lower caps, so no session can end up above its own cap.
            let effective = group_caps(&caps, &groups, &group_limits);
            // Phase 2b: each direction shares what its limit leaves after the holds.
            for dir in [Direction::Discharge, Direction::Charge] {
                let idx: Vec<usize> = (0..ids.len()).filter(|&i| ids[i].1 == dir).collect();
                let dir_caps: Vec<f64> = idx.iter().map(|&i| effective[i]).collect();
                for (&i, a) in idx.iter().zip(water_fill(available(dir), &dir_caps)) {
                    shares[i] = a;
                }
            }
            // A grouped session its direction held below its group share keeps what it got,
            // and the next round hands the unused share to the rest of its group. Every round
            // is a valid allocation; the rounds only bring it closer to max-min fair.
            let mut changed = false;
            for i in 0..ids.len() {
                let limited_group = groups[i].is_some_and(|g| group_limits.contains_key(&g));
                if limited_group && shares[i] < effective[i] - 1e-6 && shares[i] < caps[i] {
                    caps[i] = shares[i];
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        let mut out: Vec<(u32, Direction, f64)> = ids
            .into_iter()
            .zip(shares)
            .map(|((id, d), a)| (id, d, a))
            .collect();
        out.sort_unstable_by_key(|e| e.0);
        out
    }

    fn cap_of(&self, s: &Session, now_s: f64) -> f64 {
        let scheduled = s.schedule.limit_at(now_s).unwrap_or(f64::INFINITY);
        s.cap_w.min(self.params.session_max_w).min(scheduled)
    }

    fn meter_readings(&self, allocations: &[(u32, Direction, f64)]) -> Vec<MeterReading> {
        let (measured_w, current_a) = self
            .last_measurements
            .as_ref()
            .map_or((0.0, 0.0), |m| (m.measured_w, m.ac_current_a));
        let total = |dir: Direction| -> f64 {
            allocations.iter().filter(|a| a.1 == dir).map(|a| a.2).sum()
        };
        let (total_dis, total_chg) = (total(Direction::Discharge), total(Direction::Charge));
        let alloc_of: BTreeMap<u32, f64> = allocations.iter().map(|a| (a.0, a.2)).collect();
        self.metering
            .iter()
            .filter(|(meter_id, _)| !is_site_meter(*meter_id))
            .map(|(meter_id, energy_wh)| {
                let session = self.sessions.get(&meter_id);
                let allocated_w = alloc_of.get(&meter_id).copied().unwrap_or(0.0);
                let share = match session.map(|s| s.direction) {
                    // Only power flowing in the session's direction is the session's.
                    Some(d) if d.sign() * measured_w > 0.0 => {
                        let t = if d == Direction::Discharge {
                            total_dis
                        } else {
                            total_chg
                        };
                        if t > 0.0 {
                            allocated_w / t
                        } else {
                            0.0
                        }
                    }
                    _ => 0.0,
                };
                MeterReading {
                    meter_id,
                    energy_wh,
                    power_w: measured_w.abs() * share,
                    current_a: current_a * share,
                    allocated_w,
                    active: session.is_some(),
                    settling: session.is_none() && self.metering.settling(meter_id),
                    direction: session.map(|s| s.direction),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measurements::tests::{healthy_block, set_u32, set_u64};
    use crate::measurements::PCS_RUNNING;
    use proptest::prelude::*;

    fn ctl() -> Controller {
        Controller::new(ControlParams::default())
    }

    fn start(c: &mut Controller, id: u32, dir: Direction, cap: f64) {
        c.apply(Command::StartSession {
            meter_id: id,
            direction: dir,
            cap_w: cap,
        })
        .unwrap();
    }

    /// Steps every 100 ms (the default period) from `from_s` to `to_s`; the last output.
    fn run(c: &mut Controller, from_s: f64, to_s: f64, r: &[u16]) -> StepOutput {
        let n = ((to_s - from_s) / 0.1).round() as u32;
        let mut o = c.step(from_s, Some(r));
        for i in 1..=n {
            o = c.step(from_s + f64::from(i) * 0.1, Some(r));
        }
        o
    }

    #[test]
    fn first_step_holds_zero_then_ramps() {
        let mut c = ctl();
        let r = healthy_block();
        start(&mut c, 0, Direction::Discharge, 150_000.0);
        let o = c.step(1000.0, Some(&r));
        assert_eq!(o.setpoint_w, 0.0);
        assert!(o.run);
        assert_eq!(o.allocations, vec![(0, 150_000.0)]);
        let o = c.step(1000.1, Some(&r));
        assert!((o.setpoint_w - 30_000.0).abs() < 1e-6);
        for i in 2..10 {
            c.step(1000.0 + f64::from(i) * 0.1, Some(&r));
        }
        assert_eq!(c.step(1001.0, Some(&r)).setpoint_w, 150_000.0);
    }

    #[test]
    fn net_of_both_directions() {
        let mut c = ctl();
        let r = healthy_block();
        start(&mut c, 0, Direction::Discharge, 150_000.0);
        start(&mut c, 3, Direction::Charge, 50_000.0);
        let o = run(&mut c, 0.0, 1.0, &r);
        assert_eq!(o.setpoint_w, 100_000.0);
        assert_eq!(o.allocations, vec![(0, 150_000.0), (3, 50_000.0)]);
    }

    #[test]
    fn session_cap_is_bounded_by_session_max_and_schedule() {
        let mut c = ctl();
        let r = healthy_block();
        start(&mut c, 0, Direction::Discharge, 1e9);
        let sched = Schedule::new(vec![(0.0, 1e12), (100.0, 40_000.0)]).unwrap();
        c.apply(Command::SetSessionSchedule {
            meter_id: 0,
            schedule: sched,
        })
        .unwrap();
        assert_eq!(c.step(50.0, Some(&r)).allocations, vec![(0, 150_000.0)]);
        assert_eq!(c.step(100.0, Some(&r)).allocations, vec![(0, 40_000.0)]);
        c.apply(Command::SetSessionCap {
            meter_id: 0,
            cap_w: 10_000.0,
        })
        .unwrap();
        assert_eq!(c.step(101.0, Some(&r)).allocations, vec![(0, 10_000.0)]);
    }

    #[test]
    fn holds_are_taken_off_the_direction_limit() {
        let mut c = ctl();
        let r = healthy_block();
        start(&mut c, 0, Direction::Discharge, 150_000.0);
        start(&mut c, 2, Direction::Discharge, 150_000.0);
        let hold = |id, direction, power_w| Command::SetHold {
            hold_id: id,
            direction,
            power_w,
        };
        let limit = c.step(0.0, Some(&r)).limit_discharge_w;
        c.apply(hold(1, Direction::Discharge, limit - 350_000.0))
            .unwrap();
        c.apply(hold(2, Direction::Discharge, 150_000.0)).unwrap();
        c.apply(hold(3, Direction::Charge, 100_000.0)).unwrap();
        let o = c.step(0.0, Some(&r));
        // What the holds leave, 200 kW, is shared by the two sessions.
        assert_eq!(o.allocations, vec![(0, 100_000.0), (2, 100_000.0)]);
        assert_eq!(o.holds_w, (limit - 200_000.0, 100_000.0));
        c.apply(hold(4, Direction::Discharge, 1e9)).unwrap();
        let o = c.step(0.1, Some(&r));
        assert_eq!(o.allocations, vec![(0, 0.0), (2, 0.0)], "never below 0");
        for id in [1, 2, 4] {
            c.apply(Command::ClearHold { hold_id: id }).unwrap();
        }
        let o = c.step(0.2, Some(&r));
        assert_eq!(o.allocations, vec![(0, 150_000.0), (2, 150_000.0)]);
        assert_eq!(o.holds_w, (0.0, 100_000.0));
        // A hold alone makes no setpoint.
        let mut c = ctl();
        c.apply(hold(1, Direction::Discharge, 50_000.0)).unwrap();
        c.step(0.0, Some(&r));
        let o = c.step(1.0, Some(&r));
        assert_eq!(o.setpoint_w, 0.0);
        assert!(!o.run);
        assert_eq!(
            c.apply(hold(1, Direction::Charge, -1.0)).unwrap_err().field,
            "power_w"
        );
    }

    #[test]
    fn group_schedule_caps_its_sessions_together() {
        let mut c = ctl();
        let r = healthy_block();
        for m in [0, 1, 2] {
            c.apply(Command::SetMeterGroup {
                meter_id: m,
                group_id: Some(0),
            })
            .unwrap();
        }
        start(&mut c, 0, Direction::Discharge, 150_000.0);
        start(&mut c, 2, Direction::Discharge, 30_000.0);
        start(&mut c, 1, Direction::Charge, 150_000.0);
        start(&mut c, 4, Direction::Discharge, 150_000.0);
        let sched = Schedule::new(vec![(0.0, 1e12), (10.0, 100_000.0), (20.0, 40_000.0)]).unwrap();
        c.apply(Command::SetGroupSchedule {
            group_id: 0,
            schedule: sched,
        })
        .unwrap();
        let o = c.step(5.0, Some(&r));
        assert_eq!(
            o.allocations,
            vec![
                (0, 150_000.0),
                (1, 150_000.0),
                (2, 30_000.0),
                (4, 150_000.0)
            ]
        );
        // Discharge and charge count together: 30 kW for the small one, 35 kW each for the rest.
        let o = c.step(10.0, Some(&r));
        assert_eq!(
            o.allocations,
            vec![(0, 35_000.0), (1, 35_000.0), (2, 30_000.0), (4, 150_000.0)]
        );
        let o = c.step(20.0, Some(&r));
        for (got, want) in o.allocations.iter().zip([
            (0, 40e3 / 3.0),
            (1, 40e3 / 3.0),
            (2, 40e3 / 3.0),
            (4, 150e3),
        ]) {
            assert_eq!(got.0, want.0);
            assert!((got.1 - want.1).abs() < 1e-6, "{got:?} vs {want:?}");
        }
        c.apply(Command::ClearGroup { group_id: 0 }).unwrap();
        let o = c.step(21.0, Some(&r));
        assert_eq!(o.allocations[0], (0, 150_000.0));
        // Membership outlives the session.
        c.apply(Command::StopSession { meter_id: 0 }).unwrap();
        start(&mut c, 0, Direction::Discharge, 150_000.0);
        c.apply(Command::SetGroupSchedule {
            group_id: 0,
            schedule: Schedule::new(vec![(0.0, 9_000.0)]).unwrap(),
        })
        .unwrap();
        let o = c.step(22.0, Some(&r));
        assert_eq!(o.allocations[0], (0, 3_000.0));
    }

    #[test]
    fn group_share_a_direction_cannot_use_goes_to_the_other() {
        let mut c = ctl();
        let r = healthy_block();
        for m in [0, 1] {
            c.apply(Command::SetMeterGroup {
                meter_id: m,
                group_id: Some(5),
            })
            .unwrap();
        }
        start(&mut c, 0, Direction::Discharge, 150_000.0);
        start(&mut c, 1, Direction::Charge, 150_000.0);
        c.apply(Command::SetGroupSchedule {
            group_id: 5,
            schedule: Schedule::new(vec![(0.0, 150_000.0)]).unwrap(),
        })
        .unwrap();
        assert_eq!(
            c.step(1.0, Some(&r)).allocations,
            vec![(0, 75_000.0), (1, 75_000.0)]
        );
        // Only 20 kW of charge is left: the discharge session gets the group's remaining 130.
        let limit = c.step(1.1, Some(&r)).limit_charge_w;
        c.apply(Command::SetHold {
            hold_id: 0,
            direction: Direction::Charge,
            power_w: limit - 20_000.0,
        })
        .unwrap();
        assert_eq!(
            c.step(1.2, Some(&r)).allocations,
            vec![(0, 130_000.0), (1, 20_000.0)]
        );
    }

    #[test]
    fn batch_applies_all_or_stops_at_the_bad_one() {
        let mut c = ctl();
        let r = healthy_block();
        let batch = Command::Batch(vec![
            Command::StartSession {
                meter_id: 0,
                direction: Direction::Discharge,
                cap_w: 150_000.0,
            },
            Command::SetSessionSchedule {
                meter_id: 0,
                schedule: Schedule::new(vec![(0.0, 20_000.0)]).unwrap(),
            },
        ]);
        c.apply(batch).unwrap();
        assert_eq!(c.step(1.0, Some(&r)).allocations, vec![(0, 20_000.0)]);
        let bad = Command::Batch(vec![
            Command::StopSession { meter_id: 0 },
            Command::SetHold {
                hold_id: 0,
                direction: Direction::Charge,
                power_w: f64::NAN,
            },
        ]);
        assert_eq!(c.apply(bad).unwrap_err().field, "power_w");
        assert_eq!(c.session_count(), 1, "validated before anything is applied");
    }

    #[test]
    fn trip_goes_to_zero_at_once_and_recovers() {
        let mut c = ctl();
        let mut r = healthy_block();
        start(&mut c, 0, Direction::Discharge, 150_000.0);
        assert_eq!(run(&mut c, 0.0, 1.0, &r).setpoint_w, 150_000.0);
        set_u32(&mut r, 17, 1 << 10);
        let o = c.step(1.1, Some(&r));
        assert_eq!(o.setpoint_w, 0.0);
        assert!(!o.run);
        assert_eq!(o.trip_causes, vec![TripCause::EmergencyStop]);
        assert_eq!(o.events, vec![Event::Trip(vec![TripCause::EmergencyStop])]);
        assert!(c.step(1.2, Some(&r)).events.is_empty());
        set_u32(&mut r, 17, 0);
        let o = c.step(1.3, Some(&r));
        assert_eq!(o.events, vec![Event::TripCleared]);
        assert!((o.setpoint_w - 30_000.0).abs() < 1e-6, "ramps again from 0");
    }

    #[test]
    fn fault_reset_only_when_alarms_are_clear() {
        let mut c = ctl();
        let mut r = healthy_block();
        r[0] = PCS_FAULT;
        set_u32(&mut r, 17, 1 << 6);
        let o = c.step(0.0, Some(&r));
        assert!(!o.fault_reset);
        assert_eq!(
            o.trip_causes,
            vec![TripCause::PcsInternalFault, TripCause::PcsFaultState]
        );
        set_u32(&mut r, 17, 0);
        assert!(c.step(0.1, Some(&r)).fault_reset);
    }

    #[test]
    fn lost_link_suspends_and_first_step_back_is_zero() {
        let mut c = ctl();
        let r = healthy_block();
        start(&mut c, 0, Direction::Discharge, 150_000.0);
        c.step(0.0, Some(&r));
        c.step(1.0, Some(&r));
        let o = c.step(1.1, None);
        assert_eq!(o.setpoint_w, 0.0);
        assert!(!o.link_up && !o.run);
        assert_eq!(o.allocations, vec![(0, 0.0)]);
        assert_eq!(
            o.events,
            vec![Event::LinkLost, Event::Trip(vec![TripCause::PcsLinkLost])]
        );
        assert!(c.step(1.2, None).events.is_empty());
        let o = c.step(5.0, Some(&r));
        assert_eq!(o.events, vec![Event::LinkRestored, Event::TripCleared]);
        assert_eq!(o.setpoint_w, 0.0, "first write after the link is back is 0");
        assert!((c.step(5.1, Some(&r)).setpoint_w - 30_000.0).abs() < 1e-6);
    }

    #[test]
    fn no_answer_at_start_is_a_lost_link() {
        let mut c = ctl();
        assert_eq!(c.step(0.0, None).events[0], Event::LinkLost);
        let mut c = ctl();
        let first = c.step(0.0, Some(&healthy_block()));
        assert_eq!(
            first.events,
            vec![Event::LinkRestored],
            "the first answer is announced"
        );
        assert!(c.step(0.1, Some(&healthy_block())).events.is_empty());
    }

    #[test]
    fn wrong_block_length_trips_invalid_measurement() {
        let mut c = ctl();
        let o = c.step(0.0, Some(&[0u16; 3]));
        assert_eq!(o.trip_causes, vec![TripCause::InvalidMeasurement]);
        assert_eq!(o.limit_discharge_w, 0.0);
    }

    #[test]
    fn metering_follows_previous_allocation() {
        let mut c = ctl();
        let mut r = healthy_block();
        r[0] = PCS_RUNNING;
        set_u32(&mut r, 1, 90_000);
        set_u64(&mut r, 19, 5_000);
        start(&mut c, 0, Direction::Discharge, 60_000.0);
        start(&mut c, 2, Direction::Discharge, 30_000.0);
        c.apply(Command::SetMeter {
            meter_id: 2,
            energy_wh: 100.0,
        })
        .unwrap();
        c.step(0.0, Some(&r));
        set_u64(&mut r, 19, 5_030);
        let o = c.step(1.0, Some(&r));
        assert_eq!(o.meter(0).unwrap().energy_wh, 20.0);
        assert_eq!(o.meter(2).unwrap().energy_wh, 110.0);
        assert_eq!(o.meter(0).unwrap().power_w, 60_000.0);
        c.apply(Command::StopSession { meter_id: 0 }).unwrap();
        c.apply(Command::StopSession { meter_id: 2 }).unwrap();
        set_u64(&mut r, 19, 5_060);
        let o = c.step(2.0, Some(&r));
        // The energy flowed under the allocation of the previous step.
        assert_eq!(o.meter(0).unwrap().energy_wh, 40.0);
        assert!(!o.meter(0).unwrap().active);
        // The PCS still delivers 90 kW: that is the stopped sessions' power ramping down, so
        // their meters own it (2:1, as they had it) and are settling.
        assert!(o.meter(0).unwrap().settling && o.meter(2).unwrap().settling);
        set_u64(&mut r, 19, 5_075);
        set_u32(&mut r, 1, 0);
        let o = c.step(3.0, Some(&r));
        assert_eq!(o.meter(0).unwrap().energy_wh, 50.0);
        assert_eq!(o.meter(2).unwrap().energy_wh, 125.0);
        assert_eq!(o.unattributed_wh, (0.0, 0.0));
        // The flow has stopped: the tails are over, the meters final.
        assert!(!o.meter(0).unwrap().settling && !o.meter(2).unwrap().settling);
        set_u64(&mut r, 19, 5_080);
        let o = c.step(4.0, Some(&r));
        assert_eq!(o.meter(0).unwrap().energy_wh, 50.0);
        assert_eq!(o.unattributed_wh, (5.0, 0.0));
    }

    #[test]
    fn power_handed_to_another_session_leaves_no_tail() {
        let mut c = ctl();
        let mut r = healthy_block();
        r[0] = PCS_RUNNING;
        set_u32(&mut r, 1, 100_000);
        set_u64(&mut r, 19, 1_000);
        set_u32(&mut r, 13, 100_000); // the BMS allows 100 kW of discharge
        start(&mut c, 0, Direction::Discharge, 100_000.0);
        start(&mut c, 1, Direction::Discharge, 100_000.0);
        c.step(0.0, Some(&r)); // 50 kW each
        set_u64(&mut r, 19, 1_010);
        c.step(1.0, Some(&r));
        c.apply(Command::StopSession { meter_id: 0 }).unwrap();
        set_u64(&mut r, 19, 1_020);
        let o = c.step(2.0, Some(&r));
        // Session 1 takes the 100 kW at once; the flow is all its own, session 0 is final.
        assert_eq!(o.allocations, vec![(1, 100_000.0)]);
        assert!(!o.meter(0).unwrap().settling);
        set_u64(&mut r, 19, 1_030);
        let o = c.step(3.0, Some(&r));
        assert_eq!(o.meter(0).unwrap().energy_wh, 10.0);
        assert_eq!(o.meter(1).unwrap().energy_wh, 20.0);
    }

    #[test]
    fn energy_during_a_lost_link_goes_to_the_sessions_that_had_the_power() {
        let mut c = ctl();
        let mut r = healthy_block();
        r[0] = PCS_RUNNING;
        set_u32(&mut r, 1, 90_000);
        set_u64(&mut r, 19, 2_000);
        start(&mut c, 0, Direction::Discharge, 60_000.0);
        start(&mut c, 1, Direction::Discharge, 30_000.0);
        c.step(0.0, Some(&r));
        set_u64(&mut r, 19, 2_030);
        c.step(1.0, Some(&r));
        // Silence: allocations go to 0 (trip), the PCS runs on until its watchdog.
        for i in 0..20 {
            c.step(2.0 + f64::from(i) * 0.1, None);
        }
        set_u64(&mut r, 19, 2_090);
        set_u32(&mut r, 1, 0);
        let o = c.step(5.0, Some(&r));
        assert_eq!(o.meter(0).unwrap().energy_wh, 20.0 + 40.0);
        assert_eq!(o.meter(1).unwrap().energy_wh, 10.0 + 20.0);
        assert_eq!(o.unattributed_wh, (0.0, 0.0));
        assert!(!o.meter(0).unwrap().settling);
    }

    #[test]
    fn site_power_is_no_sessions_energy() {
        use crate::site::SiteParams;
        let params = ControlParams {
            site: Some(SiteParams {
                import_max_w: Some(800_000.0),
                // Aim exactly at the limit: these tests are about sessions and energy.
                grid_limit_margin: 0.0,
                ..SiteParams::default()
            }),
            ..ControlParams::default()
        };
        let mut c = Controller::new(params);
        let mut r = healthy_block();
        r[0] = PCS_RUNNING;
        set_u64(&mut r, 19, 1_000);
        start(&mut c, 0, Direction::Discharge, 50_000.0);
        // 950 kW of load on an 800 kW connection: the session gives its 50 kW, the site the
        // other 100 kW.
        c.grid_reading(0.0, Ok(950_000.0));
        let o = c.step(0.0, Some(&r));
        assert_eq!(o.allocations, vec![(0, 50_000.0)]);
        assert_eq!(o.site.as_ref().unwrap().site_w, 100_000.0);
        // 150 kW flowed, 150 Wh counted: a third is the session's, the rest the site's.
        set_u32(&mut r, 1, 150_000);
        set_u64(&mut r, 19, 1_150);
        c.grid_reading(1.0, Ok(800_000.0));
        let o = c.step(1.0, Some(&r));
        assert_eq!(o.meter(0).unwrap().energy_wh, 50.0);
        assert_eq!(o.site.as_ref().unwrap().site_discharged_wh, 100.0);
        assert_eq!(o.unattributed_wh, (0.0, 0.0));
        assert!(
            o.meters.iter().all(|m| m.meter_id == 0),
            "no pseudo-meter shown"
        );
        // The session's reading of its power is its share only.
        assert!((o.meter(0).unwrap().power_w - 50_000.0).abs() < 1e-6);
    }

    #[test]
    fn sessions_the_site_holds_back_are_named_with_what_it_leaves_them() {
        use crate::site::SiteParams;
        let params = ControlParams {
            site: Some(SiteParams {
                import_max_w: Some(800_000.0),
                // Aim exactly at the limit: these tests are about sessions and energy.
                grid_limit_margin: 0.0,
                ..SiteParams::default()
            }),
            ..ControlParams::default()
        };
        let mut c = Controller::new(params);
        let r = healthy_block();
        start(&mut c, 1, Direction::Charge, 150_000.0);
        start(&mut c, 3, Direction::Charge, 10_000.0);
        // 740 kW of load: 60 kW left for 160 kW of charging, shared max-min fairly.
        c.grid_reading(0.0, Ok(740_000.0));
        let o = c.step(0.0, Some(&r));
        assert_eq!(o.allocations, vec![(1, 50_000.0), (3, 10_000.0)]);
        // Session 3 gets all it asked for: only session 1 is held back by the site.
        assert_eq!(o.site.unwrap().curtailed, vec![(1, 50_000.0)]);
        c.grid_reading(0.1, Ok(500_000.0));
        let o = c.step(0.1, Some(&r));
        assert!(o.site.unwrap().curtailed.is_empty());
    }

    #[test]
    fn the_reserve_stops_discharge_sessions_but_not_the_site() {
        use crate::site::SiteParams;
        let params = ControlParams {
            site: Some(SiteParams {
                import_max_w: Some(800_000.0),
                reserve_soc_pct: Some(30.0),
                grid_limit_margin: 0.0,
                ..SiteParams::default()
            }),
            ..ControlParams::default()
        };
        let mut c = Controller::new(params);
        let mut r = healthy_block();
        r[7] = 300; // SoC 30.0 %: at the reserve
        start(&mut c, 0, Direction::Discharge, 50_000.0);
        c.grid_reading(0.0, Ok(500_000.0));
        let o = c.step(0.0, Some(&r));
        assert_eq!(o.allocations, vec![(0, 0.0)]);
        assert!(o
            .site
            .as_ref()
            .unwrap()
            .constraints
            .contains(&Constraint::Reserve));
        // The site may still use the battery (down to soc_min) for the hard limit.
        c.grid_reading(0.1, Ok(900_000.0));
        let o = c.step(0.1, Some(&r));
        assert_eq!(o.site.as_ref().unwrap().site_w, 100_000.0);
        // 30.5 %: still held (1 point of hysteresis); 31 %: the session gets power again.
        r[7] = 305;
        c.grid_reading(0.2, Ok(500_000.0));
        assert_eq!(c.step(0.2, Some(&r)).allocations, vec![(0, 0.0)]);
        r[7] = 310;
        c.grid_reading(0.3, Ok(500_000.0));
        assert_eq!(c.step(0.3, Some(&r)).allocations, vec![(0, 50_000.0)]);
    }

    #[test]
    fn commands_are_validated() {
        let mut c = ctl();
        let bad = Command::StartSession {
            meter_id: 0,
            direction: Direction::Charge,
            cap_w: -1.0,
        };
        assert_eq!(c.apply(bad).unwrap_err().field, "cap_w");
        let bad = Command::SetMeter {
            meter_id: 0,
            energy_wh: f64::NAN,
        };
        assert_eq!(c.apply(bad).unwrap_err().field, "energy_wh");
        // Unknown sessions are ignored, not errors.
        c.apply(Command::StopSession { meter_id: 9 }).unwrap();
        c.apply(Command::SetSessionCap {
            meter_id: 9,
            cap_w: 1.0,
        })
        .unwrap();
    }

    #[test]
    fn stalled_loop_does_not_jump() {
        let mut c = ctl();
        let r = healthy_block();
        start(&mut c, 0, Direction::Discharge, 150_000.0);
        c.step(0.0, Some(&r));
        let o = c.step(3600.0, Some(&r));
        // Two periods of 100 ms at 300 kW/s, written from the rule.
        assert!(o.setpoint_w <= 60_000.0 + 1e-6, "{}", o.setpoint_w);
    }

    // State-machine property test: random commands and readings, invariants after every step.
    #[derive(Clone, Debug)]
    enum Op {
        Start(u32, bool, f64),
        Cap(u32, f64),
        Sched(u32, Vec<(f64, f64)>),
        Stop(u32),
        Hold(u32, bool, f64),
        Unhold(u32),
        Group(u32, Option<u32>),
        GroupSched(u32, Vec<(f64, f64)>),
        Step { dt: f64, reading: Option<Reading> },
    }

    #[derive(Clone, Debug)]
    struct Reading {
        soc: u16,
        temp_max: i16,
        dc_v: u16,
        bms_dis: u32,
        bms_chg: u32,
        alarms: u32,
        state: u16,
        d_dis: u64,
        d_chg: u64,
    }

    fn op() -> impl Strategy<Value = Op> {
        let reading = (
            0u16..1001,
            -100i16..700,
            5000u16..9500,
            0u32..800_000,
            0u32..800_000,
            prop_oneof![Just(0u32), 0u32..2048],
            0u16..4,
            0u64..100,
            0u64..100,
        )
            .prop_map(
                |(soc, temp_max, dc_v, bms_dis, bms_chg, alarms, state, d_dis, d_chg)| Reading {
                    soc,
                    temp_max,
                    dc_v,
                    bms_dis,
                    bms_chg,
                    alarms,
                    state,
                    d_dis,
                    d_chg,
                },
            );
        prop_oneof![
            1 => (0u32..8, any::<bool>(), 0.0f64..300_000.0).prop_map(|(m, d, c)| Op::Start(m, d, c)),
            1 => (0u32..8, 0.0f64..300_000.0).prop_map(|(m, c)| Op::Cap(m, c)),
            1 => (0u32..8, proptest::collection::vec((0.0f64..20.0, 0.0f64..200_000.0), 0..4))
                .prop_map(|(m, s)| Op::Sched(m, s)),
            1 => (0u32..8).prop_map(Op::Stop),
            1 => (0u32..3, any::<bool>(), 0.0f64..400_000.0).prop_map(|(h, d, w)| Op::Hold(h, d, w)),
            1 => (0u32..3).prop_map(Op::Unhold),
            1 => (0u32..8, proptest::option::of(0u32..3)).prop_map(|(m, g)| Op::Group(m, g)),
            1 => (0u32..3, proptest::collection::vec((0.0f64..20.0, 0.0f64..300_000.0), 0..4))
                .prop_map(|(g, s)| Op::GroupSched(g, s)),
            4 => (0.0f64..0.5, proptest::option::weighted(0.9, reading))
                .prop_map(|(dt, reading)| Op::Step { dt, reading }),
        ]
    }

    proptest! {
        #[test]
        fn invariants_hold_under_any_sequence(ops in proptest::collection::vec(op(), 1..120)) {
            let mut c = ctl();
            let ramp = c.params().ramp_w_per_s;
            let session_max = c.params().session_max_w;
            let mut now = 0.0;
            let mut prev_setpoint: f64 = 0.0;
            let mut prev_meters: BTreeMap<u32, f64> = BTreeMap::new();
            let (mut dis, mut chg) = (1_000u64, 1_000u64);
            let mut caps: BTreeMap<u32, f64> = BTreeMap::new();
            let mut holds: BTreeMap<u32, (bool, f64)> = BTreeMap::new();
            let mut member: BTreeMap<u32, u32> = BTreeMap::new();
            let mut group_scheds: BTreeMap<u32, Schedule> = BTreeMap::new();
            let mut was_down = false;
            for op in ops {
                match op {
                    Op::Start(m, d, cap) => {
                        let direction = if d { Direction::Discharge } else { Direction::Charge };
                        c.apply(Command::StartSession { meter_id: m, direction, cap_w: cap }).unwrap();
                        caps.insert(m, cap);
                    }
                    Op::Cap(m, cap) => {
                        c.apply(Command::SetSessionCap { meter_id: m, cap_w: cap }).unwrap();
                        if let Some(x) = caps.get_mut(&m) { *x = cap; }
                    }
                    Op::Sched(m, mut s) => {
                        s.sort_by(|a, b| a.0.total_cmp(&b.0));
                        s.dedup_by(|a, b| a.0 == b.0);
                        let schedule = Schedule::new(s).unwrap();
                        c.apply(Command::SetSessionSchedule { meter_id: m, schedule }).unwrap();
                    }
                    Op::Stop(m) => {
                        c.apply(Command::StopSession { meter_id: m }).unwrap();
                        caps.remove(&m);
                    }
                    Op::Hold(h, d, w) => {
                        let direction = if d { Direction::Discharge } else { Direction::Charge };
                        c.apply(Command::SetHold { hold_id: h, direction, power_w: w }).unwrap();
                        holds.insert(h, (d, w));
                    }
                    Op::Unhold(h) => {
                        c.apply(Command::ClearHold { hold_id: h }).unwrap();
                        holds.remove(&h);
                    }
                    Op::Group(m, g) => {
                        c.apply(Command::SetMeterGroup { meter_id: m, group_id: g }).unwrap();
                        match g {
                            Some(g) => { member.insert(m, g); }
                            None => { member.remove(&m); }
                        }
                    }
                    Op::GroupSched(g, mut s) => {
                        s.sort_by(|a, b| a.0.total_cmp(&b.0));
                        s.dedup_by(|a, b| a.0 == b.0);
                        let schedule = Schedule::new(s).unwrap();
                        c.apply(Command::SetGroupSchedule { group_id: g, schedule: schedule.clone() }).unwrap();
                        group_scheds.insert(g, schedule);
                    }
                    Op::Step { dt, reading } => {
                        now += dt;
                        let block = reading.map(|rd| {
                            dis += rd.d_dis;
                            chg += rd.d_chg;
                            let mut r = healthy_block();
                            r[0] = rd.state;
                            r[5] = rd.dc_v;
                            r[7] = rd.soc;
                            r[9] = rd.temp_max as u16;
                            set_u32(&mut r, 13, rd.bms_dis);
                            set_u32(&mut r, 15, rd.bms_chg);
                            set_u32(&mut r, 17, rd.alarms);
                            set_u64(&mut r, 19, dis);
                            set_u64(&mut r, 23, chg);
                            r
                        });
                        let o = c.step(now, block.as_deref());
                        let sp = o.setpoint_w;
                        // Inside the limits in force.
                        prop_assert!(sp <= o.limit_discharge_w + 1e-6);
                        prop_assert!(-sp <= o.limit_charge_w + 1e-6);
                        prop_assert!(o.limit_discharge_w <= o.sub_limits.discharge.site.min(o.sub_limits.discharge.bms).min(o.sub_limits.discharge.soc).min(o.sub_limits.discharge.temperature) + 1e-6);
                        if o.tripped() || !o.link_up || block.is_some() && was_down {
                            prop_assert_eq!(sp, 0.0);
                        } else {
                            // The ramp rule: |setpoint| grows by at most ramp * dt (two periods
                            // at most) over what the previous one kept in its direction, and
                            // never goes past the net of the allocations (a decrease is at once).
                            let clamped = prev_setpoint.clamp(-o.limit_charge_w, o.limit_discharge_w);
                            let kept = if clamped * sp < 0.0 { 0.0 } else { clamped.abs() };
                            prop_assert!(sp.abs() <= kept + ramp * dt.min(0.2) + 1e-6,
                                "slew {} -> {} over dt {}", prev_setpoint, sp, dt);
                            let net: f64 = o.allocations.iter()
                                .map(|(id, a)| o.meter(*id).and_then(|m| m.direction).map_or(0.0, |d| d.sign() * a))
                                .sum();
                            prop_assert!(sp * net >= 0.0 && sp.abs() <= net.abs() + 1e-6,
                                "setpoint {} beyond the allocations' net {}", sp, net);
                        }
                        // Allocations: each within its cap, each direction within its limit.
                        let mut sum_dis = 0.0;
                        let mut sum_chg = 0.0;
                        for (id, a) in &o.allocations {
                            let cap = caps.get(id).copied().unwrap_or(0.0).min(session_max);
                            prop_assert!(*a >= 0.0 && *a <= cap + 1e-9);
                            match o.meter(*id).and_then(|m| m.direction) {
                                Some(Direction::Discharge) => sum_dis += a,
                                Some(Direction::Charge) => sum_chg += a,
                                None => prop_assert!(false, "allocation without a session"),
                            }
                        }
                        let held = |dis: bool| holds.values().filter(|h| h.0 == dis).map(|h| h.1).sum::<f64>();
                        prop_assert!(sum_dis <= (o.limit_discharge_w - held(true)).max(0.0) + 1e-6);
                        prop_assert!(sum_chg <= (o.limit_charge_w - held(false)).max(0.0) + 1e-6);
                        prop_assert!((o.holds_w.0 - held(true)).abs() < 1e-6);
                        // Each group within its schedule value, both directions together.
                        let mut by_group: BTreeMap<u32, f64> = BTreeMap::new();
                        for (id, a) in &o.allocations {
                            if let Some(g) = member.get(id) {
                                *by_group.entry(*g).or_default() += a;
                            }
                        }
                        for (g, total) in by_group {
                            if let Some(l) = group_scheds.get(&g).and_then(|s| s.limit_at(now)) {
                                prop_assert!(total <= l + 1e-6, "group {} total {} over {}", g, total, l);
                            }
                        }
                        // Meters never decrease.
                        for m in &o.meters {
                            prop_assert!(m.energy_wh >= prev_meters.get(&m.meter_id).copied().unwrap_or(0.0));
                            prev_meters.insert(m.meter_id, m.energy_wh);
                        }
                        prev_setpoint = sp;
                        was_down = !o.link_up;
                    }
                }
            }
        }
    }
}
