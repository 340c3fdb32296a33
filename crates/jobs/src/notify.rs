//! Notifications: `[[notify.webhook]]` receivers get a CloudEvents 1.0 JSON event (structured
//! mode) when a job fails or ends with warnings, or an item turns stale. Each event becomes a
//! durable delivery in the store before anything is sent, signed with the webhook's secret
//! (`X-Rsvault-Signature: sha256=<hex HMAC-SHA256 of the body>`), and retried with exponential
//! backoff (`[notify] retry_seconds`, doubling, at most an hour apart) until a 2xx answer or for
//! 24 hours. Every attempt is recorded in the delivery (`GET {vault}/rsvault/notifications`).
//!
//! Any node may send any delivery: a node takes one with a short lease, written in the same
//! transaction that checks it is due, so two nodes never send one attempt twice.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::Sha256;

use rsvault_types::job::{Job, JobStatus};
use rsvault_types::model::{Item, Vault};

use crate::service::Service;

pub const K_DELIVERY: &str = "delivery";
/// How long a delivery is retried.
const GIVE_UP_AFTER_HOURS: i64 = 24;
/// How long a node holds a delivery while it sends one attempt.
const LEASE_SECONDS: i64 = 60;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Attempt {
    pub time: DateTime<Utc>,
    /// The receiver's HTTP status, when it answered.
    pub status: Option<u16>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Delivery {
    pub id: String,
    /// The vault the event is about (its store key).
    pub vault: String,
    pub url: String,
    pub event: String,
    /// The exact bytes sent (and signed) on every attempt.
    pub body: String,
    pub created: DateTime<Utc>,
    pub next_attempt: DateTime<Utc>,
    #[serde(default)]
    pub lease_until: Option<DateTime<Utc>>,
    pub attempts: Vec<Attempt>,
    /// `pending`, `delivered` or `failed` (gave up).
    pub state: String,
}

impl Delivery {
    pub fn wire(&self) -> Value {
        json!({
            "id": self.id,
            "url": self.url,
            "event": self.event,
            "state": self.state,
            "created": rsvault_types::arm::time(self.created),
            "nextAttempt": (self.state == "pending").then(|| rsvault_types::arm::time(self.next_attempt)),
            "attempts": self.attempts.iter().map(|a| json!({
                "time": rsvault_types::arm::time(a.time),
                "status": a.status,
                "error": a.error,
            })).collect::<Vec<_>>(),
        })
    }
}

/// The hex HMAC-SHA256 of `body` under `secret`, as in `X-Rsvault-Signature: sha256=<hex>`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("hmac takes any key length");
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Service {
    /// Queues `job`'s event, if it ended in a way that has one.
    pub(crate) fn notify_job(&self, job: &Job) {
        let drill = matches!(job.work, rsvault_types::job::Work::RestoreDrill { .. });
        let event = match job.status {
            JobStatus::Failed | JobStatus::CompletedWithWarnings if drill => "drill.failed",
            JobStatus::Failed => "job.failed",
            JobStatus::CompletedWithWarnings => "job.completed_with_warnings",
            _ => return,
        };
        self.notify(
            event,
            &job.vault.key(),
            &job.vault.id(),
            &job.id,
            job.wire(),
        );
    }

    /// Queues `item.stale` for an item whose staleness episode just began.
    pub(crate) fn notify_item_stale(&self, vault: &Vault, item: &Item) {
        let subject = item.id(&vault.vault);
        self.notify(
            "item.stale",
            &vault.vault.key(),
            &vault.vault.id(),
            &subject,
            item.wire(&vault.vault, None),
        );
    }

    /// Stores one delivery per webhook that subscribes to `event`. Never fails its caller: a
    /// store error is logged.
    fn notify(&self, event: &str, vault_key: &str, source: &str, subject: &str, data: Value) {
        let now = Utc::now();
        for hook in &self.config.notify.webhook {
            if !hook.events.is_empty() && !hook.events.iter().any(|e| e == event) {
                continue;
            }
            let id = uuid::Uuid::new_v4().to_string();
            let body = json!({
                "specversion": "1.0",
                "id": id,
                "type": format!("rsvault.{event}"),
                "source": source,
                "subject": subject,
                "time": rsvault_types::arm::time(now),
                "datacontenttype": "application/json",
                "data": data,
            })
            .to_string();
            let d = Delivery {
                id: id.clone(),
                vault: vault_key.to_string(),
                url: hook.url.clone(),
                event: event.to_string(),
                body,
                created: now,
                next_attempt: now,
                lease_until: None,
                attempts: vec![],
                state: "pending".into(),
            };
            if let Err(e) = self
                .store
                .tx(|tx| tx.put(K_DELIVERY, "", &id, "pending", &d))
            {
                tracing::error!(event, url = %hook.url, "queueing a notification: {e}");
            }
        }
    }

    /// The deliveries of a vault's events, newest first.
    pub fn deliveries(&self, vault: &Vault) -> Result<Vec<Delivery>, rsvault_store::Error> {
        let key = vault.vault.key();
        let mut all: Vec<Delivery> = self.store.read(|tx| tx.list(K_DELIVERY, "", None))?;
        all.retain(|d| d.vault == key);
        all.sort_by_key(|d| std::cmp::Reverse(d.created));
        Ok(all)
    }

    /// Deletes finished deliveries (delivered or given up) created before `cutoff`, with job
    /// history. Returns how many.
    pub fn prune_deliveries(&self, cutoff: DateTime<Utc>) -> Result<usize, rsvault_store::Error> {
        self.store.tx(|tx| {
            let mut n = 0;
            for state in ["delivered", "failed"] {
                let done: Vec<Delivery> = tx.list(K_DELIVERY, "", Some(state))?;
                for d in done.iter().filter(|d| d.created < cutoff) {
                    n += usize::from(tx.delete(K_DELIVERY, "", &d.id)?);
                }
            }
            Ok(n)
        })
    }

    /// Takes a due delivery for one attempt (or `None` if another node has it or it is not due).
    fn take_delivery(&self, id: &str, now: DateTime<Utc>) -> Option<Delivery> {
        self.store
            .tx(|tx| {
                let Some(mut d) = tx.get::<Delivery>(K_DELIVERY, "", id)? else {
                    return Ok(None);
                };
                if d.state != "pending"
                    || d.next_attempt > now
                    || d.lease_until.is_some_and(|l| l > now)
                {
                    return Ok(None);
                }
                d.lease_until = Some(now + Duration::seconds(LEASE_SECONDS));
                tx.put(K_DELIVERY, "", id, "pending", &d)?;
                Ok(Some(d))
            })
            .unwrap_or_else(|e| {
                tracing::warn!("taking a notification delivery: {e}");
                None
            })
    }

    /// Sends every due delivery once; returns how many attempts were made.
    pub async fn deliver_due(&self, http: &reqwest::Client, now: DateTime<Utc>) -> usize {
        let pending: Vec<Delivery> = match self
            .store
            .read(|tx| tx.list(K_DELIVERY, "", Some("pending")))
        {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!("listing notification deliveries: {e}");
                return 0;
            }
        };
        let mut attempts = 0;
        for p in pending.into_iter().filter(|p| p.next_attempt <= now) {
            let Some(mut d) = self.take_delivery(&p.id, now) else {
                continue;
            };
            attempts += 1;
            let (status, error) = self.send(http, &d).await;
            let t = Utc::now();
            d.attempts.push(Attempt {
                time: t,
                status,
                error: error.clone(),
            });
            d.lease_until = None;
            if status.is_some_and(|s| (200..300).contains(&s)) {
                d.state = "delivered".into();
            } else {
                let n = d.attempts.len() as u32;
                let base = self.config.notify.retry_seconds.max(1) as i64;
                let wait = Duration::seconds((base << (n - 1).min(20)).min(3600));
                d.next_attempt = t + wait;
                if d.next_attempt > d.created + Duration::hours(GIVE_UP_AFTER_HOURS) {
                    d.state = "failed".into();
                    tracing::error!(url = %d.url, event = %d.event, "gave up delivering a notification after 24 hours");
                } else {
                    tracing::warn!(url = %d.url, event = %d.event, ?status, ?error, "notification not delivered; retrying in {}s", wait.num_seconds());
                }
            }
            let state = d.state.clone();
            if let Err(e) = self
                .store
                .tx(|tx| tx.put(K_DELIVERY, "", &d.id, &state, &d))
            {
                tracing::warn!("recording a notification attempt: {e}");
            }
        }
        attempts
    }

    async fn send(&self, http: &reqwest::Client, d: &Delivery) -> (Option<u16>, Option<String>) {
        let Some(hook) = self.config.notify.webhook.iter().find(|h| h.url == d.url) else {
            return (None, Some("the webhook is no longer configured".into()));
        };
        let mut rb = http
            .post(&d.url)
            .header(
                "content-type",
                "application/cloudevents+json; charset=utf-8",
            )
            .body(d.body.clone());
        if let Some(f) = &hook.secret_file {
            match std::fs::read(f) {
                Ok(secret) => {
                    let secret = secret.trim_ascii_end();
                    rb = rb.header(
                        "x-rsvault-signature",
                        format!("sha256={}", signature(secret, d.body.as_bytes())),
                    );
                }
                Err(e) => {
                    return (None, Some(format!("reading {}: {e}", f.display())));
                }
            }
        }
        match rb.send().await {
            Ok(r) => (Some(r.status().as_u16()), None),
            Err(e) => (None, Some(format!("{e}"))),
        }
    }
}

/// Delivers notifications until the process ends: a pass each second.
pub async fn run(svc: Arc<Service>) {
    let http = match reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("notifications disabled: cannot build an HTTP client: {e}");
            return;
        }
    };
    loop {
        svc.deliver_due(&http, Utc::now()).await;
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}
