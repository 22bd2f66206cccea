//! Protection: measurements + configured windows -> per-direction power limits and trip causes.
//!
//! Protection produces limits; it never proposes power. Every sub-limit is kept on its own so an
//! operator can see which one caps the power, and the effective limit of a direction is simply the
//! smallest of them. A trip is separate from derating: derating shapes the limit smoothly towards
//! an edge, a trip (a hard fault or a reading outside a window) takes the setpoint to 0 at once.

use crate::measurements::{implausible, Measurements, PCS_FAULT};

/// Width of the linear derating band inside each edge of the SoC window (percentage points).
pub const SOC_DERATE_PCT: f64 = 5.0;
/// Width of the linear derating band inside each edge of the cell temperature window (degC).
pub const TEMP_DERATE_C: f64 = 5.0;

/// Local limits from the `[control]` site limits and the `[protection]` section. Nothing that
/// arrives over OCPP changes these.
#[derive(Clone, Debug, PartialEq)]
pub struct ProtectionConfig {
    pub site_max_discharge_w: f64,
    pub site_max_charge_w: f64,
    pub soc_min_pct: f64,
    pub soc_max_pct: f64,
    pub dc_voltage_min_v: f64,
    pub dc_voltage_max_v: f64,
    pub cell_temp_min_c: f64,
    pub cell_temp_max_c: f64,
}

impl Default for ProtectionConfig {
    fn default() -> Self {
        Self {
            site_max_discharge_w: 600_000.0,
            site_max_charge_w: 600_000.0,
            soc_min_pct: 5.0,
            soc_max_pct: 95.0,
            dc_voltage_min_v: 600.0,
            dc_voltage_max_v: 900.0,
            cell_temp_min_c: 0.0,
            cell_temp_max_c: 55.0,
        }
    }
}

/// Why the setpoint is forced to 0. The codes are the contract with `alarms.py`, which maps each
/// to its OCPP error code; keep the two in step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TripCause {
    CellOverVoltage,
    CellUnderVoltage,
    OverTemperature,
    UnderTemperature,
    OverCurrent,
    InsulationFault,
    PcsInternalFault,
    GridFault,
    ContactorFailure,
    BmsCommFailure,
    EmergencyStop,
    DcOverVoltage,
    DcUnderVoltage,
    PcsFaultState,
    InvalidMeasurement,
    PcsLinkLost,
    /// The PCS answers reads but refuses (Modbus exception) or drops our writes for the link
    /// timeout, e.g. a PCS switched to local mode: no power we command flows.
    PcsWriteFault,
}

/// Alarm bit `i` of the alarm register means `ALARM_BITS[i]` (design.md section 4). Bits 11..31
/// are reserved and ignored.
pub const ALARM_BITS: [TripCause; 11] = [
    TripCause::CellOverVoltage,
    TripCause::CellUnderVoltage,
    TripCause::OverTemperature,
    TripCause::UnderTemperature,
    TripCause::OverCurrent,
    TripCause::InsulationFault,
    TripCause::PcsInternalFault,
    TripCause::GridFault,
    TripCause::ContactorFailure,
    TripCause::BmsCommFailure,
    TripCause::EmergencyStop,
];

impl TripCause {
    pub const ALL: [TripCause; 17] = [
        TripCause::CellOverVoltage,
        TripCause::CellUnderVoltage,
        TripCause::OverTemperature,
        TripCause::UnderTemperature,
        TripCause::OverCurrent,
        TripCause::InsulationFault,
        TripCause::PcsInternalFault,
        TripCause::GridFault,
        TripCause::ContactorFailure,
        TripCause::BmsCommFailure,
        TripCause::EmergencyStop,
        TripCause::DcOverVoltage,
        TripCause::DcUnderVoltage,
        TripCause::PcsFaultState,
        TripCause::InvalidMeasurement,
        TripCause::PcsLinkLost,
        TripCause::PcsWriteFault,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Self::CellOverVoltage => "cell_over_voltage",
            Self::CellUnderVoltage => "cell_under_voltage",
            Self::OverTemperature => "over_temperature",
            Self::UnderTemperature => "under_temperature",
            Self::OverCurrent => "over_current",
            Self::InsulationFault => "insulation_fault",
            Self::PcsInternalFault => "pcs_internal_fault",
            Self::GridFault => "grid_fault",
            Self::ContactorFailure => "contactor_failure",
            Self::BmsCommFailure => "bms_comm_failure",
            Self::EmergencyStop => "emergency_stop",
            Self::DcOverVoltage => "dc_over_voltage",
            Self::DcUnderVoltage => "dc_under_voltage",
            Self::PcsFaultState => "pcs_fault_state",
            Self::InvalidMeasurement => "invalid_measurement",
            Self::PcsLinkLost => "pcs_link_lost",
            Self::PcsWriteFault => "pcs_write_fault",
        }
    }
}

