//! Each job's log: what it did, step by step (start, phases, skipped files, retries, how it
//! ended), kept in the store next to the job so any node can serve it while the job runs
//! elsewhere. Bounded: a job keeps its first [`HEAD`] lines and its newest [`TAIL`] ones.

use rsvault_store::LogLine;
use rsvault_types::arm::{ArmError, ArmResult};
use rsvault_types::job::{codes, Job, JobStatus};
use rsvault_types::model::Vault;

use crate::service::Service;

/// Lines kept from the start of a job's log.
pub const HEAD: i64 = 200;
/// Newest lines kept after those.
pub const TAIL: i64 = 800;
/// Lines one read returns at most.
pub const MAX_LIMIT: i64 = 1000;

#[derive(Debug, Clone, Copy)]
pub enum Level {
    Info,
    Warning,
    Error,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warning => "warning",
            Level::Error => "error",
        }
    }
}

/// A page of a job's log.
pub struct LogPage {
    pub lines: Vec<LogLine>,
    /// Lines ever written (the next line's number).
    pub total: i64,
    /// The job has not ended: more lines may come.
    pub active: bool,
}

impl Service {
    /// Appends a line to a job's log. Logging never fails a job: a store error is traced only.
    pub fn log_job(&self, job_id: &str, level: Level, msg: &str) {
        let t = rsvault_types::arm::time(chrono::Utc::now());
        // One line is one line: a file name with a newline in it must not forge another.
        let msg = msg.replace(['\n', '\r'], " ");
        if let Err(e) = self
            .store
            .tx(|tx| tx.append_job_log(job_id, &t, level.as_str(), &msg, HEAD, TAIL))
        {
            tracing::warn!(job = %job_id, "writing the job log: {e}");
        }
    }

    /// Logs how a job ended (called with [`Service::after_job`]): its status and its errors
    /// (skipped files were logged as they happened).
    pub(crate) fn log_job_end(&self, job: &Job) {
        for e in job
            .errors
            .iter()
            .filter(|e| e.code != codes::WARNING_FILE)
            .take(50)
        {
            let level = if job.status == JobStatus::Failed {
                Level::Error
            } else {
                Level::Warning
            };
            self.log_job(&job.id, level, &format!("{}: {}", e.title, e.message));
        }
        let level = match job.status {
            JobStatus::Failed => Level::Error,
            JobStatus::CompletedWithWarnings | JobStatus::Cancelled => Level::Warning,
            _ => Level::Info,
        };
        self.log_job(
            &job.id,
            level,
            &format!("Job ended {}.", job.status.as_str()),
        );
    }

    /// Lines `start..` of a job's log, at most `limit` of them.
    pub fn job_log(
        &self,
        vault: &Vault,
        job_id: &str,
        start: i64,
        limit: i64,
    ) -> ArmResult<LogPage> {
        if start < 0 || !(1..=MAX_LIMIT).contains(&limit) {
            return Err(ArmError::invalid(format!(
                "start must be 0 or more and limit between 1 and {MAX_LIMIT} (got start={start}, limit={limit})."
            )));
        }
        let job = self.get_job(vault, job_id)?;
        let (lines, total) = self.store.read(|tx| tx.job_log(&job.id, start, limit))?;
        Ok(LogPage {
            lines,
            total,
            active: !job.status.is_terminal(),
        })
    }
}
