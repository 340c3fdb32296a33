//! Where vault repositories live (`[repository]`, issue #11): a directory (the default,
//! `DATA/repos`), an S3 bucket or an Azure Blob container. Each vault's repository is
//! `LOCATION/<subscription>/<resource group>/<vault>`, lower case.
//!
//! Credentials come from files named in the config or from the standard environment variables,
//! never from the command line; they are read when a repository is opened (so a rotated key
//! file is picked up by the next job) and travel to engine workers over their pipe only.

use std::path::{Path, PathBuf};

use rsvault_engine::ObjectStore;
use rsvault_types::model::VaultRef;
use serde::Deserialize;

/// The `[repository]` table, as written.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RepositoryConfig {
    /// `s3://BUCKET/PREFIX`, `azblob://CONTAINER/PREFIX`, or a directory (relative: below the
    /// data dir). Default `DATA/repos`.
    pub location: Option<String>,
    /// S3 endpoint, or the blob endpoint including the account path.
    pub endpoint: Option<String>,
    /// S3 region (default `AWS_REGION`, `AWS_DEFAULT_REGION`, then `us-east-1`).
    pub region: Option<String>,
    /// S3 access key id (default `AWS_ACCESS_KEY_ID`).
    pub access_key_id: Option<String>,
    /// File holding the S3 secret access key (default `AWS_SECRET_ACCESS_KEY`).
    pub secret_access_key_file: Option<PathBuf>,
    /// Azure storage account (default `AZURE_STORAGE_ACCOUNT`).
    pub account_name: Option<String>,
    /// File holding the Azure storage account key (default `AZURE_STORAGE_KEY`).
    pub account_key_file: Option<PathBuf>,
}

/// `location` parsed (no credentials yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Directory(PathBuf),
    S3 { bucket: String, prefix: String },
    Azblob { container: String, prefix: String },
}

/// Where repositories live, with credentials resolved.
#[derive(Debug, Clone)]
pub enum Repositories {
    Directory(PathBuf),
    Object { store: ObjectStore, prefix: String },
}

fn split_bucket(rest: &str, what: &str, location: &str) -> anyhow::Result<(String, String)> {
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    anyhow::ensure!(
        !bucket.is_empty(),
        "repository.location '{location}' names no {what}"
    );
    let prefix = prefix.trim_matches('/');
    anyhow::ensure!(
        !prefix.split('/').any(|s| s == "." || s == ".."),
        "repository.location '{location}': '.' and '..' are not allowed in the prefix"
    );
    Ok((bucket.to_string(), prefix.to_string()))
}

impl RepositoryConfig {
    /// Parses `location` (relative directories are below `data`).
    pub fn location(&self, data: &Path) -> anyhow::Result<Location> {
        let Some(loc) = self.location.as_deref() else {
            return Ok(Location::Directory(data.join("repos")));
        };
        if let Some(rest) = loc.strip_prefix("s3://") {
            let (bucket, prefix) = split_bucket(rest, "bucket", loc)?;
            return Ok(Location::S3 { bucket, prefix });
        }
        if let Some(rest) = loc.strip_prefix("azblob://") {
            let (container, prefix) = split_bucket(rest, "container", loc)?;
            return Ok(Location::Azblob { container, prefix });
        }
        anyhow::ensure!(
            !loc.contains("://"),
            "repository.location '{loc}': only s3://, azblob:// or a directory are supported"
        );
        anyhow::ensure!(!loc.is_empty(), "repository.location must not be empty");
        Ok(Location::Directory(data.join(loc)))
    }

