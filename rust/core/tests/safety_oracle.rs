//! An independent safety oracle for the power path (issue 11).
//!
//! A state-machine property test drives the real cycle (`engine::Engine`: reads, decode, the
//! control step, the profile's writes) against a PCS register image and clocks the test owns, for
//! both profiles, and checks **the integer that reaches the PCS registers** after every cycle.
//! Every expectation is written here from the inputs, never from the core's formulas:
//!
//! - the register map of design.md section 4 and the SunSpec model points, laid out by hand;
//! - the limits in force: `[protection]` and `[control]` values, the BMS limits and SoC, voltage,
//!   temperature and alarm readings served, and the OCPP limits (session caps, `session_max`,
//!   schedules evaluated at the wall clock the test set);
//! - the rules of docs/control.md: a "not available" value, an alarm, a fault or unknown state, a
//!   lost link or the first write on any new connection is 0 W; |setpoint| grows by at most
//!   `ramp * 2 periods` per step and a decrease holds at once; writes refused for the link timeout
//!   trip `pcs_write_fault`; WSetEna is never 0; WSetRvrtTms outlasts a live gateway's gaps.
//!
//! It generates sentinels, extreme and negative scale factors, PCS states above 3, wall-clock
//! steps both ways, stalls, reconnects within the timeout, and exception responses.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bess_core::client::{ClientError, ClientStats};
use bess_core::controller::Command;
use bess_core::engine::{Clock, Cycle, Engine, Pcs};
use bess_core::metering::Direction;
use bess_core::modbus::ExceptionCode;
use bess_core::params::ControlParams;
use bess_core::profile::PcsProfile;
use bess_core::protection::TripCause;
use bess_core::schedule::Schedule;
use proptest::prelude::*;

// ---- the PCS the test owns ---------------------------------------------------------------------

/// SunSpec layout of the test image (addresses of each model's ID register).
const SUNS: u16 = 40000;
const M1: u16 = SUNS + 2;
const M701: u16 = M1 + 2 + 66;
const M704: u16 = M701 + 2 + 153;
const M802: u16 = M704 + 2 + 65;
const END: u16 = M802 + 2 + 62;

struct FakePcs {
    regs: Vec<u16>,
    connected: bool,
    connects: u64,
    requests: u64,
    /// Requests time out (and the connection closes, as a real client's does).
    silent: bool,
    /// FC16 is answered with a Modbus exception (a PCS in local mode); reads still work.
    refuse_writes: bool,
    /// The next request fails with a transport error and closes the connection.
    drop_next: bool,
    /// Writes of the current cycle: (connection number, address, words).
    writes: Vec<(u64, u16, Vec<u16>)>,
}

impl FakePcs {
    fn new() -> Self {
        Self {
            regs: vec![0; 65536],
            connected: false,
            connects: 0,
            requests: 0,
            silent: false,
            refuse_writes: false,
            drop_next: false,
            writes: Vec::new(),
        }
    }

    fn begin(&mut self) -> Result<(), ClientError> {
        self.requests += 1;
        if self.drop_next {
            self.drop_next = false;
            self.connected = false;
            return Err(ClientError::Io(std::io::ErrorKind::ConnectionReset.into()));
        }
        if self.silent {
            self.connected = false;
            return Err(ClientError::Timeout);
        }
        if !self.connected {
            self.connected = true;
            self.connects += 1;
        }
        Ok(())
    }
}

impl Pcs for FakePcs {
    fn read_holding(&mut self, a: u16, n: u16, _: Instant) -> Result<Vec<u16>, ClientError> {
        self.begin()?;
        let lo = usize::from(a);
        Ok(self.regs[lo..lo + usize::from(n)].to_vec())
    }

    fn write_multiple(&mut self, a: u16, v: &[u16], _: Instant) -> Result<(), ClientError> {
        self.begin()?;
        if self.refuse_writes {
            return Err(ClientError::Device {
                function: 16,
                code: ExceptionCode(4),
            });
        }
        let lo = usize::from(a);
        self.regs[lo..lo + v.len()].copy_from_slice(v);
        self.writes.push((self.connects, a, v.to_vec()));
        Ok(())
    }

    fn is_connected(&self) -> bool {
        self.connected
    }

    fn stats(&self) -> ClientStats {
        ClientStats {
            requests: self.requests,
            connects: self.connects,
            ..ClientStats::default()
        }
    }

    fn skip_backoff(&mut self) {}

    fn close(&mut self) {
        self.connected = false;
    }
}

struct FakeClock {
    base: Instant,
    mono: Duration,
    wall_s: f64,
}

impl Clock for FakeClock {
    fn now(&self) -> Instant {
        self.base + self.mono
    }
    fn wall_s(&self) -> f64 {
        self.wall_s
    }
}

