//! The job record: what a job is, its state machine, and its wire rendering.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::arm;
use crate::model::{PropertyBag, VaultRef, Workload};

/// Wire job status (`JobStatus` in the spec). Operation statuses use a different enum.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum JobStatus {
    InProgress,
    Cancelling,
    Completed,
    CompletedWithWarnings,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InProgress => "InProgress",
            Self::Cancelling => "Cancelling",
            Self::Completed => "Completed",
            Self::CompletedWithWarnings => "CompletedWithWarnings",
            Self::Failed => "Failed",
            Self::Cancelled => "Cancelled",
        }
    }
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::CompletedWithWarnings | Self::Failed | Self::Cancelled
        )
    }
    pub const ALL: [JobStatus; 6] = [
        Self::InProgress,
        Self::Cancelling,
        Self::Completed,
        Self::CompletedWithWarnings,
        Self::Failed,
        Self::Cancelled,
    ];
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Task {
    pub name: String,
    pub status: String,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
    pub progress: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct JobError {
    pub code: i32,
    pub title: String,
    pub message: String,
    pub recommendations: Vec<String>,
}

/// Error codes of job `errorDetails` (Azure uses integer codes there).
/// What a restore does with a file that already exists at the target (stored with the job; the
/// runner hands the engine its own copy of this choice).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Conflict {
    #[default]
    Overwrite,
    Skip,
    Fail,
}

pub mod codes {
    pub const WARNING_FILE: i32 = 100;
    pub const INTERRUPTED: i32 = 200;
    pub const ENGINE: i32 = 300;
    pub const SOURCE: i32 = 301;
    pub const CONFLICT: i32 = 302;
    pub const DISK_FULL: i32 = 303;
    pub const REPOSITORY: i32 = 304;
}

/// The work a job does; everything the runner needs, persisted with the job.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Work {
    /// Completes when created (configure / stop protection).
    Instant,
    Backup {
        expiry: Option<DateTime<Utc>>,
        /// Started by the scheduler rather than a user.
        #[serde(default)]
        scheduled: bool,
    },
    Restore {
        recovery_point: String,
        snapshot_id: String,
        paths: Vec<String>,
        target: std::path::PathBuf,
        conflict: Conflict,
        recovery_type: String,
    },
    DeleteData,
    /// Retention + orphan cleanup + prune for a whole vault.
    GarbageCollection,
    /// Re-reads and authenticates repository data (all of it, or a sampled percentage).
    Verify {
        read_data_percent: Option<u8>,
    },
    /// Restores a sample of each item's newest recovery point into scratch space and compares
    /// it with the snapshot (issue #13).
    RestoreDrill {
        sample_percent: u8,
    },
}

impl Work {
    /// Vault-wide maintenance excludes every other job of the vault while it runs.
    pub fn is_exclusive(&self) -> bool {
        matches!(
            self,
            Work::DeleteData | Work::GarbageCollection | Work::Verify { .. }
        )
    }
    pub fn is_maintenance(&self) -> bool {
        matches!(
            self,
            Work::GarbageCollection | Work::Verify { .. } | Work::RestoreDrill { .. }
        )
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    pub vault: VaultRef,
    pub seq: i64,
    pub workload: Workload,
    pub operation: String,
    pub status: JobStatus,
    /// Set once a worker picked the job up (a queued job is `InProgress` on the wire too).
    pub started: bool,
    pub entity_friendly_name: String,
    pub item_key: String,
    pub container_short: String,
    pub host_name: String,
    pub start: DateTime<Utc>,
    pub end: Option<DateTime<Utc>>,
    pub activity_id: String,
    pub is_user_triggered: bool,
    pub tasks: Vec<Task>,
    pub property_bag: PropertyBag,
    pub progress: Option<f64>,
    pub eta_seconds: Option<i64>,
    pub errors: Vec<JobError>,
    pub cancel_op: Option<String>,
    pub work: Work,
    /// What a node must have to run this job: `item:<item key>` (the item's source), `root:<path>`
    /// (a restore root), or empty (any node of the deployment).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub needs: String,
}

impl Job {
    pub fn is_cancellable(&self) -> bool {
        self.status == JobStatus::InProgress && !matches!(self.work, Work::Instant)
    }

    pub fn finish(&mut self, status: JobStatus) {
        self.status = status;
        let now = Utc::now();
        self.end = Some(now);
        self.eta_seconds = None;
        self.property_bag.remove("Estimated Remaining Duration");
        for t in &mut self.tasks {
            if t.status == "InProgress" || t.status == "NotStarted" {
                t.status = match status {
                    JobStatus::Completed | JobStatus::CompletedWithWarnings => "Completed",
                    JobStatus::Cancelled => "Cancelled",
                    _ if t.status == "InProgress" => "Failed",
                    _ => "NotStarted",
                }
                .into();
                if t.start.is_some() {
                    t.end = Some(now);
                }
            }
        }
        if matches!(
            status,
            JobStatus::Completed | JobStatus::CompletedWithWarnings
        ) {
            self.progress = Some(100.0);
        }
    }

