//! Per-session energy meters derived from the PCS lifetime energy registers.
//!
//! The PCS measures energy for the whole battery, one register per direction. Each cycle the
//! increase of a register since the last reading is split over the meters of that direction in
//! proportion to their allocation in the previous step, which is the allocation that was in force
//! while that energy flowed. Energy that flowed while no session of that direction had an
//! allocation (ramp-down after the last stop, a PCS that ran on during a lost link) is counted as
//! unattributed, so the books still balance.
//!
//! Meters only ever increase. The first reading only sets the baseline; a register that goes
//! backwards (PCS replaced or reset) or jumps by more than the site could have delivered in the
//! elapsed time (a corrupt read) sets a new baseline and adds nothing.

use std::collections::BTreeMap;

/// Connector 1 discharges the battery (+ setpoint), connector 2 charges it (- setpoint).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    Discharge,
    Charge,
}

impl Direction {
    pub fn sign(self) -> f64 {
        match self {
            Self::Discharge => 1.0,
            Self::Charge => -1.0,
        }
    }

    pub fn from_sign(sign: i64) -> Option<Self> {
        match sign {
            1 => Some(Self::Discharge),
            -1 => Some(Self::Charge),
            _ => None,
        }
    }
}

/// The lifetime registers at one reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EnergyRegisters {
    pub discharged_wh: u64,
    pub charged_wh: u64,
}

#[derive(Clone, Debug, Default)]
pub struct Metering {
    meters: BTreeMap<u32, f64>,
    baseline: Option<EnergyRegisters>,
    unattributed_discharge_wh: f64,
    unattributed_charge_wh: f64,
    rebaselines: u64,
}

impl Metering {
    /// Restores a meter (at start-up, from the journal). The only way a meter can go down.
    pub fn set(&mut self, meter_id: u32, energy_wh: f64) {
        self.meters.insert(meter_id, energy_wh.max(0.0));
    }

    /// Makes a meter known (at 0 Wh) without changing an existing one.
    pub fn ensure(&mut self, meter_id: u32) {
        self.meters.entry(meter_id).or_insert(0.0);
    }

    pub fn energy(&self, meter_id: u32) -> Option<f64> {
        self.meters.get(&meter_id).copied()
    }

