//! Slew limiting of the net setpoint.
//!
//! The rule (docs/architecture.md, "Control rules"): the setpoint moves towards the target by at
//! most `ramp * dt`, but limits act at once. A setpoint that the current limits no longer allow is
//! first clamped into them in the same step (a derating battery must not wait for a ramp), and a
//! trip or lost link puts it at 0 immediately. Ramping applies only to changes of demand.

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
    let lo = inp.lo_w.min(0.0);
    let hi = inp.hi_w.max(0.0);
    let start = previous_w.clamp(lo, hi);
    let target = inp.target_w.clamp(lo, hi);
    let step = (inp.ramp_w_per_s * inp.dt_s.max(0.0)).max(0.0);
    let moved = if target > start {
        (start + step).min(target)
    } else {
        (start - step).max(target)
    };
    // Rounding of start +- step must not leave the limits.
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
        assert_eq!(
            next_setpoint(100_000.0, &inp(0.0, -1e6, 1e6, 0.1)),
            70_000.0
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
        // Clamped, then ramped towards the other direction.
        assert_eq!(
            next_setpoint(100_000.0, &inp(-100_000.0, -1e6, 0.0, 0.1)),
            -30_000.0
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
            let clamped = prev.clamp(lo, hi);
            prop_assert!((next - clamped).abs() <= ramp * dt * (1.0 + 1e-12) + 1e-6);
            // Never overshoots the target.
            let t = target.clamp(lo, hi);
            prop_assert!((next - t).abs() <= (clamped - t).abs() + 1e-6);
        }
    }
}
