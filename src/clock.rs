//! The current time, passed to every protocol and rotation decision so that tests can pin
//! it and move it instead of sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use jiff::{SignedDuration, Timestamp};

/// A clock: the system's, or one pinned at a start time; either can be moved forward.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    pinned: Option<Timestamp>,
    offset_ms: Arc<AtomicI64>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock::default()
    }

    /// A clock that stands at `at` until moved.
    pub fn pinned(at: Timestamp) -> Clock {
        Clock {
            pinned: Some(at),
            offset_ms: Arc::default(),
        }
    }

    /// The current time.
    pub fn now(&self) -> Timestamp {
        let base = self.pinned.unwrap_or_else(Timestamp::now);
        let offset = SignedDuration::from_millis(self.offset_ms.load(Ordering::Relaxed));
        base.checked_add(offset).unwrap_or(base)
    }

    /// The current time in Unix seconds.
    pub fn unix(&self) -> i64 {
        self.now().as_second()
    }

    /// Moves the clock (and every clone of it) forward.
    pub fn advance(&self, by: SignedDuration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.offset_ms.fetch_add(ms, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pinned_clock_moves_only_when_told() {
        let start: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let clock = Clock::pinned(start);
        let clone = clock.clone();

        clock.advance(SignedDuration::from_secs(61));

        assert_eq!(
            clone.now(),
            "2026-01-01T00:01:01Z".parse::<Timestamp>().unwrap()
        );
    }
}
