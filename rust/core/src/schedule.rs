//! Piecewise-constant power caps over time (a composite charging schedule after translation).
//!
//! A schedule is a list of `(start_epoch_s, limit_w)` in wall-clock (UTC epoch) seconds; each
//! period runs until the next one starts, and the last runs for ever. The first period also
//! covers all time before its start: the gateway hands a schedule over starting "now", so a time
//! before it is only ever seen after the wall clock stepped back (NTP on a controller without a
//! real-time clock), and the limit in force when it was handed over is the safe one. A profile
//! that starts in the future is expressed by its caller as an unlimited first period
//! (docs/control.md, "Time base").

use std::fmt;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Schedule {
    periods: Vec<(f64, f64)>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ScheduleError {
    NotFinite(usize),
    NegativeLimit(usize),
    /// Starts must strictly increase; a repeated start would leave the limit ambiguous.
    NotIncreasing(usize),
}

impl fmt::Display for ScheduleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotFinite(i) => write!(f, "period {i}: start and limit must be finite"),
            Self::NegativeLimit(i) => write!(f, "period {i}: limit must be >= 0 W"),
            Self::NotIncreasing(i) => {
                write!(
                    f,
                    "period {i}: start must be later than the previous period's start"
                )
            }
        }
    }
}

impl std::error::Error for ScheduleError {}

impl Schedule {
    /// An empty list is a schedule that never limits.
    pub fn new(periods: Vec<(f64, f64)>) -> Result<Self, ScheduleError> {
        for (i, &(start, limit)) in periods.iter().enumerate() {
            if !start.is_finite() || !limit.is_finite() {
                return Err(ScheduleError::NotFinite(i));
            }
            if limit < 0.0 {
                return Err(ScheduleError::NegativeLimit(i));
            }
            if i > 0 && start <= periods[i - 1].0 {
                return Err(ScheduleError::NotIncreasing(i));
            }
        }
        Ok(Self { periods })
    }

    /// The limit in force at `now_s` (the first period's before it starts), or `None` for an
    /// empty list.
    pub fn limit_at(&self, now_s: f64) -> Option<f64> {
        let after = self.periods.partition_point(|&(start, _)| start <= now_s);
        self.periods.get(after.saturating_sub(1)).map(|p| p.1)
    }

    pub fn periods(&self) -> &[(f64, f64)] {
        &self.periods
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evaluates_piecewise() {
        let s = Schedule::new(vec![(100.0, 50.0), (200.0, 0.0), (300.0, 75.0)]).unwrap();
        // A clock stepped back before the first period keeps its limit.
        assert_eq!(s.limit_at(99.9), Some(50.0));
        assert_eq!(s.limit_at(-1e12), Some(50.0));
        assert_eq!(s.limit_at(100.0), Some(50.0));
        assert_eq!(s.limit_at(199.0), Some(50.0));
        assert_eq!(s.limit_at(200.0), Some(0.0));
        assert_eq!(s.limit_at(1e12), Some(75.0));
        assert_eq!(Schedule::default().limit_at(0.0), None);
    }

    #[test]
    fn rejects_bad_lists() {
        assert_eq!(
            Schedule::new(vec![(1.0, 1.0), (1.0, 2.0)]),
            Err(ScheduleError::NotIncreasing(1))
        );
        assert_eq!(
            Schedule::new(vec![(1.0, -1.0)]),
            Err(ScheduleError::NegativeLimit(0))
        );
        assert_eq!(
            Schedule::new(vec![(f64::NAN, 1.0)]),
            Err(ScheduleError::NotFinite(0))
        );
        assert_eq!(
            Schedule::new(vec![(0.0, f64::INFINITY)]),
            Err(ScheduleError::NotFinite(0))
        );
    }
}
