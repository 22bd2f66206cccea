//! Per-session energy meters derived from the PCS lifetime energy registers.
//!
//! The PCS measures energy for the whole battery, one register per direction. Each cycle the
//! increase of a register since the last reading is split over the meters of that direction in
//! proportion to the power each one owned while that energy flowed:
//!
//! - a running session owns its allocation of the previous step (the one in force while the
//!   energy flowed);
//! - a meter whose allocation went down (its session stopped, a trip or a lost link took it to
//!   0, a lower limit) owns a *tail*: the part of the reduction still flowing while the setpoint
//!   ramps down and the PCS follows. A tail is capped after every reading by the measured flow
//!   beyond what the running sessions explain, so it ends when the power it stood for is gone
//!   (or went to another session). While the link is lost there is no measurement, so tails
//!   hold and the energy found at the next reading goes to the meters that had the power.
//!
//! Only energy that flowed while no meter owned any power of that direction is unattributed, so
//! the books still balance. A stopped session's meter is *settling* until its tail has ended;
//! its final value (a StopTransaction's meterStop) is read after that.
//!
//! Meters only ever increase. The first reading only sets the baseline; a register that jumps by
//! more than the site could have delivered in the elapsed time (a corrupt read) sets a new
//! baseline and adds nothing. A register that reads lower than its baseline is a glitch until it
//! has stayed low for `RESET_READINGS` readings in a row: a glitch (100000, 99500, 100010) adds
//! only what the register gained over its baseline (10 Wh), never the dip twice; a real reset
//! (PCS replaced, 100000, 0, 5, 9) adds what it counted from its first low reading on (9 Wh),
//! once confirmed.
//!
//! A tail ages only while readings arrive: during a lost link nothing is measured, so a tail
//! waits for the next reading instead of expiring and leaving that energy unattributed.

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

/// A tail below this is over: what is left is PCS tracking error, not a session's power.
pub const TAIL_END_W: f64 = 50.0;

/// A tail that has been measured for this long ends whatever the measurement says (a PCS that
/// never settles exactly on its setpoint must not keep a stopped meter settling for ever).
pub const TAIL_MAX_S: f64 = 10.0;

/// Readings in a row below the baseline that make a register reset (not a glitch).
pub const RESET_READINGS: u32 = 3;

#[derive(Clone, Copy, Debug, PartialEq)]
struct Tail {
    direction: Direction,
    power_w: f64,
    /// Measured time since the tail last grew (time without readings does not count).
    age_s: f64,
}

/// One lifetime register's baseline.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Baseline {
    value: u64,
    /// The current run of readings below `value`: its first and highest reading, and its length.
    low: Option<(u64, u64, u32)>,
}

#[derive(Clone, Debug, Default)]
pub struct Metering {
    meters: BTreeMap<u32, f64>,
    tails: BTreeMap<u32, Tail>,
    baseline: Option<(Baseline, Baseline)>,
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

    /// True while a meter owns a tail (power it had that is still flowing).
    pub fn settling(&self, meter_id: u32) -> bool {
        self.tails.contains_key(&meter_id)
    }