// ---- what the test serves ----------------------------------------------------------------------

/// One reading in engineering units; `na` names a point served as "not available".
#[derive(Clone, Debug)]
struct Reading {
    /// 0 off, 1 standby, 2 running, 3 fault, 4..=5 unknown.
    state: u16,
    soc_pct: f64,
    dc_v: f64,
    temp_max_c: f64,
    temp_min_c: f64,
    bms_dis_w: u32,
    bms_chg_w: u32,
    /// Index of one alarm (our bit numbering 0..=10), if any.
    alarm: Option<u32>,
    na: Option<Point>,
    d_dis_wh: u64,
    d_chg_wh: u64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Point {
    State,
    Soc,
    DcV,
    TempMax,
    BmsDis,
    BmsChg,
    Alarms,
    MeasuredW,
}

/// SunSpec scale factors of the test device.
#[derive(Clone, Copy, Debug)]
struct Sfs {
    wset: i16,
    w: i16,
    wmax: i16,
}

fn put32(r: &mut [u16], at: usize, v: u32) {
    r[at] = (v >> 16) as u16;
    r[at + 1] = v as u16;
}

fn put64(r: &mut [u16], at: usize, v: u64) {
    put32(r, at, (v >> 32) as u32);
    put32(r, at + 2, v as u32);
}

/// Lays out design.md section 4 at 100..128.
fn serve_generic(r: &mut [u16], rd: &Reading, energy: (u64, u64)) {
    let na = |p: Point| rd.na == Some(p);
    r[100] = if na(Point::State) { 0xFFFF } else { rd.state };
    put32(r, 101, if na(Point::MeasuredW) { 0x8000_0000 } else { 0 });
    r[103] = 4000;
    r[104] = 5000;
    r[105] = if na(Point::DcV) {
        0xFFFF
    } else {
        (rd.dc_v * 10.0) as u16
    };
    r[106] = 0;
    r[107] = if na(Point::Soc) {
        0xFFFF
    } else {
        (rd.soc_pct * 10.0) as u16
    };
    r[108] = 1000;
    r[109] = if na(Point::TempMax) {
        0x8000
    } else {
        ((rd.temp_max_c * 10.0) as i16) as u16
    };
    r[110] = ((rd.temp_min_c * 10.0) as i16) as u16;
    r[111] = 3300;
    r[112] = 3290;
    put32(
        r,
        113,
        if na(Point::BmsDis) {
            u32::MAX
        } else {
            rd.bms_dis_w
        },
    );
    put32(
        r,
        115,
        if na(Point::BmsChg) {
            u32::MAX
        } else {
            rd.bms_chg_w
        },
    );
    let alarms = if na(Point::Alarms) {
        u32::MAX
    } else {
        rd.alarm.map_or(0, |b| 1 << b)
    };
    put32(r, 117, alarms);
    put64(r, 119, energy.0);
    put64(r, 123, energy.1);
    r[127] = 100;
}

/// Our alarm bit -> (SunSpec model, bit of 701.Alrm or 802.Evt1), from the SunSpec model
/// definitions (802 Evt1: OVER_VOLT 9, UNDER_VOLT 11, OVER_TEMP 1, UNDER_TEMP 3, OVER_CUR 7,
/// GROUND_FAULT 22, CONTACTOR_ERROR 20, COMMUNICATION_ERROR 0; 701 Alrm: HW_FAULT 16,
/// GRID_FAULT 4 via the gateway's table, MANUAL_SHUTDOWN 6).
const SUNSPEC_ALARMS: [(u16, u32); 11] = [
    (802, 9),
    (802, 11),
    (802, 1),
    (802, 3),
    (802, 7),
    (802, 22),
    (701, 16),
    (701, 4),
    (802, 20),
    (802, 0),
    (701, 6),
];

/// Lays out a SunSpec device: common model, 701, 704, 802, end model.
fn layout_sunspec(r: &mut [u16], sfs: Sfs) {
    r[usize::from(SUNS)] = 0x5375;
    r[usize::from(SUNS) + 1] = 0x6E53;
    for (id, at, len) in [
        (1u16, M1, 66u16),
        (701, M701, 153),
        (704, M704, 65),
        (802, M802, 62),
    ] {
        let a = usize::from(at);
        r[a] = id;
        r[a + 1] = len;
        for w in &mut r[a + 2..a + 2 + usize::from(len)] {
            *w = 0xFFFF;
        }
    }
    r[usize::from(END)] = 0xFFFF;
    r[usize::from(END) + 1] = 0;
    let m701 = usize::from(M701);
    // A_SF, V_SF, Hz_SF, W_SF, PF_SF, VA_SF, Var_SF, TotWh_SF from offset 113.
    for (i, sf) in [-1i16, -1, -2, sfs.w, -3, 0, 0, 0].iter().enumerate() {
        r[m701 + 113 + i] = *sf as u16;
    }
    r[usize::from(M704) + 55] = sfs.wset as u16;
    let m802 = usize::from(M802);
    r[m802 + 54] = sfs.wmax as u16;
    r[m802 + 56] = (-1i16) as u16; // SoC_SF
    r[m802 + 58] = (-1i16) as u16; // SoH_SF
    r[m802 + 59] = (-1i16) as u16; // V_SF
    r[m802 + 60] = (-3i16) as u16; // CellV_SF
    r[m802 + 61] = (-1i16) as u16; // A_SF
    put32(r, m701 + 6, 0);
    put32(r, m802 + 26, 0);
}

fn scaled_u16(v: f64, sf: i16) -> u16 {
    (v / 10f64.powi(i32::from(sf))).floor().clamp(0.0, 65534.0) as u16
}

fn serve_sunspec(r: &mut [u16], rd: &Reading, sfs: Sfs, energy: (u64, u64)) {
    let na = |p: Point| rd.na == Some(p);
    let (m701, m802) = (usize::from(M701), usize::from(M802));
    // 701.InvSt: 3 RUNNING, 7 STANDBY, 0 OFF, 6 FAULT, 42 not a state.
    // Both state points unavailable: neither can say what the PCS does.
    r[m802 + 22] = if na(Point::State) { 0xFFFF } else { 4 }; // 4 = STANDBY, a real value
    r[m701 + 4] = if na(Point::State) {
        0xFFFF
    } else {
        match rd.state {
            0 => 0,
            1 => 7,
            2 => 3,
            3 => 6,
            _ => 42,
        }
    };
    r[m701 + 10] = if na(Point::MeasuredW) { 0x8000 } else { 0 };
    r[m701 + 14] = 100;
    r[m701 + 15] = 4000;
    put32(r, m701 + 17, 5000);
    put64(r, m701 + 19, energy.0);
    put64(r, m701 + 23, energy.1);
    r[m802 + 11] = if na(Point::Soc) {
        0xFFFF
    } else {
        (rd.soc_pct * 10.0) as u16
    };
    r[m802 + 13] = 1000;
    r[m802 + 34] = if na(Point::DcV) {
        0xFFFF
    } else {
        (rd.dc_v * 10.0) as u16
    };
    r[m802 + 37] = 3300;
    r[m802 + 40] = 3290;
    r[m802 + 44] = 0;
    r[m802 + 4] = if na(Point::BmsChg) {
        0xFFFF
    } else {
        scaled_u16(f64::from(rd.bms_chg_w), sfs.wmax)
    };
    r[m802 + 5] = if na(Point::BmsDis) {
        0xFFFF
    } else {
        scaled_u16(f64::from(rd.bms_dis_w), sfs.wmax)
    };
    let (mut alrm, mut evt1) = (0u32, 0u32);
    if let Some(b) = rd.alarm {
        let (model, bit) = SUNSPEC_ALARMS[b as usize];
        if model == 701 {
            alrm |= 1 << bit;
        } else {
            evt1 |= 1 << bit;
        }
    }
    if na(Point::Alarms) {
        evt1 = u32::MAX; // implemented at discovery (0), lost now
    }
    put32(r, m701 + 6, alrm);
    put32(r, m802 + 26, evt1);
}

/// What the BMS limits mean after the SunSpec encoding (floored to the scale).
fn served_bms(w: u32, profile: PcsProfile, sfs: Sfs) -> f64 {
    match profile {
        PcsProfile::Generic => f64::from(w),
        PcsProfile::SunSpec => {
            f64::from(scaled_u16(f64::from(w), sfs.wmax)) * 10f64.powi(i32::from(sfs.wmax))
        }
    }
}

// ---- the operations ----------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Op {
    Start(u32, bool, f64),
    Cap(u32, f64),
    Sched(u32, Vec<(f64, f64)>),
    Stop(u32),
    /// A cap of NaN or below 0: must be refused, nothing changes.
    BadCap(u32, f64),
    Cycle {
        dt_ms: u64,
        reading: Reading,
    },
    WallStep(f64),
    Drop,
    Silent(bool),
    RefuseWrites(bool),
}

