//! Per caller and subscription request budgets, ARM style: a token bucket per (caller,
//! subscription, reads or writes) that holds a minute's budget and refills continuously, the
//! remaining budget in `x-ms-ratelimit-remaining-subscription-{reads,writes}` on every answer, and
//! 429 `TooManyRequests` with `Retry-After` (when the next request fits again) past it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rsvault_types::arm::{ArmCode, ArmError};

/// (caller, subscription, is write).
type BudgetKey = (String, String, bool);

pub struct RateLimiter {
    /// The time a full bucket takes to refill (a minute).
    window: Duration,
    /// Each bucket's tokens as of when it was last counted.
    buckets: Mutex<HashMap<BudgetKey, (Instant, f64)>>,
}

/// The outcome of counting one request.
pub struct Budget {
    pub header: &'static str,
    pub remaining: u32,
    /// Seconds until a request fits again, when this one is over budget.
    pub retry_after: Option<u64>,
}

impl Default for RateLimiter {
    fn default() -> Self {
        Self::new(Duration::from_secs(60))
    }
}

impl RateLimiter {
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a request of `caller` in `sub` against `limit` per window (0 = unlimited).
    pub fn count(&self, caller: &str, sub: &str, write: bool, limit: u32) -> Budget {
        let header = if write {
            "x-ms-ratelimit-remaining-subscription-writes"
        } else {
            "x-ms-ratelimit-remaining-subscription-reads"
        };
        if limit == 0 {
            return Budget {
                header,
                remaining: u32::MAX,
                retry_after: None,
            };
        }
        let now = Instant::now();
        let cap = f64::from(limit);
        let per_sec = cap / self.window.as_secs_f64();
        let mut m = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() > 100_000 {
            // Buckets that refilled completely carry no state worth keeping.
            let w = self.window;
            m.retain(|_, (at, _)| now.duration_since(*at) < w);
        }
        let e = m
            .entry((caller.to_string(), sub.to_ascii_lowercase(), write))
            .or_insert((now, cap));
        let tokens = (e.1 + now.duration_since(e.0).as_secs_f64() * per_sec).min(cap);
        *e = (now, tokens);
        if tokens < 1.0 {
            let wait = ((1.0 - tokens) / per_sec).ceil().max(1.0) as u64;
            return Budget {
                header,
                remaining: 0,
                retry_after: Some(wait),
            };
        }
        e.1 = tokens - 1.0;
        Budget {
            header,
            remaining: e.1.floor() as u32,
            retry_after: None,
        }
    }
}

pub fn throttled(write: bool, sub: &str, limit: u32, retry_after: u64) -> ArmError {
    let kind = if write { "write" } else { "read" };
    ArmError::new(
        ArmCode::TooManyRequests,
        format!(
            "The request is being throttled: the number of {kind} requests for subscription '{sub}' by this caller exceeded the limit of {limit} per minute. Please try again after {retry_after} seconds."
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_runs_out_and_refills() {
        let l = RateLimiter::new(Duration::from_millis(400));
        assert_eq!(l.count("a", "s", false, 2).remaining, 1);
        assert_eq!(l.count("a", "S", false, 2).remaining, 0);
        assert!(l.count("a", "s", false, 2).retry_after.is_some());
        // Other callers, subscriptions and kinds have their own budgets.
        assert!(l.count("b", "s", false, 2).retry_after.is_none());
        assert!(l.count("a", "t", false, 2).retry_after.is_none());
        assert!(l.count("a", "s", true, 2).retry_after.is_none());
        // Half the window refills one of the two.
        std::thread::sleep(Duration::from_millis(220));
        assert!(l.count("a", "s", false, 2).retry_after.is_none());
        assert!(l.count("a", "s", false, 2).retry_after.is_some());
    }
}