/// The sub-limits of one direction, each in W (>= 0).
///
/// `soc` and `temperature` are derating factors in 0..=1 applied to the site limit, so they read
/// as "the most this rule would allow" in the same unit as the others.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SubLimits {
    pub site: f64,
    pub bms: f64,
    pub soc: f64,
    pub temperature: f64,
}

impl SubLimits {
    pub fn effective(&self) -> f64 {
        self.site
            .min(self.bms)
            .min(self.soc)
            .min(self.temperature)
            .max(0.0)
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Limits {
    pub discharge: SubLimits,
    pub charge: SubLimits,
}

/// The outcome of protection for one reading.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Assessment {
    pub limits: Limits,
    /// Sorted, without duplicates; empty when nothing trips.
    pub causes: Vec<TripCause>,
}

impl Assessment {
    pub fn tripped(&self) -> bool {
        !self.causes.is_empty()
    }
}

fn band(distance: f64, width: f64) -> f64 {
    // NaN (a NaN config is rejected earlier, but measurements are f64 too) counts as "no room".
    let f = distance / width;
    if f.is_nan() {
        0.0
    } else {
        f.clamp(0.0, 1.0)
    }
}

/// Limits and trip causes for one valid reading.
pub fn assess(cfg: &ProtectionConfig, m: &Measurements) -> Assessment {
    let soc_discharge = band(m.soc_pct - cfg.soc_min_pct, SOC_DERATE_PCT);
    let soc_charge = band(cfg.soc_max_pct - m.soc_pct, SOC_DERATE_PCT);
    // Without cell temperatures (sunspec profile) there is nothing to derate on: the factor is 1
    // and the BMS's own limits (802.WChaRteMax/WDisChaRteMax) and events carry its protection.
    let temp = m
        .cell_temp_max_c
        .map_or(1.0, |t| band(cfg.cell_temp_max_c - t, TEMP_DERATE_C))
        .min(
            m.cell_temp_min_c
                .map_or(1.0, |t| band(t - cfg.cell_temp_min_c, TEMP_DERATE_C)),
        );
    let limits = Limits {
        discharge: SubLimits {
            site: cfg.site_max_discharge_w,
            bms: m.bms_max_discharge_w,
            soc: cfg.site_max_discharge_w * soc_discharge,
            temperature: cfg.site_max_discharge_w * temp,
        },
        charge: SubLimits {
            site: cfg.site_max_charge_w,
            bms: m.bms_max_charge_w,
            soc: cfg.site_max_charge_w * soc_charge,
            temperature: cfg.site_max_charge_w * temp,
        },
    };

    let mut causes: Vec<TripCause> = ALARM_BITS
        .iter()
        .enumerate()
        .filter(|(bit, _)| m.alarm_bits & (1 << bit) != 0)
        .map(|(_, c)| *c)
        .collect();
    // 0 V means "not measured" (DC contactor open while not running); 0 V while running is caught
    // by the plausibility check instead.
    if m.dc_voltage_v != 0.0 {
        if m.dc_voltage_v > cfg.dc_voltage_max_v {
            causes.push(TripCause::DcOverVoltage);
        }
        if m.dc_voltage_v < cfg.dc_voltage_min_v {
            causes.push(TripCause::DcUnderVoltage);
        }
    }
    if m.cell_temp_max_c.is_some_and(|t| t > cfg.cell_temp_max_c) {
        causes.push(TripCause::OverTemperature);
    }
    if m.cell_temp_min_c.is_some_and(|t| t < cfg.cell_temp_min_c) {
        causes.push(TripCause::UnderTemperature);
    }
    if m.pcs_state == PCS_FAULT {
        causes.push(TripCause::PcsFaultState);
    }
    if implausible(m).is_some() {
        causes.push(TripCause::InvalidMeasurement);
    }
    causes.sort_unstable();
    causes.dedup();
    Assessment { limits, causes }
}

/// Without a reading nothing but the site limit is known, so the unknown sub-limits are 0.
pub fn assess_link_lost(cfg: &ProtectionConfig) -> Assessment {
    Assessment {
        limits: Limits {
            discharge: SubLimits {
                site: cfg.site_max_discharge_w,
                ..SubLimits::default()
            },
            charge: SubLimits {
                site: cfg.site_max_charge_w,
                ..SubLimits::default()
            },
        },
        causes: vec![TripCause::PcsLinkLost],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measurements::{decode, tests::healthy_block, PCS_RUNNING};
    use crate::regmap::RegisterMap;
    use proptest::prelude::*;

    fn healthy() -> Measurements {
        decode(&RegisterMap::generic(), &healthy_block()).unwrap()
    }

    #[test]
    fn healthy_reading_is_limited_by_bms() {
        let a = assess(&ProtectionConfig::default(), &healthy());
        assert!(!a.tripped());
        assert_eq!(a.limits.discharge.site, 600_000.0);
        assert_eq!(a.limits.discharge.bms, 500_000.0);
        assert_eq!(a.limits.discharge.soc, 600_000.0);
        assert_eq!(a.limits.discharge.temperature, 600_000.0);
        assert_eq!(a.limits.discharge.effective(), 500_000.0);
        assert_eq!(a.limits.charge.effective(), 500_000.0);
    }

    #[test]
    fn soc_derates_linearly_over_the_last_five_points() {
        let cfg = ProtectionConfig::default();
        let mut m = healthy();
        let at = |m: &Measurements| {
            let a = assess(&cfg, m);
            (a.limits.discharge.soc, a.limits.charge.soc)
        };
        m.soc_pct = 5.0;
        assert_eq!(at(&m), (0.0, 600_000.0));
        m.soc_pct = 7.5;
        assert_eq!(at(&m), (300_000.0, 600_000.0));
        m.soc_pct = 10.0;
        assert_eq!(at(&m), (600_000.0, 600_000.0));
        m.soc_pct = 92.5;
        assert_eq!(at(&m), (600_000.0, 300_000.0));
        m.soc_pct = 95.0;
        assert_eq!(at(&m), (600_000.0, 0.0));
        m.soc_pct = 2.0;
        assert_eq!(at(&m), (0.0, 600_000.0));
    }

    #[test]
    fn temperature_derates_both_directions_near_either_edge() {
        let cfg = ProtectionConfig::default();
        let mut m = healthy();
        m.cell_temp_max_c = Some(52.5);
        let a = assess(&cfg, &m);
        assert_eq!(a.limits.discharge.temperature, 300_000.0);
        assert_eq!(a.limits.charge.temperature, 300_000.0);
        assert!(!a.tripped());
        m.cell_temp_max_c = Some(25.0);
        m.cell_temp_min_c = Some(1.0);
        let a = assess(&cfg, &m);
        assert!((a.limits.charge.temperature - 120_000.0).abs() < 1e-6);
    }

    #[test]
    fn windows_trip() {
        let cfg = ProtectionConfig::default();
        let mut m = healthy();
        m.cell_temp_max_c = Some(56.0);
        assert_eq!(assess(&cfg, &m).causes, vec![TripCause::OverTemperature]);
        let mut m = healthy();
        m.cell_temp_min_c = Some(-1.0);
        assert_eq!(assess(&cfg, &m).causes, vec![TripCause::UnderTemperature]);
        let mut m = healthy();
        m.dc_voltage_v = 950.0;
        assert_eq!(assess(&cfg, &m).causes, vec![TripCause::DcOverVoltage]);
        m.dc_voltage_v = 500.0;
        assert_eq!(assess(&cfg, &m).causes, vec![TripCause::DcUnderVoltage]);
        m.dc_voltage_v = 0.0;
        assert!(
            !assess(&cfg, &m).tripped(),
            "0 V while not running is an open contactor"
        );
        m.pcs_state = PCS_RUNNING;
        assert_eq!(assess(&cfg, &m).causes, vec![TripCause::InvalidMeasurement]);
        let mut m = healthy();
        m.pcs_state = PCS_FAULT;
        assert_eq!(assess(&cfg, &m).causes, vec![TripCause::PcsFaultState]);
    }

    #[test]
    fn each_alarm_bit_has_its_cause() {
        let cfg = ProtectionConfig::default();
        for (bit, cause) in ALARM_BITS.iter().enumerate() {
            let mut m = healthy();
            m.alarm_bits = 1 << bit;
            assert_eq!(assess(&cfg, &m).causes, vec![*cause]);
        }
        let mut m = healthy();
        m.alarm_bits = 1 << 20;
        assert!(!assess(&cfg, &m).tripped(), "reserved bits are ignored");
        m.alarm_bits = u32::MAX;
        assert_eq!(assess(&cfg, &m).causes.len(), 11);
    }

    #[test]
    fn codes_are_unique_snake_case() {
        let mut codes: Vec<&str> = TripCause::ALL.iter().map(|c| c.code()).collect();
        assert!(codes
            .iter()
            .all(|c| c.chars().all(|ch| ch.is_ascii_lowercase() || ch == '_')));
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), TripCause::ALL.len());
    }

