//! What this node knows about its own running jobs and nothing else: the queue of job ids waiting
//! to be dispatched, the cancel flag of each running job, the per-item and per-vault locks that
//! serialise them, and how to start an engine worker.
//!
//! The service writes into it (enqueue, signal a cancel); the runner reads from it. It imports
//! neither, so the two never import each other.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

#[derive(Default)]
pub struct Locks {
    items: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    vaults: Mutex<HashMap<String, Arc<tokio::sync::RwLock<()>>>>,
}

impl Locks {
    pub fn item(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut m = self.items.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(key.to_string()).or_default().clone()
    }
    pub fn vault(&self, key: &str) -> Arc<tokio::sync::RwLock<()>> {
        let mut m = self.vaults.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(key.to_string()).or_default().clone()
    }
}

pub struct Runner {
    /// Cancel flags of the jobs running on this node, by job id.
    live: Mutex<HashMap<String, Arc<AtomicBool>>>,
    pub locks: Locks,
    /// The program and arguments that start an engine worker process.
    pub worker: (PathBuf, Vec<String>),
    /// The umask restore workers write with (the server itself runs with a private one).
    pub restore_umask: u32,
    queue: mpsc::UnboundedSender<String>,
    /// Runner slots: a job holds one while it runs (`[runner] max_concurrent_jobs`).
    pub slots: Arc<tokio::sync::Semaphore>,
    /// The receiving end, until the dispatcher takes it.
    queued: Mutex<Option<mpsc::UnboundedReceiver<String>>>,
}

impl Runner {
    pub fn new(
        worker: (PathBuf, Vec<String>),
        max_concurrent_jobs: usize,
        restore_umask: u32,
    ) -> Self {
        let (queue, queued) = mpsc::unbounded_channel();
        Self {
            live: Mutex::new(HashMap::new()),
            locks: Locks::default(),
            worker,
            restore_umask,
            queue,
            slots: Arc::new(tokio::sync::Semaphore::new(max_concurrent_jobs.max(1))),
            queued: Mutex::new(Some(queued)),
        }
    }

    /// Hands a stored job to the dispatcher.
    pub fn enqueue(&self, job_id: &str) {
        // The receiver lives as long as the service; a send fails only during shutdown, when
        // the job stays queued in the store and the next start picks it up.
        let _ = self.queue.send(job_id.to_string());
    }

    /// The queue's receiving end, once: the dispatcher's.
    pub fn take_queue(&self) -> Option<mpsc::UnboundedReceiver<String>> {
        self.queued.lock().unwrap_or_else(|p| p.into_inner()).take()
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
