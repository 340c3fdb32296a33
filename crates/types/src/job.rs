//! The job record: what a job is, its state machine, and its wire rendering.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

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

    /// The job as Azure's `JobResource`.
    pub fn wire(&self) -> Value {
        serde_json::to_value(self.wire_view()).expect("a job's wire form serializes")
    }

    /// Whether the wire form no longer depends on the time it is rendered at: the job has ended
    /// and so has every task that started (durations are then fixed).
    pub fn wire_is_final(&self) -> bool {
        self.status.is_terminal()
            && self.end.is_some()
            && self
                .tasks
                .iter()
                .all(|t| t.start.is_none() || t.end.is_some())
    }

    /// [`Job::wire`] as JSON text, written straight from the record without building a `Value`
    /// tree (a job-list page renders 200 of these).
    pub fn wire_json(&self) -> Vec<u8> {
        serde_json::to_vec(&self.wire_view()).expect("a job's wire form serializes")
    }

    fn wire_view(&self) -> WireJob<'_> {
        let now = Utc::now();
        let vm = self.workload == Workload::Vm && !self.work.is_maintenance();
        let maintenance = self.work.is_maintenance();
        let failed_with = match self.status {
            JobStatus::Failed => self.errors.first().map(|e| e.message.as_str()),
            _ => None,
        };
        WireJob {
            id: format!("{}/backupJobs/{}", self.vault.id(), self.id),
            name: &self.id,
            kind: "Microsoft.RecoveryServices/vaults/backupJobs",
            properties: WireProps {
                job_type: self.job_type(),
                entity_friendly_name: &self.entity_friendly_name,
                backup_management_type: self.bmt(),
                operation: &self.operation,
                status: self.status.as_str(),
                start_time: arm::time(self.start),
                end_time: self.end.map(arm::time),
                activity_id: &self.activity_id,
                duration: arm::duration(self.end.unwrap_or(now) - self.start),
                actions_info: if self.is_cancellable() {
                    &["Cancellable"]
                } else {
                    &[]
                },
                is_user_triggered: self.is_user_triggered,
                error_details: self
                    .errors
                    .iter()
                    .map(|e| WireError {
                        error_code: e.code,
                        error_string: &e.message,
                        recommendations: &e.recommendations,
                        error_title: vm.then_some(e.title.as_str()),
                    })
                    .collect(),
                virtual_machine_version: vm.then_some("Compute"),
                container_name: vm.then_some(self.container_short.as_str()),
                storage_account_name: (!vm && !maintenance).then_some(self.host_name.as_str()),
                storage_account_version: (!vm && !maintenance).then_some("Storage"),
                extended_info: WireExtended {
                    tasks_list: self
                        .tasks
                        .iter()
                        .map(|t| {
                            let timed = if vm { t.start } else { None };
                            WireTask {
                                task_id: &t.name,
                                status: &t.status,
                                start_time: timed.map(arm::time),
                                duration: timed.map(|s| arm::duration(t.end.unwrap_or(now) - s)),
                                end_time: if vm { t.end.map(arm::time) } else { None },
                                progress_percentage: if vm { t.progress } else { None },
                            }
                        })
                        .collect(),
                    property_bag: &self.property_bag,
                    progress_percentage: if vm { self.progress } else { None },
                    estimated_remaining_duration: if vm {
                        self.eta_seconds
                            .map(|eta| arm::duration(chrono::Duration::seconds(eta)))
                    } else {
                        None
                    },
                    dynamic_error_message: failed_with,
                },
            },
        }
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

/// `JobResource` as serialized: the fields Azure's `AzureIaaSVMJob` / `AzureStorageJob` /
/// `VaultJob` define, in their spelling; absent options are left out.
#[derive(Serialize)]
struct WireJob<'a> {
    id: String,
    name: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    properties: WireProps<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireProps<'a> {
    job_type: &'static str,
    entity_friendly_name: &'a str,
    backup_management_type: &'static str,
    operation: &'a str,
    status: &'static str,
    start_time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    end_time: Option<String>,
    activity_id: &'a str,
    duration: String,
    actions_info: &'static [&'static str],
    is_user_triggered: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    error_details: Vec<WireError<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    virtual_machine_version: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    container_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    storage_account_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    storage_account_version: Option<&'static str>,
    extended_info: WireExtended<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireError<'a> {
    error_code: i32,
    error_string: &'a str,
    recommendations: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    error_title: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireTask<'a> {
    task_id: &'a str,
    status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    start_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    end_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    progress_percentage: Option<f64>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireExtended<'a> {
    tasks_list: Vec<WireTask<'a>>,
    property_bag: &'a PropertyBag,
    #[serde(skip_serializing_if = "Option::is_none")]
    progress_percentage: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    estimated_remaining_duration: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dynamic_error_message: Option<&'a str>,
}

