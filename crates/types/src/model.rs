//! Stored documents and their wire (JSON) rendering, in Azure's shapes.

use std::collections::BTreeMap;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::arm;

pub const PROVIDER: &str = "Microsoft.RecoveryServices";

/// Identifies a vault: lowercase `sub/rg/name` is its store key; display spellings are kept.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VaultRef {
    pub sub: String,
    pub rg: String,
    pub name: String,
}

impl VaultRef {
    pub fn key(&self) -> String {
        format!("{}/{}/{}", self.sub, self.rg, self.name).to_ascii_lowercase()
    }
    /// `/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.RecoveryServices/vaults/{name}`
    pub fn id(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/{PROVIDER}/vaults/{}",
            self.sub, self.rg, self.name
        )
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Vault {
    pub vault: VaultRef,
    pub location: String,
    pub tags: Value,
    pub sku: Value,
    pub identity: Option<Value>,
    pub properties: Value,
    pub etag: String,
    /// The repository key (restic password) of this vault, wrapped with the deployment's
    /// key-encryption key (`rsvault_jobs::secrets`); never stored in plain text.
    #[serde(default)]
    pub wrapped_key: String,
    /// The repository's master key (what the password's key file wraps), wrapped like
    /// `wrapped_key` under the context `"<store key>#masterkey"`: engine workers open the
    /// repository with it and derive nothing from the password. Empty until the first job that
    /// opens the repository stores it. A cache of what the password opens: one that no longer
    /// unwraps is ignored and derived again.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub wrapped_master_key: String,
    /// The plain key of a vault stored before keys were wrapped: wrapped, and removed from the
    /// store, at the next start.
    #[serde(default, rename = "password", skip_serializing_if = "Option::is_none")]
    pub legacy_password: Option<String>,
    pub created: DateTime<Utc>,
}

impl Vault {
    pub fn wire(&self) -> Value {
        let mut v = json!({
            "id": self.vault.id(),
            "name": self.vault.name,
            "type": "Microsoft.RecoveryServices/vaults",
            "location": self.location,
            "tags": self.tags,
            "etag": self.etag,
            "sku": self.sku,
            "properties": self.properties,
            "systemData": system_data(self.created),
        });
        if let Some(i) = &self.identity {
            v["identity"] = i.clone();
        }
        v
    }
}

pub fn system_data(created: DateTime<Utc>) -> Value {
    json!({
        "createdBy": "rsvault-admin",
        "createdByType": "User",
        "createdAt": arm::time(created),
        "lastModifiedBy": "rsvault-admin",
        "lastModifiedByType": "User",
        "lastModifiedAt": arm::time(created),
    })
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Policy {
    pub name: String,
    pub properties: Value,
    pub created: DateTime<Utc>,
}

impl Policy {
    pub fn backup_management_type(&self) -> &str {
        self.properties["backupManagementType"]
            .as_str()
            .unwrap_or("")
    }
    pub fn wire(&self, vault: &VaultRef, items: i64) -> Value {
        let mut props = self.properties.clone();
        props["protectedItemsCount"] = json!(items);
        json!({
            "id": format!("{}/backupPolicies/{}", vault.id(), self.name),
            "name": self.name,
            "type": "Microsoft.RecoveryServices/vaults/backupPolicies",
            "properties": props,
        })
    }
}

/// What kind of workload an item is.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum Workload {
    Vm,
    FileShare,
}

impl Workload {
    pub fn bmt(self) -> &'static str {
        match self {
            Self::Vm => "AzureIaasVM",
            Self::FileShare => "AzureStorage",
        }
    }
    pub fn job_type(self) -> &'static str {
        match self {
            Self::Vm => "AzureIaaSVMJob",
            Self::FileShare => "AzureStorageJob",
        }
    }
}

/// A source from the config, with its Azure names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceInfo {
    pub workload: Workload,
    pub container: String,
    pub item: String,
    pub friendly_name: String,
    pub rg: String,
    /// VM name or storage account name.
    pub host_name: String,
    pub paths: Vec<PathBuf>,
    /// Configured Azure region of the VM or storage account, if any.
    pub location: Option<String>,
    /// The subscriptions it appears in (empty: every subscription).
    #[serde(default)]
    pub subscriptions: Vec<String>,
}

impl SourceInfo {
    /// Whether this source appears in subscription `sub`.
    pub fn visible_in(&self, sub: &str) -> bool {
        self.subscriptions.is_empty()
            || self
                .subscriptions
                .iter()
                .any(|s| s.eq_ignore_ascii_case(sub))
    }

