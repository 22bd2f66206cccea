//! Decoding of the measurement block (design.md section 4) into engineering units, and the
//! plausibility checks that turn a nonsensical block into the `invalid_measurement` trip instead
//! of a control decision.

use crate::regmap::RegisterMap;

/// PCS state register values.
pub const PCS_OFF: u16 = 0;
pub const PCS_STANDBY: u16 = 1;
pub const PCS_RUNNING: u16 = 2;
pub const PCS_FAULT: u16 = 3;

/// Cell temperatures outside this range are sensor faults, not weather.
const PLAUSIBLE_TEMP_C: (f64, f64) = (-40.0, 100.0);

/// One decoded read of the measurement block. Units: W, Wh, V, A, Hz, degC, %, mV.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Measurements {
    pub pcs_state: u16,
    /// + discharge
    pub measured_w: f64,
    pub ac_voltage_v: f64,
    pub ac_frequency_hz: f64,
    pub ac_current_a: f64,
    pub dc_voltage_v: f64,
    /// + discharge
    pub dc_current_a: f64,
    pub soc_pct: f64,
    pub soh_pct: f64,
    /// `None` when the profile does not carry cell temperatures (sunspec): the temperature rules
    /// of protection are then inactive rather than fed an invented value.
    pub cell_temp_max_c: Option<f64>,
    pub cell_temp_min_c: Option<f64>,
    pub cell_v_max_mv: f64,
    pub cell_v_min_mv: f64,
    pub bms_max_discharge_w: f64,
    pub bms_max_charge_w: f64,
    pub alarm_bits: u32,
    pub energy_discharged_wh: u64,
    pub energy_charged_wh: u64,
}

/// Why a generic-map block is not a reading.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The block has the wrong number of registers.
    Length { expected: usize, got: usize },
    /// A point holds its type's "not available" value (`SENTINELS`).
    NotAvailable(&'static str),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Length { expected, got } => write!(
                f,
                "measurement block has {got} registers, expected {expected}"
            ),
            Self::NotAvailable(name) => {
                write!(f, "{name} reads its \"not available\" value")
            }
        }
    }
}

impl std::error::Error for DecodeError {}

/// The "not available" value of each register type of the generic map (SunSpec's convention,
/// which BMS vendors follow too): a reading that carries one is not a measurement, and acting on
/// it would fail open (0xFFFFFFFF as a BMS limit reads as 4.29 GW). The whole block is then
/// `invalid_measurement` (docs/control.md, "Sentinels").
pub const SENTINEL_U16: u16 = 0xFFFF;
pub const SENTINEL_I16: u16 = 0x8000;
pub const SENTINEL_U32: u32 = 0xFFFF_FFFF;
pub const SENTINEL_I32: u32 = 0x8000_0000;
pub const SENTINEL_U64: u64 = u64::MAX;

/// Decodes the block read from `map.read_start` (`map.read_count` words).
pub fn decode(map: &RegisterMap, regs: &[u16]) -> Result<Measurements, DecodeError> {
    let expected = usize::from(map.read_count);
    if regs.len() != expected {
        return Err(DecodeError::Length {
            expected,
            got: regs.len(),
        });
    }
    // Offsets are inside the block by construction of RegisterMap (its read span is checked), and
    // the length was checked above, so indexing cannot go out of bounds.
    let w = |addr: u16| regs[map.read_offset(addr)];
    let u32_at = |addr: u16| (u32::from(w(addr)) << 16) | u32::from(w(addr + 1));
    let u64_at = |addr: u16| (u64::from(u32_at(addr)) << 32) | u64::from(u32_at(addr + 2));
    let u16_pt = |addr: u16, name: &'static str| match w(addr) {
        SENTINEL_U16 => Err(DecodeError::NotAvailable(name)),
        v => Ok(f64::from(v)),
    };
    let i16_pt = |addr: u16, name: &'static str| match w(addr) {
        SENTINEL_I16 => Err(DecodeError::NotAvailable(name)),
        v => Ok(f64::from(v as i16)),
    };
    let u32_pt = |addr: u16, name: &'static str| match u32_at(addr) {
        SENTINEL_U32 => Err(DecodeError::NotAvailable(name)),
        v => Ok(v),
    };
    let i32_pt = |addr: u16, name: &'static str| match u32_at(addr) {
        SENTINEL_I32 => Err(DecodeError::NotAvailable(name)),
        v => Ok(f64::from(v as i32)),
    };
    let u64_pt = |addr: u16, name: &'static str| match u64_at(addr) {
        SENTINEL_U64 => Err(DecodeError::NotAvailable(name)),
        v => Ok(v),
    };
    Ok(Measurements {
        pcs_state: u16_pt(map.pcs_state, "pcs_state")? as u16,
        measured_w: i32_pt(map.ac_power, "measured_w")?,
        ac_voltage_v: u16_pt(map.ac_voltage, "ac_voltage_v")? / 10.0,
        ac_frequency_hz: u16_pt(map.ac_frequency, "ac_frequency_hz")? / 100.0,
        ac_current_a: u16_pt(map.ac_current, "ac_current_a")? / 10.0,
        dc_voltage_v: u16_pt(map.dc_voltage, "dc_voltage_v")? / 10.0,
        dc_current_a: i16_pt(map.dc_current, "dc_current_a")? / 10.0,
        soc_pct: u16_pt(map.soc, "soc_pct")? / 10.0,
        soh_pct: u16_pt(map.soh, "soh_pct")? / 10.0,
        cell_temp_max_c: Some(i16_pt(map.cell_temp_max, "cell_temp_max_c")? / 10.0),
        cell_temp_min_c: Some(i16_pt(map.cell_temp_min, "cell_temp_min_c")? / 10.0),
        cell_v_max_mv: u16_pt(map.cell_v_max, "cell_v_max_mv")?,
        cell_v_min_mv: u16_pt(map.cell_v_min, "cell_v_min_mv")?,
        bms_max_discharge_w: f64::from(u32_pt(map.bms_max_discharge, "bms_max_discharge_w")?),
        bms_max_charge_w: f64::from(u32_pt(map.bms_max_charge, "bms_max_charge_w")?),
        alarm_bits: u32_pt(map.alarm_bits, "alarm_bits")?,
        energy_discharged_wh: u64_pt(map.energy_discharged, "energy_discharged_wh")?,
        energy_charged_wh: u64_pt(map.energy_charged, "energy_charged_wh")?,
    })
}

