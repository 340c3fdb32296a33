//! This node among the deployment's: what it offers to jobs (its sources and restore roots), its
//! registration and heartbeat in the store, and the sources of every live node.

use chrono::Utc;
use rsvault_store as store;
use rsvault_types::arm;
use rsvault_types::model::{Item, SourceInfo};

use crate::service::{normalize_container, normalize_item, Service};

impl Service {
    /// Every source of the deployment: this node's, then those only other live nodes have.
    pub fn all_sources(&self) -> Vec<SourceInfo> {
        let mut out = self.sources.clone();
        let peers = self.peer_sources.read().unwrap_or_else(|p| p.into_inner());
        for s in peers.iter() {
            if !out.iter().any(|o| o.offer() == s.offer()) {
                out.push(s.clone());
            }
        }
        out
    }

    /// The deployment's sources that subscription `sub` sees.
    pub fn sources_in(&self, sub: &str) -> Vec<SourceInfo> {
        let mut all = self.all_sources();
        all.retain(|s| s.visible_in(sub));
        all
    }

    pub fn source_by_container(&self, sub: &str, container: &str) -> Option<SourceInfo> {
        let c = normalize_container(container);
        self.sources_in(sub)
            .into_iter()
            .find(|s| normalize_container(&s.container) == c)
    }

    pub fn source_by_item(&self, sub: &str, container: &str, item: &str) -> Option<SourceInfo> {
        let c = normalize_container(container);
        let i = normalize_item(item);
        self.sources_in(sub)
            .into_iter()
            .find(|s| normalize_container(&s.container) == c && normalize_item(&s.item) == i)
    }

    /// The item's source, wherever in the deployment it is (as subscription `sub` sees them).
    pub fn source_for(&self, sub: &str, item: &Item) -> Option<SourceInfo> {
        self.source_by_item(sub, &item.container, &item.name)
    }

    /// The item's source on this node (what a job running here reads or writes).
    pub fn local_source_for(&self, item: &Item) -> Option<SourceInfo> {
        let (c, i) = (
            normalize_container(&item.container),
            normalize_item(&item.name),
        );
        self.sources
            .iter()
            .find(|s| normalize_container(&s.container) == c && normalize_item(&s.item) == i)
            .cloned()
    }

    /// The configured restore root that `target` lies below, if any.
    pub fn restore_root_of(&self, target: &std::path::Path) -> Option<&std::path::Path> {
        self.config
            .restore_roots
            .iter()
            .map(std::path::PathBuf::as_path)
            .find(|r| target.starts_with(r))
    }

    /// What this node offers to jobs: its sources and its restore roots.
    pub fn offers(&self) -> Vec<String> {
        let roots = self.config.restore_roots.iter();
        self.sources
            .iter()
            .map(SourceInfo::offer)
            .chain(roots.map(|r| format!("root:{}", r.display())))
            .collect()
    }

    /// Records this node in the store (its offers and sources) and learns the live peers'.
    pub fn register_node(&self) -> Result<(), store::Error> {
        let sources = serde_json::to_string(&self.sources)?;
        let now = arm::time(Utc::now());
        let offers = self.offers();
        self.store
            .tx(|tx| tx.register_node(&self.node_id, &sources, &offers, &now))?;
        self.refresh_peers()
    }

    /// The heartbeat: this node is live; and what the other live nodes have.
    pub fn node_heartbeat(&self) -> Result<(), store::Error> {
        let now = arm::time(Utc::now());
        self.store.tx(|tx| tx.node_seen(&self.node_id, &now))?;
        self.refresh_peers()
    }

    fn refresh_peers(&self) -> Result<(), store::Error> {
        if !self.store.is_shared() {
            return Ok(());
        }
        let since = arm::time(self.live_since());
        let mut peers = Vec::new();
        for (id, sources) in self.store.read(|tx| tx.live_nodes(&since))? {
            if id != self.node_id {
                peers.extend(serde_json::from_str::<Vec<SourceInfo>>(&sources)?);
            }
        }
        *self.peer_sources.write().unwrap_or_else(|p| p.into_inner()) = peers;
        Ok(())
    }

    /// Nodes seen since this instant count as live (one lease period).
    pub fn live_since(&self) -> chrono::DateTime<Utc> {
        Utc::now() - chrono::Duration::seconds(self.config.runner.lease_seconds as i64)
    }
}
