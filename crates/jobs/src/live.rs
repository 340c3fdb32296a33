//! What this node knows about its own running jobs and nothing else: the cancel flag of each job
//! it runs, how to start an engine worker, and the bell that wakes its dispatcher when a job is
//! queued. The queue itself is in the store (see `runner`).
//!
//! The service writes into it (ring the bell, signal a cancel); the runner reads from it. It
//! imports neither, so the two never import each other.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

pub struct Runner {
    /// Cancel flags of the jobs running on this node, by job id.
    live: Mutex<HashMap<String, Arc<AtomicBool>>>,
    /// The program and arguments that start an engine worker process.
    pub worker: (PathBuf, Vec<String>),
    /// Jobs this node runs at once (`[runner] max_concurrent_jobs`, resolved).
    pub max_concurrent_jobs: usize,
    /// The umask restore workers write with (the server itself runs with a private one).
    pub restore_umask: u32,
    /// Rung when a job is queued or ends, so the dispatcher claims without waiting for its tick.
    pub wake: Notify,
    dispatching: AtomicBool,
}

impl Runner {
    pub fn new(
        worker: (PathBuf, Vec<String>),
        max_concurrent_jobs: usize,
        restore_umask: u32,
    ) -> Self {
        Self {
            live: Mutex::new(HashMap::new()),
            worker,
            max_concurrent_jobs: max_concurrent_jobs.max(1),
            restore_umask,
            wake: Notify::new(),
            dispatching: AtomicBool::new(false),
        }
    }

    /// Tells the dispatcher that the store's queue has work (it claims from the store).
    pub fn notify_queued(&self) {
        self.wake.notify_one();
    }

    /// True for the first caller only: one dispatcher per service.
    pub fn start_dispatching(&self) -> bool {
        !self.dispatching.swap(true, Ordering::SeqCst)
    }

    /// Records that `job_id` runs here and returns its cancel flag.
    pub fn register(&self, job_id: &str) -> Arc<AtomicBool> {
        let cancel = Arc::new(AtomicBool::new(false));
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(job_id.to_string(), cancel.clone());
        cancel
    }

    pub fn unregister(&self, job_id: &str) {
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(job_id);
    }

    /// Signals a running job's engine work to stop. Returns whether the job was running here.
    pub fn signal_cancel(&self, job_id: &str) -> bool {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        match live.get(job_id) {
            Some(cancel) => {
                cancel.store(true, Ordering::SeqCst);
                true
            }
            None => false,
        }
    }
}
