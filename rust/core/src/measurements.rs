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

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockLengthError {
    pub expected: usize,
    pub got: usize,
}

impl std::fmt::Display for BlockLengthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "measurement block has {} registers, expected {}",
            self.got, self.expected
        )
    }
}

impl std::error::Error for BlockLengthError {}

/// Decodes the block read from `map.read_start` (`map.read_count` words).
pub fn decode(map: &RegisterMap, regs: &[u16]) -> Result<Measurements, BlockLengthError> {
    let expected = usize::from(map.read_count);
    if regs.len() != expected {
        return Err(BlockLengthError {
            expected,
            got: regs.len(),
        });
    }
    // Offsets are inside the block by construction of RegisterMap (its read span is checked), and
    // the length was checked above, so indexing cannot go out of bounds.
    let w = |addr: u16| regs[map.read_offset(addr)];
    let u32_at = |addr: u16| (u32::from(w(addr)) << 16) | u32::from(w(addr + 1));
    let u64_at = |addr: u16| (u64::from(u32_at(addr)) << 32) | u64::from(u32_at(addr + 2));
    let i16_at = |addr: u16| f64::from(w(addr) as i16);
    Ok(Measurements {
        pcs_state: w(map.pcs_state),
        measured_w: f64::from(u32_at(map.ac_power) as i32),
        ac_voltage_v: f64::from(w(map.ac_voltage)) / 10.0,
        ac_frequency_hz: f64::from(w(map.ac_frequency)) / 100.0,
        ac_current_a: f64::from(w(map.ac_current)) / 10.0,
        dc_voltage_v: f64::from(w(map.dc_voltage)) / 10.0,
        dc_current_a: i16_at(map.dc_current) / 10.0,
        soc_pct: f64::from(w(map.soc)) / 10.0,
        soh_pct: f64::from(w(map.soh)) / 10.0,
        cell_temp_max_c: Some(i16_at(map.cell_temp_max) / 10.0),
        cell_temp_min_c: Some(i16_at(map.cell_temp_min) / 10.0),
        cell_v_max_mv: f64::from(w(map.cell_v_max)),
        cell_v_min_mv: f64::from(w(map.cell_v_min)),
        bms_max_discharge_w: f64::from(u32_at(map.bms_max_discharge)),
        bms_max_charge_w: f64::from(u32_at(map.bms_max_charge)),
        alarm_bits: u32_at(map.alarm_bits),
        energy_discharged_wh: u64_at(map.energy_discharged),
        energy_charged_wh: u64_at(map.energy_charged),
    })
}

/// Why a block cannot be trusted, or `None` if it can. Any reason trips `invalid_measurement`:
/// acting on a reading that cannot be true is worse than stopping.
pub fn implausible(m: &Measurements) -> Option<&'static str> {
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
            Err(BlockLengthError {
                expected: 28,
                got: 27
            })
        );
        assert!(decode(&map, &[]).is_err());
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
        let mut m = ok;
        m.pcs_state = 7;
        assert!(implausible(&m).is_some());
    }
}
