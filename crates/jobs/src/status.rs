//! Read-only questions about what is protected where: `locations/{region}/backupStatus` (is this
//! VM or share protected, by which vault and policy) and a vault's `backupUsageSummaries`
//! (protected items and containers per backup management type, bytes stored in its repository).

use serde_json::{json, Value};

use crate::neighbours::{normalize_location, parse_resource_id};
use crate::service::Service;
use rsvault_types::arm::ArmResult;
use rsvault_types::model::{Item, Vault, Workload};

/// The usage summary kinds (`$filter=type eq '…'`) a vault answers.
pub const USAGE_KINDS: &[&str] = &[
    "BackupProtectedItemCountSummary",
    "BackupProtectionContainerCountSummary",
    "BackupStorageUsageSummary",
];

impl Service {
    /// `BackupStatusResponse` for `resource_id` (a VM, or a storage account with `po_name` its
    /// share) among the vaults of `sub` in `region`.
    pub fn backup_status(
        &self,
        sub: &str,
        region: &str,
        resource_type: &str,
        resource_id: &str,
        po_name: Option<&str>,
    ) -> ArmResult<Value> {
        let region = normalize_location(region);
        let wanted = |it: &Item| match it.workload {
            Workload::Vm => {
                resource_type.eq_ignore_ascii_case("VM")
                    && same_resource(&it.source_resource_id, resource_id)
            }
            Workload::FileShare => {
                resource_type.eq_ignore_ascii_case("AzureFileShare")
                    && same_resource(&it.source_resource_id, resource_id)
                    && po_name.is_none_or(|p| {
                        p.eq_ignore_ascii_case(&it.friendly_name)
                            || p.eq_ignore_ascii_case(&it.name)
                    })
            }
        };
        for vault in self.list_vaults(sub, None)? {
            if normalize_location(&vault.location) != region {
                continue;
            }
            if let Some(it) = self.list_items(&vault)?.into_iter().find(wanted) {
                let mut v = json!({
                    "protectionStatus": "Protected",
                    "vaultId": vault.vault.id(),
                    "fabricName": "Azure",
                    "containerName": it.container,
                    "protectedItemName": it.name,
                    "registrationStatus": "Registered",
                });
                if let Some(p) = &it.policy {
                    v["policyName"] = json!(p);
                }
                return Ok(v);
            }
        }
        Ok(json!({"protectionStatus": "NotProtected", "fabricName": "Azure"}))
    }

    /// `BackupManagementUsageList` of `vault` for the summary `kind` (one of [`USAGE_KINDS`]; all
    /// when `None`).
    /// `repo_bytes`: what [`Service::repository_bytes`] measured (asked only when `kind` wants
    /// the storage usage).
    pub fn usage_summaries(
        &self,
        vault: &Vault,
        kind: Option<&str>,
        repo_bytes: u64,
    ) -> ArmResult<Value> {
        let items = self.list_items(vault)?;
        let want = |k: &str| kind.is_none_or(|x| x.eq_ignore_ascii_case(k));
        let mut values = Vec::new();
        for w in [Workload::Vm, Workload::FileShare] {
            let mine: Vec<&Item> = items.iter().filter(|i| i.workload == w).collect();
            if want(USAGE_KINDS[0]) {
                values.push(count(w.bmt(), "protected items", mine.len()));
            }
            if want(USAGE_KINDS[1]) {
                let mut containers: Vec<String> = mine
                    .iter()
                    .map(|i| i.container.to_ascii_lowercase())
                    .collect();
                containers.sort();
                containers.dedup();
                values.push(count(w.bmt(), "protection containers", containers.len()));
            }
        }
        if want(USAGE_KINDS[2]) {
            values.push(json!({
                "unit": "Bytes",
                "currentValue": repo_bytes,
                "limit": -1,
                "name": {"value": "StorageUsage", "localizedValue": "Backup storage used by the vault's repository"},
            }));
        }
        Ok(json!({ "value": values }))
    }
}

fn count(bmt: &str, what: &str, n: usize) -> Value {
    json!({
        "unit": "Count",
        "currentValue": n,
        "limit": -1,
        "name": {"value": bmt, "localizedValue": format!("{bmt} {what}")},
    })
}

/// Two ARM ids name the same resource: same group, provider, type and name (ids of sources
/// carry the subscription they were seen in, and sources appear in every subscription).
fn same_resource(a: &str, b: &str) -> bool {
    match (parse_resource_id(a), parse_resource_id(b)) {
        (Some(x), Some(y)) => {
            x.0.eq_ignore_ascii_case(&y.0)
                && x.1.eq_ignore_ascii_case(&y.1)
                && x.2.eq_ignore_ascii_case(&y.2)
                && x.3.eq_ignore_ascii_case(&y.3)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_match_across_subscriptions_and_case() {
        assert!(same_resource(
            "/subscriptions/a/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/vm1",
            "/subscriptions/b/resourcegroups/RG1/providers/microsoft.compute/virtualmachines/VM1"
        ));
        assert!(!same_resource(
            "/subscriptions/a/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/vm1",
            "/subscriptions/a/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/vm2"
        ));
    }
}
