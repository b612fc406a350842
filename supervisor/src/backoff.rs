//! The restart delay: capped exponential backoff that starts over once an instance has run
//! long enough (CONTRACT.md's `restart_backoff_initial_ms`, `_max_ms`, `_reset_s`).

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffSettings {
    pub initial: Duration,
    pub max: Duration,
    /// Running this long since the last start resets the backoff.
    pub reset_after: Duration,
}

impl Default for BackoffSettings {
    fn default() -> Self {
        BackoffSettings {
            initial: Duration::from_millis(1000),
            max: Duration::from_millis(300_000),
            reset_after: Duration::from_secs(600),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    settings: BackoffSettings,
    consecutive: u32,
}

impl Backoff {
    pub fn new(settings: BackoffSettings) -> Self {
        Backoff { settings, consecutive: 0 }
    }

    /// The wait before the next start, given how long the last run lasted.
    pub fn next_delay(&mut self, ran_for: Duration) -> Duration {
        if ran_for >= self.settings.reset_after {
            self.consecutive = 0;
        }
        let factor = 2u32.saturating_pow(self.consecutive.min(31));
        self.consecutive = self.consecutive.saturating_add(1);
        self.settings.initial.saturating_mul(factor).min(self.settings.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> BackoffSettings {
        BackoffSettings {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(10),
            reset_after: Duration::from_secs(60),
        }
    }

    #[test]
    fn doubles_from_the_initial_delay_up_to_the_cap() {
        let mut b = Backoff::new(settings());
        let short = Duration::from_secs(1);
        let delays: Vec<u64> = (0..6).map(|_| b.next_delay(short).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 10, 10]);
    }

    #[test]
    fn a_long_enough_run_starts_over() {
        let mut b = Backoff::new(settings());
        b.next_delay(Duration::ZERO);
        b.next_delay(Duration::ZERO);
        assert_eq!(b.next_delay(Duration::from_secs(60)), Duration::from_secs(1));
        assert_eq!(b.next_delay(Duration::from_secs(59)), Duration::from_secs(2));
    }

    #[test]
    fn many_crashes_never_overflow() {
        let mut b = Backoff::new(settings());
        for _ in 0..100 {
            assert!(b.next_delay(Duration::ZERO) <= Duration::from_secs(10));
        }
    }
}
