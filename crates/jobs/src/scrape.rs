//! The metrics scrape: the gauges that come from the store (queue, items, repository sizes) are
//! read at each `GET /metrics`, then the whole registry is encoded.

use prometheus::{Encoder, TextEncoder};
use rsvault_types::model::Vault;

use crate::service::{Service, K_VAULT};

impl Service {
    /// The Prometheus text exposition, with the store-backed gauges read now.
    pub fn metrics_text(&self) -> anyhow::Result<String> {
        let svc = self;
        let m = &self.metrics;
        let _one = m.scrape.lock().unwrap_or_else(|e| e.into_inner());
        let (queued, running) = svc
            .store
            .read(|tx| Ok((tx.count_queue("queued")?, tx.count_queue("running")?)))?;
        m.jobs_queued.set(queued);
        m.jobs_running.set(running);
        m.item_last_success.reset();
        m.item_stale.reset();
        m.repository_size.reset();
        let vaults: Vec<Vault> = svc.store.read(|tx| tx.list_prefix(K_VAULT, ""))?;
        for v in &vaults {
            let vault = v.vault.key();
            // Local repositories only: measuring one in an object store lists all its objects,
            // too slow for a scrape (backupUsageSummaries measures it on request).
            if let Ok(repo) = svc.repo_location(v).map_err(|_| ()) {
                if repo.store.is_none() {
                    m.repository_size
                        .with_label_values(&[vault.as_str()])
                        .set(rsvault_engine::size(&repo).unwrap_or(0) as i64);
                }
            }
            for it in svc
                .list_items(v)
                .map_err(|e| anyhow::anyhow!("{}", e.message))?
            {
                if it.protection_state == "NotProtected" {
                    continue;
                }
                let item = format!("{}/{}", it.container, it.name);
                if let Some(t) = it.last_recovery_point {
                    m.item_last_success
                        .with_label_values(&[vault.as_str(), item.as_str()])
                        .set(t.timestamp_millis() as f64 / 1000.0);
                }
                m.item_stale
                    .with_label_values(&[vault.as_str(), item.as_str()])
                    .set(i64::from(it.stale_since.is_some()));
            }
        }
        let mut out = Vec::new();
        TextEncoder::new().encode(&m.registry.gather(), &mut out)?;
        Ok(String::from_utf8(out)?)
    }
}
