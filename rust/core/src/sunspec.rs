//! The `sunspec` profile: a PCS that describes itself with SunSpec information models.
//!
//! Pure apart from `discover`, which drives a caller-supplied read function (the runtime passes
//! its Modbus client, tests pass a register image):
//!
//! 1. find the "SunS" marker at 40000, 0 or 50000 and walk the model headers (ID, L) to the
//!    0xFFFF end model, recording where models 701, 704, 713 and 802 start;
//! 2. read their scale factors once per connection (a PCS may only change them while
//!    disconnected from its controller, and the runtime rediscovers after every reconnect);
//! 3. then each cycle: read 701 (ID..TotWhAbs), 713 (all, if present) and 802 (all), and write
//!    704 [WSetEna, WSetMod, WSet] and 802 [CtrlHb, AlmRst].
//!
//! "Not running" is WSet = 0 W with WSetEna = 1, never WSetEna = 0: on a model-704 device
//! disabling the function hands control back to the inverter's own mode, which keeps running at
//! its local setting. WSet is truncated toward zero, so a scaled value never exceeds the
//! setpoint the control step allowed.
//!
//! An all-ones bitfield32 (701.Alrm, 802.Evt1) is "not implemented". If it reads so at
//! discovery the device does not have the point and it reports no alarm; if it read as a real
//! value at discovery and turns all-ones later, the point was lost and the reading is
//! `invalid_measurement` (fail closed).
//!
//! Point offsets are those of the SunSpec model definitions (github.com/sunspec/models); the
//! simulator lays its models out from the same definitions (`sim/registers/sunspec.toml`).
//! Cell temperatures are not part of these models: `cell_temp_*` decode as `None` and the
//! temperature rules of protection are inactive (docs/register-maps.md).

use std::fmt;

use crate::measurements::{Measurements, PCS_FAULT, PCS_OFF, PCS_RUNNING, PCS_STANDBY};
use crate::modbus::MAX_READ_COUNT;
use crate::protection::{TripCause, ALARM_BITS};

/// Where the "SunS" marker is looked for, in order.
pub const BASES: [u16; 3] = [40000, 0, 50000];
pub const MARKER: [u16; 2] = [0x5375, 0x6E53];
pub const END_MODEL: u16 = 0xFFFF;
/// A device with more models than this is not a PCS we understand (and a loop guard).
const MAX_MODELS: usize = 100;

/// Point offsets from a model's ID register.
mod m701 {
    pub const INV_ST: usize = 4;
    pub const ALRM: usize = 6;
    pub const W: usize = 10;
    pub const A: usize = 14;
    pub const LLV: usize = 15;
    pub const HZ: usize = 17;
    pub const TOT_WH_INJ: usize = 19;
    pub const TOT_WH_ABS: usize = 23;
    /// Words read each cycle: ID .. TotWhAbs.
    pub const CYCLE_LEN: u16 = 27;
    /// A_SF, V_SF, Hz_SF, W_SF, PF_SF, VA_SF, Var_SF, TotWh_SF (in that order from here).
    pub const SF_START: u16 = 113;
    pub const SF_LEN: u16 = 8;
}

mod m704 {
    pub const WSET_ENA: u16 = 22;
    pub const WSET_RVRT: u16 = 26;
    pub const WSET_ENA_RVRT: u16 = 30;
    pub const WSET_SF: u16 = 55;
}

mod m713 {
    pub const SOC: usize = 4;
    pub const SOH: usize = 5;
    pub const PCT_SF: usize = 8;
    pub const LEN: u16 = 9;
}

mod m802 {
    pub const WCHA_RTE_MAX: usize = 4;
    pub const WDISCHA_RTE_MAX: usize = 5;
    pub const SOC: usize = 11;
    pub const SOH: usize = 13;
    pub const CTRL_HB: u16 = 19;
    pub const STATE: usize = 22;
    pub const EVT1: usize = 26;
    pub const V: usize = 34;
    pub const CELL_V_MAX: usize = 37;
    pub const CELL_V_MIN: usize = 40;
    pub const A: usize = 44;
    pub const WCHADISCHA_MAX_SF: usize = 54;
    pub const SOC_SF: usize = 56;
    pub const SOH_SF: usize = 58;
    pub const V_SF: usize = 59;
    pub const CELL_V_SF: usize = 60;
    pub const A_SF: usize = 61;
    pub const LEN: u16 = 62;
}

/// Registers each model must have (ID and L included) for the points we use.
const NEEDED: [(u16, u16); 4] = [
    (701, m701::SF_START + m701::SF_LEN),
    (704, m704::WSET_SF + 1),
    (713, m713::LEN),
    (802, m802::LEN),
];

