//! Readiness (`GET /readyz`): whether this node can do its work now — the store answers, and the
//! repository location answers and takes writes. A directory is probed in place; an object
//! store by an engine worker (a listing, a small object written and deleted), bounded in time,
//! its answer reused for a few seconds so that an orchestrator polling the endpoint does not cost
//! a worker per poll.

use std::time::Duration;

use rsvault_engine::worker::Request;
use rsvault_engine::{ObjectStore, RepoConfig};

use crate::repository::Repositories;
use crate::service::{Service, K_VAULT};

/// How long an object store's probe answer is reused.
const FRESH: Duration = Duration::from_secs(10);
/// How long an object store may take to answer a probe.
const LIMIT: Duration = Duration::from_secs(5);

/// An engine error's own words, without the kind in front.
fn plain(e: rsvault_engine::Error) -> String {
    match e {
        rsvault_engine::Error::Repository(m) => m,
        other => other.to_string(),
    }
}

impl Service {
    /// Each check by name, `Err` saying what is wrong.
    pub async fn readiness(&self) -> Vec<(&'static str, Result<(), String>)> {
        let store = self
            .store
            .read(|tx| tx.count(K_VAULT, "", None))
            .map(|_| ())
            .map_err(|e| format!("the metadata store does not answer: {e}"));
        let repository = match self.repositories() {
            Ok(Repositories::Directory(dir)) => rsvault_engine::probe(&RepoConfig {
                path: dir,
                password: String::new(),
                master_key: None,
                store: None,
            })
            .map_err(plain),
            Ok(Repositories::Object { store, prefix }) => {
                self.probe_object_store(store, prefix).await
            }
            Err(e) => Err(e),
        };
        vec![("store", store), ("repository", repository)]
    }

    async fn probe_object_store(&self, store: ObjectStore, prefix: String) -> Result<(), String> {
        if let Some(answer) = self.ready_probe.fresh(FRESH) {
            return answer;
        }
        let location = store.display(&prefix);
        let repo = RepoConfig {
            path: prefix.into(),
            password: String::new(),
            master_key: None,
            store: Some(store),
        };
        let answer = match self
            .engine_request_within(Request::Probe { repo }, Some(LIMIT))
            .await
        {
            Ok(_) => Ok(()),
            Err(rsvault_engine::Error::Cancelled) => Err(format!(
                "the repository location {location} did not answer within {} s",
                LIMIT.as_secs()
            )),
            Err(e) => Err(format!("the repository location {location}: {}", plain(e))),
        };
        self.ready_probe.set(answer.clone());
        answer
    }
}