fn reading() -> impl Strategy<Value = Reading> {
    let point = prop_oneof![
        Just(Point::State),
        Just(Point::Soc),
        Just(Point::DcV),
        Just(Point::TempMax),
        Just(Point::BmsDis),
        Just(Point::BmsChg),
        Just(Point::Alarms),
        Just(Point::MeasuredW),
    ];
    (
        prop_oneof![6 => Just(2u16), 2 => Just(1u16), 1 => 0u16..6],
        prop_oneof![3 => 10.0f64..90.0, 1 => 0.0f64..100.0],
        prop_oneof![8 => 650.0f64..850.0, 1 => 550.0f64..950.0],
        prop_oneof![8 => 20.0f64..50.0, 1 => 50.0f64..60.0],
        prop_oneof![4 => Just(500_000u32), 2 => 0u32..700_000, 1 => 0u32..2000],
        prop_oneof![4 => Just(500_000u32), 2 => 0u32..700_000],
        prop_oneof![12 => Just(None), 1 => (0u32..11).prop_map(Some)],
        prop_oneof![10 => Just(None), 1 => point.prop_map(Some)],
        0u64..50,
        0u64..50,
    )
        .prop_map(
            |(state, soc_pct, dc_v, temp_max_c, bms_dis_w, bms_chg_w, alarm, na, d, c)| Reading {
                state,
                soc_pct,
                dc_v,
                temp_max_c,
                temp_min_c: 10.0,
                bms_dis_w,
                bms_chg_w,
                alarm,
                na,
                d_dis_wh: d,
                d_chg_wh: c,
            },
        )
}

