//! The grid meter at the hub's connection point (design.md section 8): where its reading lives
//! and how it decodes. Pure apart from `discover`, which drives a caller-supplied read function
//! (the engine passes its second Modbus client, tests a register image).
//!
//! - `generic`: holding registers 0-1 = active power (i32 W, + import, - export), 2-5 energy
//!   imported, 6-9 energy exported (u64 Wh). One read of 10 words per cycle. `0x80000000` in the
//!   power register is "not available" (the same sentinel as the PCS map): no reading.
//! - `sunspec`: the "SunS" marker at 40000, 0 or 50000, then the model list walked to the first
//!   meter model 201, 202, 203 or 204 (single, split, wye, delta: the same points up to TotWh_SF).
//!   Each cycle reads ID..W_SF (23 words) and scales W by W_SF read in the same block, so a
//!   meter that changes its scale factor is never read with a stale one. W = `0x8000` or W_SF
//!   "not implemented" / outside -10..=10 is no reading; an ID that is no longer the model found
//!   at discovery (the device changed under us) is an error that makes the engine rediscover.
//!   SunSpec meters count W positive for power taken from the grid (import), as the generic map.

use std::fmt;

use crate::sunspec::{find_marker, END_MODEL};

/// Words read each cycle from a generic meter.
pub const GENERIC_LEN: u16 = 10;
/// Meter models we accept, in the order they are looked for.
pub const METER_MODELS: [u16; 4] = [201, 202, 203, 204];
/// Point offsets from a 20x model's ID register.
const W: usize = 18;
const W_SF: usize = 22;
/// Words read each cycle from a SunSpec meter: ID .. W_SF.
pub const SUNSPEC_LEN: u16 = 23;
const MAX_MODELS: usize = 100;

/// Which layout the grid meter speaks (`site_grid_meter_profile`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MeterProfile {
    #[default]
    Generic,
    SunSpec,
}

impl MeterProfile {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "generic" => Some(Self::Generic),
            "sunspec" => Some(Self::SunSpec),
            _ => None,
        }
    }
}

/// A layout ready for cycles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MeterMap {
    Generic,
    /// The meter model's id and the address of its ID register.
    SunSpec {
        model: u16,
        address: u16,
    },
}

/// Why a meter reading is not a reading.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MeterError {
    /// Discovery found no marker, no meter model, or could not read.
    Discovery(String),
    /// The answer has the wrong size.
    Size { expected: usize, got: usize },
    /// A "not available" value (or a scale factor that is not implemented).
    NotAvailable(&'static str),
    /// The SunSpec model at the discovered address is not the one found: rediscover.
    ModelChanged { expected: u16, got: u16 },
}

impl fmt::Display for MeterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Discovery(e) => write!(f, "grid meter discovery: {e}"),
            Self::Size { expected, got } => {
                write!(
                    f,
                    "grid meter answered {got} registers, expected {expected}"
                )
            }
            Self::NotAvailable(p) => write!(f, "grid meter point {p} is not available"),
            Self::ModelChanged { expected, got } => write!(
                f,
                "grid meter model {expected} is now {got} at its address: rediscovering"
            ),
        }
    }
}

impl std::error::Error for MeterError {}

impl MeterMap {
    /// (address, count) of the cycle's one read.
    pub fn read(&self) -> (u16, u16) {
        match self {
            Self::Generic => (0, GENERIC_LEN),
            Self::SunSpec { address, .. } => (*address, SUNSPEC_LEN),
        }
    }

    /// The cycle's block -> grid power in W (+ import from the grid, - export).
    pub fn decode(&self, block: &[u16]) -> Result<f64, MeterError> {
        let (_, count) = self.read();
        if block.len() != usize::from(count) {
            return Err(MeterError::Size {
                expected: usize::from(count),
                got: block.len(),
            });
        }
        match self {
            Self::Generic => {
                let raw = (u32::from(block[0]) << 16) | u32::from(block[1]);
                if raw == 0x8000_0000 {
                    return Err(MeterError::NotAvailable("active power"));
                }
                Ok(f64::from(raw as i32))
            }
            Self::SunSpec { model, .. } => {
                if block[0] != *model {
                    return Err(MeterError::ModelChanged {
                        expected: *model,
                        got: block[0],
                    });
                }
                if block[W] == 0x8000 {
                    return Err(MeterError::NotAvailable("W"));
                }
                let sf = block[W_SF] as i16;
                if !(-10..=10).contains(&sf) {
                    return Err(MeterError::NotAvailable("W_SF"));
                }
                Ok(f64::from(block[W] as i16) * 10f64.powi(i32::from(sf)))
            }
        }
    }
}