/// Our trip causes -> (model, point offset of a 32-bit bitfield, bit). The same table as the
/// simulator's `[bind.alarms]`: 802.Evt1 carries the BMS events, 701.Alrm the inverter's.
const ALARMS: [(TripCause, u16, usize, u32); 11] = [
    (TripCause::CellOverVoltage, 802, m802::EVT1, 9),
    (TripCause::CellUnderVoltage, 802, m802::EVT1, 11),
    (TripCause::OverTemperature, 802, m802::EVT1, 1),
    (TripCause::UnderTemperature, 802, m802::EVT1, 3),
    (TripCause::OverCurrent, 802, m802::EVT1, 7),
    (TripCause::InsulationFault, 802, m802::EVT1, 22),
    (TripCause::PcsInternalFault, 701, m701::ALRM, 16),
    (TripCause::GridFault, 701, m701::ALRM, 4),
    (TripCause::ContactorFailure, 802, m802::EVT1, 20),
    (TripCause::BmsCommFailure, 802, m802::EVT1, 0),
    (TripCause::EmergencyStop, 701, m701::ALRM, 6),
];

/// A discovery or layout problem, worded for an operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SunSpecError {
    /// No "SunS" marker at any of `BASES`; carries the last read error, if any.
    NoMarker(Option<String>),
    /// A read during the model walk failed.
    Read(String),
    /// The walk ran past address 65535 or past `MAX_MODELS` without an end model.
    Truncated {
        at: u32,
    },
    /// A read returned a different number of words than asked for.
    ShortRead {
        address: u16,
        expected: usize,
        got: usize,
    },
    MissingModel(u16),
    /// A model is shorter than the points we use.
    BadLength {
        model: u16,
        length: u16,
        needed: u16,
    },
    /// A scale factor a command or a required measurement depends on is "not implemented"
    /// or outside -10..=10.
    BadScaleFactor {
        model: u16,
        point: &'static str,
    },
}

impl fmt::Display for SunSpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoMarker(None) => write!(f, "no SunSpec marker \"SunS\" at 40000, 0 or 50000"),
            Self::NoMarker(Some(e)) => write!(
                f,
                "no SunSpec marker \"SunS\" at 40000, 0 or 50000 (last error: {e})"
            ),
            Self::Read(e) => write!(f, "SunSpec model walk: {e}"),
            Self::Truncated { at } => {
                write!(
                    f,
                    "SunSpec model list has no end model (walk stopped at {at})"
                )
            }
            Self::ShortRead {
                address,
                expected,
                got,
            } => write!(
                f,
                "read at {address} returned {got} registers, expected {expected}"
            ),
            Self::MissingModel(m) => write!(f, "SunSpec model {m} not found"),
            Self::BadLength {
                model,
                length,
                needed,
            } => write!(
                f,
                "SunSpec model {model} has length {length}, needs at least {}",
                needed - 2
            ),
            Self::BadScaleFactor { model, point } => write!(
                f,
                "SunSpec scale factor {model}.{point} is not implemented or out of range"
            ),
        }
    }
}

impl std::error::Error for SunSpecError {}

/// One model header found by the walk: its id, the address of its ID register and L.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelHeader {
    pub id: u16,
    pub address: u16,
    pub length: u16,
}

/// Addresses of the models we use (ID register of each).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub base: u16,
    pub m701: u16,
    pub m704: u16,
    pub m713: Option<u16>,
    pub m802: u16,
}

impl Layout {
    /// Picks our models out of the walk's headers (the first of each id) and checks lengths.
    pub fn from_headers(base: u16, headers: &[ModelHeader]) -> Result<Self, SunSpecError> {
        let find = |id: u16| -> Result<Option<u16>, SunSpecError> {
            let Some(h) = headers.iter().find(|h| h.id == id) else {
                return Ok(None);
            };
            let needed = NEEDED.iter().find(|n| n.0 == id).map_or(2, |n| n.1);
            if u32::from(h.length) + 2 < u32::from(needed) {
                return Err(SunSpecError::BadLength {
                    model: id,
                    length: h.length,
                    needed,
                });
            }
            Ok(Some(h.address))
        };
        let required = |id: u16| find(id)?.ok_or(SunSpecError::MissingModel(id));
        Ok(Self {
            base,
            m701: required(701)?,
            m704: required(704)?,
            m713: find(713)?,
            m802: required(802)?,
        })
    }

    /// The reads that fetch every scale factor, in the order `with_scales` expects them.
    pub fn scale_reads(&self) -> Vec<(u16, u16)> {
        let mut v = vec![
            (self.m701 + m701::SF_START, m701::SF_LEN),
            (self.m704 + m704::WSET_SF, 1),
            (self.m802, m802::LEN),
            (self.m701 + m701::ALRM as u16, 2),
        ];
        if let Some(a) = self.m713 {
            v.push((a, m713::LEN));
        }
        v
    }

