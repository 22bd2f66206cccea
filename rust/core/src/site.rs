//! Site energy management (design.md section 8), pure: the grid reading, the clocks and the
//! sessions' demand come in, the battery power for the site and the session budgets go out.
//!
//! Sign conventions: grid power + import / - export; battery power + discharge / - charge.
//! The hub's own load (everything behind the connection point but the battery) is estimated as
//! `load = grid + battery measured`, both read in the same cycle, so the estimate does not depend
//! on how fast the PCS follows its setpoint.
//!
//! ## Precedence (one place: `Site::decide`)
//! Strongest first, as design.md section 8 orders them. Each level bounds the battery's net
//! power `P` (sessions' discharge - sessions' charge + site power):
//! 1. protection: `-limit_charge <= P <= limit_discharge` (applied last, so nothing beats it);
//! 2. the connection's hard limits: `P >= load - grid_import_max` and
//!    `P <= max(0, load + grid_export_max)` (the battery never pushes the grid past the export
//!    limit, nor is it made to charge because something else exports);
//! 3. the CSMSs' limits on their sessions: already in the sessions' demand (`d0`, `c0`, after
//!    caps, schedules and groups), and the reserve (discharge sessions stop at
//!    `reserve_soc_pct`);
//! 4. the demand target (`P >= load - allowed import`), recharge and the time-of-use windows;
//! 5. what sessions ask for: `P = d0 - c0` when nothing above binds.
//!
//! A higher `P` than the sessions' net is made by curtailing charge sessions first and only then
//! by discharging for the site; a lower one by curtailing discharge sessions first (export limit)
//! and then charging for the site. So the site never charges while a discharge session runs nor
//! discharges while a charge session runs, and every Wh of the PCS belongs either to sessions or
//! to the site, never to both (`controller` meters the site's power apart: it is no session's
//! energy).
//!
//! ## The demand window
//! Billing windows of `demand_window_min` are aligned to the local wall clock (`Calendar`
//! offsets). The controller integrates the import energy `E` of the current window and, at each
//! step, allows for the rest of the window `A = ((1 - margin) * target * T - E) / R` (R = time
//! left): the import that, held to the end, ends the window at the target (less a margin for the
//! control lag and the meter's resolution). Only the excess of the load over `A` is discharged.
//! Import runs above the target while earlier low import left room; the battery is spent only
//! where it lowers the window's average, and a window ends at or below the target whenever the
//! battery's power covers `load - A`. Instantaneous clipping (`P = load - target`) is the special
//! case of a window that never had room, so this law never spends more than clipping.
//!
//! ## Meter faults
//! Silence holds the last valid reading until it is `grid_meter_timeout_ms` old; an answer that
//! is no reading (a sentinel, a wrong size) drops it at once. Without a valid reading: no site power at all (no discharge on stale data, no recharge either), charge
//! and discharge sessions held at most at what the last valid reading allowed them (nothing
//! before a first reading, where a limit exists), constraint `meter_stale` and a
//! `GridMeterLost` event. The first valid reading clears it (`GridMeterRestored`).

use std::fmt;

use crate::gridmeter::MeterProfile;

/// Hysteresis above `reserve_soc_pct` before discharge sessions may take energy again, so a SoC
/// reading that wobbles at the reserve does not start and stop them every cycle.
pub const RESERVE_HYSTERESIS_PCT: f64 = 1.0;
/// Longest time step integrated into the window's energy: a stalled loop does not invent energy.
const MAX_INTEGRATION_S: f64 = 5.0;

#[derive(Clone, Debug, PartialEq)]
pub struct SiteParams {
    pub meter_host: String,
    pub meter_port: u16,
    pub meter_unit_id: u8,
    pub meter_profile: MeterProfile,
    /// Request deadline of the meter, and the age after which a reading is stale.
    pub meter_timeout_ms: u32,
    pub import_max_w: Option<f64>,
    pub export_max_w: Option<f64>,
    pub peak_shave_w: Option<f64>,
    pub window_s: f64,
    pub recharge_below_w: Option<f64>,
    pub recharge_max_w: f64,
    pub reserve_soc_pct: Option<f64>,
    /// Fraction of the target kept in hand by the window law (control lag, meter resolution).
    pub peak_margin: f64,
    /// Fraction of the hard import/export limits the law aims inside them: a first-order PCS
    /// approaches an exactly aimed limit from above and crosses it only as the last watt rounds
    /// away, and a load step starts from the limit rather than below it. The limits themselves
    /// (what is reported and checked) stay as configured.
    pub grid_limit_margin: f64,
}