    /// Checks what can be checked without the environment: the location's form and that only
    /// the keys of its kind are set.
    pub fn validate(&self) -> anyhow::Result<()> {
        let loc = self.location(Path::new("."))?;
        let s3_keys = [
            ("region", self.region.is_some()),
            ("access_key_id", self.access_key_id.is_some()),
            (
                "secret_access_key_file",
                self.secret_access_key_file.is_some(),
            ),
        ];
        let az_keys = [
            ("account_name", self.account_name.is_some()),
            ("account_key_file", self.account_key_file.is_some()),
        ];
        let (kind, wrong): (&str, Vec<&str>) = match loc {
            Location::Directory(_) => (
                "a directory",
                s3_keys
                    .iter()
                    .chain(&az_keys)
                    .chain(&[("endpoint", self.endpoint.is_some())])
                    .filter(|k| k.1)
                    .map(|k| k.0)
                    .collect(),
            ),
            Location::S3 { .. } => (
                "s3://",
                az_keys.iter().filter(|k| k.1).map(|k| k.0).collect(),
            ),
            Location::Azblob { .. } => (
                "azblob://",
                s3_keys.iter().filter(|k| k.1).map(|k| k.0).collect(),
            ),
        };
        anyhow::ensure!(
            wrong.is_empty(),
            "repository: {} do(es) not apply to a location that is {kind}",
            wrong.join(", ")
        );
        if let Some(e) = &self.endpoint {
            anyhow::ensure!(
                e.starts_with("http://") || e.starts_with("https://"),
                "repository.endpoint '{e}' must start with http:// or https://"
            );
        }
        Ok(())
    }

    /// The location with its credentials, from the key files or `env`. Errors name what is
    /// missing, never a secret.
    pub fn resolve(
        &self,
        data: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Repositories> {
        let read_secret =
            |file: &Option<PathBuf>, var: &str, key: &str| -> anyhow::Result<String> {
                let value = match file {
                    Some(f) => std::fs::read_to_string(f).map_err(|e| {
                        anyhow::anyhow!("repository.{key}: cannot read {}: {e}", f.display())
                    })?,
                    None => env(var).ok_or_else(|| {
                        anyhow::anyhow!("repository: set {key} or the environment variable {var}")
                    })?,
                };
                let value = value.trim().to_string();
                anyhow::ensure!(!value.is_empty(), "repository.{key}: the secret is empty");
                Ok(value)
            };
        let named = |value: &Option<String>, var: &str, key: &str| -> anyhow::Result<String> {
            value
                .clone()
                .or_else(|| env(var))
                .filter(|v| !v.trim().is_empty())
                .ok_or_else(|| {
                    anyhow::anyhow!("repository: set {key} or the environment variable {var}")
                })
        };
        Ok(match self.location(data)? {
            Location::Directory(dir) => Repositories::Directory(dir),
            Location::S3 { bucket, prefix } => Repositories::Object {
                store: ObjectStore::S3 {
                    bucket,
                    endpoint: self.endpoint.clone(),
                    region: self
                        .region
                        .clone()
                        .or_else(|| env("AWS_REGION"))
                        .or_else(|| env("AWS_DEFAULT_REGION"))
                        .unwrap_or_else(|| "us-east-1".into()),
                    access_key_id: named(
                        &self.access_key_id,
                        "AWS_ACCESS_KEY_ID",
                        "access_key_id",
                    )?,
                    secret_access_key: read_secret(
                        &self.secret_access_key_file,
                        "AWS_SECRET_ACCESS_KEY",
                        "secret_access_key_file",
                    )?,
                },
                prefix,
            },
            Location::Azblob { container, prefix } => Repositories::Object {
                store: ObjectStore::Azblob {
                    container,
                    endpoint: self.endpoint.clone(),
                    account_name: named(
                        &self.account_name,
                        "AZURE_STORAGE_ACCOUNT",
                        "account_name",
                    )?,
                    account_key: read_secret(
                        &self.account_key_file,
                        "AZURE_STORAGE_KEY",
                        "account_key_file",
                    )?,
                },
                prefix,
            },
        })
    }
}

/// A name as one path segment: lower case; `/`, `\`, control characters and `%` escaped, and
/// `.`/`..` never left as they are, so no vault can reach outside its own prefix.
fn segment(name: &str) -> String {
    let lower = name.to_lowercase();
    if lower == "." || lower == ".." || lower.is_empty() {
        return lower.replace('.', "%2e");
    }
    lower
        .chars()
        .map(|c| match c {
            '/' | '\\' | '%' => format!("%{:02x}", c as u32),
            c if c.is_control() => format!("%{:02x}", c as u32),
            c => c.to_string(),
        })
        .collect()
}

/// `<subscription>/<resource group>/<vault>`, lower case, each a safe path segment.
pub fn vault_prefix(v: &VaultRef) -> String {
    format!(
        "{}/{}/{}",
        segment(&v.sub),
        segment(&v.rg),
        segment(&v.name)
    )
}

impl Repositories {
    /// The engine's view of vault `v`'s repository (without its keys).
    pub fn for_vault(&self, v: &VaultRef) -> (PathBuf, Option<ObjectStore>) {
        match self {
            Self::Directory(dir) => (dir.join(vault_prefix(v)), None),
            Self::Object { store, prefix } => {
                let p = if prefix.is_empty() {
                    vault_prefix(v)
                } else {
                    format!("{prefix}/{}", vault_prefix(v))
                };
                (PathBuf::from(p), Some(store.clone()))
            }
        }
    }