    /// Ends a meter's tail at once (a new session on the meter owns what flows from now on).
    pub fn end_tail(&mut self, meter_id: u32) {
        self.tails.remove(&meter_id);
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
        let Some((mut dis, mut chg)) = self.baseline else {
            let at = |v| Baseline {
                value: v,
                low: None,
            };
            self.baseline = Some((at(regs.discharged_wh), at(regs.charged_wh)));
            return;
        };
        for (dir, now, base) in [
            (Direction::Discharge, regs.discharged_wh, &mut dis),
            (Direction::Charge, regs.charged_wh, &mut chg),
        ] {
            let Some(increase) = self.advance(base, now) else {
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
        self.baseline = Some((dis, chg));
    }

    /// Moves a baseline to a new reading; the increase to count, if any.
    fn advance(&mut self, base: &mut Baseline, now: u64) -> Option<u64> {
        if now >= base.value {
            let increase = now - base.value;
            *base = Baseline {
                value: now,
                low: None,
            };
            return Some(increase);
        }
        // A run of readings below the baseline. Within it the same rule holds one level down:
        // only rises above the run's highest reading count, so a dip inside the run is no
        // energy either.
        let (first, high, n) = match base.low {
            Some((first, high, n)) => (first, high.max(now), n + 1),
            None => (now, now, 1),
        };
        if n >= RESET_READINGS {
            // It stayed low: the register was reset; count from its first low reading.
            self.rebaselines += 1;
            *base = Baseline {
                value: high,
                low: None,
            };
            return Some(high - first);
        }
        base.low = Some((first, high, n));
        None
    }

    fn apportion(&mut self, dir: Direction, increase: f64, previous: &[(u32, Direction, f64)]) {
        let mut weights: Vec<(u32, f64)> = previous
            .iter()
            .filter(|p| p.1 == dir && p.2 > 0.0)
            .map(|p| (p.0, p.2))
            .collect();
        weights.extend(
            self.tails
                .iter()
                .filter(|(_, t)| t.direction == dir)
                .map(|(id, t)| (*id, t.power_w)),
        );
        let total: f64 = weights.iter().map(|w| w.1).sum();
        if total <= 0.0 {
            match dir {
                Direction::Discharge => self.unattributed_discharge_wh += increase,
                Direction::Charge => self.unattributed_charge_wh += increase,
            }
            return;
        }
        for (id, w) in weights {
            *self.meters.entry(id).or_insert(0.0) += increase * w / total;
        }
    }

    /// After a step decided `next` (allocations in force from now) following `previous`:
    /// reductions become tails, and tails are capped by `flow_w`, the measured (discharge,
    /// charge) flow now (`None` while the link is lost: tails hold).
    /// `elapsed_s` is the time since the previous step; it ages the tails only when this step
    /// has a measurement.
    pub fn retarget(
        &mut self,
        elapsed_s: f64,
        previous: &[(u32, Direction, f64)],
        next: &[(u32, Direction, f64)],
        flow_w: Option<(f64, f64)>,
    ) {
        if flow_w.is_some() {
            let dt = if elapsed_s.is_finite() {
                elapsed_s.max(0.0)
            } else {
                0.0
            };
            for t in self.tails.values_mut() {
                t.age_s += dt;
            }
        }
        let next_of: BTreeMap<u32, f64> = next.iter().map(|n| (n.0, n.2)).collect();
        for &(id, dir, before) in previous {
            let after = next_of.get(&id).copied().unwrap_or(0.0);
            if before > after {
                let t = self.tails.entry(id).or_insert(Tail {
                    direction: dir,
                    power_w: 0.0,
                    age_s: 0.0,
                });
                t.direction = dir;
                t.power_w += before - after;
                t.age_s = 0.0;
            }
        }
        if let Some((dis, chg)) = flow_w {
            for (dir, flow) in [(Direction::Discharge, dis), (Direction::Charge, chg)] {
                let excess = (flow - explained_w(dir, next)).max(0.0);
                let held: f64 = self
                    .tails
                    .values()
                    .filter(|t| t.direction == dir)
                    .map(|t| t.power_w)
                    .sum();
                if held > excess {
                    let k = excess / held;
                    for t in self.tails.values_mut().filter(|t| t.direction == dir) {
                        t.power_w *= k;
                    }
                }
            }
        }
        self.tails
            .retain(|_, t| t.power_w >= TAIL_END_W && t.age_s < TAIL_MAX_S);
    }
}

/// The net flow of `dir` that the running sessions explain: their allocations less those of the
/// other direction (the PCS setpoint is the net of both).
fn explained_w(dir: Direction, allocs: &[(u32, Direction, f64)]) -> f64 {
    let sum = |d: Direction| -> f64 { allocs.iter().filter(|a| a.1 == d).map(|a| a.2).sum() };
    let other = if dir == Direction::Discharge {
        Direction::Charge
    } else {
        Direction::Discharge
    };
    (sum(dir) - sum(other)).max(0.0)
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
        m.update(regs(5, 0), &prev, 1e9); // PCS replaced: a glitch until it stays low
        m.update(regs(8, 0), &prev, 1e9);
        assert_eq!(m.energy(0), Some(10.0));
        assert_eq!(m.rebaselines(), 0);
        m.update(regs(12, 0), &prev, 1e9); // third reading below 110: a reset, counted from 5
        assert_eq!(m.energy(0), Some(17.0));
        m.update(regs(13, 0), &prev, 1e9);
        assert_eq!(m.energy(0), Some(18.0));
        assert_eq!(m.rebaselines(), 1);
    }

    #[test]
    fn a_backward_glitch_is_not_counted_twice() {
        // The sequence: 100000, 99500, 100010 delivered 10 Wh, not 510.
        let mut m = Metering::default();
        let prev = [(0, Direction::Discharge, 1.0), (1, Direction::Charge, 1.0)];
        m.update(regs(100_000, 50_000), &prev, 1e9);
        m.update(regs(99_500, 49_000), &prev, 1e9);
        m.update(regs(100_010, 50_003), &prev, 1e9);
        assert_eq!((m.energy(0), m.energy(1)), (Some(10.0), Some(3.0)));
        // Two glitched readings in a row are still a glitch.
        m.update(regs(90_000, 50_003), &prev, 1e9);
        m.update(regs(95_000, 50_003), &prev, 1e9);
        m.update(regs(100_020, 50_003), &prev, 1e9);
        assert_eq!(m.energy(0), Some(20.0));
        assert_eq!(m.rebaselines(), 0);
    }

    #[test]
    fn implausible_jump_rebaselines() {
        let mut m = Metering::default();
        let prev = [(0, Direction::Discharge, 1.0)];
        m.update(regs(100, 0), &prev, 50.0);
        m.update(regs(100 + (1 << 40), 0), &prev, 50.0);
        m.update(regs(120, 0), &prev, 50.0); // the good value again: backwards
        m.update(regs(130, 0), &prev, 50.0);
        m.update(regs(140, 0), &prev, 50.0); // stayed below the corrupt value: counted from 120
        assert_eq!(m.energy(0), Some(20.0));
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

    #[test]
    fn a_stopped_meter_owns_its_ramp_down_until_the_flow_ends() {
        let mut m = Metering::default();
        let running = [(0, Direction::Discharge, 100_000.0)];
        m.update(regs(0, 0), &running, 1e9);
        m.retarget(0.0, &running, &running, Some((100_000.0, 0.0)));
        assert!(!m.settling(0));
        m.retarget(0.1, &running, &[], Some((100_000.0, 0.0))); // stopped
        assert!(m.settling(0));
        m.update(regs(5, 0), &[], 1e9);
        m.retarget(0.2, &[], &[], Some((40_000.0, 0.0))); // ramping down: the tail shrinks
        m.update(regs(7, 0), &[], 1e9);
        m.retarget(0.3, &[], &[], Some((0.0, 0.0)));
        assert!(!m.settling(0));
        m.update(regs(8, 0), &[], 1e9);
        assert_eq!(m.energy(0), Some(7.0));
        assert_eq!(m.unattributed_wh(), (1.0, 0.0));
    }

    #[test]
    fn a_tail_waits_for_measurements_through_a_lost_link() {
        let mut m = Metering::default();
        let running = [(0, Direction::Discharge, 100_000.0)];
        m.update(regs(0, 0), &running, 1e9);
        // The link is lost: allocations go to 0, the PCS keeps running until its watchdog.
        m.retarget(0.1, &running, &[], None);
        for _ in 0..300 {
            m.retarget(0.1, &[], &[], None); // 30 s without a reading
        }
        assert!(m.settling(0));
        m.update(regs(400, 0), &[], 1e9);
        assert_eq!(
            m.energy(0),
            Some(400.0),
            "the energy found is the session's"
        );
        assert_eq!(m.unattributed_wh(), (0.0, 0.0));
        // Measured time ages it: 10 s of readings that still show the flow end it.
        for _ in 0..101 {
            m.retarget(0.1, &[], &[], Some((100_000.0, 0.0)));
        }
        assert!(!m.settling(0));
    }

    #[test]
    fn a_tail_shares_with_running_sessions_by_power() {
        let mut m = Metering::default();
        let before = [
            (0, Direction::Discharge, 60.0),
            (1, Direction::Discharge, 60.0),
        ];
        let after = [(1, Direction::Discharge, 60.0)];
        m.update(regs(0, 0), &before, 1e9);
        m.retarget(0.0, &before, &after, None);
        m.update(regs(12, 0), &after, 1e9);
        assert_eq!((m.energy(0), m.energy(1)), (Some(6.0), Some(6.0)));
        // measured flow back to what session 1 explains: session 0 is final
        m.retarget(0.1, &after, &after, Some((60.0, 0.0)));
        assert!(!m.settling(0));
        m.end_tail(1);
    }

    #[test]
    fn a_tail_on_the_other_side_of_the_net_is_capped_by_the_net_flow() {
        let mut m = Metering::default();
        let before = [
            (0, Direction::Discharge, 150_000.0),
            (1, Direction::Charge, 100_000.0),
        ];
        let after = [(1, Direction::Charge, 100_000.0)];
        m.retarget(0.0, &before, &after, Some((50_000.0, 0.0)));
        assert!(m.settling(0));
        m.update(regs(0, 0), &after, 1e9);
        m.update(regs(4, 0), &after, 1e9);
        assert_eq!(m.energy(0), Some(4.0)); // the charge session has no part in discharge
        m.retarget(10.0, &after, &after, Some((0.0, 100_000.0)));
        assert!(!m.settling(0));
    }

    #[derive(Clone, Debug)]
    enum Reg {
        Inc(u64),
        /// The next reading (or two) dips this far below the register, then it is back.
        Glitch(u64, bool),
        /// The PCS is replaced: the register restarts from this value.
        Reset(u64),
    }

    proptest! {
        #[test]
        fn meters_never_decrease_and_energy_is_conserved(
            steps in proptest::collection::vec(
                (prop_oneof![
                    6 => (0u64..1000).prop_map(Reg::Inc),
                    1 => (1u64..5000, any::<bool>()).prop_map(|(d, two)| Reg::Glitch(d, two)),
                    1 => (0u64..100).prop_map(Reg::Reset),
                 ],
                 proptest::collection::vec((0u32..6, any::<bool>(), 0.0f64..1e5), 0..6)),
                1..60)
        ) {
            // The reference is the true register the test builds: every Inc is energy that
            // flowed; dips and restarts are not.
            let mut m = Metering::default();
            let mut d = 20_000u64;
            let mut flowed = 0u64;
            let mut prev: Vec<(u32, Direction, f64)> = Vec::new();
            let mut last: BTreeMap<u32, f64> = BTreeMap::new();
            let total = |m: &Metering| m.iter().map(|x| x.1).sum::<f64>()
                + m.unattributed_wh().0 + m.unattributed_wh().1;
            m.update(regs(d, 0), &prev, 1e9);
            let mut check = |m: &Metering| -> Result<(), TestCaseError> {
                for (id, e) in m.iter() {
                    prop_assert!(e >= *last.get(&id).unwrap_or(&0.0));
                    last.insert(id, e);
                }
                Ok(())
            };
            for (op, allocs) in steps {
                prev = allocs.into_iter()
                    .map(|(id, dis, a)| (id, if dis { Direction::Discharge } else { Direction::Charge }, a))
                    .collect();
                match op {
                    Reg::Inc(n) => { d += n; flowed += n; m.update(regs(d, 0), &prev, 1e9); }
                    Reg::Glitch(dip, two) => {
                        for _ in 0..(1 + usize::from(two)) {
                            m.update(regs(d.saturating_sub(dip), 0), &prev, 1e9);
                            check(&m)?;
                        }
                        m.update(regs(d, 0), &prev, 1e9);
                    }
                    // Only from well above the restart value, so it cannot pass the old value
                    // before it is confirmed.
                    Reg::Reset(v) if d > 10_000 => { d = v; m.update(regs(d, 0), &prev, 1e9); }
                    Reg::Reset(_) => {}
                }
                check(&m)?;
            }
            // Readings at rest confirm a pending reset; then the books balance exactly.
            for _ in 0..RESET_READINGS {
                m.update(regs(d, 0), &prev, 1e9);
            }
            prop_assert!((total(&m) - flowed as f64).abs() < 1e-6 * (1.0 + flowed as f64),
                "counted {} for {} flowed", total(&m), flowed);
        }
    }
}
