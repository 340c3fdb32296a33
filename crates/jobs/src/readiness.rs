//! Readiness (`GET /readyz`): whether this node can do its work now — the store answers, and the
//! repository location exists and takes writes.

use crate::service::{Service, K_VAULT};

impl Service {
    /// Where vault repositories live (`[repository] location`, default `DATA/repos`).
    pub fn repository_location(&self) -> std::path::PathBuf {
        (self.config.repository.location.clone()).unwrap_or_else(|| self.data_dir.join("repos"))
    }

    /// Each check by name, `Err` saying what is wrong.
    pub fn readiness(&self) -> Vec<(&'static str, Result<(), String>)> {
        let store = self
            .store
            .read(|tx| tx.count(K_VAULT, "", None))
            .map(|_| ())
            .map_err(|e| format!("the metadata store does not answer: {e}"));
        let dir = self.repository_location();
        let repository = if !dir.is_dir() {
            Err(format!(
                "the repository location {} is missing",
                dir.display()
            ))
        } else {
            // Writing is what backups need: a read-only or full mount is not ready.
            let probe = dir.join(format!(".readyz-{}", std::process::id()));
            std::fs::write(&probe, b"")
                .and_then(|()| std::fs::remove_file(&probe))
                .map_err(|e| {
                    format!(
                        "the repository location {} takes no writes: {e}",
                        dir.display()
                    )
                })
        };
        vec![("store", store), ("repository", repository)]
    }
}