    /// The map, given the answers to `scale_reads()` (same order, same lengths).
    pub fn with_scales(self, blocks: &[Vec<u16>]) -> Result<SunSpecMap, SunSpecError> {
        let reads = self.scale_reads();
        check_blocks(&reads, blocks)?;
        let (s701, s704, s802) = (&blocks[0], &blocks[1], &blocks[2]);
        let w_set = sf(s704[0]).ok_or(SunSpecError::BadScaleFactor {
            model: 704,
            point: "WSet_SF",
        })?;
        let s713 = blocks.get(4);
        Ok(SunSpecMap {
            layout: self,
            scales: Scales {
                a701: sf(s701[0]),
                v701: sf(s701[1]),
                hz701: sf(s701[2]),
                w701: sf(s701[3]),
                wh701: sf(s701[7]),
                wset704: w_set,
                pct713: s713.and_then(|b| sf(b[m713::PCT_SF])),
                wmax802: sf(s802[m802::WCHADISCHA_MAX_SF]),
                soc802: sf(s802[m802::SOC_SF]),
                soh802: sf(s802[m802::SOH_SF]),
                v802: sf(s802[m802::V_SF]),
                cell_v802: sf(s802[m802::CELL_V_SF]),
                a802: sf(s802[m802::A_SF]),
                alrm701: u32_at(&blocks[3], 0) != u32::MAX,
                evt1_802: u32_at(s802, m802::EVT1) != u32::MAX,
            },
        })
    }
}

/// Scale factors read at connect; `None` = "not implemented" (0x8000) or out of range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scales {
    pub a701: Option<i16>,
    pub v701: Option<i16>,
    pub hz701: Option<i16>,
    pub w701: Option<i16>,
    pub wh701: Option<i16>,
    pub wset704: i16,
    pub pct713: Option<i16>,
    pub wmax802: Option<i16>,
    pub soc802: Option<i16>,
    pub soh802: Option<i16>,
    pub v802: Option<i16>,
    pub cell_v802: Option<i16>,
    pub a802: Option<i16>,
    /// Whether 701.Alrm and 802.Evt1 were implemented (not all ones) at discovery.
    pub alrm701: bool,
    pub evt1_802: bool,
}

/// A scale factor word: SunSpec allows -10..=10, 0x8000 means "not implemented".
fn sf(word: u16) -> Option<i16> {
    let v = word as i16;
    (-10..=10).contains(&v).then_some(v)
}

fn check_blocks(reads: &[(u16, u16)], blocks: &[Vec<u16>]) -> Result<(), SunSpecError> {
    if blocks.len() != reads.len() {
        return Err(SunSpecError::ShortRead {
            address: reads.get(blocks.len()).map_or(0, |r| r.0),
            expected: reads.len(),
            got: blocks.len(),
        });
    }
    for ((address, count), b) in reads.iter().zip(blocks) {
        if b.len() != usize::from(*count) {
            return Err(SunSpecError::ShortRead {
                address: *address,
                expected: usize::from(*count),
                got: b.len(),
            });
        }
    }
    Ok(())
}

/// A discovered SunSpec PCS: where its models are and their scale factors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SunSpecMap {
    pub layout: Layout,
    pub scales: Scales,
}

/// What made a SunSpec block unusable as a measurement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    Blocks(SunSpecError),
    /// A point the control decision depends on is "not implemented" (or its scale factor is).
    Missing(&'static str),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Blocks(e) => write!(f, "{e}"),
            Self::Missing(p) => write!(f, "SunSpec point {p} is not implemented"),
        }
    }
}

impl std::error::Error for DecodeError {}

fn u32_at(b: &[u16], off: usize) -> u32 {
    (u32::from(b[off]) << 16) | u32::from(b[off + 1])
}

fn scaled(raw: f64, sf: Option<i16>) -> Option<f64> {
    sf.map(|s| raw * 10f64.powi(i32::from(s)))
}

/// Unsigned 16-bit point: 0xFFFF is "not implemented".
fn u16_pt(b: &[u16], off: usize, sf: Option<i16>) -> Option<f64> {
    (b[off] != 0xFFFF)
        .then(|| f64::from(b[off]))
        .and_then(|r| scaled(r, sf))
}

/// Signed 16-bit point: 0x8000 is "not implemented".
fn i16_pt(b: &[u16], off: usize, sf: Option<i16>) -> Option<f64> {
    (b[off] != 0x8000)
        .then(|| f64::from(b[off] as i16))
        .and_then(|r| scaled(r, sf))
}

/// uint64 energy counter: all ones is "not implemented".
fn u64_pt(b: &[u16], off: usize, sf: Option<i16>) -> Option<u64> {
    let raw = (u64::from(u32_at(b, off)) << 32) | u64::from(u32_at(b, off + 2));
    if raw == u64::MAX {
        return None;
    }
    let s = sf?;
    let v = if s >= 0 {
        raw.saturating_mul(10u64.saturating_pow(u32::from(s.unsigned_abs())))
    } else {
        raw / 10u64.pow(u32::from(s.unsigned_abs()))
    };
    Some(v)
}

/// A bitfield32: all ones is "not implemented". On a device that did not implement the point at
/// discovery that is no bits; on one that did, the point is lost (`None`: fail closed).
fn bits32(b: &[u16], off: usize, implemented: bool) -> Option<u32> {
    match u32_at(b, off) {
        u32::MAX if implemented => None,
        u32::MAX => Some(0),
        v => Some(v),
    }
}