/// Why a block cannot be trusted, or `None` if it can. Any reason trips `invalid_measurement`:
/// acting on a reading that cannot be true is worse than stopping.
pub fn implausible(m: &Measurements) -> Option<&'static str> {
    // `f64::min` ignores NaN, so a NaN limit would silently lift it: every value a control
    // decision reads must be a number.
    let decisive = [
        m.measured_w,
        m.dc_voltage_v,
        m.soc_pct,
        m.bms_max_discharge_w,
        m.bms_max_charge_w,
    ];
    if decisive.iter().any(|v| !v.is_finite()) {
        return Some("a value the control decision needs is not a number");
    }
    if m.bms_max_discharge_w < 0.0 || m.bms_max_charge_w < 0.0 {
        return Some("negative BMS power limit");
    }
    if m.soc_pct < 0.0 {
        return Some("SoC below 0 %");
    }
    if m.soc_pct > 100.0 {
        return Some("SoC above 100 %");
    }
    if m.soh_pct > 100.0 {
        return Some("SoH above 100 %");
    }
    if m.pcs_state > PCS_FAULT {
        return Some("unknown PCS state");
    }
    if m.pcs_state == PCS_RUNNING && m.dc_voltage_v == 0.0 {
        return Some("DC voltage 0 while running");
    }
    let (lo, hi) = PLAUSIBLE_TEMP_C;
    for t in [m.cell_temp_max_c, m.cell_temp_min_c].into_iter().flatten() {
        if !(lo..=hi).contains(&t) {
            return Some("cell temperature outside -40..100 degC");
        }
    }
    if let (Some(min), Some(max)) = (m.cell_temp_min_c, m.cell_temp_max_c) {
        if min > max {
            return Some("min cell temperature above max");
        }
    }
    None
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A healthy block for the generic map: standby, SoC 50 %, 25 degC, 700 V, BMS 500 kW each way.
    pub(crate) fn healthy_block() -> Vec<u16> {
        let mut r = vec![0u16; 28];
        r[0] = PCS_STANDBY;
        r[3] = 4000; // 400.0 V AC
        r[4] = 5000; // 50.00 Hz
        r[5] = 7000; // 700.0 V DC
        r[7] = 500; // 50.0 %
        r[8] = 1000; // 100.0 %
        r[9] = 250;
        r[10] = 200;
        r[11] = 3300;
        r[12] = 3290;
        set_u32(&mut r, 13, 500_000);
        set_u32(&mut r, 15, 500_000);
        r
    }

    pub(crate) fn set_u32(r: &mut [u16], off: usize, v: u32) {
        r[off] = (v >> 16) as u16;
        r[off + 1] = v as u16;
    }

    pub(crate) fn set_u64(r: &mut [u16], off: usize, v: u64) {
        set_u32(r, off, (v >> 32) as u32);
        set_u32(r, off + 2, v as u32);
    }

    #[test]
    fn decodes_scales_and_word_order() {
        let map = RegisterMap::generic();
        let mut r = healthy_block();
        set_u32(&mut r, 1, (-123_456i32) as u32);
        r[6] = (-155i16) as u16;
        r[9] = (-52i16) as u16;
        r[10] = (-60i16) as u16;
        set_u32(&mut r, 17, 0b101);
        set_u64(&mut r, 19, 0x0001_0002_0003_0004);
        set_u64(&mut r, 23, 12_345_678_901);
        r[27] = 1234;
        let m = decode(&map, &r).unwrap();
        assert_eq!(m.pcs_state, PCS_STANDBY);
        assert_eq!(m.measured_w, -123_456.0);
        assert!((m.ac_voltage_v - 400.0).abs() < 1e-9);
        assert!((m.ac_frequency_hz - 50.0).abs() < 1e-9);
        assert!((m.dc_voltage_v - 700.0).abs() < 1e-9);
        assert!((m.dc_current_a + 15.5).abs() < 1e-9);
        assert!((m.soc_pct - 50.0).abs() < 1e-9);
        assert!((m.cell_temp_max_c.unwrap() + 5.2).abs() < 1e-9);
        assert!((m.cell_temp_min_c.unwrap() + 6.0).abs() < 1e-9);
        assert_eq!(m.bms_max_discharge_w, 500_000.0);
        assert_eq!(m.alarm_bits, 5);
        assert_eq!(m.energy_discharged_wh, 0x0001_0002_0003_0004);
        assert_eq!(m.energy_charged_wh, 12_345_678_901);
        assert!((m.ac_current_a - 123.4).abs() < 1e-9);
    }

    #[test]
    fn wrong_length_is_an_error() {
        let map = RegisterMap::generic();
        assert_eq!(
            decode(&map, &[0; 27]),
            Err(DecodeError::Length {
                expected: 28,
                got: 27
            })
        );
        assert!(decode(&map, &[]).is_err());
    }

    #[test]
    fn not_available_values_are_not_readings() {
        // Written from the generic map's table (design.md section 4): offset from 100, type.
        let map = RegisterMap::generic();
        let cases: [(&str, usize, &[u16]); 18] = [
            ("pcs_state", 0, &[0xFFFF]),
            ("measured_w", 1, &[0x8000, 0x0000]),
            ("ac_voltage_v", 3, &[0xFFFF]),
            ("ac_frequency_hz", 4, &[0xFFFF]),
            ("dc_voltage_v", 5, &[0xFFFF]),
            ("dc_current_a", 6, &[0x8000]),
            ("soc_pct", 7, &[0xFFFF]),
            ("soh_pct", 8, &[0xFFFF]),
            ("cell_temp_max_c", 9, &[0x8000]),
            ("cell_temp_min_c", 10, &[0x8000]),
            ("cell_v_max_mv", 11, &[0xFFFF]),
            ("cell_v_min_mv", 12, &[0xFFFF]),
            ("bms_max_discharge_w", 13, &[0xFFFF, 0xFFFF]),
            ("bms_max_charge_w", 15, &[0xFFFF, 0xFFFF]),
            ("alarm_bits", 17, &[0xFFFF, 0xFFFF]),
            ("energy_discharged_wh", 19, &[0xFFFF; 4]),
            ("energy_charged_wh", 23, &[0xFFFF; 4]),
            ("ac_current_a", 27, &[0xFFFF]),
        ];
        for (name, off, words) in cases {
            let mut r = healthy_block();
            r[off..off + words.len()].copy_from_slice(words);
            assert_eq!(
                decode(&map, &r),
                Err(DecodeError::NotAvailable(name)),
                "{name}"
            );
        }
        // Values next to a sentinel are readings: -32767 dW, 4294967294 W.
        let mut r = healthy_block();
        r[6] = 0x8001;
        set_u32(&mut r, 13, 0xFFFF_FFFE);
        let m = decode(&map, &r).unwrap();
        assert_eq!(m.dc_current_a, -3276.7);
        assert_eq!(m.bms_max_discharge_w, 4_294_967_294.0);
    }

    #[test]
    fn plausibility() {
        let map = RegisterMap::generic();
        let ok = decode(&map, &healthy_block()).unwrap();
        assert_eq!(implausible(&ok), None);
        let mut m = ok.clone();
        m.soc_pct = 100.1;
        assert!(implausible(&m).is_some());
        let mut m = ok.clone();
        m.soh_pct = 101.0;
        assert!(implausible(&m).is_some());
        let mut m = ok.clone();
        m.pcs_state = PCS_RUNNING;
        m.dc_voltage_v = 0.0;
        assert!(implausible(&m).is_some());
        m.pcs_state = PCS_STANDBY;
        assert_eq!(implausible(&m), None, "an open DC contactor reads 0 V");
        let mut m = ok.clone();
        m.cell_temp_max_c = Some(150.0);
        assert!(implausible(&m).is_some());
        let mut m = ok.clone();
        m.cell_temp_min_c = Some(30.0);
        assert!(implausible(&m).is_some());
        m.cell_temp_min_c = None;
        m.cell_temp_max_c = None;
        assert_eq!(implausible(&m), None, "no temperatures is not implausible");
        let mut m = ok.clone();
        m.pcs_state = 7;
        assert!(implausible(&m).is_some());
        for f in [
            |m: &mut Measurements| m.bms_max_discharge_w = f64::NAN,
            |m: &mut Measurements| m.bms_max_charge_w = f64::INFINITY,
            |m: &mut Measurements| m.soc_pct = f64::NAN,
            |m: &mut Measurements| m.measured_w = f64::NAN,
            |m: &mut Measurements| m.dc_voltage_v = f64::NAN,
            |m: &mut Measurements| m.bms_max_charge_w = -1.0,
            |m: &mut Measurements| m.soc_pct = -0.1,
        ] {
            let mut m = ok.clone();
            f(&mut m);
            assert!(implausible(&m).is_some(), "{m:?}");
        }
    }
}
