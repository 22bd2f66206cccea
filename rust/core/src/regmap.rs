//! Where each PCS/BMS quantity lives in the Modbus holding-register space.
//!
//! A register map is data, not code: `RegisterMap::generic()` is design.md section 4, and any other
//! profile is built from a name -> address table (`RegisterMap::from_entries`), which is how a
//! register-map TOML file reaches the core without the core parsing TOML.

use std::fmt;

use crate::modbus::MAX_READ_COUNT;

/// Width of each named quantity in 16-bit registers. The order is the order used for
/// `entries()` and error messages.
const FIELDS: [(&str, u16, Dir); 22] = [
    ("run", 1, Dir::Write),
    ("setpoint_w", 2, Dir::Write),
    ("watchdog", 1, Dir::Write),
    ("fault_reset", 1, Dir::Write),
    ("pcs_state", 1, Dir::Read),
    ("measured_w", 2, Dir::Read),
    ("ac_voltage_v", 1, Dir::Read),
    ("ac_frequency_hz", 1, Dir::Read),
    ("dc_voltage_v", 1, Dir::Read),
    ("dc_current_a", 1, Dir::Read),
    ("soc_pct", 1, Dir::Read),
    ("soh_pct", 1, Dir::Read),
    ("cell_temp_max_c", 1, Dir::Read),
    ("cell_temp_min_c", 1, Dir::Read),
    ("cell_v_max_mv", 1, Dir::Read),
    ("cell_v_min_mv", 1, Dir::Read),
    ("bms_max_discharge_w", 2, Dir::Read),
    ("bms_max_charge_w", 2, Dir::Read),
    ("alarm_bits", 2, Dir::Read),
    ("energy_discharged_wh", 4, Dir::Read),
    ("energy_charged_wh", 4, Dir::Read),
    ("ac_current_a", 1, Dir::Read),
];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Dir {
    Read,
    Write,
}

/// Zero-based holding-register addresses of every quantity the control loop reads or writes.
///
/// The loop does one FC3 read of `read_start..read_start + read_count` and one FC16 write of
/// `write_start..write_start + write_count` per cycle, so the read registers must fit in one
/// readable span and the write registers must tile one contiguous span exactly (a gap would make
/// the gateway overwrite a register it does not own).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisterMap {
    pub run_command: u16,
    pub setpoint: u16,
    pub watchdog: u16,
    pub fault_reset: u16,
    pub pcs_state: u16,
    pub ac_power: u16,
    pub ac_voltage: u16,
    pub ac_frequency: u16,
    pub dc_voltage: u16,
    pub dc_current: u16,
    pub soc: u16,
    pub soh: u16,
    pub cell_temp_max: u16,
    pub cell_temp_min: u16,
    pub cell_v_max: u16,
    pub cell_v_min: u16,
    pub bms_max_discharge: u16,
    pub bms_max_charge: u16,
    pub alarm_bits: u16,
    pub energy_discharged: u16,
    pub energy_charged: u16,
    pub ac_current: u16,
    pub read_start: u16,
    pub read_count: u16,
    pub write_start: u16,
    pub write_count: u16,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegisterMapError {
    UnknownName(String),
    Missing(&'static str),
    /// A quantity would run past address 65535.
    OutOfRange(&'static str),
    /// Two quantities share a register.
    Overlap(&'static str, &'static str),
    ReadSpanTooLong(u32),
    /// The write registers do not form one gap-free span.
    WriteSpanNotContiguous,
}

impl fmt::Display for RegisterMapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownName(n) => write!(f, "unknown register name {n:?}"),
            Self::Missing(n) => write!(f, "register {n:?} missing"),
            Self::OutOfRange(n) => write!(f, "register {n:?} runs past address 65535"),
            Self::Overlap(a, b) => write!(f, "registers {a:?} and {b:?} overlap"),
            Self::ReadSpanTooLong(n) => {
                write!(
                    f,
                    "read registers span {n} words, more than one FC3 read ({MAX_READ_COUNT})"
                )
            }
            Self::WriteSpanNotContiguous => {
                write!(
                    f,
                    "write registers must form one contiguous span without gaps"
                )
            }
        }
    }
}

impl std::error::Error for RegisterMapError {}

