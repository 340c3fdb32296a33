//! The neighbouring resources clients resolve before they call Recovery Services: the
//! `Microsoft.Compute/virtualMachines` of VM sources and the `Microsoft.Storage/storageAccounts` of
//! file-share sources and restore accounts. Read-only, rendered in the Compute and Storage shapes,
//! and only what the configuration declares: this is name resolution for `az`, not an emulator.
//!
//! A resource's region is its configured `location`, else the region of the first vault created
//! (so `az backup protection enable-for-vm`'s same-region check passes), else `westus`.

use std::path::PathBuf;

use serde_json::{json, Value};

use crate::service::{Service, K_VAULT};
use rsvault_types::arm::{ArmCode, ArmError, ArmResult};
use rsvault_types::model::{SourceInfo, Vault, Workload};

/// The region reported when neither the configuration nor any vault names one.
pub const FALLBACK_LOCATION: &str = "westus";

/// A storage account rsvault serves: the account of file-share sources, or a restore root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageAccount {
    pub rg: String,
    pub name: String,
    pub location: Option<String>,
    /// Set for a restore account: the restore root it stands for.
    pub restore_root: Option<PathBuf>,
}

impl StorageAccount {
    pub fn id(&self, sub: &str) -> String {
        format!(
            "/subscriptions/{sub}/resourceGroups/{}/providers/Microsoft.Storage/storageAccounts/{}",
            self.rg, self.name
        )
    }
}

impl Service {
    /// The region of the first vault created, if any.
    pub fn first_vault_location(&self) -> ArmResult<Option<String>> {
        let vaults: Vec<Vault> = self.store.read(|tx| tx.list_prefix(K_VAULT, ""))?;
        Ok(vaults
            .into_iter()
            .min_by_key(|v| v.created)
            .map(|v| v.location))
    }

    fn location_or_default(&self, configured: Option<&String>) -> ArmResult<String> {
        match configured {
            Some(l) => Ok(normalize_location(l)),
            None => Ok(self
                .first_vault_location()?
                .unwrap_or_else(|| FALLBACK_LOCATION.to_string())),
        }
    }

    /// The VM source named `rg/name` (names compare case-insensitively, as in ARM).
    pub fn vm_source(&self, sub: &str, rg: &str, name: &str) -> Option<SourceInfo> {
        self.sources_in(sub).into_iter().find(|s| {
            s.workload == Workload::Vm
                && s.rg.eq_ignore_ascii_case(rg)
                && s.host_name.eq_ignore_ascii_case(name)
        })
    }

    /// The region a source's VM or storage account reports.
    pub fn source_location(&self, s: &SourceInfo) -> ArmResult<String> {
        self.location_or_default(s.location.as_ref())
    }

    /// Every storage account served: one per file-share account (whatever its number of shares),
    /// then the restore accounts.
    pub fn storage_accounts(&self, sub: &str) -> Vec<StorageAccount> {
        let mut out: Vec<StorageAccount> = Vec::new();
        for s in self
            .sources_in(sub)
            .iter()
            .filter(|s| s.workload == Workload::FileShare)
        {
            let dup = out.iter().any(|a| {
                a.rg.eq_ignore_ascii_case(&s.rg) && a.name.eq_ignore_ascii_case(&s.host_name)
            });
            if !dup {
                out.push(StorageAccount {
                    rg: s.rg.clone(),
                    name: s.host_name.clone(),
                    location: s.location.clone(),
                    restore_root: None,
                });
            }
        }
        for a in &self.config.restore_accounts {
            out.push(StorageAccount {
                rg: a.resource_group.clone(),
                name: a.name.clone(),
                location: a.location.clone(),
                restore_root: Some(a.root.clone()),
            });
        }
        out
    }

    pub fn storage_account(&self, sub: &str, rg: &str, name: &str) -> Option<StorageAccount> {
        self.storage_accounts(sub)
            .into_iter()
            .find(|a| a.rg.eq_ignore_ascii_case(rg) && a.name.eq_ignore_ascii_case(name))
    }

    /// The served storage account an ARM id names (in the subscription the id names).
    pub fn storage_account_by_id(&self, id: &str) -> Option<StorageAccount> {
        let (rg, provider, kind, name) = parse_resource_id(id)?;
        if !provider.eq_ignore_ascii_case("Microsoft.Storage")
            || !kind.eq_ignore_ascii_case("storageAccounts")
        {
            return None;
        }
        let sub = id.split('/').filter(|s| !s.is_empty()).nth(1)?;
        self.storage_account(sub, &rg, &name)
    }

