//! Exponential backoff for retried events and writes.

use std::time::Duration;

use weir_config::RetrySettings;

/// The delay before attempt `attempt` (2 = the first retry): the initial
/// backoff doubled per attempt, capped at the maximum.
pub fn backoff(settings: &RetrySettings, attempt: u32) -> Duration {
    let doublings = attempt.saturating_sub(2).min(30);
    settings
        .initial_backoff
        .saturating_mul(1u32 << doublings)
        .min(settings.max_backoff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap() {
        let s = RetrySettings {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
            max_age: Duration::from_secs(1),
        };
        assert_eq!(backoff(&s, 2), Duration::from_millis(10));
        assert_eq!(backoff(&s, 3), Duration::from_millis(20));
        assert_eq!(backoff(&s, 4), Duration::from_millis(40));
        assert_eq!(backoff(&s, 5), Duration::from_millis(50));
        assert_eq!(backoff(&s, 99), Duration::from_millis(50));
    }
}
