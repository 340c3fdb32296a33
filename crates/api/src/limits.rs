//! Per caller and subscription request budgets, ARM style: reads and writes per minute, the
//! remaining budget in `x-ms-ratelimit-remaining-subscription-{reads,writes}` on every answer, and
//! 429 `TooManyRequests` with `Retry-After` past it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rsvault_types::arm::{ArmCode, ArmError};

/// (caller, subscription, is write).
type BudgetKey = (String, String, bool);

pub struct RateLimiter {
    window: Duration,
    /// Each budget's window start and the requests counted in it.
    counts: Mutex<HashMap<BudgetKey, (Instant, u32)>>,
}

/// The outcome of counting one request.
pub struct Budget {
    pub header: &'static str,
    pub remaining: u32,
    /// Seconds until the window resets, when the request is over budget.
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
            counts: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a request of `caller` in `sub` against `limit` (0 = unlimited).
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
        let mut m = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() > 100_000 {
            let w = self.window;
            m.retain(|_, (start, _)| now.duration_since(*start) < w);
        }
        let e = m
            .entry((caller.to_string(), sub.to_ascii_lowercase(), write))
            .or_insert((now, 0));
        if now.duration_since(e.0) >= self.window {
            *e = (now, 0);
        }
        if e.1 >= limit {
            let left = self.window.saturating_sub(now.duration_since(e.0));
            return Budget {
                header,
                remaining: 0,
                retry_after: Some(left.as_secs_f64().ceil().max(1.0) as u64),
            };
        }
        e.1 += 1;
        Budget {
            header,
            remaining: limit - e.1,
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
        let l = RateLimiter::new(Duration::from_millis(200));
        assert_eq!(l.count("a", "s", false, 2).remaining, 1);
        assert_eq!(l.count("a", "S", false, 2).remaining, 0);
        assert!(l.count("a", "s", false, 2).retry_after.is_some());
        // Other callers, subscriptions and kinds have their own budgets.
        assert!(l.count("b", "s", false, 2).retry_after.is_none());
        assert!(l.count("a", "t", false, 2).retry_after.is_none());
        assert!(l.count("a", "s", true, 2).retry_after.is_none());
        std::thread::sleep(Duration::from_millis(250));
        assert!(l.count("a", "s", false, 2).retry_after.is_none());
    }
}