    /// What `vaultstorageconfig` and messages call this kind of storage.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Directory(_) => "LocalDisk",
            Self::Object {
                store: ObjectStore::S3 { .. },
                ..
            } => "S3",
            Self::Object {
                store: ObjectStore::Azblob { .. },
                ..
            } => "AzureBlob",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(toml_text: &str) -> RepositoryConfig {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn locations_parse_with_prefix_and_default() {
        let data = Path::new("/data");
        assert_eq!(
            cfg("").location(data).unwrap(),
            Location::Directory("/data/repos".into())
        );
        assert_eq!(
            cfg("location = 's3://b/p/q/'").location(data).unwrap(),
            Location::S3 {
                bucket: "b".into(),
                prefix: "p/q".into()
            }
        );
        assert_eq!(
            cfg("location = 'azblob://c'").location(data).unwrap(),
            Location::Azblob {
                container: "c".into(),
                prefix: "".into()
            }
        );
        assert!(cfg("location = 's3:///p'").location(data).is_err());
        assert!(cfg("location = 'gcs://b/p'").location(data).is_err());
        assert!(cfg("location = 's3://b/../x'").location(data).is_err());
        assert!(cfg("location = 's3://b'\naccount_name = 'a'")
            .validate()
            .is_err());
    }

    #[test]
    fn credentials_come_from_files_or_environment_and_errors_name_no_secret() {
        let dir = std::env::temp_dir().join(format!("rsvault-repo-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("secret");
        std::fs::write(&key, "s3cr3t\n").unwrap();
        let c = cfg(&format!(
            "location = 's3://b/p'\nendpoint = 'http://127.0.0.1:9'\naccess_key_id = 'AK'\nsecret_access_key_file = '{}'",
            key.display()
        ));
        match c.resolve(&dir, |_| None).unwrap() {
            Repositories::Object {
                store:
                    ObjectStore::S3 {
                        secret_access_key,
                        region,
                        ..
                    },
                prefix,
            } => {
                assert_eq!(secret_access_key, "s3cr3t");
                assert_eq!(region, "us-east-1");
                assert_eq!(prefix, "p");
            }
            other => panic!("{other:?}"),
        }
        let env = |k: &str| match k {
            "AZURE_STORAGE_ACCOUNT" => Some("acct".to_string()),
            "AZURE_STORAGE_KEY" => Some("a2V5".to_string()),
            _ => None,
        };
        let r = cfg("location = 'azblob://c/p'").resolve(&dir, env).unwrap();
        assert_eq!(r.kind(), "AzureBlob");
        assert!(!format!("{r:?}").contains("a2V5"), "{r:?}");
        let err = cfg("location = 'azblob://c/p'")
            .resolve(&dir, |_| None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("AZURE_STORAGE_ACCOUNT"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn vault_prefixes_are_lower_case_and_cannot_escape() {
        let v = |sub: &str, rg: &str, name: &str| VaultRef {
            sub: sub.into(),
            rg: rg.into(),
            name: name.into(),
        };
        assert_eq!(
            vault_prefix(&v("Sub1", "RG.x", "Vault1")),
            "sub1/rg.x/vault1"
        );
        assert_eq!(vault_prefix(&v("s", "..", "a/b")), "s/%2e%2e/a%2fb");
        let r = Repositories::Object {
            store: ObjectStore::Azblob {
                container: "c".into(),
                endpoint: None,
                account_name: "a".into(),
                account_key: "k".into(),
            },
            prefix: "base".into(),
        };
        assert_eq!(
            r.for_vault(&v("S", "R", "V")).0,
            PathBuf::from("base/s/r/v")
        );
    }
}