/// 701.InvSt (preferred) or 802.State -> our PCS state. An unknown value maps to `u16::MAX`,
/// which the plausibility check turns into `invalid_measurement`.
pub fn pcs_state(inv_st: u16, bat_state: u16) -> u16 {
    // 802.State FAULT wins: the battery may be faulted while the inverter merely stands by.
    if bat_state == 99 {
        return PCS_FAULT;
    }
    match inv_st {
        0 => PCS_OFF,
        1 | 2 | 5 | 7 => PCS_STANDBY, // SLEEPING, STARTING, SHUTTING_DOWN, STANDBY
        3 | 4 => PCS_RUNNING,         // RUNNING, THROTTLED
        6 => PCS_FAULT,
        0xFFFF => match bat_state {
            1 => PCS_OFF,                 // DISCONNECTED
            2 | 4 | 5 | 6 => PCS_STANDBY, // INITIALIZING, STANDBY, SOC_PROTECTION, SUSPENDING
            3 => PCS_RUNNING,             // CONNECTED
            _ => u16::MAX,
        },
        _ => u16::MAX,
    }
}

impl SunSpecMap {
    /// Blocks read each cycle, in the order `decode` expects them.
    pub fn reads(&self) -> Vec<(u16, u16)> {
        let l = &self.layout;
        let mut v = vec![(l.m701, m701::CYCLE_LEN), (l.m802, m802::LEN)];
        if let Some(a) = l.m713 {
            v.push((a, m713::LEN));
        }
        v
    }

    /// The cycle's blocks -> measurements. Points the decision needs (W, SoC, DC voltage, BMS
    /// limits, energy counters, state) must be implemented; the others decode as NaN ("not
    /// reported", left out of snapshots) and cell temperatures as `None`.
    pub fn decode(&self, blocks: &[Vec<u16>]) -> Result<Measurements, DecodeError> {
        check_blocks(&self.reads(), blocks).map_err(DecodeError::Blocks)?;
        let s = &self.scales;
        let (b701, b802) = (&blocks[0], &blocks[1]);
        let b713 = blocks.get(2);
        let need = |v: Option<f64>, name: &'static str| v.ok_or(DecodeError::Missing(name));
        let soc = b713
            .and_then(|b| u16_pt(b, m713::SOC, s.pct713))
            .or_else(|| u16_pt(b802, m802::SOC, s.soc802));
        let soh = b713
            .and_then(|b| u16_pt(b, m713::SOH, s.pct713))
            .or_else(|| u16_pt(b802, m802::SOH, s.soh802));
        let hz = (u32_at(b701, m701::HZ) != u32::MAX)
            .then(|| f64::from(u32_at(b701, m701::HZ)))
            .and_then(|r| scaled(r, s.hz701));
        let mut alarm_bits = 0u32;
        let alrm = bits32(b701, m701::ALRM, s.alrm701).ok_or(DecodeError::Missing("701.Alrm"))?;
        let evt1 = bits32(b802, m802::EVT1, s.evt1_802).ok_or(DecodeError::Missing("802.Evt1"))?;
        for (cause, model, _, bit) in ALARMS {
            let word = if model == 701 { alrm } else { evt1 };
            if word >> bit & 1 == 1 {
                if let Some(ours) = ALARM_BITS.iter().position(|c| *c == cause) {
                    alarm_bits |= 1 << ours;
                }
            }
        }
        let mv = |v: Option<f64>| v.map_or(f64::NAN, |x| x * 1000.0);
        Ok(Measurements {
            pcs_state: pcs_state(b701[m701::INV_ST], b802[m802::STATE]),
            measured_w: need(i16_pt(b701, m701::W, s.w701), "701.W")?,
            ac_voltage_v: u16_pt(b701, m701::LLV, s.v701).unwrap_or(f64::NAN),
            ac_frequency_hz: hz.unwrap_or(f64::NAN),
            ac_current_a: i16_pt(b701, m701::A, s.a701).unwrap_or(f64::NAN),
            dc_voltage_v: need(u16_pt(b802, m802::V, s.v802), "802.V")?,
            dc_current_a: i16_pt(b802, m802::A, s.a802).unwrap_or(f64::NAN),
            soc_pct: need(soc, "713.SoC / 802.SoC")?,
            soh_pct: soh.unwrap_or(f64::NAN),
            cell_temp_max_c: None,
            cell_temp_min_c: None,
            cell_v_max_mv: mv(u16_pt(b802, m802::CELL_V_MAX, s.cell_v802)),
            cell_v_min_mv: mv(u16_pt(b802, m802::CELL_V_MIN, s.cell_v802)),
            bms_max_discharge_w: need(
                u16_pt(b802, m802::WDISCHA_RTE_MAX, s.wmax802),
                "802.WDisChaRteMax",
            )?,
            bms_max_charge_w: need(
                u16_pt(b802, m802::WCHA_RTE_MAX, s.wmax802),
                "802.WChaRteMax",
            )?,
            alarm_bits,
            energy_discharged_wh: u64_pt(b701, m701::TOT_WH_INJ, s.wh701)
                .ok_or(DecodeError::Missing("701.TotWhInj"))?,
            energy_charged_wh: u64_pt(b701, m701::TOT_WH_ABS, s.wh701)
                .ok_or(DecodeError::Missing("701.TotWhAbs"))?,
        })
    }

