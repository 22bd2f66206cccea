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

use std::collections::BTreeMap;

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

/// Caps after the groups: `groups[i]` names the group of session `i` (or none), and
/// `group_limits` caps the sum of each group (a group without an entry is unlimited). Each group's
/// limit is water-filled over its members' caps, so inside a group the shares are max-min fair and
/// the group never takes more than its limit; a session outside any group keeps its cap.
pub fn group_caps(
    caps: &[f64],
    groups: &[Option<u32>],
    group_limits: &BTreeMap<u32, f64>,
) -> Vec<f64> {
    let mut effective = caps.to_vec();
    let mut members: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (i, g) in groups.iter().enumerate().take(caps.len()) {
        if let Some(g) = g {
            members.entry(*g).or_default().push(i);
        }
    }
    for (g, idx) in members {
        let Some(&limit) = group_limits.get(&g) else {
            continue;
        };
        let inner: Vec<f64> = idx.iter().map(|&i| caps[i]).collect();
        for (&i, a) in idx.iter().zip(water_fill(limit, &inner)) {
            effective[i] = a;
        }
    }
    effective
}

/// Water-filling with groups under one overall limit.
///
/// Groups are disjoint, so max-min fairness (progressive filling) freezes a session at
/// min(cap, its group's level, the overall level). The group's level is what `water_fill` finds
/// inside the group, so filling each group first (`group_caps`) and then filling `available`
/// over the results gives the same allocation as progressive filling over both at once.
pub fn water_fill_grouped(
    available_w: f64,
    caps: &[f64],
    groups: &[Option<u32>],
    group_limits: &BTreeMap<u32, f64>,
) -> Vec<f64> {
    water_fill(available_w, &group_caps(caps, groups, group_limits))
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

    #[test]
    fn group_limit_is_shared_and_leftover_goes_elsewhere() {
        let limits = BTreeMap::from([(7, 100.0)]);
        let a = water_fill_grouped(
            400.0,
            &[150.0, 150.0, 150.0],
            &[Some(7), Some(7), None],
            &limits,
        );
        assert_eq!(a, vec![50.0, 50.0, 150.0]);
        // A group without a limit is not capped.
        let a = water_fill_grouped(400.0, &[150.0, 150.0], &[Some(1), Some(1)], &limits);
        assert_eq!(a, vec![150.0, 150.0]);
        // The overall limit still binds after the groups.
        let a = water_fill_grouped(
            90.0,
            &[150.0, 150.0, 150.0],
            &[Some(7), Some(7), None],
            &limits,
        );
        assert_eq!(a, vec![30.0, 30.0, 30.0]);
    }

    proptest! {
        #[test]
        fn grouped_never_above_any_limit_and_fair(
            available in 0.0f64..2e6,
            sessions in proptest::collection::vec((0.0f64..3e5, proptest::option::of(0u32..4)), 1..30),
            limits in proptest::collection::btree_map(0u32..4, 0.0f64..4e5, 0..4),
        ) {
            let caps: Vec<f64> = sessions.iter().map(|s| s.0).collect();
            let groups: Vec<Option<u32>> = sessions.iter().map(|s| s.1).collect();
            let a = water_fill_grouped(available, &caps, &groups, &limits);
            let sum: f64 = a.iter().sum();
            prop_assert!(sum <= available * (1.0 + 1e-12) + 1e-9);
            let mut by_group: BTreeMap<u32, f64> = BTreeMap::new();
            for ((x, c), g) in a.iter().zip(&caps).zip(&groups) {
                prop_assert!(*x >= 0.0 && *x <= *c);
                if let Some(g) = g {
                    *by_group.entry(*g).or_default() += x;
                }
            }
            for (g, s) in &by_group {
                if let Some(l) = limits.get(g) {
                    prop_assert!(*s <= l * (1.0 + 1e-12) + 1e-9);
                }
            }
            // Max-min fair: a session below its cap is either in a saturated group, or gets at
            // least as much as everyone else (the overall limit binds).
            let top = a.iter().cloned().fold(0.0, f64::max);
            for ((x, c), g) in a.iter().zip(&caps).zip(&groups) {
                let group_full = g.and_then(|g| limits.get(&g).map(|l| by_group[&g] >= l - 1e-6)).unwrap_or(false);
                if *x < *c - 1e-6 && !group_full {
                    prop_assert!(*x >= top - 1e-6);
                }
            }
        }

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