impl Default for SiteParams {
    fn default() -> Self {
        Self {
            meter_host: String::new(),
            meter_port: 502,
            meter_unit_id: 1,
            meter_profile: MeterProfile::Generic,
            meter_timeout_ms: 500,
            import_max_w: None,
            export_max_w: None,
            peak_shave_w: None,
            window_s: 900.0,
            recharge_below_w: None,
            recharge_max_w: 0.0,
            reserve_soc_pct: None,
            peak_margin: 0.01,
            grid_limit_margin: 0.01,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowMode {
    Discharge,
    Charge,
    Hold,
}

impl WindowMode {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "discharge" => Some(Self::Discharge),
            "charge" => Some(Self::Charge),
            "hold" => Some(Self::Hold),
            _ => None,
        }
    }
}

/// A time-of-use window as UTC epoch seconds `[start, end)`: the caller turns the local
/// `days`/`start`/`end` of `[[site.window]]` into these for the days ahead (DST included).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TouWindow {
    pub start_s: f64,
    pub end_s: f64,
    pub mode: WindowMode,
    pub power_w: f64,
}

/// The site's wall-clock calendar: UTC offsets of `timezone` from each instant on (ascending),
/// and the time-of-use windows. Empty offsets mean UTC.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Calendar {
    pub offsets: Vec<(f64, f64)>,
    pub windows: Vec<TouWindow>,
}

impl Calendar {
    /// The UTC offset (seconds) in force at `t`; before the first entry, the first one's.
    pub fn offset_at(&self, t: f64) -> f64 {
        let after = self.offsets.partition_point(|&(from, _)| from <= t);
        self.offsets
            .get(after.saturating_sub(1))
            .map_or(0.0, |o| o.1)
    }

    /// Start (UTC epoch seconds) of the clock-aligned window of `window_s` containing `t`.
    pub fn window_start(&self, t: f64, window_s: f64) -> f64 {
        let off = self.offset_at(t);
        ((t + off) / window_s).floor() * window_s - off
    }

    pub fn window_at(&self, t: f64) -> Option<&TouWindow> {
        self.windows.iter().find(|w| w.start_s <= t && t < w.end_s)
    }
}

/// Why power is what it is: each active site constraint, as named in status and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Constraint {
    MeterStale,
    Protection,
    GridImportMax,
    GridExportMax,
    Reserve,
    PeakShave,
    Recharge,
    WindowDischarge,
    WindowCharge,
    WindowHold,
}

impl Constraint {
    pub const ALL: [Constraint; 10] = [
        Constraint::MeterStale,
        Constraint::Protection,
        Constraint::GridImportMax,
        Constraint::GridExportMax,
        Constraint::Reserve,
        Constraint::PeakShave,
        Constraint::Recharge,
        Constraint::WindowDischarge,
        Constraint::WindowCharge,
        Constraint::WindowHold,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Self::MeterStale => "meter_stale",
            Self::Protection => "protection",
            Self::GridImportMax => "grid_import_max",
            Self::GridExportMax => "grid_export_max",
            Self::Reserve => "reserve",
            Self::PeakShave => "peak_shave",
            Self::Recharge => "recharge",
            Self::WindowDischarge => "window:discharge",
            Self::WindowCharge => "window:charge",
            Self::WindowHold => "window:hold",
        }
    }
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// What the step knows when the site decides.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SiteInput {
    pub mono_s: f64,
    pub wall_s: f64,
    /// The battery's measured AC power (+ discharge), if the PCS was read.
    pub battery_w: Option<f64>,
    /// Protection's limits (0 while tripped or without a link).
    pub limit_discharge_w: f64,
    pub limit_charge_w: f64,
    /// What the sessions would take with no site: sums of their allocations per direction.
    pub sessions_discharge_w: f64,
    pub sessions_charge_w: f64,
    /// Longest step in seconds (the control period): the window law never divides by less.
    pub period_s: f64,
}

/// The site's decision for one step.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SiteDecision {
    /// At most this much for discharge sessions together, and for charge sessions.
    pub discharge_budget_w: f64,
    pub charge_budget_w: f64,
    /// Battery power for the site itself (+ discharge, - charge).
    pub site_w: f64,
    pub constraints: Vec<Constraint>,
}

/// Why a cycle has no grid reading.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GridError {
    /// No answer (timeout, transport error, discovery not done): the last valid reading is
    /// held until it is `meter_timeout_ms` old.
    Silent(String),
    /// The meter answered with something that is not a reading ("not available", a wrong size,
    /// another model): the last reading is dropped at once.
    Invalid(String),
}

impl fmt::Display for GridError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Silent(m) | Self::Invalid(m) => f.write_str(m),
        }
    }
}