impl RegisterMap {
    /// The `generic` profile of design.md section 4.
    pub fn generic() -> Self {
        let entries: Vec<(&str, u16)> = vec![
            ("run", 0),
            ("setpoint_w", 1),
            ("watchdog", 3),
            ("fault_reset", 4),
            ("pcs_state", 100),
            ("measured_w", 101),
            ("ac_voltage_v", 103),
            ("ac_frequency_hz", 104),
            ("dc_voltage_v", 105),
            ("dc_current_a", 106),
            ("soc_pct", 107),
            ("soh_pct", 108),
            ("cell_temp_max_c", 109),
            ("cell_temp_min_c", 110),
            ("cell_v_max_mv", 111),
            ("cell_v_min_mv", 112),
            ("bms_max_discharge_w", 113),
            ("bms_max_charge_w", 115),
            ("alarm_bits", 117),
            ("energy_discharged_wh", 119),
            ("energy_charged_wh", 123),
            ("ac_current_a", 127),
        ];
        match Self::from_entries(entries) {
            Ok(map) => map,
            // The table above is a constant; the unit tests prove it is valid.
            Err(e) => unreachable!("generic register map is invalid: {e}"),
        }
    }

    /// Names of all quantities, in table order.
    pub fn names() -> impl Iterator<Item = &'static str> {
        FIELDS.iter().map(|(n, _, _)| *n)
    }

    /// Builds a map from `name -> address` pairs; every name of `names()` is required once.
    pub fn from_entries<'a, I>(entries: I) -> Result<Self, RegisterMapError>
    where
        I: IntoIterator<Item = (&'a str, u16)>,
    {
        let mut addr: [Option<u16>; FIELDS.len()] = [None; FIELDS.len()];
        for (name, a) in entries {
            let idx = FIELDS
                .iter()
                .position(|(n, _, _)| *n == name)
                .ok_or_else(|| RegisterMapError::UnknownName(name.to_string()))?;
            addr[idx] = Some(a);
        }
        let mut full = [0u16; FIELDS.len()];
        for (i, (name, width, _)) in FIELDS.iter().enumerate() {
            let a = addr[i].ok_or(RegisterMapError::Missing(name))?;
            if u32::from(a) + u32::from(*width) > 0x1_0000 {
                return Err(RegisterMapError::OutOfRange(name));
            }
            full[i] = a;
        }
        for i in 0..FIELDS.len() {
            for j in (i + 1)..FIELDS.len() {
                let (a0, a1) = span(full[i], FIELDS[i].1);
                let (b0, b1) = span(full[j], FIELDS[j].1);
                if a0 < b1 && b0 < a1 {
                    return Err(RegisterMapError::Overlap(FIELDS[i].0, FIELDS[j].0));
                }
            }
        }
        let (read_start, read_end) = bounds(&full, Dir::Read);
        if read_end - read_start > u32::from(MAX_READ_COUNT) {
            return Err(RegisterMapError::ReadSpanTooLong(read_end - read_start));
        }
        let (write_start, write_end) = bounds(&full, Dir::Write);
        let write_words: u32 = FIELDS
            .iter()
            .filter(|f| f.2 == Dir::Write)
            .map(|f| u32::from(f.1))
            .sum();
        // No overlaps (checked above) + total width == span length <=> no gaps.
        if write_end - write_start != write_words {
            return Err(RegisterMapError::WriteSpanNotContiguous);
        }
        // Bounds fit in u16 arithmetic: every span was checked against 0x1_0000 and the lengths
        // against the FC limits.
        let narrow = |v: u32| u16::try_from(v).unwrap_or(u16::MAX);
        Ok(Self {
            run_command: full[0],
            setpoint: full[1],
            watchdog: full[2],
            fault_reset: full[3],
            pcs_state: full[4],
            ac_power: full[5],
            ac_voltage: full[6],
            ac_frequency: full[7],
            dc_voltage: full[8],
            dc_current: full[9],
            soc: full[10],
            soh: full[11],
            cell_temp_max: full[12],
            cell_temp_min: full[13],
            cell_v_max: full[14],
            cell_v_min: full[15],
            bms_max_discharge: full[16],
            bms_max_charge: full[17],
            alarm_bits: full[18],
            energy_discharged: full[19],
            energy_charged: full[20],
            ac_current: full[21],
            read_start: narrow(read_start),
            read_count: narrow(read_end - read_start),
            write_start: narrow(write_start),
            write_count: narrow(write_end - write_start),
        })
    }

    /// `name -> address` for every quantity, in table order (what `default_register_map()` shows).
    pub fn entries(&self) -> Vec<(&'static str, u16)> {
        let a = [
            self.run_command,
            self.setpoint,
            self.watchdog,
            self.fault_reset,
            self.pcs_state,
            self.ac_power,
            self.ac_voltage,
            self.ac_frequency,
            self.dc_voltage,
            self.dc_current,
            self.soc,
            self.soh,
            self.cell_temp_max,
            self.cell_temp_min,
            self.cell_v_max,
            self.cell_v_min,
            self.bms_max_discharge,
            self.bms_max_charge,
            self.alarm_bits,
            self.energy_discharged,
            self.energy_charged,
            self.ac_current,
        ];
        FIELDS.iter().zip(a).map(|((n, _, _), a)| (*n, a)).collect()
    }

    /// Offset of `addr` inside the read block. Valid for every read quantity by construction.
    pub(crate) fn read_offset(&self, addr: u16) -> usize {
        usize::from(addr.wrapping_sub(self.read_start))
    }

    /// The words of one FC16 write of the write block.
    pub fn write_block(
        &self,
        run: bool,
        setpoint_w: i32,
        watchdog: u16,
        fault_reset: bool,
    ) -> Vec<u16> {
        let mut words = vec![0u16; usize::from(self.write_count)];
        let off = |a: u16| usize::from(a.wrapping_sub(self.write_start));
        let sp = setpoint_w as u32;
        words[off(self.run_command)] = u16::from(run);
        words[off(self.setpoint)] = (sp >> 16) as u16;
        words[off(self.setpoint) + 1] = sp as u16;
        words[off(self.watchdog)] = watchdog;
        words[off(self.fault_reset)] = u16::from(fault_reset);
        words
    }
}