    pub fn iter(&self) -> impl Iterator<Item = (u32, f64)> + '_ {
        self.meters.iter().map(|(k, v)| (*k, *v))
    }

    /// (discharge, charge) energy not attributed to any meter since start.
    pub fn unattributed_wh(&self) -> (f64, f64) {
        (self.unattributed_discharge_wh, self.unattributed_charge_wh)
    }

    /// How often a register went backwards or jumped implausibly.
    pub fn rebaselines(&self) -> u64 {
        self.rebaselines
    }

    /// Accounts one reading. `previous` is the allocation per meter of the previous step;
    /// `max_increase_wh` is the most energy that can plausibly have flowed since the last reading.
    pub fn update(
        &mut self,
        regs: EnergyRegisters,
        previous: &[(u32, Direction, f64)],
        max_increase_wh: f64,
    ) {
        let Some(base) = self.baseline.replace(regs) else {
            return;
        };
        for (dir, now, before) in [
            (Direction::Discharge, regs.discharged_wh, base.discharged_wh),
            (Direction::Charge, regs.charged_wh, base.charged_wh),
        ] {
            let Some(increase) = now.checked_sub(before) else {
                self.rebaselines += 1;
                continue;
            };
            if increase == 0 {
                continue;
            }
            let increase = increase as f64;
            if increase > max_increase_wh {
                self.rebaselines += 1;
                continue;
            }
            self.apportion(dir, increase, previous);
        }
    }

    fn apportion(&mut self, dir: Direction, increase: f64, previous: &[(u32, Direction, f64)]) {
        let total: f64 = previous
            .iter()
            .filter(|p| p.1 == dir && p.2 > 0.0)
            .map(|p| p.2)
            .sum();
        if total <= 0.0 {
            match dir {
                Direction::Discharge => self.unattributed_discharge_wh += increase,
                Direction::Charge => self.unattributed_charge_wh += increase,
            }
            return;
        }
        for &(id, d, alloc) in previous {
            if d == dir && alloc > 0.0 {
                *self.meters.entry(id).or_insert(0.0) += increase * alloc / total;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn regs(d: u64, c: u64) -> EnergyRegisters {
        EnergyRegisters {
            discharged_wh: d,
            charged_wh: c,
        }
    }

    #[test]
    fn first_reading_only_sets_the_baseline() {
        let mut m = Metering::default();
        let prev = [(0, Direction::Discharge, 100.0)];
        m.update(regs(1_000_000, 5), &prev, 1e9);
        assert_eq!(m.energy(0), None);
        m.update(regs(1_000_010, 5), &prev, 1e9);
        assert_eq!(m.energy(0), Some(10.0));
    }

    #[test]
    fn split_by_previous_allocation() {
        let mut m = Metering::default();
        let prev = [
            (0, Direction::Discharge, 100.0),
            (2, Direction::Discharge, 50.0),
            (3, Direction::Charge, 10.0),
        ];
        m.update(regs(0, 0), &prev, 1e9);
        m.update(regs(30, 4), &prev, 1e9);
        assert_eq!(m.energy(0), Some(20.0));
        assert_eq!(m.energy(2), Some(10.0));
        assert_eq!(m.energy(3), Some(4.0));
        assert_eq!(m.unattributed_wh(), (0.0, 0.0));
    }

    #[test]
    fn no_allocation_means_unattributed() {
        let mut m = Metering::default();
        m.update(regs(0, 0), &[], 1e9);
        m.update(regs(7, 3), &[(1, Direction::Charge, 0.0)], 1e9);
        assert_eq!(m.unattributed_wh(), (7.0, 3.0));
        assert_eq!(m.energy(1), None);
    }

    #[test]
    fn backwards_register_rebaselines() {
        let mut m = Metering::default();
        let prev = [(0, Direction::Discharge, 1.0)];
        m.update(regs(100, 0), &prev, 1e9);
        m.update(regs(110, 0), &prev, 1e9);
        m.update(regs(5, 0), &prev, 1e9); // PCS replaced
        assert_eq!(m.energy(0), Some(10.0));
        m.update(regs(8, 0), &prev, 1e9);
        assert_eq!(m.energy(0), Some(13.0));
        assert_eq!(m.rebaselines(), 1);
    }

    #[test]
    fn implausible_jump_rebaselines() {
        let mut m = Metering::default();
        let prev = [(0, Direction::Discharge, 1.0)];
        m.update(regs(100, 0), &prev, 50.0);
        m.update(regs(100 + (1 << 40), 0), &prev, 50.0);
        m.update(regs(120, 0), &prev, 50.0); // the good value again: backwards, rebaseline
        m.update(regs(130, 0), &prev, 50.0);
        assert_eq!(m.energy(0), Some(10.0));
        assert_eq!(m.rebaselines(), 2);
    }

    #[test]
    fn set_restores() {
        let mut m = Metering::default();
        m.set(4, 1234.5);
        m.ensure(4);
        assert_eq!(m.energy(4), Some(1234.5));
        m.ensure(5);
        assert_eq!(m.energy(5), Some(0.0));
    }

    proptest! {
        #[test]
        fn meters_never_decrease_and_energy_is_conserved(
            steps in proptest::collection::vec(
                (0u64..1000, 0u64..1000, any::<bool>(), proptest::collection::vec((0u32..6, any::<bool>(), 0.0f64..1e5), 0..6)),
                1..60)
        ) {
            let mut m = Metering::default();
            let (mut d, mut c) = (1_000u64, 1_000u64);
            let mut prev: Vec<(u32, Direction, f64)> = Vec::new();
            let mut last: BTreeMap<u32, f64> = BTreeMap::new();
            let mut counted = 0.0;
            let mut first = true;
            for (dd, dc, reset, allocs) in steps {
                if reset { d = dd; c = dc; } else { d += dd; c += dc; }
                let before_total: f64 = m.iter().map(|x| x.1).sum::<f64>() + m.unattributed_wh().0 + m.unattributed_wh().1;
                m.update(regs(d, c), &prev, 1e9);
                let after_total: f64 = m.iter().map(|x| x.1).sum::<f64>() + m.unattributed_wh().0 + m.unattributed_wh().1;
                if !reset && !first {
                    counted += (dd + dc) as f64;
                    prop_assert!((after_total - before_total - (dd + dc) as f64).abs() < 1e-6 * (1.0 + counted));
                }
                first = false;
                for (id, e) in m.iter() {
                    prop_assert!(e >= *last.get(&id).unwrap_or(&0.0));
                    last.insert(id, e);
                }
                prev = allocs.into_iter()
                    .map(|(id, dis, a)| (id, if dis { Direction::Discharge } else { Direction::Charge }, a))
                    .collect();
            }
        }
    }
}