/// The site as reported with each step (status `site`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SiteStatus {
    pub grid_w: Option<f64>,
    pub grid_valid: bool,
    pub grid_meter_error: Option<String>,
    pub load_w: Option<f64>,
    pub battery_w: f64,
    pub site_w: f64,
    pub window_start_s: Option<f64>,
    pub window_avg_w: Option<f64>,
    pub window_target_w: Option<f64>,
    /// The import the window law allows now (W), when a target is set.
    pub window_allowed_w: Option<f64>,
    pub constraints: Vec<Constraint>,
    pub soc_pct: Option<f64>,
    /// Sessions the site holds below what they would get without it: (meter id, the power the
    /// site leaves them). What OCPP reports as the EMS's limit on a session.
    pub curtailed: Vec<(u32, f64)>,
    /// Energy the battery gave / took for the site, never any session's (Wh).
    pub site_discharged_wh: f64,
    pub site_charged_wh: f64,
}

/// Site events: the meter's health and changes of the constraint set (for the log).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SiteEvent {
    GridMeterLost(String),
    GridMeterRestored,
    Constraints(Vec<Constraint>),
}

#[derive(Clone, Debug)]
pub struct Site {
    params: SiteParams,
    calendar: Calendar,
    /// Last valid reading: (W, monotonic time).
    grid: Option<(f64, f64)>,
    grid_error: Option<String>,
    /// A reading arrived since the last decision.
    grid_new: bool,
    /// The hub load estimated at the last reading (grid + the battery measured in the same
    /// cycle): a held grid reading is only ever paired with the battery power of its time, or a
    /// battery that moved since would shift the estimate by its own move.
    load_at_reading: Option<f64>,
    /// Whether the stale state was announced (`GridMeterLost`).
    lost: bool,
    /// Start of the current demand window and the import energy (W s) counted in it.
    window_start: Option<f64>,
    window_energy_ws: f64,
    last_integrated: Option<f64>,
    /// The grid power read at the start of the interval being integrated.
    integrating_w: Option<f64>,
    /// Session budgets the last valid reading allowed (held while the meter is stale).
    last_budgets: Option<(f64, f64)>,
    reserve_active: bool,
    constraints: Vec<Constraint>,
    status: SiteStatus,
}

impl Site {
    pub fn new(params: SiteParams) -> Self {
        Self {
            status: SiteStatus {
                window_target_w: params.peak_shave_w,
                ..SiteStatus::default()
            },
            params,
            calendar: Calendar::default(),
            grid: None,
            grid_error: None,
            grid_new: false,
            load_at_reading: None,
            lost: false,
            window_start: None,
            window_energy_ws: 0.0,
            last_integrated: None,
            integrating_w: None,
            last_budgets: None,
            reserve_active: false,
            constraints: Vec::new(),
        }
    }

    pub fn params(&self) -> &SiteParams {
        &self.params
    }

    pub fn set_calendar(&mut self, calendar: Calendar) {
        self.calendar = calendar;
    }

    /// One grid-meter read of this cycle: a value in W (+ import) or why there is none.
    pub fn grid_reading(&mut self, mono_s: f64, reading: Result<f64, GridError>) {
        match reading {
            Ok(w) if w.is_finite() => {
                self.grid = Some((w, mono_s));
                self.grid_new = true;
                self.grid_error = None;
            }
            Ok(w) => {
                self.grid = None;
                self.grid_error = Some(format!("implausible grid power {w}"));
            }
            Err(GridError::Silent(e)) => self.grid_error = Some(e),
            Err(GridError::Invalid(e)) => {
                self.grid = None;
                self.grid_error = Some(e);
            }
        }
    }

    /// Whether the last valid reading is recent enough to act on.
    pub fn fresh(&self, mono_s: f64) -> bool {
        let timeout = f64::from(self.params.meter_timeout_ms) / 1000.0;
        self.grid
            // A reading may be a little younger than the step's time (the engine reads the
            // meter after the PCS): only its age counts.
            .is_some_and(|(_, at)| mono_s - at <= timeout)
    }

    /// Discharge sessions are held at 0 while the reserve is active.
    pub fn reserve_blocks(&mut self, soc_pct: Option<f64>) -> bool {
        let Some(reserve) = self.params.reserve_soc_pct else {
            return false;
        };
        match soc_pct {
            Some(soc) if soc <= reserve => self.reserve_active = true,
            Some(soc) if soc >= reserve + RESERVE_HYSTERESIS_PCT => self.reserve_active = false,
            Some(_) => {}
            // No SoC: protection already allows nothing; keep the state.
            None => {}
        }
        self.reserve_active
    }

    pub fn status(&self) -> &SiteStatus {
        &self.status
    }

    /// Records the site's energy (from the controller's metering) in the status.
    pub fn set_energy(&mut self, discharged_wh: f64, charged_wh: f64) {
        self.status.site_discharged_wh = discharged_wh;
        self.status.site_charged_wh = charged_wh;
    }