    fn reading() -> impl Strategy<Value = Measurements> {
        (
            0.0f64..110.0,
            // None: a profile without cell temperatures (sunspec).
            proptest::option::of(-50.0f64..80.0),
            proptest::option::of(-50.0f64..40.0),
            0.0f64..1000.0,
            0.0f64..1e6,
            0.0f64..1e6,
            0u16..5,
            any::<u32>(),
        )
            .prop_map(
                |(soc, t_max, t_min, dc, bd, bc, state, alarms)| Measurements {
                    soc_pct: soc,
                    soh_pct: 100.0,
                    cell_temp_max_c: t_max,
                    cell_temp_min_c: t_min,
                    dc_voltage_v: dc,
                    bms_max_discharge_w: bd,
                    bms_max_charge_w: bc,
                    pcs_state: state,
                    alarm_bits: alarms,
                    ..healthy()
                },
            )
    }

    proptest! {
        #[test]
        fn limits_are_bounded_by_every_sub_limit(m in reading()) {
            let cfg = ProtectionConfig::default();
            let a = assess(&cfg, &m);
            for (s, site, bms) in [
                (a.limits.discharge, cfg.site_max_discharge_w, m.bms_max_discharge_w),
                (a.limits.charge, cfg.site_max_charge_w, m.bms_max_charge_w),
            ] {
                let e = s.effective();
                prop_assert!(e >= 0.0 && e <= site && e <= bms && e <= s.soc && e <= s.temperature);
                prop_assert!(s.soc >= 0.0 && s.soc <= site && s.temperature >= 0.0 && s.temperature <= site);
            }
            // Outside a window there is nothing left to derate: the edge itself allows 0.
            if m.soc_pct <= cfg.soc_min_pct { prop_assert_eq!(a.limits.discharge.soc, 0.0); }
            if m.soc_pct >= cfg.soc_max_pct { prop_assert_eq!(a.limits.charge.soc, 0.0); }
            if m.cell_temp_max_c.is_some_and(|t| t >= cfg.cell_temp_max_c) || m.cell_temp_min_c.is_some_and(|t| t <= cfg.cell_temp_min_c) {
                prop_assert_eq!(a.limits.discharge.temperature, 0.0);
                prop_assert_eq!(a.limits.charge.temperature, 0.0);
            }
            prop_assert_eq!(a.tripped(), m.alarm_bits & 0x7FF != 0
                || m.pcs_state == PCS_FAULT
                || (m.dc_voltage_v != 0.0 && !(cfg.dc_voltage_min_v..=cfg.dc_voltage_max_v).contains(&m.dc_voltage_v))
                || m.cell_temp_max_c.is_some_and(|t| t > cfg.cell_temp_max_c)
                || m.cell_temp_min_c.is_some_and(|t| t < cfg.cell_temp_min_c)
                || implausible(&m).is_some());
        }

        #[test]
        fn more_soc_never_allows_less_discharge(a in 0.0f64..100.0, b in 0.0f64..100.0) {
            let cfg = ProtectionConfig::default();
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            let at = |soc: f64| assess(&cfg, &Measurements { soc_pct: soc, ..healthy() }).limits;
            prop_assert!(at(lo).discharge.soc <= at(hi).discharge.soc);
            prop_assert!(at(lo).charge.soc >= at(hi).charge.soc);
        }
    }

    #[test]
    fn link_lost_allows_nothing() {
        let a = assess_link_lost(&ProtectionConfig::default());
        assert_eq!(a.causes, vec![TripCause::PcsLinkLost]);
        assert_eq!(a.limits.discharge.effective(), 0.0);
        assert_eq!(a.limits.charge.effective(), 0.0);
    }
}