    pub fn start_task(&mut self, i: usize) {
        if let Some(t) = self.tasks.get_mut(i) {
            t.status = "InProgress".into();
            t.start = Some(Utc::now());
        }
    }

    pub fn complete_task(&mut self, i: usize) {
        if let Some(t) = self.tasks.get_mut(i) {
            t.status = "Completed".into();
            t.end = Some(Utc::now());
            t.progress = Some(100.0);
        }
    }

    fn job_type(&self) -> &'static str {
        if self.work.is_maintenance() {
            "VaultJob"
        } else {
            self.workload.job_type()
        }
    }

    pub fn bmt(&self) -> &'static str {
        if self.work.is_maintenance() {
            "Invalid"
        } else {
            self.workload.bmt()
        }
    }

    pub fn wire(&self) -> Value {
        let now = Utc::now();
        let duration = self.end.unwrap_or(now) - self.start;
        let actions: Vec<&str> = if self.is_cancellable() {
            vec!["Cancellable"]
        } else {
            vec![]
        };
        let mut p = json!({
            "jobType": self.job_type(),
            "entityFriendlyName": self.entity_friendly_name,
            "backupManagementType": self.bmt(),
            "operation": self.operation,
            "status": self.status.as_str(),
            "startTime": arm::time(self.start),
            "activityId": self.activity_id,
            "duration": arm::duration(duration),
            "actionsInfo": actions,
            "isUserTriggered": self.is_user_triggered,
        });
        if let Some(e) = self.end {
            p["endTime"] = json!(arm::time(e));
        }
        let vm = self.workload == Workload::Vm && !self.work.is_maintenance();
        let errors: Vec<Value> = self
            .errors
            .iter()
            .map(|e| {
                let mut v = json!({
                    "errorCode": e.code,
                    "errorString": e.message,
                    "recommendations": e.recommendations,
                });
                if vm {
                    v["errorTitle"] = json!(e.title);
                }
                v
            })
            .collect();
        if !errors.is_empty() {
            p["errorDetails"] = json!(errors);
        }
        let tasks: Vec<Value> = self
            .tasks
            .iter()
            .map(|t| {
                let mut v = json!({"taskId": t.name, "status": t.status});
                if vm {
                    if let Some(s) = t.start {
                        v["startTime"] = json!(arm::time(s));
                        v["duration"] = json!(arm::duration(t.end.unwrap_or(now) - s));
                    }
                    if let Some(e) = t.end {
                        v["endTime"] = json!(arm::time(e));
                    }
                    if let Some(pc) = t.progress {
                        v["progressPercentage"] = json!(pc);
                    }
                }
                v
            })
            .collect();
        let mut ext = json!({"tasksList": tasks, "propertyBag": self.property_bag});
        if vm {
            if let Some(pc) = self.progress {
                ext["progressPercentage"] = json!(pc);
            }
            if let Some(eta) = self.eta_seconds {
                ext["estimatedRemainingDuration"] =
                    json!(arm::duration(chrono::Duration::seconds(eta)));
            }
            p["virtualMachineVersion"] = json!("Compute");
            p["containerName"] = json!(self.container_short);
        } else if !self.work.is_maintenance() {
            p["storageAccountName"] = json!(self.host_name);
            p["storageAccountVersion"] = json!("Storage");
        }
        if let Some(msg) = self.errors.first().map(|e| e.message.clone()) {
            if matches!(self.status, JobStatus::Failed) {
                ext["dynamicErrorMessage"] = json!(msg);
            }
        }
        p["extendedInfo"] = ext;
        json!({
            "id": format!("{}/backupJobs/{}", self.vault.id(), self.id),
            "name": self.id,
            "type": "Microsoft.RecoveryServices/vaults/backupJobs",
            "properties": p,
        })
    }
}

pub fn tasks_for(workload: Workload, operation: &str) -> Vec<Task> {
    let names: &[&str] = match (workload, operation) {
        (Workload::Vm, "Backup") => &["Take Snapshot", "Transfer data to vault"],
        (Workload::Vm, "Restore") => &["Transfer data from vault"],
        (Workload::FileShare, "Backup") => &["Take Snapshot", "Transfer data to vault"],
        (Workload::FileShare, "Restore") => &["Transfer data from vault"],
        (_, "DeleteBackupData") => &["Delete backup data"],
        (_, "GarbageCollection") => &["Apply retention", "Remove unreferenced data"],
        (_, "Verify") => &["Verify repository data"],
        (_, "RestoreDrill") => &["Restore samples and compare them"],
        _ => &[],
    };
    names
        .iter()
        .map(|n| Task {
            name: n.to_string(),
            status: "NotStarted".into(),
            start: None,
            end: None,
            progress: None,
        })
        .collect()
}