    /// Integrates the window's import energy up to `mono_s` (with the last valid reading while
    /// the meter is stale: the best estimate there is) and rolls the window at its edge.
    fn integrate(&mut self, inp: &SiteInput) {
        let start = self.calendar.window_start(inp.wall_s, self.params.window_s);
        let dt = self
            .last_integrated
            .map_or(0.0, |t| (inp.mono_s - t).clamp(0.0, MAX_INTEGRATION_S));
        self.last_integrated = Some(inp.mono_s);
        if self.window_start != Some(start) {
            // A new window (or a wall clock that stepped into another one): count afresh.
            self.window_start = Some(start);
            self.window_energy_ws = 0.0;
            self.integrating_w = self.grid.map(|g| g.0);
            return;
        }
        // The power in force over the interval is the one read at its start.
        if let Some(w) = self.integrating_w {
            self.window_energy_ws += w.max(0.0) * dt;
        }
        self.integrating_w = self.grid.map(|g| g.0);
    }

    /// The import the window law allows from now to the window's end (W).
    fn allowed_import(&self, target_w: f64, wall_s: f64, period_s: f64) -> f64 {
        let t = self.params.window_s;
        let start = self.window_start.unwrap_or(wall_s);
        let left = (start + t - wall_s).max(period_s.max(1e-3));
        ((1.0 - self.params.peak_margin) * target_w * t - self.window_energy_ws) / left
    }

    /// The one place where the precedence of design.md section 8 is applied.
    pub fn decide(&mut self, inp: &SiteInput, events: &mut Vec<SiteEvent>) -> SiteDecision {
        self.integrate(inp);
        let p = &self.params;
        let d0 = inp.sessions_discharge_w.max(0.0);
        let c0 = inp.sessions_charge_w.max(0.0);
        let base = d0 - c0;
        let mut constraints = Vec::new();
        let window = self.calendar.window_at(inp.wall_s).copied();
        let fresh = self.fresh(inp.mono_s);
        let grid_w = self.grid.map(|g| g.0);
        if std::mem::take(&mut self.grid_new) {
            self.load_at_reading = match (grid_w, inp.battery_w) {
                (Some(g), Some(b)) if b.is_finite() => Some(g + b),
                _ => None,
            };
        }
        let load = if fresh && inp.battery_w.is_some() {
            self.load_at_reading
        } else {
            None
        };
        self.status.window_allowed_w = p
            .peak_shave_w
            .map(|g| self.allowed_import(g, inp.wall_s, inp.period_s));

        let decision = if let Some(load) = load {
            if self.lost {
                self.lost = false;
                events.push(SiteEvent::GridMeterRestored);
            }
            // Level 4: the demand target, the time-of-use window, recharge.
            let hold = window.is_some_and(|w| w.mode == WindowMode::Hold);
            let mut floor = f64::NEG_INFINITY;
            let mut peak_floor = f64::NEG_INFINITY;
            if let (Some(_), Some(allowed)) = (p.peak_shave_w, self.status.window_allowed_w) {
                if !hold {
                    peak_floor = load - allowed;
                    floor = peak_floor;
                }
            }
            let mut charge_req: f64 = 0.0;
            let mut recharging = false;
            match window {
                Some(w) if w.mode == WindowMode::Discharge => {
                    floor = floor.max(w.power_w);
                    constraints.push(Constraint::WindowDischarge);
                }
                Some(w) if w.mode == WindowMode::Charge => {
                    charge_req = w.power_w;
                    constraints.push(Constraint::WindowCharge);
                }
                Some(_) => constraints.push(Constraint::WindowHold),
                None => {
                    if let Some(below) = p.recharge_below_w {
                        // Import with the sessions as they are: load - base.
                        let headroom = below - (load - base);
                        charge_req = p.recharge_max_w.min(headroom).max(0.0);
                        // Recharging never raises import above the demand target either.
                        if let Some(g) = p.peak_shave_w {
                            charge_req = charge_req.min((g - (load - base)).max(0.0));
                        }
                        recharging = charge_req > 0.0;
                    }
                }
            }
            // Never curtail a discharge session to charge for the site.
            if d0 > 0.0 {
                charge_req = 0.0;
                recharging = false;
            }
            let level5 = base;
            let mut target = level5 - charge_req;
            if floor > target {
                target = floor;
                if peak_floor >= floor && peak_floor > level5 - charge_req {
                    constraints.push(Constraint::PeakShave);
                }
            }
            if recharging && target < level5 {
                constraints.push(Constraint::Recharge);
            }
            // Level 2: the connection's hard limits.
            // Aim a margin inside them (the constraint is still named after the limit).
            let inside = 1.0 - p.grid_limit_margin.clamp(0.0, 0.1);
            if let Some(i) = p.import_max_w {
                let lo = load - i * inside;
                if lo > target {
                    target = lo;
                    constraints.push(Constraint::GridImportMax);
                }
            }
            if let Some(e) = p.export_max_w {
                let hi = (load + e * inside).max(0.0);
                if hi < target {
                    target = hi;
                    constraints.push(Constraint::GridExportMax);
                }
            }
            // Level 1: protection.
            let clamped =
                target.clamp(-inp.limit_charge_w.max(0.0), inp.limit_discharge_w.max(0.0));
            if clamped != target && (clamped - level5).abs() > 1e-9 {
                constraints.push(Constraint::Protection);
            }
            let d = split(level5, clamped, d0, c0);
            self.last_budgets = Some((d.discharge_budget_w, d.charge_budget_w));
            d
        } else {
            // Stale or no reading: no site power; sessions no higher than the last valid
            // reading allowed (nothing, where a limit exists and none was ever read).
            // (With a fresh meter but no PCS reading, protection allows nothing anyway.)
            if !fresh {
                if !self.lost {
                    self.lost = true;
                    let why = self
                        .grid_error
                        .clone()
                        .unwrap_or_else(|| "no valid reading".to_string());
                    events.push(SiteEvent::GridMeterLost(why));
                }
                constraints.push(Constraint::MeterStale);
            }
            let import_limited = p.import_max_w.is_some() || p.peak_shave_w.is_some();
            let (bd, bc) = self.last_budgets.unwrap_or((
                if p.export_max_w.is_some() {
                    0.0
                } else {
                    f64::INFINITY
                },
                if import_limited { 0.0 } else { f64::INFINITY },
            ));
            SiteDecision {
                discharge_budget_w: bd.min(d0),
                charge_budget_w: bc.min(c0),
                site_w: 0.0,
                constraints: Vec::new(),
            }
        };
        if self.reserve_active {
            constraints.push(Constraint::Reserve);
        }
        constraints.sort_unstable();
        constraints.dedup();
        if constraints != self.constraints {
            self.constraints.clone_from(&constraints);
            events.push(SiteEvent::Constraints(constraints.clone()));
        }
        self.status.grid_w = grid_w;
        self.status.grid_valid = fresh;
        self.status.grid_meter_error.clone_from(&self.grid_error);
        self.status.load_w = load;
        self.status.battery_w = inp.battery_w.unwrap_or(0.0);
        self.status.site_w = decision.site_w;
        self.status.window_start_s = self.window_start;
        self.status.window_avg_w = self.window_start.and_then(|s| {
            let elapsed = inp.wall_s - s;
            (elapsed > 0.0).then(|| self.window_energy_ws / elapsed)
        });
        self.status.constraints.clone_from(&constraints);
        SiteDecision {
            constraints,
            ..decision
        }
    }
}