fn op() -> impl Strategy<Value = Op> {
    let cap = prop_oneof![0.0f64..300_000.0, Just(123_456.0), Just(15_000.0)];
    prop_oneof![
        2 => (0u32..4, any::<bool>(), cap.clone()).prop_map(|(m, d, c)| Op::Start(m, d, c)),
        2 => (0u32..4, cap).prop_map(|(m, c)| Op::Cap(m, c)),
        1 => (0u32..4, proptest::collection::vec((-60.0f64..60.0, 0.0f64..200_000.0), 0..4))
            .prop_map(|(m, s)| Op::Sched(m, s)),
        1 => (0u32..4).prop_map(Op::Stop),
        1 => (0u32..4, prop_oneof![Just(f64::NAN), Just(-1.0), Just(f64::INFINITY)])
            .prop_map(|(m, c)| Op::BadCap(m, c)),
        10 => (prop_oneof![8 => 50u64..150, 1 => 150u64..5000, 1 => 0u64..50], reading())
            .prop_map(|(dt_ms, reading)| Op::Cycle { dt_ms, reading }),
        1 => prop_oneof![-600.0f64..-1.0, 1.0f64..600.0, Just(86_400.0 * 365.0)]
            .prop_map(Op::WallStep),
        1 => Just(Op::Drop),
        1 => any::<bool>().prop_map(Op::Silent),
        1 => any::<bool>().prop_map(Op::RefuseWrites),
    ]
}

fn setup() -> impl Strategy<Value = (PcsProfile, u32, u32, f64, Sfs)> {
    (
        prop_oneof![Just(PcsProfile::Generic), Just(PcsProfile::SunSpec)],
        prop_oneof![Just(100u32), Just(250), Just(1000)],
        prop_oneof![Just(500u32), Just(1000), Just(3000)],
        prop_oneof![Just(300_000.0f64), Just(10_000.0), 1_000.0f64..500_000.0],
        (-10i16..=10, -3i16..=3, -2i16..=4).prop_map(|(wset, w, wmax)| Sfs { wset, w, wmax }),
    )
}

// ---- the reference -----------------------------------------------------------------------------

struct Session {
    discharge: bool,
    cap: f64,
    schedule: Vec<(f64, f64)>,
}

/// A schedule's limit at wall time `t`: the last period started, the first before any has.
fn schedule_at(s: &[(f64, f64)], t: f64) -> Option<f64> {
    let started: Vec<f64> = s.iter().filter(|p| p.0 <= t).map(|p| p.1).collect();
    started.last().or(s.first().map(|p| &p.1)).copied()
}

/// The setpoint (W, + discharge) in a cycle's writes, with WSetEna for SunSpec.
fn written_w(writes: &[(u64, u16, Vec<u16>)], profile: PcsProfile, sfs: Sfs) -> Option<(u64, f64)> {
    let (conn, words, raw) = match profile {
        PcsProfile::Generic => {
            let (conn, _, w) = writes.iter().find(|w| w.1 == 0 && w.2.len() == 5)?;
            (*conn, w, (u32::from(w[1]) << 16 | u32::from(w[2])) as i32)
        }
        PcsProfile::SunSpec => {
            let (conn, _, w) = writes.iter().find(|w| w.1 == M704 + 22)?;
            assert_eq!(
                w[0], 1,
                "WSetEna is never 0 (that is the inverter's own mode)"
            );
            (*conn, w, (u32::from(w[2]) << 16 | u32::from(w[3])) as i32)
        }
    };
    let _ = words;
    let w = match profile {
        PcsProfile::Generic => f64::from(raw),
        PcsProfile::SunSpec => f64::from(raw) * 10f64.powi(i32::from(sfs.wset)),
    };
    Some((conn, w))
}

