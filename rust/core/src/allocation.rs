//! Sharing a direction's power limit among the sessions of that direction.
//!
//! Policy: max-min fairness by water-filling. Every session gets the same share of what is
//! available, except a session whose cap is below that share, which gets its cap; what it leaves
//! unused is shared again among the others. So:
//! - when the limit covers every cap, every session gets its full cap;
//! - when it does not, the limit is used in full, the smallest requests are served in full, and
//!   the remaining sessions get equal shares (nobody gets more than a session that wanted more);
//! - no session ever gets more than its cap, and the sum never exceeds the limit.
//!
//! Equal shares rather than shares proportional to the cap, because a cap is what an EV or a CSMS
//! asked for, not an entitlement: a session asking for 150 kW should not starve one asking for
//! 50 kW when the battery is derating.

/// Allocations in the order of `caps`. Negative or NaN caps and limits count as 0.
pub fn water_fill(available_w: f64, caps: &[f64]) -> Vec<f64> {
    let sane = |v: f64| if v.is_nan() { 0.0 } else { v.max(0.0) };
    let mut out = vec![0.0; caps.len()];
    let mut order: Vec<usize> = (0..caps.len()).collect();
    order.sort_by(|&a, &b| sane(caps[a]).total_cmp(&sane(caps[b])));
    let mut remaining = sane(available_w);
    for (served, &i) in order.iter().enumerate() {
        let share = remaining / (order.len() - served) as f64;
        // min with `remaining` keeps the running sum at or below the limit despite rounding.
        let a = sane(caps[i]).min(share).min(remaining);
        out[i] = a;
        remaining = (remaining - a).max(0.0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn enough_for_everyone() {
        assert_eq!(
            water_fill(600.0, &[150.0, 100.0, 50.0]),
            vec![150.0, 100.0, 50.0]
        );
    }

    #[test]
    fn small_requests_are_served_first() {
        assert_eq!(
            water_fill(200.0, &[150.0, 150.0, 20.0]),
            vec![90.0, 90.0, 20.0]
        );
    }

    #[test]
    fn equal_shares_when_all_want_more() {
        assert_eq!(
            water_fill(300.0, &[150.0, 150.0, 150.0]),
            vec![100.0, 100.0, 100.0]
        );
    }

    #[test]
    fn degenerate_inputs() {
        assert!(water_fill(100.0, &[]).is_empty());
        assert_eq!(water_fill(0.0, &[10.0]), vec![0.0]);
        assert_eq!(water_fill(-5.0, &[10.0]), vec![0.0]);
        assert_eq!(water_fill(f64::NAN, &[10.0]), vec![0.0]);
        assert_eq!(
            water_fill(10.0, &[f64::NAN, -1.0, 4.0]),
            vec![0.0, 0.0, 4.0]
        );
        assert_eq!(water_fill(f64::INFINITY, &[7.0]), vec![7.0]);
    }

    proptest! {
        #[test]
        fn never_above_cap_or_limit(available in 0.0f64..2e6,
                                    caps in proptest::collection::vec(0.0f64..3e5, 0..50)) {
            let a = water_fill(available, &caps);
            let sum: f64 = a.iter().sum();
            prop_assert!(sum <= available * (1.0 + 1e-12) + 1e-9);
            for (x, c) in a.iter().zip(&caps) {
                prop_assert!(*x >= 0.0 && *x <= *c);
            }
        }

        #[test]
        fn uses_the_limit_or_serves_everyone(available in 0.0f64..2e6,
                                             caps in proptest::collection::vec(0.0f64..3e5, 1..50)) {
            let a = water_fill(available, &caps);
            let sum: f64 = a.iter().sum();
            let want: f64 = caps.iter().sum();
            prop_assert!((sum - available.min(want)).abs() <= 1e-6 * (1.0 + want));
        }

        #[test]
        fn max_min_fair(available in 0.0f64..2e6,
                        caps in proptest::collection::vec(0.0f64..3e5, 1..50)) {
            // Anyone below their cap gets at least as much as everyone else.
            let a = water_fill(available, &caps);
            let top = a.iter().cloned().fold(0.0, f64::max);
            for (x, c) in a.iter().zip(&caps) {
                if *x < *c - 1e-6 {
                    prop_assert!(*x >= top - 1e-6);
                }
            }
        }
    }
}
