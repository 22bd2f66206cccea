//! The control core's parameters: one table of keys, defaults and ranges (design.md section 3),
//! so the bindings, the error messages and the docs cannot disagree.

use std::fmt;

use crate::gridmeter::MeterProfile;
use crate::profile::PcsProfile;
use crate::protection::ProtectionConfig;
use crate::regmap::RegisterMap;
use crate::site::SiteParams;

/// A parameter value as it arrives from the caller, before range checks.
#[derive(Clone, Debug, PartialEq)]
pub enum ParamValue {
    Int(i64),
    Float(f64),
    Str(String),
    /// `name -> address` (the `register_map` key).
    Map(Vec<(String, i64)>),
}

/// What kind of value a key takes, for the bindings' type conversion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamKind {
    Int,
    Float,
    Str,
    Map,
}

/// A bad parameter, naming its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamError {
    pub key: String,
    pub message: String,
}

impl ParamError {
    fn new(key: &str, message: impl Into<String>) -> Self {
        Self {
            key: key.to_string(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ParamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

impl std::error::Error for ParamError {}

/// (key, kind, min, max) for every accepted key. Ranges are inclusive.
pub const KEYS: [(&str, ParamKind, f64, f64); 31] = [
    ("period_ms", ParamKind::Int, 10.0, 1000.0),
    ("ramp_kw_per_s", ParamKind::Float, 0.001, 100_000.0),
    ("session_max_kw", ParamKind::Float, 0.0, 100_000.0),
    ("site_max_discharge_kw", ParamKind::Float, 0.0, 100_000.0),
    ("site_max_charge_kw", ParamKind::Float, 0.0, 100_000.0),
    ("soc_min_pct", ParamKind::Float, 0.0, 100.0),
    ("soc_max_pct", ParamKind::Float, 0.0, 100.0),
    ("dc_voltage_min_v", ParamKind::Float, 0.0, 2000.0),
    ("dc_voltage_max_v", ParamKind::Float, 0.0, 2000.0),
    ("cell_temp_min_c", ParamKind::Float, -40.0, 100.0),
    ("cell_temp_max_c", ParamKind::Float, -40.0, 100.0),
    ("pcs_host", ParamKind::Str, 0.0, 0.0),
    ("pcs_port", ParamKind::Int, 1.0, 65535.0),
    ("pcs_unit_id", ParamKind::Int, 0.0, 255.0),
    ("pcs_timeout_ms", ParamKind::Int, 20.0, 60_000.0),
    ("register_map", ParamKind::Map, 0.0, 65535.0),
    ("pcs_profile", ParamKind::Str, 0.0, 0.0),
    // The `[site]` table (design.md section 8); any `site_` key turns site management on.
    ("site_grid_meter_host", ParamKind::Str, 0.0, 0.0),
    ("site_grid_meter_port", ParamKind::Int, 1.0, 65535.0),
    ("site_grid_meter_unit_id", ParamKind::Int, 0.0, 255.0),
    ("site_grid_meter_profile", ParamKind::Str, 0.0, 0.0),
    ("site_grid_meter_timeout_ms", ParamKind::Int, 20.0, 60_000.0),
    ("site_grid_import_max_kw", ParamKind::Float, 0.0, 100_000.0),
    ("site_grid_export_max_kw", ParamKind::Float, 0.0, 100_000.0),
    ("site_peak_shave_kw", ParamKind::Float, 0.0, 100_000.0),
    ("site_demand_window_min", ParamKind::Int, 1.0, 60.0),
    ("site_recharge_below_kw", ParamKind::Float, 0.0, 100_000.0),
    ("site_recharge_max_kw", ParamKind::Float, 0.0, 100_000.0),
    ("site_reserve_soc_pct", ParamKind::Float, 0.0, 100.0),
    ("site_peak_margin_pct", ParamKind::Float, 0.0, 50.0),
    ("site_grid_limit_margin_pct", ParamKind::Float, 0.0, 10.0),
];

pub fn kind_of(key: &str) -> Option<ParamKind> {
    KEYS.iter().find(|k| k.0 == key).map(|k| k.1)
}

/// Everything the controller and the control thread need, in SI units (W, not kW).
#[derive(Clone, Debug, PartialEq)]
pub struct ControlParams {
    pub period_ms: u32,
    pub ramp_w_per_s: f64,
    /// Hard ceiling of any one session's cap (the connector rating).
    pub session_max_w: f64,
    pub protection: ProtectionConfig,
    pub pcs_host: String,
    pub pcs_port: u16,
    pub pcs_unit_id: u8,
    pub pcs_timeout_ms: u32,
    /// Used by the `generic` profile; `sunspec` discovers its layout at connect time.
    pub register_map: RegisterMap,
    pub pcs_profile: PcsProfile,
    /// Site energy management; `None` without a `[site]` table.
    pub site: Option<SiteParams>,
}

impl Default for ControlParams {
    fn default() -> Self {
        Self {
            period_ms: 100,
            ramp_w_per_s: 300_000.0,
            session_max_w: 150_000.0,
            protection: ProtectionConfig::default(),
            pcs_host: "127.0.0.1".to_string(),
            pcs_port: 5020,
            pcs_unit_id: 1,
            pcs_timeout_ms: 1000,
            register_map: RegisterMap::generic(),
            pcs_profile: PcsProfile::Generic,
            site: None,
        }
    }
}

impl ControlParams {
    /// Builds parameters from `(key, value)` pairs over the defaults; every key is optional.
    /// Unknown keys, wrong types and out-of-range values are errors naming the key.
    pub fn from_pairs<I>(pairs: I) -> Result<Self, ParamError>
    where
        I: IntoIterator<Item = (String, ParamValue)>,
    {
        let mut p = Self::default();
        for (key, value) in pairs {
            p.set(&key, value)?;
        }
        p.check_windows()?;
        Ok(p)
    }

    fn set(&mut self, key: &str, value: ParamValue) -> Result<(), ParamError> {
        let Some(&(_, kind, min, max)) = KEYS.iter().find(|k| k.0 == key) else {
            return Err(ParamError::new(key, "unknown key"));
        };
        let number = |v: &ParamValue| -> Result<f64, ParamError> {
            let x = match (kind, v) {
                (ParamKind::Int, ParamValue::Int(i)) => *i as f64,
                (ParamKind::Float, ParamValue::Int(i)) => *i as f64,
                (ParamKind::Float, ParamValue::Float(f)) => *f,
                (ParamKind::Int, _) => return Err(ParamError::new(key, "must be an integer")),
                _ => return Err(ParamError::new(key, "must be a number")),
            };
            if !(x.is_finite() && min <= x && x <= max) {
                return Err(ParamError::new(
                    key,
                    format!("{x} is outside {min}..={max}"),
                ));
            }
            Ok(x)
        };
        // Int keys are range-checked above, so the narrowing casts below cannot truncate.
        // `site_max_*_kw` are `[control]` keys; every other `site_` key is the `[site]` table.
        if let Some(field) = key.strip_prefix("site_").filter(|f| !f.starts_with("max_")) {
            let site = self.site.get_or_insert_with(SiteParams::default);
            match field {
                "grid_meter_host" => match value {
                    ParamValue::Str(s) if !s.trim().is_empty() => site.meter_host = s,
                    _ => return Err(ParamError::new(key, "must be a non-empty string")),
                },
                "grid_meter_port" => site.meter_port = number(&value)? as u16,
                "grid_meter_unit_id" => site.meter_unit_id = number(&value)? as u8,
                "grid_meter_profile" => match value {
                    ParamValue::Str(s) => {
                        site.meter_profile = MeterProfile::parse(&s).ok_or_else(|| {
                            ParamError::new(
                                key,
                                format!("{s:?}: must be \"generic\" or \"sunspec\""),
                            )
                        })?;
                    }
                    _ => return Err(ParamError::new(key, "must be \"generic\" or \"sunspec\"")),
                },
                "grid_meter_timeout_ms" => site.meter_timeout_ms = number(&value)? as u32,
                "grid_import_max_kw" => site.import_max_w = Some(number(&value)? * 1000.0),
                "grid_export_max_kw" => site.export_max_w = Some(number(&value)? * 1000.0),
                "peak_shave_kw" => site.peak_shave_w = Some(number(&value)? * 1000.0),
                "demand_window_min" => site.window_s = number(&value)? * 60.0,
                "recharge_below_kw" => site.recharge_below_w = Some(number(&value)? * 1000.0),
                "recharge_max_kw" => site.recharge_max_w = number(&value)? * 1000.0,
                "reserve_soc_pct" => site.reserve_soc_pct = Some(number(&value)?),
                "peak_margin_pct" => site.peak_margin = number(&value)? / 100.0,
                "grid_limit_margin_pct" => site.grid_limit_margin = number(&value)? / 100.0,
                _ => return Err(ParamError::new(key, "unknown key")),
            }
            return Ok(());
        }
        match key {
            "period_ms" => self.period_ms = number(&value)? as u32,
            "ramp_kw_per_s" => self.ramp_w_per_s = number(&value)? * 1000.0,
            "session_max_kw" => self.session_max_w = number(&value)? * 1000.0,
            "site_max_discharge_kw" => {
                self.protection.site_max_discharge_w = number(&value)? * 1000.0
            }
            "site_max_charge_kw" => self.protection.site_max_charge_w = number(&value)? * 1000.0,
            "soc_min_pct" => self.protection.soc_min_pct = number(&value)?,
            "soc_max_pct" => self.protection.soc_max_pct = number(&value)?,
            "dc_voltage_min_v" => self.protection.dc_voltage_min_v = number(&value)?,
            "dc_voltage_max_v" => self.protection.dc_voltage_max_v = number(&value)?,
            "cell_temp_min_c" => self.protection.cell_temp_min_c = number(&value)?,
            "cell_temp_max_c" => self.protection.cell_temp_max_c = number(&value)?,
            "pcs_port" => self.pcs_port = number(&value)? as u16,
            "pcs_unit_id" => self.pcs_unit_id = number(&value)? as u8,
            "pcs_timeout_ms" => self.pcs_timeout_ms = number(&value)? as u32,
            "pcs_host" => match value {
                ParamValue::Str(s) if !s.trim().is_empty() => self.pcs_host = s,
                _ => return Err(ParamError::new(key, "must be a non-empty string")),
            },
            "pcs_profile" => match value {
                ParamValue::Str(s) => {
                    self.pcs_profile = PcsProfile::parse(&s).ok_or_else(|| {
                        ParamError::new(key, format!("{s:?}: must be \"generic\" or \"sunspec\""))
                    })?;
                }
                _ => return Err(ParamError::new(key, "must be \"generic\" or \"sunspec\"")),
            },
            "register_map" => {
                let ParamValue::Map(entries) = value else {
                    return Err(ParamError::new(
                        key,
                        "must be a dict of register name -> address",
                    ));
                };
                let mut narrowed = Vec::with_capacity(entries.len());
                for (name, addr) in &entries {
                    let a = u16::try_from(*addr).map_err(|_| {
                        ParamError::new(key, format!("{name}: address {addr} outside 0..=65535"))
                    })?;
                    narrowed.push((name.as_str(), a));
                }
                self.register_map = RegisterMap::from_entries(narrowed)
                    .map_err(|e| ParamError::new(key, e.to_string()))?;
            }
            _ => return Err(ParamError::new(key, "unknown key")),
        }
        Ok(())
    }

    /// Each window's lower edge must be below its upper edge; the error names the upper key.
    fn check_windows(&self) -> Result<(), ParamError> {
        let p = &self.protection;
        for (lo, hi, key) in [
            (p.soc_min_pct, p.soc_max_pct, "soc_max_pct"),
            (p.dc_voltage_min_v, p.dc_voltage_max_v, "dc_voltage_max_v"),
            (p.cell_temp_min_c, p.cell_temp_max_c, "cell_temp_max_c"),
        ] {
            if lo >= hi {
                return Err(ParamError::new(
                    key,
                    format!("{hi} must be above the minimum {lo}"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(v: &[(&str, ParamValue)]) -> Result<ControlParams, ParamError> {
        ControlParams::from_pairs(v.iter().map(|(k, v)| (k.to_string(), v.clone())))
    }

    #[test]
    fn defaults_are_design_defaults() {
        let p = pairs(&[]).unwrap();
        assert_eq!(p.period_ms, 100);
        assert_eq!(p.ramp_w_per_s, 300_000.0);
        assert_eq!(p.protection.site_max_charge_w, 600_000.0);
        assert_eq!(p.pcs_port, 5020);
        assert_eq!(p.pcs_timeout_ms, 1000);
    }

    #[test]
    fn sets_and_converts_units() {
        let p = pairs(&[
            ("period_ms", ParamValue::Int(20)),
            ("ramp_kw_per_s", ParamValue::Int(100)),
            ("site_max_discharge_kw", ParamValue::Float(12.5)),
            ("pcs_host", ParamValue::Str("pcs.local".into())),
        ])
        .unwrap();
        assert_eq!(p.period_ms, 20);
        assert_eq!(p.ramp_w_per_s, 100_000.0);
        assert_eq!(p.protection.site_max_discharge_w, 12_500.0);
        assert_eq!(p.pcs_host, "pcs.local");
    }

    #[test]
    fn errors_name_the_key() {
        let key = |v: &[(&str, ParamValue)]| pairs(v).unwrap_err().key;
        assert_eq!(key(&[("period_ms", ParamValue::Int(5))]), "period_ms");
        assert_eq!(key(&[("period_ms", ParamValue::Float(50.0))]), "period_ms");
        assert_eq!(key(&[("bogus", ParamValue::Int(5))]), "bogus");
        assert_eq!(
            key(&[("soc_min_pct", ParamValue::Float(f64::NAN))]),
            "soc_min_pct"
        );
        assert_eq!(
            key(&[("soc_min_pct", ParamValue::Float(96.0))]),
            "soc_max_pct"
        );
        assert_eq!(
            key(&[("pcs_host", ParamValue::Str(" ".into()))]),
            "pcs_host"
        );
        assert_eq!(key(&[("pcs_port", ParamValue::Int(0))]), "pcs_port");
        assert_eq!(
            key(&[("pcs_profile", ParamValue::Str("modbus".into()))]),
            "pcs_profile"
        );
        let p = pairs(&[("pcs_profile", ParamValue::Str("sunspec".into()))]).unwrap();
        assert_eq!(p.pcs_profile, PcsProfile::SunSpec);
        assert_eq!(
            key(&[("register_map", ParamValue::Map(vec![("soc_pct".into(), 7)]))]),
            "register_map"
        );
    }

    #[test]
    fn register_map_from_pairs() {
        let entries: Vec<(String, i64)> = RegisterMap::generic()
            .entries()
            .into_iter()
            .map(|(n, a)| (n.to_string(), i64::from(a) + 1000))
            .collect();
        let p = pairs(&[("register_map", ParamValue::Map(entries))]).unwrap();
        assert_eq!(p.register_map.read_start, 1100);
        assert_eq!(p.register_map.write_start, 1000);
        let bad = vec![("soc_pct".to_string(), 70_000i64)];
        assert!(pairs(&[("register_map", ParamValue::Map(bad))]).is_err());
    }
}