fn span(addr: u16, width: u16) -> (u32, u32) {
    (u32::from(addr), u32::from(addr) + u32::from(width))
}

fn bounds(full: &[u16], dir: Dir) -> (u32, u32) {
    let mut lo = u32::MAX;
    let mut hi = 0;
    for (i, (_, width, d)) in FIELDS.iter().enumerate() {
        if *d == dir {
            let (a, b) = span(full[i], *width);
            lo = lo.min(a);
            hi = hi.max(b);
        }
    }
    (lo, hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generic_matches_design_table() {
        let m = RegisterMap::generic();
        assert_eq!((m.read_start, m.read_count), (100, 28));
        assert_eq!((m.write_start, m.write_count), (0, 5));
        assert_eq!(m.setpoint, 1);
        assert_eq!(m.energy_charged, 123);
        assert_eq!(m.ac_current, 127);
        assert_eq!(m.entries().len(), 22);
    }

    #[test]
    fn entries_round_trip() {
        let m = RegisterMap::generic();
        let again = RegisterMap::from_entries(m.entries()).unwrap();
        assert_eq!(m, again);
    }

    #[test]
    fn rejects_bad_maps() {
        let base = RegisterMap::generic().entries();
        let with = |name: &str, addr: u16| {
            let v: Vec<(&str, u16)> = base
                .iter()
                .map(|&(n, a)| if n == name { (n, addr) } else { (n, a) })
                .collect();
            RegisterMap::from_entries(v)
        };
        assert_eq!(
            with("soc_pct", 105),
            Err(RegisterMapError::Overlap("dc_voltage_v", "soc_pct"))
        );
        assert_eq!(
            with("ac_current_a", 300),
            Err(RegisterMapError::ReadSpanTooLong(201))
        );
        assert_eq!(
            with("fault_reset", 6),
            Err(RegisterMapError::WriteSpanNotContiguous)
        );
        assert_eq!(
            with("energy_charged_wh", 65534),
            Err(RegisterMapError::OutOfRange("energy_charged_wh"))
        );
        let missing: Vec<(&str, u16)> = base
            .iter()
            .copied()
            .filter(|(n, _)| *n != "soh_pct")
            .collect();
        assert_eq!(
            RegisterMap::from_entries(missing),
            Err(RegisterMapError::Missing("soh_pct"))
        );
        let mut unknown = base.clone();
        unknown.push(("bogus", 7));
        assert!(matches!(
            RegisterMap::from_entries(unknown),
            Err(RegisterMapError::UnknownName(_))
        ));
    }

    #[test]
    fn write_block_layout() {
        let m = RegisterMap::generic();
        assert_eq!(
            m.write_block(true, -2, 7, true),
            vec![1, 0xFFFF, 0xFFFE, 7, 1]
        );
        assert_eq!(
            m.write_block(false, 100_000, 0, false),
            vec![0, 1, 34464, 0, 0]
        );
    }

    #[test]
    fn a_reordered_map_still_tiles() {
        let mut v = RegisterMap::generic().entries();
        for e in v.iter_mut() {
            match e.0 {
                "fault_reset" => e.1 = 10,
                "run" => e.1 = 11,
                "setpoint_w" => e.1 = 12,
                "watchdog" => e.1 = 14,
                _ => {}
            }
        }
        let m = RegisterMap::from_entries(v).unwrap();
        assert_eq!((m.write_start, m.write_count), (10, 5));
        assert_eq!(m.write_block(true, 1, 2, false), vec![0, 1, 0, 1, 2]);
    }
}