    /// What a node that has this source offers to jobs (see `Job::needs`).
    pub fn offer(&self) -> String {
        format!("item:{}", item_key(&self.container, &self.item))
    }

    /// ARM id of the source VM or storage account in `sub`.
    pub fn resource_id(&self, sub: &str) -> String {
        match self.workload {
            Workload::Vm => format!(
                "/subscriptions/{sub}/resourceGroups/{}/providers/Microsoft.Compute/virtualMachines/{}",
                self.rg, self.host_name
            ),
            Workload::FileShare => format!(
                "/subscriptions/{sub}/resourceGroups/{}/providers/Microsoft.Storage/storageAccounts/{}",
                self.rg, self.host_name
            ),
        }
    }

    /// The item's key within a vault (lowercase).
    pub fn key(&self) -> String {
        item_key(&self.container, &self.item)
    }

    /// `properties.containerName`: the container name without its first segment.
    pub fn short_container(&self) -> String {
        self.container
            .split_once(';')
            .map(|(_, r)| r.to_string())
            .unwrap_or_default()
    }
}

pub fn item_key(container: &str, item: &str) -> String {
    format!("{container}/{item}").to_ascii_lowercase()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Item {
    pub container: String,
    pub name: String,
    pub workload: Workload,
    pub friendly_name: String,
    pub source_resource_id: String,
    pub policy: Option<String>,
    pub protection_state: String,
    pub last_backup_status: Option<String>,
    pub last_backup_time: Option<DateTime<Utc>>,
    pub last_recovery_point: Option<DateTime<Utc>>,
    pub health_status: String,
    pub data_id: String,
    pub last_snapshot: Option<String>,
    pub last_verified: Option<DateTime<Utc>>,
    pub created: DateTime<Utc>,
    /// The last schedule slot a policy run was started for.
    #[serde(default)]
    pub last_scheduled: Option<DateTime<Utc>>,
    /// Since when the item's last successful backup is older than its policy allows (set by the
    /// scheduler, cleared by the next successful backup).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_since: Option<DateTime<Utc>>,
    /// When a restore drill last proved the item's newest recovery point restorable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proven_restorable: Option<DateTime<Utc>>,
    /// Soft delete (Azure's deferred delete): when stop protection with delete data moved the
    /// item to soft-deleted, and when its data is purged. Both set, or neither.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soft_deleted: Option<SoftDeleted>,
}

/// A soft-deleted item's dates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SoftDeleted {
    pub at: DateTime<Utc>,
    pub purge_at: DateTime<Utc>,
}

impl Item {
    pub fn key(&self) -> String {
        item_key(&self.container, &self.name)
    }

    pub fn id(&self, vault: &VaultRef) -> String {
        format!(
            "{}/backupFabrics/Azure/protectionContainers/{}/protectedItems/{}",
            vault.id(),
            self.container,
            self.name
        )
    }