const SITE_W: f64 = 600_000.0;
const SESSION_MAX_W: f64 = 150_000.0;

/// A value as the registers carry it (0.1 units, truncated), so the reference judges what the
/// PCS said, not what the test meant.
fn served(v: f64) -> f64 {
    f64::from((v * 10.0) as i32) / 10.0
}

/// Whether a reading allows no power at all. `alarms_implemented`: for SunSpec, whether the
/// alarm bitfield read as a real value when the connection's layout was discovered.
fn must_be_zero(rd: &Reading, profile: PcsProfile, alarms_implemented: bool) -> bool {
    let na = match rd.na {
        // SunSpec has no cell temperature point; an all-ones bitfield at discovery is "not
        // implemented", not a lost value.
        Some(Point::TempMax) => profile == PcsProfile::Generic,
        Some(Point::Alarms) => profile == PcsProfile::Generic || alarms_implemented,
        Some(_) => true,
        None => false,
    };
    na || rd.state >= 3
        || rd.alarm.is_some()
        || !(600.0..=900.0).contains(&served(rd.dc_v))
        || (profile == PcsProfile::Generic && !(0.0..=55.0).contains(&served(rd.temp_max_c)))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn the_written_setpoint_never_exceeds_a_limit(
        (profile, period_ms, timeout_ms, ramp, sfs) in setup(),
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        let params = ControlParams {
            period_ms,
            pcs_timeout_ms: timeout_ms,
            ramp_w_per_s: ramp,
            pcs_profile: profile,
            ..ControlParams::default()
        };
        let mut pcs = FakePcs::new();
        if profile == PcsProfile::SunSpec {
            layout_sunspec(&mut pcs.regs, sfs);
        }
        let clock = FakeClock { base: Instant::now(), mono: Duration::ZERO, wall_s: 1.75e9 };
        let mut e = Engine::new(params, pcs, clock);
        let period_s = f64::from(period_ms) / 1000.0;
        let timeout = Duration::from_millis(u64::from(timeout_ms));

        let mut sessions: BTreeMap<u32, Session> = BTreeMap::new();
        let mut energy = (1_000u64, 1_000u64);
        // The last setpoint the PCS received, and on which connection.
        let mut last: Option<(u64, f64)> = None;
        let mut steps_since_write = 0u32;
        let mut refused_since: Option<Duration> = None;
        let mut last_refused: Option<Duration> = None;
        let mut refusing = false;
        // Per connection (SunSpec): did its discovery see the alarm bitfield implemented?
        let mut alarms_implemented: BTreeMap<u64, bool> = BTreeMap::new();

        for op in ops {
            match op {
                Op::Start(m, d, cap) => {
                    e.ctl.apply(Command::StartSession {
                        meter_id: m,
                        direction: if d { Direction::Discharge } else { Direction::Charge },
                        cap_w: cap,
                    }).unwrap();
                    sessions.insert(m, Session { discharge: d, cap, schedule: Vec::new() });
                }
                Op::Cap(m, cap) => {
                    e.ctl.apply(Command::SetSessionCap { meter_id: m, cap_w: cap }).unwrap();
                    if let Some(s) = sessions.get_mut(&m) { s.cap = cap; }
                }
                Op::BadCap(m, cap) => {
                    let refused = e.ctl.apply(Command::SetSessionCap { meter_id: m, cap_w: cap }).is_err();
                    prop_assert!(refused, "a cap of {} was accepted", cap);
                }
                Op::Sched(m, periods) => {
                    let wall = e.clock.wall_s;
                    let mut s: Vec<(f64, f64)> = periods.iter().map(|p| (wall + p.0, p.1)).collect();
                    s.sort_by(|a, b| a.0.total_cmp(&b.0));
                    s.dedup_by(|a, b| a.0 == b.0);
                    e.ctl.apply(Command::SetSessionSchedule {
                        meter_id: m,
                        schedule: Schedule::new(s.clone()).unwrap(),
                    }).unwrap();
                    if let Some(x) = sessions.get_mut(&m) { x.schedule = s; }
                }
                Op::Stop(m) => {
                    e.ctl.apply(Command::StopSession { meter_id: m }).unwrap();
                    sessions.remove(&m);
                }
                Op::WallStep(d) => e.clock.wall_s += d,
                Op::Drop => e.pcs.drop_next = true,
                Op::Silent(on) => e.pcs.silent = on,
                Op::RefuseWrites(on) => {
                    e.pcs.refuse_writes = on;
                    refusing = on;
                    if !on { refused_since = None; last_refused = None; }
                }
                Op::Cycle { dt_ms, reading: rd } => {
                    e.clock.mono += Duration::from_millis(dt_ms);
                    e.clock.wall_s += dt_ms as f64 / 1000.0;
                    energy.0 += rd.d_dis_wh;
                    energy.1 += rd.d_chg_wh;
                    match profile {
                        PcsProfile::Generic => serve_generic(&mut e.pcs.regs, &rd, energy),
                        PcsProfile::SunSpec => serve_sunspec(&mut e.pcs.regs, &rd, sfs, energy),
                    }
                    // Writes refused continuously for the timeout, up to the previous cycle.
                    let fault_due = match (refused_since, last_refused) {
                        (Some(a), Some(b)) => b - a >= timeout && !e.pcs.silent,
                        _ => false,
                    };
                    e.pcs.writes.clear();
                    let connects_before = e.pcs.connects;
                    let requests_before = e.pcs.requests;
                    let cycle = e.cycle();
                    let now = e.clock.mono;
                    if e.pcs.connects != connects_before {
                        alarms_implemented.insert(e.pcs.connects, rd.na != Some(Point::Alarms));
                    }
                    if let Cycle::Stepped(out) = &cycle {
                        steps_since_write += 1;
                        if fault_due && out.link_up {
                            prop_assert!(out.trip_causes.contains(&TripCause::PcsWriteFault),
                                "writes refused since {:?}, now {:?}: {:?}", refused_since, now, out.trip_causes);
                        }
                    }
                    // A write was refused this cycle if the cycle stepped with the link up and the
                    // PCS kept the connection (a refusal does not close it).
                    let stepped_up = matches!(&cycle, Cycle::Stepped(o) if o.link_up);
                    if refusing && stepped_up && e.pcs.connected && e.pcs.requests > requests_before {
                        refused_since.get_or_insert(now);
                        last_refused = Some(now);
                    }
                    // A lost link is its own fault: writes are judged afresh once it is back.
                    let link_lost = matches!(&cycle, Cycle::Stepped(o) if !o.link_up);
                    if e.pcs.silent || link_lost {
                        refused_since = None;
                        last_refused = None;
                    }
                    let Some((conn, w)) = written_w(&e.pcs.writes, profile, sfs) else {
                        continue;
                    };
                    // 1. Zero when nothing may flow.
                    let fresh = last.is_none_or(|(c, _)| c != conn);
                    let implemented = alarms_implemented.get(&conn).copied().unwrap_or(true);
                    if fresh || must_be_zero(&rd, profile, implemented) {
                        prop_assert_eq!(w, 0.0, "fresh connection {} or a reading that allows nothing: {:?}", fresh, rd);
                    }
                    // 2. Within every limit in force, exactly (no rounding past it).
                    let wall = e.clock.wall_s;
                    let sum = |dis: bool| -> f64 {
                        sessions.values().filter(|s| s.discharge == dis).map(|s| {
                            let sched = schedule_at(&s.schedule, wall).unwrap_or(f64::INFINITY);
                            s.cap.min(SESSION_MAX_W).min(sched)
                        }).sum()
                    };
                    let p = |w: u32| served_bms(w, profile, sfs);
                    let mut lim_dis = SITE_W.min(p(rd.bms_dis_w)).min(sum(true));
                    let mut lim_chg = SITE_W.min(p(rd.bms_chg_w)).min(sum(false));
                    if served(rd.soc_pct) <= 5.0 { lim_dis = 0.0; }
                    if served(rd.soc_pct) >= 95.0 { lim_chg = 0.0; }
                    prop_assert!(w <= lim_dis + 1e-6, "discharge {} W over {} W", w, lim_dis);
                    prop_assert!(-w <= lim_chg + 1e-6, "charge {} W over {} W", -w, lim_chg);
                    // 3. Ramp: |w| grows by at most ramp over two periods per step since the
                    //    last write, over what the last write kept in this direction.
                    if let Some((_, prev)) = last {
                        let kept = if prev * w < 0.0 { 0.0 } else { prev.abs() };
                        let allowed = ramp * 2.0 * period_s * f64::from(steps_since_write);
                        // The last write was truncated to the register's unit; the ramp went on
                        // from the untruncated value.
                        let unit = match profile {
                            PcsProfile::Generic => 1.0,
                            PcsProfile::SunSpec => 10f64.powi(i32::from(sfs.wset)),
                        };
                        prop_assert!(w.abs() <= kept + allowed + unit + 1e-6,
                            "{} W after {} W: more than {} W of ramp", w, prev, allowed);
                    }
                    last = Some((conn, w));
                    steps_since_write = 0;
                    // 4. SunSpec reversion outlasts a live gateway's longest gap between writes.
                    if profile == PcsProfile::SunSpec {
                        let tms = u32::from(e.pcs.regs[usize::from(M704) + 31]) << 16
                            | u32::from(e.pcs.regs[usize::from(M704) + 32]);
                        prop_assert!(tms * 1000 >= 2 * period_ms + timeout_ms,
                            "WSetRvrtTms {} s for period {} ms, timeout {} ms", tms, period_ms, timeout_ms);
                        prop_assert_eq!(e.pcs.regs[usize::from(M704) + 30], 1, "WSetEnaRvrt");
                    }
                }
            }
        }
    }
}

