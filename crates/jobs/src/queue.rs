//! The job queue, in the store: claiming, leases, cancel requests seen from any node, and the
//! reaper that ends the jobs of a node that stopped renewing its leases.
//!
//! A node claims a queued job in one immediate transaction that checks the admission rules (one
//! running job per protected item, vault-exclusive maintenance, first come first served per item
//! and vault, at most `[runner] max_concurrent_jobs` on the node), applies `Start` and takes a
//! lease with a new attempt number. Every later write of the running job is fenced by that
//! attempt ([`Service::update_running_job`]).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use rsvault_store::{self as store, JobRow};
use rsvault_types::arm;
use rsvault_types::job::Job;

use crate::service::{interrupt, Service, NODE_KEY};
use crate::state::{transition, Event, State};

/// Property-bag keys the queue writes.
pub const QUEUED_KEY: &str = "Queued";

impl Service {
    fn lease_until(&self, now: DateTime<Utc>) -> String {
        arm::time(now + chrono::Duration::seconds(self.config.runner.lease_seconds as i64))
    }

    /// Claims the next job this node may run: (the job after `Start`, its attempt). A job
    /// cancelled while queued comes back already `Cancelled`, for the runner to close.
    pub fn claim_next(&self) -> Result<Option<(Job, i64)>, store::Error> {
        let until = self.lease_until(Utc::now());
        self.store.tx(|tx| {
            let Some((body, attempt)) =
                tx.claimable_job(&self.node_id, self.runner.max_concurrent_jobs)?
            else {
                return Ok(None);
            };
            let mut job: Job = serde_json::from_str(&body)?;
            let attempt = attempt + 1;
            if transition(&mut job, Event::Start).is_ok() && State::of(&job) == State::Running {
                job.property_bag.remove(QUEUED_KEY);
                job.property_bag
                    .insert(NODE_KEY.into(), self.node_id.clone());
                job.start_task(0);
            }
            tx.upsert_job(&JobRow::of(&job))?;
            tx.set_lease(&job.id, &self.node_id, &until, attempt)?;
            Ok(Some((job, attempt)))
        })
    }

    /// Says in each waiting job why it waits (the wire shows it `InProgress`), writing only what
    /// changed.
    pub fn explain_queued(&self) -> Result<(), store::Error> {
        // Most ticks have nothing queued: find out on a reader before taking the write lock.
        let since = arm::time(self.live_since());
        let waiting = self.store.read(|tx| tx.queued_reasons(100, &since))?;
        if waiting.is_empty() {
            return Ok(());
        }
        self.store.tx(|tx| {
            for (id, reason) in waiting {
                let text = match reason {
                    "item" => "Waiting for an earlier job of this item to finish.",
                    "vault" => "Waiting for vault maintenance, or for the vault's jobs before it, to finish.",
                    "node" => "Waiting for a live node that has this item's source or restore root.",
                    _ => "Waiting for a free runner slot ([runner] max_concurrent_jobs).",
                };
                let Some(body) = tx.jobs_by_id(&id)? else {
                    continue;
                };
                let mut job: Job = serde_json::from_str(&body)?;
                if job.property_bag.get(QUEUED_KEY).map(String::as_str) != Some(text) {
                    job.property_bag.insert(QUEUED_KEY.into(), text.into());
                    tx.upsert_job(&JobRow::of(&job))?;
                }
            }
            Ok(())
        })
    }

    /// Extends the leases of this node's running jobs.
    pub fn renew_leases(&self) -> Result<usize, store::Error> {
        let until = self.lease_until(Utc::now());
        self.store.tx(|tx| tx.renew_leases(&self.node_id, &until))
    }

    /// Signals the cancel flag of every job running here that a client asked to cancel, through
    /// whichever node it asked.
    pub fn poll_cancel_requests(&self) -> Result<(), store::Error> {
        for id in self.store.read(|tx| tx.cancel_requests_of(&self.node_id))? {
            self.runner.signal_cancel(&id);
        }
        Ok(())
    }

    /// On the node that holds the reaper lease: ends every running job whose lease expired,
    /// naming the node that lost it. Returns how many.
    pub fn reap_expired(self: &Arc<Self>) -> Result<usize, store::Error> {
        let now = Utc::now();
        let now_s = arm::time(now);
        let until = self.lease_until(now);
        let reaped = self.store.tx(|tx| {
            if !tx.acquire_lease("reaper", &self.node_id, &now_s, &until)? {
                return Ok(vec![]);
            }
            let mut out = Vec::new();
            for (body, owner) in tx.expired_leases(&now_s)? {
                let mut job: Job = serde_json::from_str(&body)?;
                interrupt(
                    &mut job,
                    &format!(
                        "The node '{owner}' running this job stopped renewing its lease (it stopped or lost the store)."
                    ),
                );
                tx.upsert_job(&JobRow::of(&job))?;
                out.push(job);
            }
            Ok(out)
        })?;
        for job in &reaped {
            tracing::warn!(job = %job.id, "ended a job whose node lost its lease");
            self.after_job(job)?;
            self.finish_cancel_op(job);
        }
        Ok(reaped.len())
    }
}