    pub fn wire(&self, vault: &VaultRef, extended: Option<Value>) -> Value {
        let short_container = self.container.split_once(';').map(|(_, r)| r).unwrap_or("");
        let mut p = json!({
            "friendlyName": self.friendly_name,
            "protectionStatus": if self.health_status == "Passed" { "Healthy" } else { "Unhealthy" },
            "protectionState": self.protection_state,
            "healthStatus": self.health_status,
            "backupManagementType": self.workload.bmt(),
            "containerName": short_container,
            "sourceResourceId": self.source_resource_id,
            "protectedItemDataId": self.data_id,
            "vaultId": vault.id(),
            "isScheduledForDeferredDelete": self.soft_deleted.is_some(),
            "isRehydrate": false,
        });
        if let Some(sd) = self.soft_deleted {
            // Azure's fields: when the delete was asked, the time left before the purge (a .NET
            // TimeSpan, `d.hh:mm:ss`), whether the purge is less than a day away, and the period.
            let left = (sd.purge_at - Utc::now()).max(chrono::Duration::zero());
            let s = left.num_seconds();
            p["deferredDeleteTimeInUTC"] = json!(arm::time(sd.at));
            p["deferredDeleteTimeRemaining"] = json!(format!(
                "{}.{:02}:{:02}:{:02}",
                s / 86_400,
                s % 86_400 / 3600,
                s % 3600 / 60,
                s % 60
            ));
            p["isDeferredDeleteScheduleUpcoming"] = json!(s < 86_400);
            let period = (sd.purge_at - sd.at).num_seconds();
            p["softDeleteRetentionPeriodInDays"] = json!((period + 86_399) / 86_400);
        }
        match self.workload {
            Workload::Vm => {
                p["protectedItemType"] = json!("Microsoft.Compute/virtualMachines");
                p["workloadType"] = json!("VM");
                p["virtualMachineId"] = json!(self.source_resource_id);
                p["policyType"] = json!("V1");
            }
            Workload::FileShare => {
                p["protectedItemType"] = json!("AzureFileShareProtectedItem");
                p["workloadType"] = json!("AzureFileShare");
            }
        }
        if let Some(pol) = &self.policy {
            p["policyId"] = json!(format!("{}/backupPolicies/{}", vault.id(), pol));
            p["policyName"] = json!(pol);
        }
        // Before the first backup Azure reports the initial-backup-pending state.
        p["lastBackupStatus"] = json!(self.last_backup_status.as_deref().unwrap_or("IRPending"));
        if let Some(t) = self.last_backup_time {
            p["lastBackupTime"] = json!(arm::time(t));
        }
        // Azure's "never" for an item without recovery points is DateTime.MinValue; `az backup
        // item list -o table` reads the field unconditionally.
        p["lastRecoveryPoint"] = json!(self
            .last_recovery_point
            .map(arm::time)
            .unwrap_or_else(|| "0001-01-01T00:00:00Z".into()));
        if let Some(x) = extended {
            p["extendedInfo"] = x;
        }
        if let Some(t) = self.last_verified {
            p["lastVerifiedTime"] = json!(arm::time(t));
        }
        if let Some(t) = self.proven_restorable {
            p["lastProvenRestorableTime"] = json!(arm::time(t));
        }
        if let Some(t) = self.stale_since {
            p["healthStatus"] = json!("ActionRequired");
            p["protectionStatus"] = json!("Unhealthy");
            p["healthDetails"] = json!([{
                "code": 410001,
                "title": "BackupStale",
                "message": format!("No successful backup since {}: stale since {} (1.5 times the policy's interval, plus an hour).",
                    self.last_recovery_point.map(arm::time).unwrap_or_else(|| "protection began".into()), arm::time(t)),
                "recommendations": ["Check the item's recent backup jobs and trigger a backup."],
            }]);
        }
        json!({
            "id": self.id(vault),
            "name": self.name,
            "type": "Microsoft.RecoveryServices/vaults/backupFabrics/protectionContainers/protectedItems",
            "properties": p,
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecoveryPoint {
    pub id: String,
    pub item_key: String,
    pub workload: Workload,
    pub snapshot_id: String,
    pub time: DateTime<Utc>,
    pub expiry: Option<DateTime<Utc>>,
    pub bytes: u64,
    pub files: u64,
    /// Taken by a scheduled (policy) run rather than on demand.
    #[serde(default)]
    pub scheduled: bool,
    /// Set when verification found this point's data damaged.
    #[serde(default)]
    pub damaged: bool,
}

impl RecoveryPoint {
    pub fn wire(&self, item_id: &str) -> Value {
        let mut rp_props = json!({});
        if let Some(e) = self.expiry {
            rp_props["expiryTime"] = json!(arm::time(e));
        }
        let props = match self.workload {
            Workload::Vm => json!({
                "objectType": "IaasVMRecoveryPoint",
                "recoveryPointType": "CrashConsistent",
                "recoveryPointTime": arm::time(self.time),
                "recoveryPointAdditionalInfo": "",
                "sourceVMStorageType": "NormalStorage",
                "isSourceVMEncrypted": false,
                "isInstantIlrSessionActive": false,
                "isManagedVirtualMachine": true,
                "originalStorageAccountOption": false,
                "recoveryPointTierDetails": [{"type": "HardenedRP", "status": "Valid"}],
                "recoveryPointProperties": rp_props,
            }),
            Workload::FileShare => json!({
                "objectType": "AzureFileShareRecoveryPoint",
                "recoveryPointType": "FileSystemConsistent",
                "recoveryPointTime": arm::time(self.time),
                "recoveryPointSizeInGB": (self.bytes as f64 / (1u64 << 30) as f64).ceil() as i64,
                "recoveryPointProperties": rp_props,
            }),
        };
        json!({
            "id": format!("{item_id}/recoveryPoints/{}", self.id),
            "name": self.id,
            "type": "Microsoft.RecoveryServices/vaults/backupFabrics/protectionContainers/protectedItems/recoveryPoints",
            "properties": props,
        })
    }
}

/// What an async operation is about, for status rendering.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum OpKind {
    Refresh,
    ConfigureProtection,
    StopProtection,
    DeleteItem,
    Backup,
    Restore,
    Cancel,
    Export,
    PolicyDelete,
    VaultDelete,
    /// A restore validation (`backupTriggerValidateOperation`); its result is the response.
    Validate,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Operation {
    pub id: String,
    pub kind: OpKind,
    pub status: String,
    pub start: DateTime<Utc>,
    pub end: Option<DateTime<Utc>>,
    pub job_id: Option<String>,
    pub error: Option<(String, String)>,
    pub item_key: Option<String>,
    /// Export result (blob name) once written.
    pub result: Option<Value>,
}

impl Operation {
    pub fn new(kind: OpKind, job_id: Option<String>, item_key: Option<String>) -> Self {
        Self {
            id: uuid::Uuid::new_v4().to_string(),
            kind,
            status: "InProgress".into(),
            start: Utc::now(),
            end: None,
            job_id,
            error: None,
            item_key,
            result: None,
        }
    }

    pub fn succeeded(mut self) -> Self {
        self.status = "Succeeded".into();
        self.end = Some(Utc::now());
        self
    }

    pub fn wire(&self) -> Value {
        let mut v = json!({
            "id": self.id,
            "name": self.id,
            "status": self.status,
            "startTime": arm::time(self.start),
        });
        if let Some(e) = self.end {
            v["endTime"] = json!(arm::time(e));
        }
        if let Some((code, message)) = &self.error {
            v["error"] = json!({"code": code, "message": message});
        }
        if let Some(j) = &self.job_id {
            v["properties"] = json!({"objectType": "OperationStatusJobExtendedInfo", "jobId": j});
        }
        v
    }
}

/// A protectable item or container's `properties` for a config source.
pub fn protectable_wire(vault: &VaultRef, s: &SourceInfo, protected: bool) -> Value {
    let state = if protected {
        "Protected"
    } else {
        "NotProtected"
    };
    let (name, props) = match s.workload {
        Workload::Vm => (
            s.item.clone(),
            json!({
                "backupManagementType": "AzureIaasVM",
                "workloadType": "VM",
                "friendlyName": s.friendly_name,
                "protectableItemType": "Microsoft.Compute/virtualMachines",
                "protectionState": state,
                "virtualMachineId": s.resource_id(&vault.sub),
                "resourceGroup": s.rg,
            }),
        ),
        Workload::FileShare => (
            s.item.clone(),
            json!({
                "backupManagementType": "AzureStorage",
                "workloadType": "AzureFileShare",
                "friendlyName": s.friendly_name,
                "protectableItemType": "AzureFileShare",
                "protectionState": state,
                "parentContainerFabricId": s.resource_id(&vault.sub),
                "parentContainerFriendlyName": s.host_name,
                "azureFileShareType": "XSMB",
            }),
        ),
    };
    // Azure spells file-share protectable item ids in lower case, and `az backup` compares them
    // that way.
    let (c, n) = match s.workload {
        Workload::FileShare => (s.container.to_ascii_lowercase(), name.to_ascii_lowercase()),
        Workload::Vm => (s.container.clone(), name.clone()),
    };
    json!({
        "id": format!("{}/backupFabrics/Azure/protectionContainers/{c}/protectableItems/{n}", vault.id()),
        "name": name,
        "type": "Microsoft.RecoveryServices/vaults/backupFabrics/protectionContainers/protectableItems",
        "properties": props,
    })
}

pub fn container_wire(vault: &VaultRef, s: &SourceInfo, registered: bool, items: i64) -> Value {
    let props = match s.workload {
        Workload::Vm => json!({
            "containerType": "Microsoft.Compute/virtualMachines",
            "backupManagementType": "AzureIaasVM",
            "friendlyName": s.friendly_name,
            "healthStatus": "Healthy",
            "registrationStatus": "Registered",
            "virtualMachineId": s.resource_id(&vault.sub),
            "virtualMachineVersion": "Compute",
            "resourceGroup": s.rg,
        }),
        Workload::FileShare => json!({
            "containerType": "StorageContainer",
            "backupManagementType": "AzureStorage",
            "friendlyName": s.host_name,
            "healthStatus": "Healthy",
            "registrationStatus": if registered { "Registered" } else { "NotRegistered" },
            "sourceResourceId": s.resource_id(&vault.sub),
            "protectedItemCount": items,
            "acquireStorageAccountLock": "Acquire",
        }),
    };
    json!({
        "id": format!("{}/backupFabrics/Azure/protectionContainers/{}", vault.id(), s.container),
        "name": s.container,
        "type": "Microsoft.RecoveryServices/vaults/backupFabrics/protectionContainers",
        "properties": props,
    })
}

pub type PropertyBag = BTreeMap<String, String>;
