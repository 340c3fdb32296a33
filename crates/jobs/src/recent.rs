//! A value and when it was taken, reused while it is fresh (an answer that is costly to get and
//! asked for often, such as an object store's readiness).

use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct Recent<T>(Mutex<Option<(Instant, T)>>);

impl<T> Default for Recent<T> {
    fn default() -> Self {
        Self(Mutex::new(None))
    }
}

impl<T: Clone> Recent<T> {
    /// The value, if it was taken less than `within` ago.
    pub fn fresh(&self, within: Duration) -> Option<T> {
        let held = self.0.lock().unwrap_or_else(|p| p.into_inner());
        held.as_ref()
            .filter(|(at, _)| at.elapsed() < within)
            .map(|(_, v)| v.clone())
    }

    pub fn set(&self, value: T) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), value));
    }
}
