//! A vault's keys: its repository password and master key, wrapped with the deployment's KEK,
//! and their re-wrapping when the KEK changes.

use rsvault_store as store;
use rsvault_types::model::{Vault, VaultRef};

use super::{Service, K_VAULT};
use crate::secrets::{SharedSecret, K_SECRET};

/// What a vault's wrapped master key is bound to: distinct from its password's context, so one
/// can never be unwrapped as the other.
fn master_key_context(v: &VaultRef) -> String {
    format!("{}#masterkey", v.key())
}

impl Service {
    /// A new vault's repository key, already wrapped for the vault `v`.
    pub fn new_vault_key(&self, v: &VaultRef, secret: &str) -> String {
        self.kek.wrap(secret, &v.key())
    }

    /// The vault's repository key, in plain text: for the engine worker's pipe and the escrow
    /// export only.
    pub fn vault_password(&self, vault: &Vault) -> anyhow::Result<String> {
        match &vault.legacy_password {
            Some(p) => Ok(p.clone()),
            None => self.kek.unwrap(&vault.wrapped_key, &vault.vault.key()),
        }
    }

    /// The vault's repository master key, in plain text, if one is stored: for the engine
    /// worker's pipe only. One that does not unwrap (e.g. a KEK rotation cut short) is ignored:
    /// the next job derives it again from the password.
    pub fn vault_master_key(&self, vault: &Vault) -> Option<String> {
        if vault.wrapped_master_key.is_empty() {
            return None;
        }
        self.kek
            .unwrap(&vault.wrapped_master_key, &master_key_context(&vault.vault))
            .map_err(|e| {
                tracing::warn!(vault = %vault.vault.key(), "ignoring the stored master key: {e:#}");
            })
            .ok()
    }

    /// Stores the master key of `vault`'s repository, wrapped. Re-reads the vault in the same
    /// transaction, so a concurrent update of the vault is kept; a vault deleted (or deleted and
    /// created again, with another repository) meanwhile gets nothing.
    pub fn store_master_key(&self, vault: &Vault, master_key: &str) -> Result<(), store::Error> {
        let key = vault.vault.key();
        let wrapped = self.kek.wrap(master_key, &master_key_context(&vault.vault));
        self.store
            .tx(|tx| match tx.get::<Vault>(K_VAULT, &key, "")? {
                Some(mut current) if current.etag == vault.etag => {
                    current.wrapped_master_key = wrapped;
                    tx.put(K_VAULT, &key, "", "", &current)
                }
                _ => Ok(()),
            })
    }

    /// Wraps the keys of vaults stored before keys were wrapped, then rewrites the database
    /// file so no page keeps the plain text. Returns how many.
    pub fn wrap_legacy_keys(&self) -> anyhow::Result<usize> {
        let mut n = 0;
        for key in self.store.read(|tx| tx.vault_keys())? {
            let Some(mut vault) = self.get_vault_by_key(&key)? else {
                continue;
            };
            if let Some(plain) = vault.legacy_password.take() {
                vault.wrapped_key = self.kek.wrap(&plain, &vault.vault.key());
                self.store.tx(|tx| tx.put(K_VAULT, &key, "", "", &vault))?;
                n += 1;
            }
        }
        if n > 0 {
            self.store.compact()?;
        }
        Ok(n)
    }

    /// Re-wraps every vault key from this service's KEK to `new`, in one transaction. The
    /// caller makes `new` the deployment's KEK afterwards.
    pub fn rewrap_keys(&self, new: &crate::secrets::Kek) -> anyhow::Result<usize> {
        let mut out = Vec::new();
        for key in self.store.read(|tx| tx.vault_keys())? {
            if let Some(mut vault) = self.get_vault_by_key(&key)? {
                let plain = self.vault_password(&vault)?;
                vault.legacy_password = None;
                vault.wrapped_key = new.wrap(&plain, &vault.vault.key());
                vault.wrapped_master_key = self
                    .vault_master_key(&vault)
                    .map(|k| new.wrap(&k, &master_key_context(&vault.vault)))
                    .unwrap_or_default();
                out.push((key, vault));
            }
        }
        let mut secrets: Vec<SharedSecret> = self.store.read(|tx| tx.list(K_SECRET, "", None))?;
        for s in &mut secrets {
            s.wrapped = new.wrap(&self.kek.unwrap(&s.wrapped, &s.name)?, &s.name);
        }
        self.store.tx(|tx| {
            for (key, vault) in &out {
                tx.put(K_VAULT, key, "", "", vault)?;
            }
            for s in &secrets {
                tx.put(K_SECRET, "", &s.name, "", s)?;
            }
            Ok(())
        })?;
        Ok(out.len())
    }
}