/// The issue's own cases, as plain examples of the oracle's rules.
#[test]
fn reconnect_within_the_timeout_writes_zero_first() {
    let params = ControlParams::default();
    let clock = FakeClock {
        base: Instant::now(),
        mono: Duration::ZERO,
        wall_s: 1.75e9,
    };
    let mut e = Engine::new(params, FakePcs::new(), clock);
    let rd = Reading {
        state: 2,
        soc_pct: 50.0,
        dc_v: 700.0,
        temp_max_c: 25.0,
        temp_min_c: 20.0,
        bms_dis_w: 500_000,
        bms_chg_w: 500_000,
        alarm: None,
        na: None,
        d_dis_wh: 0,
        d_chg_wh: 0,
    };
    e.ctl
        .apply(Command::StartSession {
            meter_id: 0,
            direction: Direction::Discharge,
            cap_w: 100_000.0,
        })
        .unwrap();
    let mut last = 0.0;
    for _ in 0..20 {
        e.clock.mono += Duration::from_millis(100);
        serve_generic(&mut e.pcs.regs, &rd, (0, 0));
        e.pcs.writes.clear();
        e.cycle();
        last = written_w(
            &e.pcs.writes,
            PcsProfile::Generic,
            Sfs {
                wset: 0,
                w: 0,
                wmax: 0,
            },
        )
        .unwrap()
        .1;
    }
    assert_eq!(last, 100_000.0);
    // The connection drops and comes back 100 ms later, well inside the 1 s timeout.
    e.pcs.drop_next = true;
    e.clock.mono += Duration::from_millis(100);
    e.cycle();
    e.clock.mono += Duration::from_millis(100);
    e.pcs.writes.clear();
    e.cycle();
    let (conn, w) = written_w(
        &e.pcs.writes,
        PcsProfile::Generic,
        Sfs {
            wset: 0,
            w: 0,
            wmax: 0,
        },
    )
    .unwrap();
    assert_eq!(
        (conn, w),
        (2, 0.0),
        "the first write on the new connection is 0 W"
    );
}