/// Finds the marker and the first meter model (201-204) through `read(address, count)`.
/// Never panics on a malformed device.
pub fn discover<F>(mut read: F) -> Result<MeterMap, MeterError>
where
    F: FnMut(u16, u16) -> Result<Vec<u16>, String>,
{
    let base = match find_marker(&mut read) {
        Ok(base) => base,
        Err(last_err) => {
            return Err(MeterError::Discovery(match last_err {
                Some(e) => {
                    format!("no SunSpec marker \"SunS\" at 40000, 0 or 50000 (last error: {e})")
                }
                None => "no SunSpec marker \"SunS\" at 40000, 0 or 50000".to_string(),
            }))
        }
    };
    let mut at = u32::from(base) + 2;
    for _ in 0..MAX_MODELS {
        if at + 2 > 0x1_0000 {
            break;
        }
        let address = at as u16;
        let w = read(address, 2).map_err(MeterError::Discovery)?;
        if w.len() != 2 {
            return Err(MeterError::Size {
                expected: 2,
                got: w.len(),
            });
        }
        if w[0] == END_MODEL {
            return Err(MeterError::Discovery(
                "no meter model 201, 202, 203 or 204 in the SunSpec model list".to_string(),
            ));
        }
        if METER_MODELS.contains(&w[0]) {
            // The points we read must be inside the model.
            if usize::from(w[1]) + 2 < usize::from(SUNSPEC_LEN) {
                return Err(MeterError::Discovery(format!(
                    "meter model {} has length {}, needs at least {}",
                    w[0],
                    w[1],
                    SUNSPEC_LEN - 2
                )));
            }
            if u32::from(address) + u32::from(SUNSPEC_LEN) > 0x1_0000 {
                break;
            }
            return Ok(MeterMap::SunSpec {
                model: w[0],
                address,
            });
        }
        at += 2 + u32::from(w[1]);
    }
    Err(MeterError::Discovery(
        "SunSpec model list has no end model".to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A SunSpec image: marker at `base`, a common model, an inverter model, then `meter`.
    fn image(base: u16, meter: u16, w: i16, sf: i16) -> Vec<(u16, u16)> {
        let mut words = vec![crate::sunspec::MARKER[0], crate::sunspec::MARKER[1], 1, 66];
        words.extend(std::iter::repeat_n(0u16, 66));
        words.extend([701, 4]);
        words.extend([0u16; 4]);
        words.extend([meter, 105]);
        let mut body = vec![0xFFFFu16; 105];
        body[W - 2] = w as u16;
        body[W_SF - 2] = sf as u16;
        words.extend(body);
        words.extend([END_MODEL, 0]);
        words
            .into_iter()
            .enumerate()
            .map(|(i, v)| (base + i as u16, v))
            .collect()
    }

    fn reader(img: &[(u16, u16)]) -> impl FnMut(u16, u16) -> Result<Vec<u16>, String> + '_ {
        move |a, n| {
            (a..a + n)
                .map(|x| {
                    img.iter()
                        .find(|p| p.0 == x)
                        .map(|p| p.1)
                        .ok_or_else(|| format!("illegal address {x}"))
                })
                .collect()
        }
    }

    #[test]
    fn generic_power_and_sentinel() {
        let m = MeterMap::Generic;
        let mut b = vec![0u16; 10];
        // -123456 W (export) as a big-endian i32.
        let raw = (-123_456i32) as u32;
        b[0] = (raw >> 16) as u16;
        b[1] = raw as u16;
        assert_eq!(m.decode(&b), Ok(-123_456.0));
        b[0] = 0x8000;
        b[1] = 0;
        assert!(matches!(m.decode(&b), Err(MeterError::NotAvailable(_))));
        assert!(matches!(m.decode(&b[..9]), Err(MeterError::Size { .. })));
    }

    #[test]
    fn sunspec_finds_each_meter_model_and_scales() {
        for model in METER_MODELS {
            let img = image(40000, model, 4321, 1);
            let map = discover(reader(&img)).unwrap();
            let MeterMap::SunSpec { model: m, address } = map else {
                panic!("{map:?}")
            };
            assert_eq!(m, model);
            // Marker (2) + common model (2 + 66) + 701 (2 + 4).
            assert_eq!(address, 40000 + 2 + 68 + 6);
            let (a, n) = map.read();
            let block = reader(&img)(a, n).unwrap();
            // 4321 * 10^1 W.
            assert_eq!(map.decode(&block), Ok(43_210.0));
        }
    }

    #[test]
    fn sunspec_sentinels_and_changes() {
        let img = image(0, 203, 0x8000u16 as i16, -1);
        let map = discover(reader(&img)).unwrap();
        let (a, n) = map.read();
        let block = reader(&img)(a, n).unwrap();
        assert_eq!(map.decode(&block), Err(MeterError::NotAvailable("W")));
        let img = image(0, 203, -50, 0x8000u16 as i16);
        let block = reader(&img)(a, n).unwrap();
        assert_eq!(map.decode(&block), Err(MeterError::NotAvailable("W_SF")));
        let img = image(0, 201, -50, 0);
        let block = reader(&img)(a, n).unwrap();
        assert_eq!(
            map.decode(&block),
            Err(MeterError::ModelChanged {
                expected: 203,
                got: 201
            })
        );
    }

    #[test]
    fn sunspec_without_meter_or_marker() {
        let img: Vec<(u16, u16)> = image(40000, 802, 1, 0);
        assert!(matches!(
            discover(reader(&img)),
            Err(MeterError::Discovery(_))
        ));
        let none: Vec<(u16, u16)> = vec![];
        assert!(matches!(
            discover(reader(&none)),
            Err(MeterError::Discovery(_))
        ));
    }
}