    /// `GET …/Microsoft.Compute/virtualMachines/{name}` of a VM source.
    pub fn vm_wire(&self, sub: &str, s: &SourceInfo) -> ArmResult<Value> {
        let id = s.resource_id(sub);
        let disk_id = |i: usize| {
            format!(
                "/subscriptions/{sub}/resourceGroups/{}/providers/Microsoft.Compute/disks/{}_disk{i}",
                s.rg, s.host_name
            )
        };
        let size_gb = |p: &PathBuf| {
            let bytes = std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
            bytes.div_ceil(1 << 30).max(1)
        };
        let disk = |i: usize, p: &PathBuf| {
            json!({
                "name": format!("{}_disk{i}", s.host_name),
                "createOption": "Attach",
                "diskSizeGB": size_gb(p),
                "managedDisk": {"id": disk_id(i)},
            })
        };
        let os = s.paths.first().map(|p| disk(0, p)).unwrap_or(json!({}));
        // A data disk's lun is its index among all disks, the index `restoreDiskLunList` uses.
        let data: Vec<Value> = s
            .paths
            .iter()
            .enumerate()
            .skip(1)
            .map(|(i, p)| {
                let mut d = disk(i, p);
                d["lun"] = json!(i);
                d
            })
            .collect();
        Ok(json!({
            "id": id,
            "name": s.host_name,
            "type": "Microsoft.Compute/virtualMachines",
            "location": self.source_location(s)?,
            "properties": {
                "vmId": stable_uuid(&id.to_ascii_lowercase()),
                "provisioningState": "Succeeded",
                "storageProfile": {"osDisk": os, "dataDisks": data},
            },
        }))
    }

    /// `GET …/Microsoft.Storage/storageAccounts/{name}`.
    pub fn storage_account_wire(&self, sub: &str, a: &StorageAccount) -> ArmResult<Value> {
        let location = self.location_or_default(a.location.as_ref())?;
        Ok(json!({
            "id": a.id(sub),
            "name": a.name,
            "type": "Microsoft.Storage/storageAccounts",
            "location": location,
            "kind": "StorageV2",
            "sku": {"name": "Standard_LRS", "tier": "Standard"},
            "properties": {
                "provisioningState": "Succeeded",
                "primaryLocation": location,
                "statusOfPrimary": "available",
            },
        }))
    }

    /// Where a restore that names `account_id` as its target or staging account writes below:
    /// a restore account's own root, else (a file-share account, or no account) the first root.
    pub fn restore_root_for(&self, account_id: Option<&str>) -> ArmResult<Option<PathBuf>> {
        let Some(id) = account_id.filter(|i| !i.trim().is_empty()) else {
            return Ok(None);
        };
        match self.storage_account_by_id(id) {
            Some(a) => Ok(a.restore_root),
            None => Err(ArmError::new(
                ArmCode::RestoreTargetInvalid,
                format!(
                    "Storage account '{id}' is not served by rsvault; name a file-share account or a [[restore_account]] of the configuration."
                ),
            )
            .with_target("properties.storageAccountId")),
        }
    }
}

/// `(resource group, provider, type, name)` of `/subscriptions/s/resourceGroups/rg/providers/P/T/N`.
pub fn parse_resource_id(id: &str) -> Option<(String, String, String, String)> {
    let seg: Vec<&str> = id.split('/').filter(|s| !s.is_empty()).collect();
    match seg.as_slice() {
        [s, _, r, rg, p, provider, kind, name]
            if s.eq_ignore_ascii_case("subscriptions")
                && r.eq_ignore_ascii_case("resourceGroups")
                && p.eq_ignore_ascii_case("providers") =>
        {
            Some((
                rg.to_string(),
                provider.to_string(),
                kind.to_string(),
                name.to_string(),
            ))
        }
        _ => None,
    }
}

/// ARM spells regions in lower case without spaces (`West US` is `westus`).
pub fn normalize_location(l: &str) -> String {
    l.to_ascii_lowercase().replace(' ', "")
}

/// A UUID-shaped id that stays the same for the same input (a VM keeps its `vmId`).
fn stable_uuid(s: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut parts = [0u64; 2];
    for (i, p) in parts.iter_mut().enumerate() {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (i, s).hash(&mut h);
        *p = h.finish();
    }
    let b: Vec<u8> = parts.iter().flat_map(|p| p.to_be_bytes()).collect();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&b);
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_ids_parse_case_insensitively() {
        let id = "/Subscriptions/s1/resourcegroups/rg1/providers/Microsoft.Storage/storageAccounts/acct1";
        let (rg, p, t, n) = parse_resource_id(id).unwrap();
        assert_eq!(
            (rg.as_str(), p.as_str(), t.as_str(), n.as_str()),
            ("rg1", "Microsoft.Storage", "storageAccounts", "acct1")
        );
        assert!(parse_resource_id("/subscriptions/s1/resourceGroups/rg1").is_none());
    }

    #[test]
    fn stable_uuid_is_stable_and_distinct() {
        assert_eq!(stable_uuid("a"), stable_uuid("a"));
        assert_ne!(stable_uuid("a"), stable_uuid("b"));
        assert_eq!(stable_uuid("a").len(), 36);
    }
}
