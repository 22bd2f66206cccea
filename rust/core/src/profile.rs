//! How the control loop talks to a PCS, whatever its register layout: a `PcsMap` turns the
//! cycle's raw register blocks into `Measurements` and a command into write requests.
//!
//! - `generic`: the fixed map of design.md section 4 (or one built from a name -> address
//!   table): one read block, one write block.
//! - `sunspec`: a layout discovered at connect time (`sunspec::discover`, run by the runtime,
//!   the only place with I/O): several read blocks and two write blocks per cycle.

use std::fmt;

use crate::measurements::{decode, Measurements};
use crate::regmap::RegisterMap;
use crate::sunspec::SunSpecMap;

/// Which layout the PCS speaks (`pcs_profile` parameter).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PcsProfile {
    #[default]
    Generic,
    SunSpec,
}

impl PcsProfile {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "generic" => Some(Self::Generic),
            "sunspec" => Some(Self::SunSpec),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Generic => "generic",
            Self::SunSpec => "sunspec",
        }
    }
}

/// A layout ready for cycles.
#[derive(Clone, Debug, PartialEq)]
pub enum PcsMap {
    Generic(RegisterMap),
    SunSpec(SunSpecMap),
}

/// Why a cycle's blocks are not a usable reading (the controller trips `invalid_measurement`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeFailure(pub String);

impl fmt::Display for DecodeFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DecodeFailure {}

impl PcsMap {
    /// (address, count) of every FC3 read of one cycle, in the order `decode` expects.
    pub fn reads(&self) -> Vec<(u16, u16)> {
        match self {
            Self::Generic(m) => vec![(m.read_start, m.read_count)],
            Self::SunSpec(m) => m.reads(),
        }
    }

    pub fn decode(&self, blocks: &[Vec<u16>]) -> Result<Measurements, DecodeFailure> {
        match self {
            Self::Generic(m) => match blocks {
                [one] => decode(m, one).map_err(|e| DecodeFailure(e.to_string())),
                _ => Err(DecodeFailure(format!(
                    "{} blocks for the generic map, expected 1",
                    blocks.len()
                ))),
            },
            Self::SunSpec(m) => m.decode(blocks).map_err(|e| DecodeFailure(e.to_string())),
        }
    }

    /// The FC16 writes of one cycle, in order. The setpoint is encoded truncated toward zero in
    /// the profile's unit, so the integer written never exceeds what the control step allowed.
    pub fn writes(
        &self,
        run: bool,
        setpoint_w: f64,
        watchdog: u16,
        fault_reset: bool,
    ) -> Vec<(u16, Vec<u16>)> {
        match self {
            Self::Generic(m) => vec![(
                m.write_start,
                m.write_block(run, generic_w(setpoint_w), watchdog, fault_reset),
            )],
            Self::SunSpec(m) => m.writes(run, setpoint_w, watchdog, fault_reset),
        }
    }

    /// The setpoint in W that `writes` encodes for `setpoint_w`.
    pub fn written_w(&self, run: bool, setpoint_w: f64) -> f64 {
        match self {
            Self::Generic(_) => f64::from(generic_w(setpoint_w)),
            Self::SunSpec(m) if run => m.wset_w(m.wset_raw(setpoint_w)),
            Self::SunSpec(_) => 0.0,
        }
    }

    /// Writes made once after each (re)connect, before the first cycle's.
    pub fn connect_writes(&self, revert_s: u32) -> Vec<(u16, Vec<u16>)> {
        match self {
            Self::Generic(_) => Vec::new(),
            Self::SunSpec(m) => m.connect_writes(revert_s),
        }
    }
}

/// The generic map's i32 W, truncated toward zero and saturating; NaN is 0.
fn generic_w(setpoint_w: f64) -> i32 {
    if setpoint_w.is_finite() {
        setpoint_w
            .trunc()
            .clamp(f64::from(i32::MIN), f64::from(i32::MAX)) as i32
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measurements::tests::healthy_block;
    use crate::sunspec::{discover, tests::Image};

    #[test]
    fn generic_is_todays_map() {
        let map = PcsMap::Generic(RegisterMap::generic());
        assert_eq!(map.reads(), vec![(100, 28)]);
        let m = map.decode(&[healthy_block()]).unwrap();
        assert_eq!(m.soc_pct, 50.0);
        assert!(map.decode(&[]).is_err());
        assert!(map.decode(&[vec![0; 3]]).is_err());
        assert_eq!(
            map.writes(true, -2.0, 7, true),
            vec![(0, vec![1, 0xFFFF, 0xFFFE, 7, 1])]
        );
        // Truncated toward zero, never rounded up past the allowed value.
        assert_eq!(map.writes(true, 9_999.9, 0, false)[0].1[1..3], [0, 9_999]);
        assert_eq!(map.written_w(true, -9_999.9), -9_999.0);
        assert_eq!(map.written_w(true, f64::NAN), 0.0);
        assert_eq!(map.written_w(true, 1e12), f64::from(i32::MAX));
        assert!(map.connect_writes(2).is_empty());
    }

    #[test]
    fn sunspec_reads_decodes_and_writes() {
        let img = Image::standard();
        let map = PcsMap::SunSpec(discover(|a, n| img.read(a, n)).unwrap());
        let blocks: Vec<Vec<u16>> = map
            .reads()
            .into_iter()
            .map(|(a, n)| img.read(a, n).unwrap())
            .collect();
        assert_eq!(blocks.len(), 3);
        assert_eq!(map.decode(&blocks).unwrap().measured_w, -150_000.0);
        assert_eq!(map.writes(false, 0.0, 1, true).len(), 2);
        assert_eq!(map.connect_writes(2).len(), 2);
        assert_eq!(PcsProfile::parse("sunspec"), Some(PcsProfile::SunSpec));
        assert_eq!(PcsProfile::parse("SunSpec"), None);
        assert_eq!(PcsProfile::Generic.name(), "generic");
    }
}