/// Splits a net battery power `p` against the sessions' `base = d0 - c0`: a higher one curtails
/// charge sessions first, then discharges for the site; a lower one curtails discharge sessions
/// first, then charges for the site.
pub fn split(base: f64, p: f64, d0: f64, c0: f64) -> SiteDecision {
    if p >= base {
        let up = p - base;
        let cut = up.min(c0);
        SiteDecision {
            discharge_budget_w: d0,
            charge_budget_w: c0 - cut,
            site_w: up - cut,
            constraints: Vec::new(),
        }
    } else {
        let down = base - p;
        let cut = down.min(d0);
        SiteDecision {
            discharge_budget_w: d0 - cut,
            charge_budget_w: c0,
            site_w: -(down - cut),
            constraints: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> SiteParams {
        SiteParams {
            import_max_w: Some(800_000.0),
            export_max_w: Some(0.0),
            peak_shave_w: Some(500_000.0),
            window_s: 900.0,
            recharge_below_w: Some(300_000.0),
            recharge_max_w: 100_000.0,
            reserve_soc_pct: Some(30.0),
            peak_margin: 0.0,
            grid_limit_margin: 0.02,
            ..SiteParams::default()
        }
    }

    /// Where the law aims for a hard limit of `limit_w` with the test parameters.
    fn aim(limit_w: f64) -> f64 {
        limit_w * (1.0 - params().grid_limit_margin)
    }

    fn assert_near(got: f64, want: f64) {
        assert!((got - want).abs() < 1e-6, "got {got}, want {want}");
    }

    fn input(t: f64, battery_w: f64, d0: f64, c0: f64) -> SiteInput {
        SiteInput {
            mono_s: t,
            wall_s: t,
            battery_w: Some(battery_w),
            limit_discharge_w: 400_000.0,
            limit_charge_w: 400_000.0,
            sessions_discharge_w: d0,
            sessions_charge_w: c0,
            period_s: 0.1,
        }
    }

    #[test]
    fn split_curtails_the_opposite_sessions_first() {
        let d = split(-100.0, 50.0, 0.0, 100.0);
        assert_eq!((d.charge_budget_w, d.site_w), (0.0, 50.0));
        let d = split(-100.0, -60.0, 0.0, 100.0);
        assert_eq!((d.charge_budget_w, d.site_w), (60.0, 0.0));
        let d = split(80.0, 30.0, 80.0, 0.0);
        assert_eq!((d.discharge_budget_w, d.site_w), (30.0, 0.0));
        let d = split(0.0, -40.0, 0.0, 0.0);
        assert_eq!(d.site_w, -40.0);
    }

    #[test]
    fn import_limit_curtails_charge_sessions_then_discharges() {
        let mut p = params();
        p.peak_shave_w = None;
        p.recharge_below_w = None;
        let mut s = Site::new(p);
        let mut ev = Vec::new();
        // Hub load 850 kW (grid 850 with the battery idle), a charge session asking 100 kW.
        s.grid_reading(0.0, Ok(850_000.0));
        let d = s.decide(&input(0.0, 0.0, 0.0, 100_000.0), &mut ev);
        // P >= 850 - 800 = 50 kW, aimed a margin inside (66 kW with 2 %): the charge session
        // goes (100 -> 0), then the rest for the site.
        assert_eq!(d.charge_budget_w, 0.0);
        assert_near(d.site_w, 850_000.0 - aim(800_000.0));
        assert!(d.site_w > 50_000.0);
        assert!(d.constraints.contains(&Constraint::GridImportMax));
        // Load 760 kW: 40 kW of headroom to the limit, less the margin, for the charge session;
        // no site power.
        s.grid_reading(0.1, Ok(760_000.0));
        let d = s.decide(&input(0.1, 0.0, 0.0, 100_000.0), &mut ev);
        assert_near(d.charge_budget_w, aim(800_000.0) - 760_000.0);
        assert_eq!(d.site_w, 0.0);
    }

    #[test]
    fn import_limit_beyond_protection_is_capped_by_it() {
        let mut p = params();
        p.peak_shave_w = None;
        let mut s = Site::new(p);
        s.grid_reading(0.0, Ok(1_500_000.0));
        let d = s.decide(&input(0.0, 0.0, 0.0, 0.0), &mut Vec::new());
        assert_eq!(d.site_w, 400_000.0);
        assert!(d.constraints.contains(&Constraint::Protection));
    }

    #[test]
    fn export_limit_curtails_discharge_sessions() {
        let mut s = Site::new(params());
        // Load 60 kW, a discharge session of 100 kW: the battery would export 40 kW.
        s.grid_reading(0.0, Ok(-40_000.0));
        let d = s.decide(&input(0.0, 100_000.0, 100_000.0, 0.0), &mut Vec::new());
        assert_eq!(d.discharge_budget_w, 60_000.0);
        assert_eq!(d.site_w, 0.0);
        assert!(d.constraints.contains(&Constraint::GridExportMax));
    }

    #[test]
    fn window_law_lets_import_run_above_target_while_room_is_left() {
        let mut p = params();
        p.import_max_w = None;
        p.recharge_below_w = None;
        let mut s = Site::new(p);
        let mut ev = Vec::new();
        // 450 s at 300 kW: 135 MJ used of 500 kW * 900 s = 450 MJ.
        let mut t = 900.0;
        while t < 1350.0 - 1e-9 {
            s.grid_reading(t, Ok(300_000.0));
            let d = s.decide(&input(t, 0.0, 0.0, 0.0), &mut ev);
            assert_eq!(d.site_w, 0.0);
            t += 1.0;
        }
        // Now 650 kW: the rest may average (450 - 135) MJ / 450 s = 700 kW: no discharge.
        s.grid_reading(t, Ok(650_000.0));
        let d = s.decide(&input(t, 0.0, 0.0, 0.0), &mut ev);
        assert_eq!(d.site_w, 0.0);
        // 800 kW: discharge only the excess over the allowed 700 kW (within a step's energy).
        s.grid_reading(t + 1.0, Ok(800_000.0));
        let d = s.decide(&input(t + 1.0, 0.0, 0.0, 0.0), &mut ev);
        let allowed = (450e6 - 135e6 - 650_000.0) / 449.0;
        assert!(
            (d.site_w - (800_000.0 - allowed)).abs() < 1.0,
            "{}",
            d.site_w
        );
        assert!(d.constraints.contains(&Constraint::PeakShave));
    }

    #[test]
    fn recharge_only_below_threshold_and_not_with_discharge_sessions() {
        let mut p = params();
        p.import_max_w = None;
        let mut s = Site::new(p);
        s.grid_reading(0.0, Ok(250_000.0));
        let d = s.decide(&input(0.0, 0.0, 0.0, 0.0), &mut Vec::new());
        // Headroom to 300 kW is 50 kW (< recharge_max 100 kW).
        assert_eq!(d.site_w, -50_000.0);
        assert!(d.constraints.contains(&Constraint::Recharge));
        s.grid_reading(0.1, Ok(100_000.0));
        let d = s.decide(&input(0.1, 0.0, 0.0, 0.0), &mut Vec::new());
        assert_eq!(d.site_w, -100_000.0);
        s.grid_reading(0.2, Ok(0.0));
        let d = s.decide(&input(0.2, 20_000.0, 20_000.0, 0.0), &mut Vec::new());
        assert_eq!(d.site_w, 0.0);
    }

    #[test]
    fn stale_meter_stops_site_power_and_holds_session_budgets() {
        let mut p = params();
        p.peak_shave_w = None;
        p.recharge_below_w = None;
        let mut s = Site::new(p);
        let mut ev = Vec::new();
        // Never read: nothing for charge sessions where an import limit exists.
        let d = s.decide(&input(0.0, 0.0, 0.0, 100_000.0), &mut ev);
        assert_eq!((d.charge_budget_w, d.site_w), (0.0, 0.0));
        assert!(matches!(ev[0], SiteEvent::GridMeterLost(_)));
        s.grid_reading(1.0, Ok(760_000.0));
        let d = s.decide(&input(1.0, 0.0, 0.0, 100_000.0), &mut ev);
        let headroom = aim(800_000.0) - 760_000.0;
        assert_near(d.charge_budget_w, headroom);
        assert!(ev.contains(&SiteEvent::GridMeterRestored));
        // Silent for longer than the timeout (500 ms): held at that budget, no site power even
        // though the load may now be far above the limit.
        s.grid_reading(1.2, Err(GridError::Silent("timeout".into())));
        let d = s.decide(&input(1.6, 0.0, 0.0, 100_000.0), &mut ev);
        assert_near(d.charge_budget_w, headroom);
        assert_eq!(d.site_w, 0.0);
        assert!(d.constraints.contains(&Constraint::MeterStale));
    }

    #[test]
    fn a_held_reading_is_paired_with_the_battery_power_of_its_time() {
        let mut p = params();
        p.peak_shave_w = None;
        p.recharge_below_w = None;
        let mut s = Site::new(p);
        s.grid_reading(0.0, Ok(760_000.0));
        let d = s.decide(&input(0.0, 0.0, 0.0, 150_000.0), &mut Vec::new());
        let headroom = aim(800_000.0) - 760_000.0;
        assert_near(d.charge_budget_w, headroom);
        // No new reading yet; the battery now charges that much. The load is still 760 kW:
        // pairing the old grid reading with today's battery would read less load and allow more.
        let d = s.decide(&input(0.1, -headroom, 0.0, 150_000.0), &mut Vec::new());
        assert_near(d.charge_budget_w, headroom);
    }

    #[test]
    fn a_not_available_reading_drops_the_held_one_at_once() {
        let mut p = params();
        p.peak_shave_w = None;
        p.recharge_below_w = None;
        let mut s = Site::new(p);
        s.grid_reading(0.0, Ok(900_000.0));
        let d = s.decide(&input(0.0, 0.0, 0.0, 0.0), &mut Vec::new());
        let need = 900_000.0 - aim(800_000.0);
        assert_near(d.site_w, need);
        // Silence 100 ms later: the reading is held (younger than the 500 ms timeout).
        s.grid_reading(0.1, Err(GridError::Silent("timeout".into())));
        let d = s.decide(&input(0.1, need, 0.0, 0.0), &mut Vec::new());
        assert_near(d.site_w, need);
        // "Not available": no site power from the next decision on.
        s.grid_reading(0.2, Err(GridError::Invalid("not available".into())));
        let d = s.decide(&input(0.2, 100_000.0, 0.0, 0.0), &mut Vec::new());
        assert_eq!(d.site_w, 0.0);
        assert!(d.constraints.contains(&Constraint::MeterStale));
    }

    fn with_window(mode: WindowMode, power_w: f64) -> Site {
        let mut p = params();
        p.recharge_below_w = Some(300_000.0);
        let mut s = Site::new(p);
        s.set_calendar(Calendar {
            offsets: vec![],
            windows: vec![TouWindow {
                start_s: 100.0,
                end_s: 200.0,
                mode,
                power_w,
            }],
        });
        s
    }

    #[test]
    fn a_discharge_window_gives_its_power_bounded_by_the_export_limit() {
        let mut s = with_window(WindowMode::Discharge, 200_000.0);
        // Before the window: 250 kW of load, recharge (50 kW up to 300 kW).
        s.grid_reading(99.0, Ok(250_000.0));
        let d = s.decide(&input(99.0, 0.0, 0.0, 0.0), &mut Vec::new());
        assert_eq!(d.site_w, -50_000.0);
        // In it: 200 kW out, no recharge; a 50 kW discharge session counts towards it.
        s.grid_reading(100.0, Ok(250_000.0));
        let d = s.decide(&input(100.0, 0.0, 50_000.0, 0.0), &mut Vec::new());
        assert_eq!((d.site_w, d.discharge_budget_w), (150_000.0, 50_000.0));
        assert!(d.constraints.contains(&Constraint::WindowDischarge));
        // 120 kW of load with export max 0: the battery gives 120 kW, no more.
        s.grid_reading(101.0, Ok(120_000.0));
        let d = s.decide(&input(101.0, 0.0, 0.0, 0.0), &mut Vec::new());
        assert_eq!(d.site_w, 120_000.0);
        assert!(d.constraints.contains(&Constraint::GridExportMax));
    }

    #[test]
    fn a_charge_window_never_breaks_the_import_limit_nor_the_demand_target() {
        let mut s = with_window(WindowMode::Charge, 200_000.0);
        // 200 kW of load, target 500 kW: the window's 200 kW would import 400 kW: fine.
        s.grid_reading(100.0, Ok(200_000.0));
        let d = s.decide(&input(100.0, 0.0, 0.0, 0.0), &mut Vec::new());
        assert_eq!(d.site_w, -200_000.0);
        // 450 kW of load, 100 s into the 900 s demand window that started counting now: the
        // rest of it may import 500 kW * 900 s / 800 s = 562.5 kW and still end at the target,
        // so the charge is cut to 112.5 kW.
        s.grid_reading(100.0, Ok(450_000.0));
        let d = s.decide(&input(100.0, 0.0, 0.0, 0.0), &mut Vec::new());
        let allowed = 500_000.0 * 900.0 / 800.0;
        assert!(
            (d.site_w + (allowed - 450_000.0)).abs() < 1.0,
            "{}",
            d.site_w
        );
        // 850 kW of load: no charging at all; the demand target even makes the battery give
        // what is above the allowed 562.5 kW (more than the 50 kW the connection needs).
        s.grid_reading(100.0, Ok(850_000.0));
        let d = s.decide(&input(100.0, 0.0, 0.0, 0.0), &mut Vec::new());
        assert!(
            (d.site_w - (850_000.0 - allowed)).abs() < 1.0,
            "{}",
            d.site_w
        );
    }

    #[test]
    fn a_hold_window_keeps_the_battery_out_of_everything_but_the_hard_limits() {
        let mut s = with_window(WindowMode::Hold, 0.0);
        // 600 kW of load, above the 500 kW target: no peak shaving while holding.
        s.grid_reading(100.0, Ok(600_000.0));
        let d = s.decide(&input(100.0, 0.0, 0.0, 0.0), &mut Vec::new());
        assert_eq!(d.site_w, 0.0);
        assert!(d.constraints.contains(&Constraint::WindowHold));
        // Below the recharge threshold: no recharge either.
        s.grid_reading(101.0, Ok(100_000.0));
        let d = s.decide(&input(101.0, 0.0, 0.0, 0.0), &mut Vec::new());
        assert_eq!(d.site_w, 0.0);
        // 900 kW: the connection's limit still binds (100 kW, plus the margin).
        s.grid_reading(102.0, Ok(900_000.0));
        let d = s.decide(&input(102.0, 0.0, 0.0, 0.0), &mut Vec::new());
        assert_near(d.site_w, 900_000.0 - aim(800_000.0));
    }

    #[test]
    fn reserve_has_hysteresis() {
        let mut s = Site::new(params());
        assert!(!s.reserve_blocks(Some(31.0)));
        assert!(s.reserve_blocks(Some(30.0)));
        assert!(s.reserve_blocks(Some(30.5)));
        assert!(!s.reserve_blocks(Some(31.0)));
    }

    #[test]
    fn windows_align_to_local_time_across_dst() {
        // Europe/Berlin-like: +3600 until 1_711_846_800 (2024-03-31 01:00 UTC), then +7200.
        let cal = Calendar {
            offsets: vec![(0.0, 3600.0), (1_711_846_800.0, 7200.0)],
            windows: vec![],
        };
        // 60-minute windows on local hours; a 45-minute-offset zone would shift them.
        assert_eq!(
            cal.window_start(1_711_846_800.0 - 1.0, 3600.0),
            1_711_846_800.0 - 3600.0
        );
        assert_eq!(
            cal.window_start(1_711_846_800.0 + 10.0, 3600.0),
            1_711_846_800.0
        );
        let nepal = Calendar {
            offsets: vec![(0.0, 20_700.0)],
            windows: vec![],
        };
        // 00:00 UTC is 05:45 local: the hour window started at 05:00 local = -2700 s.
        assert_eq!(nepal.window_start(0.0, 3600.0), -2700.0);
    }
}
