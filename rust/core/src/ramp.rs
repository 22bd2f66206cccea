//! Slew limiting of the net setpoint.
//!
//! The rule (docs/control.md, "Ramps"): limits act at once, demand is ramped.
//!
//! - A setpoint that the limits in force no longer allow is clamped into them in the same step
//!   (a derating battery or a lowered OCPP limit must not wait for a ramp).
//! - A *decrease* of |setpoint| towards the target is made at once, whatever lowered the target:
//!   a session cap, a TxProfile, a group limit, a stop. The next write holds it.
//! - An *increase* of |setpoint| moves by at most `ramp * dt`.
//! - A *reversal* goes through 0: the old direction drops to 0 at once (it is a decrease), and the
//!   new direction ramps up from 0 in the same step.
//! - A trip or lost link (`force_zero`) puts the setpoint at 0 immediately.

/// Where the setpoint goes this step. `lo <= 0 <= hi` are the net limits (`-charge`, `+discharge`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RampInput {
    pub target_w: f64,
    pub lo_w: f64,
    pub hi_w: f64,
    pub ramp_w_per_s: f64,
    pub dt_s: f64,
    /// Trip or lost link: 0 now, no ramp.
    pub force_zero: bool,
}

/// The new setpoint from the previous one.
pub fn next_setpoint(previous_w: f64, inp: &RampInput) -> f64 {
    if inp.force_zero {
        return 0.0;
    }
    // NaN limits or targets mean "nothing is known": 0 is the only safe answer.
    if !(inp.lo_w.is_finite() && inp.hi_w.is_finite() && inp.target_w.is_finite()) {
        return 0.0;
    }
    let lo = inp.lo_w.min(0.0);
    let hi = inp.hi_w.max(0.0);
    let previous = if previous_w.is_finite() {
        previous_w
    } else {
        0.0
    };
    let start = previous.clamp(lo, hi);
    let target = inp.target_w.clamp(lo, hi);
    let step = (inp.ramp_w_per_s * inp.dt_s.max(0.0)).max(0.0);
    let step = if step.is_finite() { step } else { 0.0 };
    // Reversal: the old direction is gone at once, the new one starts from 0.
    let base = if start * target < 0.0 { 0.0 } else { start };
    let moved = if target.abs() <= base.abs() {
        // Same side and not larger: a decrease (or no change), made in full.
        target
    } else if target > base {
        (base + step).min(target)
    } else {
        (base - step).max(target)
    };
    // Rounding of base +- step must not leave the limits.
    moved.clamp(lo, hi)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn inp(target: f64, lo: f64, hi: f64, dt: f64) -> RampInput {
        RampInput {
            target_w: target,
            lo_w: lo,
            hi_w: hi,
            ramp_w_per_s: 300_000.0,
            dt_s: dt,
            force_zero: false,
        }
    }

    #[test]
    fn ramps_up_and_down() {
        assert_eq!(
            next_setpoint(0.0, &inp(150_000.0, -1e6, 1e6, 0.1)),
            30_000.0
        );
        assert_eq!(
            next_setpoint(140_000.0, &inp(150_000.0, -1e6, 1e6, 0.1)),
            150_000.0
        );
        assert_eq!(
            next_setpoint(0.0, &inp(-150_000.0, -1e6, 1e6, 0.1)),
            -30_000.0
        );
        // Decreases are made at once.
        assert_eq!(next_setpoint(100_000.0, &inp(0.0, -1e6, 1e6, 0.1)), 0.0);
        assert_eq!(
            next_setpoint(100_000.0, &inp(40_000.0, -1e6, 1e6, 0.1)),
            40_000.0
        );
        assert_eq!(
            next_setpoint(-100_000.0, &inp(-10_000.0, -1e6, 1e6, 0.1)),
            -10_000.0
        );
    }

    #[test]
    fn lowered_limit_clamps_at_once() {
        assert_eq!(
            next_setpoint(150_000.0, &inp(150_000.0, -1e6, 50_000.0, 0.1)),
            50_000.0
        );
        assert_eq!(
            next_setpoint(-150_000.0, &inp(-150_000.0, -20_000.0, 1e6, 0.1)),
            -20_000.0
        );
        // A reversal: the old direction drops to 0 at once, the new one ramps from 0.
        assert_eq!(
            next_setpoint(100_000.0, &inp(-100_000.0, -1e6, 0.0, 0.1)),
            -30_000.0
        );
        assert_eq!(
            next_setpoint(100_000.0, &inp(-10_000.0, -1e6, 1e6, 0.1)),
            -10_000.0
        );
    }

    #[test]
    fn trip_goes_straight_to_zero() {
        let mut i = inp(150_000.0, -1e6, 1e6, 0.1);
        i.force_zero = true;
        assert_eq!(next_setpoint(150_000.0, &i), 0.0);
    }

    #[test]
    fn zero_or_negative_dt_holds() {
        assert_eq!(next_setpoint(10.0, &inp(150_000.0, -1e6, 1e6, 0.0)), 10.0);
        assert_eq!(next_setpoint(10.0, &inp(150_000.0, -1e6, 1e6, -1.0)), 10.0);
    }

    proptest! {
        #[test]
        fn slew_and_limits(prev in -1e6f64..1e6, target in -1e6f64..1e6, lo in -1e6f64..0.0,
                           hi in 0.0f64..1e6, dt in 0.0f64..2.0, ramp in 1.0f64..1e6) {
            let i = RampInput { target_w: target, lo_w: lo, hi_w: hi, ramp_w_per_s: ramp, dt_s: dt, force_zero: false };
            let next = next_setpoint(prev, &i);
            prop_assert!(next >= lo && next <= hi);
            let t = target.clamp(lo, hi);
            let clamped = prev.clamp(lo, hi);
            // Written from the rule, not the code: |setpoint| grows by at most ramp * dt over
            // what the old direction kept (0 after a reversal), never grows past the target, and
            // a smaller target on the same side is reached at once.
            let kept = if clamped * t < 0.0 { 0.0 } else { clamped.abs() };
            prop_assert!(next.abs() <= kept + ramp * dt * (1.0 + 1e-12) + 1e-6);
            prop_assert!(next.abs() <= t.abs().max(kept.min(t.abs())) + 1e-6);
            prop_assert!(next * t >= 0.0, "never on the side the target is not");
            if t.abs() <= kept {
                prop_assert_eq!(next, t);
            }
        }
    }
}