    /// WSet in register units (int32, W * 10^-WSet_SF), truncated toward zero and saturating,
    /// so `wset_w(wset_raw(x))` never has a larger magnitude than `x`. NaN is 0.
    pub fn wset_raw(&self, setpoint_w: f64) -> i32 {
        if !setpoint_w.is_finite() {
            return 0;
        }
        let unit = 10f64.powi(i32::from(self.scales.wset704));
        let mut raw = (setpoint_w / unit)
            .trunc()
            .clamp(f64::from(i32::MIN), f64::from(i32::MAX));
        // The division may round up to the next integer (x = n * unit - tiny): step back.
        while raw != 0.0 && (raw * unit).abs() > setpoint_w.abs() {
            raw -= raw.signum();
        }
        raw as i32
    }

    /// What a WSet register value means in W.
    pub fn wset_w(&self, raw: i32) -> f64 {
        f64::from(raw) * 10f64.powi(i32::from(self.scales.wset704))
    }

    /// Each cycle's writes: 704 [WSetEna, WSetMod = 1 (watts), WSet] and 802 [CtrlHb, AlmRst].
    pub fn writes(
        &self,
        run: bool,
        setpoint_w: f64,
        watchdog: u16,
        fault_reset: bool,
    ) -> Vec<(u16, Vec<u16>)> {
        // Not running is 0 W held by us, never the inverter's own mode (WSetEna = 0).
        let w = if run { self.wset_raw(setpoint_w) } else { 0 } as u32;
        vec![
            (
                self.layout.m704 + m704::WSET_ENA,
                vec![1, 1, (w >> 16) as u16, w as u16],
            ),
            (
                self.layout.m802 + m802::CTRL_HB,
                vec![watchdog, u16::from(fault_reset)],
            ),
        ]
    }

    /// Written once per connection: WSetRvrt = 0 W and, after `revert_s` seconds without a
    /// new WSet, the PCS reverts to it with WSetEna kept on (WSetEnaRvrt = 1), i.e. holds 0 W.
    /// This is the SunSpec counterpart of the generic map's watchdog.
    pub fn connect_writes(&self, revert_s: u32) -> Vec<(u16, Vec<u16>)> {
        vec![
            (self.layout.m704 + m704::WSET_RVRT, vec![0, 0]),
            (
                self.layout.m704 + m704::WSET_ENA_RVRT,
                vec![1, (revert_s >> 16) as u16, revert_s as u16],
            ),
        ]
    }
}

/// The first of `BASES` that holds the "SunS" marker (inverter and meter discovery alike);
/// `Err` carries the last read error, if any read failed.
pub fn find_marker<F>(read: &mut F) -> Result<u16, Option<String>>
where
    F: FnMut(u16, u16) -> Result<Vec<u16>, String>,
{
    let mut last_err = None;
    for b in BASES {
        match read(b, 2) {
            Ok(w) if w == MARKER => return Ok(b),
            Ok(_) => {}
            Err(e) => last_err = Some(e),
        }
    }
    Err(last_err)
}

