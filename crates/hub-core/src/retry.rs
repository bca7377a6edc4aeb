//! Retry policy: which outcomes are worth another attempt, and when.

use crate::ports::{SendFailure, SendOutcome};
use crate::time::UnixMillis;
use std::time::Duration;

/// A route's retry schedule: exponential backoff with jitter, bounded by attempts and age.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    /// No attempt is scheduled later than this after the delivery was created.
    pub max_age: Duration,
    pub initial_delay: Duration,
    pub max_delay: Duration,
    pub multiplier: f64,
    /// Spread retries over [delay/2, delay] so that a recovering destination is not hit by every
    /// queued delivery at once.
    pub jitter: bool,
    /// Per-attempt request timeout.
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 15,
            max_age: Duration::from_secs(3 * 24 * 3600),
            initial_delay: Duration::from_secs(5),
            max_delay: Duration::from_secs(3600),
            multiplier: 2.0,
            jitter: true,
            timeout: Duration::from_secs(15),
        }
    }
}

/// How one attempt ended, as the retry policy sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Delivered { status: u16 },
    Retryable { status: Option<u16>, reason: String, retry_after: Option<Duration> },
    Permanent { status: Option<u16>, reason: String },
}

/// Classifies a send outcome: 2xx delivered; 408, 429, 5xx, timeouts and connection errors are
/// retried; other 4xx, redirects, blocked and malformed requests are permanent.
pub fn classify(outcome: &SendOutcome) -> Verdict {
    match outcome {
        SendOutcome::Response { status, retry_after, body_snippet } => {
            let s = *status;
            let reason = if body_snippet.is_empty() {
                format!("HTTP {s}")
            } else {
                format!("HTTP {s}: {}", body_snippet.chars().take(300).collect::<String>())
            };
            match s {
                200..=299 => Verdict::Delivered { status: s },
                408 | 429 | 500..=599 => {
                    Verdict::Retryable { status: Some(s), reason, retry_after: *retry_after }
                }
                _ => Verdict::Permanent { status: Some(s), reason },
            }
        }
        SendOutcome::Failed { kind, message } => match kind {
            SendFailure::Timeout | SendFailure::Connect | SendFailure::Other => {
                Verdict::Retryable { status: None, reason: message.clone(), retry_after: None }
            }
            SendFailure::Blocked | SendFailure::InvalidRequest => {
                Verdict::Permanent { status: None, reason: message.clone() }
            }
        },
    }
}

impl RetryPolicy {
    /// When to try again after `attempts` failed attempts, or `None` when the delivery is dead.
    /// `random` is uniform in [0, 1): the core takes randomness as input to stay deterministic.
    pub fn next_attempt(
        &self,
        attempts: u32,
        created_at: UnixMillis,
        now: UnixMillis,
        retry_after: Option<Duration>,
        random: f64,
    ) -> Option<UnixMillis> {
        if attempts >= self.max_attempts {
            return None;
        }
        let exp = i32::try_from(attempts.saturating_sub(1)).unwrap_or(i32::MAX);
        let base = self.initial_delay.as_secs_f64() * self.multiplier.max(1.0).powi(exp);
        let capped = base.min(self.max_delay.as_secs_f64());
        let jittered =
            if self.jitter { capped / 2.0 + capped / 2.0 * random.clamp(0.0, 1.0) } else { capped };
        let mut delay = Duration::from_secs_f64(jittered.max(0.0));
        if let Some(ra) = retry_after {
            // The destination knows best when it can take traffic again.
            delay = delay.max(ra);
        }
        let due = now.plus(delay);
        (due <= created_at.plus(self.max_age)).then_some(due)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16) -> SendOutcome {
        SendOutcome::Response { status, retry_after: None, body_snippet: String::new() }
    }

    #[test]
    fn classification_follows_http_semantics() {
        assert!(matches!(classify(&resp(200)), Verdict::Delivered { .. }));
        assert!(matches!(classify(&resp(204)), Verdict::Delivered { .. }));
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(matches!(classify(&resp(s)), Verdict::Retryable { .. }), "{s}");
        }
        for s in [301, 400, 401, 403, 404, 410, 422] {
            assert!(matches!(classify(&resp(s)), Verdict::Permanent { .. }), "{s}");
        }
        let f = |kind| SendOutcome::Failed { kind, message: "x".into() };
        assert!(matches!(classify(&f(SendFailure::Timeout)), Verdict::Retryable { .. }));
        assert!(matches!(classify(&f(SendFailure::Connect)), Verdict::Retryable { .. }));
        assert!(matches!(classify(&f(SendFailure::Blocked)), Verdict::Permanent { .. }));
        assert!(matches!(classify(&f(SendFailure::InvalidRequest)), Verdict::Permanent { .. }));
    }

    #[test]
    fn backoff_grows_exponentially_and_is_capped() {
        let p = RetryPolicy { jitter: false, ..RetryPolicy::default() };
        let t0 = UnixMillis(1_000_000);
        let delay = |n| p.next_attempt(n, t0, t0, None, 0.5).map(|d| d.0 - t0.0);
        assert_eq!(delay(1), Some(5_000));
        assert_eq!(delay(2), Some(10_000));
        assert_eq!(delay(3), Some(20_000));
        assert_eq!(delay(12), Some(3_600_000));
        assert_eq!(delay(15), None);
    }

    #[test]
    fn jitter_stays_within_half_to_full_delay() {
        let p = RetryPolicy::default();
        let t0 = UnixMillis(0);
        for r in [0.0, 0.3, 0.999] {
            let d = p.next_attempt(3, t0, t0, None, r).map(|d| d.0).unwrap_or(0);
            assert!((10_000..=20_000).contains(&d), "{d}");
        }
    }

    #[test]
    fn retry_after_and_max_age_are_honoured() {
        let p = RetryPolicy { jitter: false, max_age: Duration::from_secs(60), ..RetryPolicy::default() };
        let t0 = UnixMillis(0);
        assert_eq!(p.next_attempt(1, t0, t0, Some(Duration::from_secs(30)), 0.0), Some(UnixMillis(30_000)));
        assert_eq!(p.next_attempt(1, t0, UnixMillis(58_000), None, 0.0), None);
    }
}