#[cfg(test)]
mod wire_tests {
    use super::*;
    use serde_json::json;

    impl Job {
        /// The `Value`-tree rendering the typed one replaced, kept as its reference.
        fn reference_wire(&self) -> Value {
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

    fn job(workload: Workload, work: Work, status: JobStatus) -> Job {
        let start = Utc::now() - chrono::Duration::seconds(90);
        let mut j = Job {
            id: "j1".into(),
            vault: VaultRef {
                sub: "s".into(),
                rg: "rg".into(),
                name: "v".into(),
            },
            seq: 1,
            workload,
            operation: "Backup".into(),
            status,
            started: true,
            entity_friendly_name: "item".into(),
            item_key: "c/i".into(),
            container_short: "iaasvmcontainerv2;rg;vm1".into(),
            host_name: "acct1".into(),
            start,
            end: None,
            activity_id: "a".into(),
            is_user_triggered: true,
            tasks: tasks_for(workload, "Backup"),
            property_bag: [("Bytes Done".to_string(), "10".to_string())].into(),
            progress: Some(42.5),
            eta_seconds: Some(75),
            errors: vec![],
            cancel_op: None,
            work,
            needs: String::new(),
        };
        if let Some(t) = j.tasks.first_mut() {
            t.status = "InProgress".into();
            t.start = Some(start);
            t.progress = Some(12.0);
        }
        j
    }

    /// What the job list caches is final: a finished job renders the same whenever it is
    /// rendered; a running one (its durations grow) is never final.
    #[test]
    fn a_finished_jobs_wire_form_is_final() {
        for workload in [Workload::Vm, Workload::FileShare] {
            let backup = Work::Backup {
                expiry: None,
                scheduled: false,
            };
            let mut j = job(workload, backup, JobStatus::InProgress);
            assert!(!j.wire_is_final());
            j.finish(JobStatus::Completed);
            assert!(j.wire_is_final(), "{j:?}");
            let first = j.wire_json();
            std::thread::sleep(std::time::Duration::from_millis(30));
            assert_eq!(first, j.wire_json());
            // A task that never ended keeps the rendering live.
            if let Some(t) = j.tasks.first_mut() {
                t.end = None;
                assert!(!j.wire_is_final());
            }
        }
    }

    /// The typed rendering is the same JSON as the `Value` one, for every shape of job: VM, file
    /// share and vault jobs; running, finished, failed with errors, with and without tasks.
    #[test]
    fn typed_wire_matches_the_reference_rendering() {
        let backup = || Work::Backup {
            expiry: None,
            scheduled: false,
        };
        let mut cases = Vec::new();
        for workload in [Workload::Vm, Workload::FileShare] {
            for work in [backup(), Work::GarbageCollection, Work::Instant] {
                for status in [
                    JobStatus::InProgress,
                    JobStatus::Completed,
                    JobStatus::Failed,
                ] {
                    let mut j = job(workload, work.clone(), status);
                    if status != JobStatus::InProgress {
                        j.finish(status);
                    }
                    if status == JobStatus::Failed {
                        j.errors.push(JobError {
                            code: 400001,
                            title: "Title".into(),
                            message: "went wrong".into(),
                            recommendations: vec!["retry".into()],
                        });
                    }
                    cases.push(j);
                }
            }
        }
        let mut no_tasks = job(Workload::FileShare, backup(), JobStatus::InProgress);
        no_tasks.tasks.clear();
        cases.push(no_tasks);
        for j in &cases {
            // Fixed times on both sides: `duration` of a running job depends on the clock.
            let (a, b) = (j.reference_wire(), j.wire());
            let strip = |mut v: Value| {
                v["properties"]["duration"] = Value::Null;
                if let Some(ts) = v["properties"]["extendedInfo"]["tasksList"].as_array_mut() {
                    for t in ts {
                        if t.get("duration").is_some() {
                            t["duration"] = Value::Null;
                        }
                    }
                }
                v
            };
            assert_eq!(strip(a.clone()), strip(b.clone()), "{j:?}");
            assert_eq!(
                serde_json::from_slice::<Value>(&j.wire_json()).unwrap()["properties"]["status"],
                b["properties"]["status"]
            );
        }
    }
}