// ---- the site (issue 14): the grid meter is a second device the test owns ----------------------

/// The grid meter: holding registers 0-1 (i32 W, + import), what the test serves this cycle.
#[derive(Default)]
struct MeterState {
    power_w: i32,
    silent: bool,
    sentinel: bool,
}

struct FakeMeter(std::sync::Arc<std::sync::Mutex<MeterState>>);

impl Pcs for FakeMeter {
    fn read_holding(&mut self, a: u16, n: u16, _: Instant) -> Result<Vec<u16>, ClientError> {
        let m = self.0.lock().unwrap();
        if m.silent {
            return Err(ClientError::Timeout);
        }
        let raw = if m.sentinel {
            0x8000_0000
        } else {
            m.power_w as u32
        };
        let mut regs = vec![0u16; 10];
        put32(&mut regs, 0, raw);
        Ok(regs[usize::from(a)..usize::from(a) + usize::from(n)].to_vec())
    }
    fn write_multiple(&mut self, _: u16, _: &[u16], _: Instant) -> Result<(), ClientError> {
        Err(ClientError::Device {
            function: 16,
            code: ExceptionCode(1),
        })
    }
    fn is_connected(&self) -> bool {
        true
    }
    fn stats(&self) -> ClientStats {
        ClientStats::default()
    }
    fn skip_backoff(&mut self) {}
    fn close(&mut self) {}
}

#[derive(Clone, Debug)]
enum SiteOp {
    Load(f64),
    Silent(bool),
    Sentinel(bool),
    Bms(u32),
    Step(u64),
}