/// Finds the marker, walks the model list and reads the scale factors through `read(address,
/// count)`. Never panics on a malformed device: every problem is a `SunSpecError`.
pub fn discover<F>(mut read: F) -> Result<SunSpecMap, SunSpecError>
where
    F: FnMut(u16, u16) -> Result<Vec<u16>, String>,
{
    let base = find_marker(&mut read).map_err(SunSpecError::NoMarker)?;
    let mut headers = Vec::new();
    let mut at = u32::from(base) + 2;
    loop {
        if headers.len() > MAX_MODELS || at + 2 > 0x1_0000 {
            return Err(SunSpecError::Truncated { at });
        }
        let address = at as u16;
        let w = read(address, 2).map_err(SunSpecError::Read)?;
        if w.len() != 2 {
            return Err(SunSpecError::ShortRead {
                address,
                expected: 2,
                got: w.len(),
            });
        }
        if w[0] == END_MODEL {
            break;
        }
        headers.push(ModelHeader {
            id: w[0],
            address,
            length: w[1],
        });
        at += 2 + u32::from(w[1]);
    }
    let layout = Layout::from_headers(base, &headers)?;
    let mut blocks = Vec::new();
    for (address, count) in layout.scale_reads() {
        debug_assert!(count <= MAX_READ_COUNT);
        blocks.push(read(address, count).map_err(SunSpecError::Read)?);
    }
    layout.with_scales(&blocks)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::protection::assess;
    use crate::protection::ProtectionConfig;

    /// Model lengths (L) as served by the simulator.
    const LENGTHS: [(u16, u16); 6] = [
        (1, 66),
        (701, 153),
        (702, 50),
        (704, 65),
        (713, 7),
        (802, 62),
    ];

    /// A register image from `base` laid out like the simulator: marker, models, end model.
    pub(crate) struct Image {
        pub base: u16,
        pub words: Vec<u16>,
        pub at: Vec<(u16, u16)>,
    }

    impl Image {
        pub(crate) fn new(base: u16, models: &[(u16, u16)]) -> Self {
            let mut words = MARKER.to_vec();
            let mut at = Vec::new();
            for &(id, len) in models {
                at.push((id, base + words.len() as u16));
                words.push(id);
                words.push(len);
                // Unimplemented by default: 0xFFFF (uint), scale factors set below.
                words.extend(std::iter::repeat_n(0xFFFF, usize::from(len)));
            }
            words.extend([END_MODEL, 0]);
            let mut img = Self { base, words, at };
            if img.has(701) {
                for (i, sf) in [-1i16, -1, -2, 2, -3, 2, 2, 0].iter().enumerate() {
                    img.set(701, m701::SF_START as usize + i, *sf as u16);
                }
            }
            if img.has(704) {
                img.set(704, m704::WSET_SF as usize, 0);
            }
            if img.has(713) {
                img.set(713, m713::PCT_SF, (-1i16) as u16);
                img.set(713, 7, 3);
            }
            if img.has(802) {
                img.set(802, m802::WCHADISCHA_MAX_SF, 2);
                img.set(802, m802::SOC_SF, (-1i16) as u16);
                img.set(802, m802::SOH_SF, (-1i16) as u16);
                img.set(802, m802::V_SF, (-1i16) as u16);
                img.set(802, m802::CELL_V_SF, (-3i16) as u16);
                img.set(802, m802::A_SF, (-1i16) as u16);
            }
            img
        }

        pub(crate) fn standard() -> Self {
            let mut img = Self::new(40000, &LENGTHS);
            img.set(701, m701::INV_ST, 7);
            img.set32(701, m701::ALRM, 0);
            img.set(701, m701::W, (-1500i16) as u16); // -150 kW at W_SF 2
            img.set(701, m701::A, 2165);
            img.set(701, m701::LLV, 4000);
            img.set32(701, m701::HZ, 5000);
            img.set32(701, m701::TOT_WH_INJ, 0);
            img.set32(701, m701::TOT_WH_INJ + 2, 1234);
            img.set32(701, m701::TOT_WH_ABS, 1);
            img.set32(701, m701::TOT_WH_ABS + 2, 0);
            img.set(713, m713::SOC, 505);
            img.set(713, m713::SOH, 990);
            img.set(802, m802::SOC, 500);
            img.set(802, m802::WCHA_RTE_MAX, 5000);
            img.set(802, m802::WDISCHA_RTE_MAX, 4000);
            img.set(802, m802::STATE, 4);
            img.set32(802, m802::EVT1, 0);
            img.set(802, m802::V, 7000);
            img.set(802, m802::CELL_V_MAX, 3300);
            img.set(802, m802::CELL_V_MIN, 3290);
            img.set(802, m802::A, (-52i16) as u16);
            img
        }

        fn has(&self, id: u16) -> bool {
            self.at.iter().any(|a| a.0 == id)
        }

        pub(crate) fn addr(&self, id: u16) -> u16 {
            self.at.iter().find(|a| a.0 == id).map(|a| a.1).unwrap()
        }

        pub(crate) fn set(&mut self, id: u16, off: usize, v: u16) {
            let i = usize::from(self.addr(id) - self.base) + off;
            self.words[i] = v;
        }

        fn set32(&mut self, id: u16, off: usize, v: u32) {
            self.set(id, off, (v >> 16) as u16);
            self.set(id, off + 1, v as u16);
        }

        pub(crate) fn read(&self, address: u16, count: u16) -> Result<Vec<u16>, String> {
            let lo = usize::from(address)
                .checked_sub(usize::from(self.base))
                .ok_or("illegal data address")?;
            let hi = lo + usize::from(count);
            self.words
                .get(lo..hi)
                .map(<[u16]>::to_vec)
                .ok_or_else(|| "illegal data address".to_string())
        }

        fn blocks(&self, map: &SunSpecMap) -> Vec<Vec<u16>> {
            map.reads()
                .into_iter()
                .map(|(a, n)| self.read(a, n).unwrap())
                .collect()
        }
    }

    fn discover_image(img: &Image) -> Result<SunSpecMap, SunSpecError> {
        discover(|a, n| img.read(a, n))
    }

    #[test]
    fn discovers_the_simulator_layout() {
        let img = Image::standard();
        let map = discover_image(&img).unwrap();
        // The simulator's addresses (sim/sunspec.py layout()).
        assert_eq!(map.layout.base, 40000);
        assert_eq!(map.layout.m701, 40070);
        assert_eq!(map.layout.m704, 40277);
        assert_eq!(map.layout.m713, Some(40344));
        assert_eq!(map.layout.m802, 40353);
        assert_eq!(map.scales.w701, Some(2));
        assert_eq!(map.scales.wset704, 0);
        assert_eq!(map.scales.pct713, Some(-1));
    }

    #[test]
    fn finds_the_marker_at_other_bases_and_in_any_model_order() {
        for base in [0u16, 50000] {
            let img = Image::new(base, &[(802, 62), (1, 66), (704, 65), (701, 153)]);
            let map = discover_image(&img).unwrap();
            assert_eq!(map.layout.base, base);
            assert_eq!(map.layout.m802, base + 2);
            assert_eq!(map.layout.m713, None);
            assert_eq!(map.layout.m701, img.addr(701));
        }
    }

    #[test]
    fn malformed_devices_are_errors_not_panics() {
        let no_marker = |_: u16, n: u16| Ok(vec![0; usize::from(n)]);
        assert_eq!(discover(no_marker), Err(SunSpecError::NoMarker(None)));
        let refuses = |_: u16, _: u16| Err::<Vec<u16>, _>("exception 2".to_string());
        assert_eq!(
            discover(refuses),
            Err(SunSpecError::NoMarker(Some("exception 2".into())))
        );

        // A model list that runs off the end of the image (no end model).
        let mut img = Image::standard();
        let end = img.words.len() - 2;
        img.words.truncate(end);
        assert!(matches!(discover_image(&img), Err(SunSpecError::Read(_))));

        // A length that points past 65535.
        let img = Image::new(40000, &[(1, 30000)]);
        assert!(matches!(
            discover_image(&img),
            Err(SunSpecError::Truncated { .. })
        ));

        // A device that answers every header read with the same non-end model loops no more.
        let looping = |a: u16, _: u16| {
            Ok(if a == 40000 {
                MARKER.to_vec()
            } else {
                vec![1, 0]
            })
        };
        assert!(matches!(
            discover(looping),
            Err(SunSpecError::Truncated { .. })
        ));

        // Short answers.
        let short = |a: u16, _: u16| Ok(if a == 40000 { MARKER.to_vec() } else { vec![1] });
        assert!(matches!(
            discover(short),
            Err(SunSpecError::ShortRead { .. })
        ));

        // Too short a model, a missing model, an unimplemented WSet_SF.
        let img = Image::new(40000, &[(701, 153), (704, 20), (802, 62)]);
        assert_eq!(
            discover_image(&img),
            Err(SunSpecError::BadLength {
                model: 704,
                length: 20,
                needed: 56
            })
        );
        let img = Image::new(40000, &[(701, 153), (704, 65)]);
        assert_eq!(discover_image(&img), Err(SunSpecError::MissingModel(802)));
        let mut img = Image::standard();
        img.set(704, m704::WSET_SF as usize, 0x8000);
        assert_eq!(
            discover_image(&img),
            Err(SunSpecError::BadScaleFactor {
                model: 704,
                point: "WSet_SF"
            })
        );
        // Every error has an operator-readable message.
        assert!(SunSpecError::MissingModel(802).to_string().contains("802"));
    }

    #[test]
    fn decodes_with_scale_factors() {
        let img = Image::standard();
        let map = discover_image(&img).unwrap();
        let m = map.decode(&img.blocks(&map)).unwrap();
        assert_eq!(m.pcs_state, PCS_STANDBY);
        assert_eq!(m.measured_w, -150_000.0);
        assert!((m.ac_current_a - 216.5).abs() < 1e-9);
        assert!((m.ac_voltage_v - 400.0).abs() < 1e-9);
        assert!((m.ac_frequency_hz - 50.0).abs() < 1e-9);
        assert!((m.soc_pct - 50.5).abs() < 1e-9, "713.SoC preferred");
        assert!((m.soh_pct - 99.0).abs() < 1e-9);
        assert!((m.dc_voltage_v - 700.0).abs() < 1e-9);
        assert!((m.dc_current_a + 5.2).abs() < 1e-9);
        assert!((m.cell_v_max_mv - 3300.0).abs() < 1e-9);
        assert_eq!(m.bms_max_charge_w, 500_000.0);
        assert_eq!(m.bms_max_discharge_w, 400_000.0);
        assert_eq!(m.energy_discharged_wh, 1234);
        assert_eq!(m.energy_charged_wh, 1 << 32);
        assert_eq!((m.cell_temp_max_c, m.cell_temp_min_c), (None, None));
        assert_eq!(m.alarm_bits, 0);
        let a = assess(&ProtectionConfig::default(), &m);
        assert!(a.causes.is_empty(), "{:?}", a.causes);
        assert_eq!(a.limits.discharge.bms, 400_000.0);
    }

    #[test]
    fn not_implemented_points() {
        let mut img = Image::standard();
        img.set(713, m713::SOC, 0xFFFF);
        img.set(713, m713::SOH, 0xFFFF);
        img.set(701, m701::LLV, 0xFFFF);
        img.set32(701, m701::HZ, u32::MAX);
        img.set32(701, m701::ALRM, u32::MAX);
        img.set32(802, m802::EVT1, u32::MAX);
        let map = discover_image(&img).unwrap();
        let m = map.decode(&img.blocks(&map)).unwrap();
        assert!((m.soc_pct - 50.0).abs() < 1e-9, "falls back to 802.SoC");
        assert!(m.soh_pct.is_nan(), "neither SoH implemented: not reported");
        assert!(m.ac_voltage_v.is_nan() && m.ac_frequency_hz.is_nan());
        assert_eq!(m.alarm_bits, 0, "unimplemented bitfield reports no alarm");
        // A bitfield implemented at discovery that turns all ones was lost: fail closed.
        let good = Image::standard();
        let map_good = discover_image(&good).unwrap();
        for (model, off, name) in [(701, m701::ALRM, "701.Alrm"), (802, m802::EVT1, "802.Evt1")] {
            let mut lost = Image::standard();
            lost.set32(model, off, u32::MAX);
            assert_eq!(
                map_good.decode(&lost.blocks(&map_good)),
                Err(DecodeError::Missing(name))
            );
        }
        // One unimplemented at discovery that later reports bits is read as bits.
        let mut img2 = Image::standard();
        img2.set32(701, m701::ALRM, u32::MAX);
        let map2 = discover_image(&img2).unwrap();
        img2.set32(701, m701::ALRM, 1 << 6);
        assert_eq!(
            map2.decode(&img2.blocks(&map2)).unwrap().alarm_bits,
            1 << 10
        );

        img.set(701, m701::W, 0x8000);
        let m = map.decode(&img.blocks(&map));
        assert_eq!(m, Err(DecodeError::Missing("701.W")));
        let mut img = Image::standard();
        img.set(802, m802::WCHA_RTE_MAX, 0xFFFF);
        assert_eq!(
            map.decode(&img.blocks(&map)),
            Err(DecodeError::Missing("802.WChaRteMax"))
        );
        // A required point whose scale factor is not implemented is missing too.
        let mut img = Image::standard();
        img.set(802, m802::V_SF, 0x8000);
        let map = discover_image(&img).unwrap();
        assert_eq!(
            map.decode(&img.blocks(&map)),
            Err(DecodeError::Missing("802.V"))
        );
        // Wrong block shapes.
        assert!(matches!(map.decode(&[]), Err(DecodeError::Blocks(_))));
        let mut blocks = img.blocks(&map);
        blocks[1].pop();
        assert!(matches!(map.decode(&blocks), Err(DecodeError::Blocks(_))));
    }

    #[test]
    fn alarm_and_state_mapping() {
        let mut img = Image::standard();
        img.set32(802, m802::EVT1, 1 << 9 | 1 << 22);
        img.set32(701, m701::ALRM, 1 << 6);
        img.set(701, m701::INV_ST, 6);
        let map = discover_image(&img).unwrap();
        let m = map.decode(&img.blocks(&map)).unwrap();
        assert_eq!(m.pcs_state, PCS_FAULT);
        let causes = assess(&ProtectionConfig::default(), &m).causes;
        assert_eq!(
            causes,
            vec![
                TripCause::CellOverVoltage,
                TripCause::InsulationFault,
                TripCause::EmergencyStop,
                TripCause::PcsFaultState
            ]
        );
        assert_eq!(pcs_state(3, 3), PCS_RUNNING);
        assert_eq!(pcs_state(7, 99), PCS_FAULT);
        assert_eq!(pcs_state(0xFFFF, 3), PCS_RUNNING);
        assert_eq!(pcs_state(0xFFFF, 1), PCS_OFF);
        assert_eq!(pcs_state(42, 4), u16::MAX);
        // Every trip cause an alarm bit can raise is mapped from some SunSpec bit.
        for c in ALARM_BITS {
            assert!(ALARMS.iter().any(|a| a.0 == c), "{c:?} unmapped");
        }
    }

    #[test]
    fn encodes_writes() {
        let img = Image::standard();
        let map = discover_image(&img).unwrap();
        let w = map.writes(true, -150_000.0, 7, false);
        let sp = (-150_000i32) as u32;
        assert_eq!(
            w,
            vec![
                (40277 + 22, vec![1, 1, (sp >> 16) as u16, sp as u16]),
                (40353 + 19, vec![7, 0]),
            ]
        );
        assert_eq!(
            map.connect_writes(3),
            vec![(40277 + 26, vec![0, 0]), (40277 + 30, vec![1, 0, 3])]
        );
        // Not running: 0 W with the function still enabled.
        assert_eq!(map.writes(false, 50_000.0, 8, false)[0].1, vec![1, 1, 0, 0]);
        let mut scaled = map;
        scaled.scales.wset704 = 2;
        // Truncated toward zero: 123,456 W at WSet_SF 2 is 1234 (123,400 W), never 1235.
        assert_eq!(scaled.wset_raw(123_456.0), 1234);
        assert_eq!(scaled.wset_raw(-123_456.0), -1234);
        assert_eq!(scaled.wset_raw(150_099.0), 1500);
        assert_eq!(scaled.wset_raw(f64::MAX), i32::MAX);
        assert_eq!(scaled.wset_raw(f64::NAN), 0);
        scaled.scales.wset704 = -2;
        assert_eq!(scaled.wset_raw(0.3), 30);
        assert_eq!(scaled.wset_raw(1e9), i32::MAX);
        assert!(scaled.wset_w(i32::MAX) <= 1e9);
    }
}