fn site_op() -> impl Strategy<Value = SiteOp> {
    prop_oneof![
        2 => (0.0f64..1_500_000.0).prop_map(SiteOp::Load),
        1 => any::<bool>().prop_map(SiteOp::Silent),
        1 => any::<bool>().prop_map(SiteOp::Sentinel),
        1 => (0u32..600_000).prop_map(SiteOp::Bms),
        6 => (20u64..700).prop_map(SiteOp::Step),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// With no session, what reaches the PCS is site power only, and from the inputs alone:
    /// never above the BMS limit served, never more than the hard import limit needs for the
    /// hub's load at the meter's last valid reading, never export past the export limit then,
    /// and 0 W once that reading is older than the meter's timeout (silence) or at once after a
    /// "not available" answer: no site-driven discharge on stale or invalid data.
    #[test]
    fn site_power_reaching_the_pcs_is_bounded_and_fails_safe(
        ops in proptest::collection::vec(site_op(), 1..150)
    ) {
        use bess_core::engine::GridMeterLink;
        use bess_core::gridmeter::MeterProfile;
        use bess_core::site::SiteParams;
        use std::sync::{Arc, Mutex};

        const IMPORT_MAX: f64 = 800_000.0;
        const EXPORT_MAX: f64 = 0.0;
        // The law aims this fraction inside the hard limits (never more than that inside).
        const MARGIN: f64 = 0.01;
        const TIMEOUT_MS: u64 = 300;
        let params = ControlParams {
            site: Some(SiteParams {
                import_max_w: Some(IMPORT_MAX),
                export_max_w: Some(EXPORT_MAX),
                grid_limit_margin: MARGIN,
                meter_timeout_ms: TIMEOUT_MS as u32,
                ..SiteParams::default()
            }),
            ..ControlParams::default()
        };
        let clock = FakeClock { base: Instant::now(), mono: Duration::ZERO, wall_s: 1.75e9 };
        let mut e = Engine::new(params, FakePcs::new(), clock);
        let meter = Arc::new(Mutex::new(MeterState::default()));
        e.set_grid_meter(GridMeterLink::new(
            Box::new(FakeMeter(Arc::clone(&meter))),
            MeterProfile::Generic,
            Duration::from_millis(TIMEOUT_MS),
            Duration::from_millis(100),
        ));
        let mut rd = Reading {
            state: 2, soc_pct: 50.0, dc_v: 700.0, temp_max_c: 25.0, temp_min_c: 20.0,
            bms_dis_w: 500_000, bms_chg_w: 500_000, alarm: None, na: None,
            d_dis_wh: 0, d_chg_wh: 0,
        };
        let sfs = Sfs { wset: 0, w: 0, wmax: 0 };
        let mut load = 500_000.0;
        // What the PCS delivers (its measured power): the last setpoint written.
        let mut battery = 0.0f64;
        let mut last_valid_ms: Option<u64> = None;
        // The hub's load when the meter last gave a valid reading: all the site can know.
        let mut valid_load = 0.0f64;
        let mut now_ms = 0u64;
        for op in ops {
            match op {
                SiteOp::Load(w) => load = w,
                SiteOp::Silent(s) => meter.lock().unwrap().silent = s,
                SiteOp::Sentinel(s) => meter.lock().unwrap().sentinel = s,
                SiteOp::Bms(w) => rd.bms_dis_w = w,
                SiteOp::Step(ms) => {
                    now_ms += ms;
                    e.clock.mono = Duration::from_millis(now_ms);
                    {
                        let mut m = meter.lock().unwrap();
                        m.power_w = (load - battery) as i32;
                        if !m.silent && !m.sentinel {
                            last_valid_ms = Some(now_ms);
                            valid_load = load;
                        }
                        // "Not available" drops the held reading at once; silence holds it.
                        if !m.silent && m.sentinel {
                            last_valid_ms = None;
                        }
                    }
                    serve_generic(&mut e.pcs.regs, &rd, (0, 0));
                    put32(&mut e.pcs.regs, 101, battery as i32 as u32);
                    e.pcs.writes.clear();
                    e.cycle();
                    let Some((_, w)) = written_w(&e.pcs.writes, PcsProfile::Generic, sfs) else {
                        continue;
                    };
                    let stale = last_valid_ms.is_none_or(|t| now_ms - t > TIMEOUT_MS);
                    if stale {
                        prop_assert_eq!(w, 0.0, "site power on a stale meter");
                    }
                    prop_assert!(w <= f64::from(rd.bms_dis_w) + 1.0, "{} above the BMS", w);
                    let need = (valid_load - IMPORT_MAX * (1.0 - MARGIN)).max(0.0);
                    prop_assert!(w <= need + 1.0, "{} W for a need of {} W", w, need);
                    prop_assert!(w <= (valid_load + EXPORT_MAX * (1.0 - MARGIN)).max(0.0) + 1.0,
                        "export past the limit");
                    prop_assert!(w >= 0.0, "no session, no recharge configured: never charges");
                    battery = w;
                }
            }
        }
    }
}
