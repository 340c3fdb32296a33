//! Repositories in object storage (issue #11): S3 and Azure Blob through opendal, with only those
//! two services compiled in, behind rustic_core's backend traits.
//!
//! - Layout: the repository's files live below the key prefix [`crate::RepoConfig::path`] exactly
//!   as restic lays them out (`config`, `keys/ID`, `snapshots/ID`, `index/ID`, `data/XX/ID`), so
//!   stock restic opens the same prefix (`s3:ENDPOINT/BUCKET/PREFIX`).
//! - Atomicity: a PUT (S3 `PutObject`, Azure `Put Blob`) makes an object visible whole or not at
//!   all, so small files need no temporary name and rename (which object stores do not have).
//!   Uploads are single requests: opendal's blocking `write` buffers the content and sends it in
//!   one PUT, never as a multipart upload a reader could see half of.
//! - Creation races: `config` is written with `If-None-Match: *` where the store supports it,
//!   so of two initialisations of one prefix exactly one wins; the loser removes the key file it
//!   wrote and reports "already exists".
//! - Faults: every request goes through opendal's retry layer (temporary errors: timeouts,
//!   connection failures, 5xx, 429/503 throttling) with exponential backoff and jitter, at most
//!   [`RETRIES`] times, and a timeout per request, so a store that stays down fails the operation
//!   within a bounded time ([`worst_case_failure`]) instead of hanging.
//! - Credentials are held here only in memory (they arrive over the worker's pipe); `Debug`
//!   never prints them and no error message carries them.

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use opendal::blocking::Operator;
use opendal::layers::{RetryLayer, TimeoutLayer};
use opendal::options::{ListOptions, ReadOptions, WriteOptions};
use rustic_core::{
    BytesList, ErrorKind, FileType, Id, ReadBackend, RusticError, RusticResult, WriteBackend,
};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Retries of one request after a temporary failure.
pub const RETRIES: usize = 6;
const MIN_DELAY: Duration = Duration::from_millis(200);
const MAX_DELAY: Duration = Duration::from_secs(4);
/// A request (headers and body) that takes longer than this fails (and is retried).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// No progress on a request's body for this long fails it (and it is retried).
const IO_TIMEOUT: Duration = Duration::from_secs(15);

/// The longest one failing request can keep an operation waiting: every attempt timing out
/// plus every backoff delay at its maximum.
pub fn worst_case_failure() -> Duration {
    let mut delays = Duration::ZERO;
    let mut d = MIN_DELAY;
    for _ in 0..RETRIES {
        // Jitter adds at most the delay itself.
        delays += d * 2;
        d = (d * 2).min(MAX_DELAY);
    }
    REQUEST_TIMEOUT * (RETRIES as u32 + 1) + delays
}

/// An object store that holds repositories: the bucket or container and how to reach it. The
/// repository itself is the key prefix [`crate::RepoConfig::path`] inside it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ObjectStore {
    S3 {
        bucket: String,
        /// `http(s)://host:port`; `None`: AWS's regional endpoint.
        #[serde(default)]
        endpoint: Option<String>,
        region: String,
        access_key_id: String,
        secret_access_key: String,
    },
    Azblob {
        container: String,
        /// The blob endpoint including the account (`https://ACCOUNT.blob.core.windows.net`, or
        /// Azurite's `http://127.0.0.1:10000/devstoreaccount1`); `None`: Azure's for the account.
        #[serde(default)]
        endpoint: Option<String>,
        account_name: String,
        account_key: String,
    },
}

impl std::fmt::Debug for ObjectStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::S3 {
                bucket,
                endpoint,
                region,
                ..
            } => f
                .debug_struct("S3")
                .field("bucket", bucket)
                .field("endpoint", endpoint)
                .field("region", region)
                .finish_non_exhaustive(),
            Self::Azblob {
                container,
                endpoint,
                account_name,
                ..
            } => f
                .debug_struct("Azblob")
                .field("container", container)
                .field("endpoint", endpoint)
                .field("account_name", account_name)
                .finish_non_exhaustive(),
        }
    }
}

impl ObjectStore {
    /// The URL-like name of a repository at `prefix` in this store (`s3://BUCKET/PREFIX`,
    /// `azblob://CONTAINER/PREFIX`), for messages.
    pub fn display(&self, prefix: &str) -> String {
        match self {
            Self::S3 { bucket, .. } => format!("s3://{bucket}/{prefix}"),
            Self::Azblob { container, .. } => format!("azblob://{container}/{prefix}"),
        }
    }

    /// The `restic -r` string that opens the repository at `prefix` with stock restic:
    /// `s3:ENDPOINT/BUCKET/PREFIX` (credentials from `AWS_ACCESS_KEY_ID` /
    /// `AWS_SECRET_ACCESS_KEY`), `azure:CONTAINER:/PREFIX` (`AZURE_ACCOUNT_NAME` /
    /// `AZURE_ACCOUNT_KEY`).
    pub fn restic_repository(&self, prefix: &str) -> String {
        match self {
            Self::S3 {
                bucket,
                endpoint,
                region,
                ..
            } => {
                let endpoint = endpoint
                    .clone()
                    .unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
                format!("s3:{}/{bucket}/{prefix}", endpoint.trim_end_matches('/'))
            }
            Self::Azblob { container, .. } => format!("azure:{container}:/{prefix}"),
        }
    }
}

/// The runtime opendal's blocking operator drives its requests on: one per process, two
/// threads (the work is waiting on the network; rustic's own threads do the hashing).
fn runtime() -> Result<&'static tokio::runtime::Runtime> {
    static RT: OnceLock<std::result::Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("rsvault-objstore")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| Error::Repository(format!("cannot start the object-store runtime: {e}")))
}

/// An operator on `store` rooted at `prefix`, with retries and timeouts.
pub(crate) fn operator(store: &ObjectStore, prefix: &str) -> Result<Operator> {
    // One crypto provider per process: ring, as the server uses (reqwest is built without one
    // of its own). Installing fails harmlessly if the process already has one.
    static TRANSPORT: std::sync::Once = std::sync::Once::new();
    TRANSPORT.call_once(|| {
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        opendal::HttpTransporter::install_default(
            opendal_http_transport_reqwest::ReqwestTransport::default(),
        );
    });
    let root = format!("/{}", prefix.trim_matches('/'));
    let built = match store {
        ObjectStore::S3 {
            bucket,
            endpoint,
            region,
            access_key_id,
            secret_access_key,
        } => {
            let mut b = opendal::services::S3::default()
                .bucket(bucket)
                .region(region)
                .root(&root)
                .access_key_id(access_key_id)
                .secret_access_key(secret_access_key)
                // Only what the config says: no ~/.aws files, no instance metadata lookups.
                .disable_config_load()
                .disable_ec2_metadata();
            if let Some(e) = endpoint {
                b = b.endpoint(e);
            }
            opendal::Operator::new(b)
        }
        ObjectStore::Azblob {
            container,
            endpoint,
            account_name,
            account_key,
        } => {
            let endpoint = endpoint
                .clone()
                .unwrap_or_else(|| format!("https://{account_name}.blob.core.windows.net"));
            let b = opendal::services::Azblob::default()
                .container(container)
                .endpoint(&endpoint)
                .root(&root)
                .account_name(account_name)
                .account_key(account_key);
            opendal::Operator::new(b)
        }
    }
    .map_err(|e| {
        Error::Repository(format!(
            "cannot configure the object store for {}: {e}",
            store.display(prefix)
        ))
    })?
    .layer(
        RetryLayer::new()
            .with_max_times(RETRIES)
            .with_min_delay(MIN_DELAY)
            .with_max_delay(MAX_DELAY)
            .with_factor(2.0)
            .with_jitter(),
    )
    .layer(
        TimeoutLayer::new()
            .with_timeout(REQUEST_TIMEOUT)
            .with_io_timeout(IO_TIMEOUT),
    );
    let rt = runtime()?;
    let _guard = rt.enter();
    Operator::new(built).map_err(|e| Error::Repository(format!("object store: {e}")))
}

/// A rustic backend over an object store.
pub(crate) struct ObjectBackend {
    op: Operator,
    location: String,
    /// While creating a repository: key files held back until `config` is written, so a
    /// creation that loses the race never leaves a key file that opens with the same password
    /// but wraps another master key (an opener could pick it). `None`: write keys at once.
    pending_keys: Option<Mutex<Vec<(Id, opendal::Buffer)>>>,
}

impl std::fmt::Debug for ObjectBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectBackend")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

fn object_path(tpe: FileType, id: &Id) -> String {
    let hex = id.to_hex();
    match tpe {
        FileType::Config => "config".into(),
        FileType::Pack => format!("data/{}/{}", &hex[..2], &*hex),
        _ => format!("{}/{}", tpe.dirname(), &*hex),
    }
}

fn backend_err(what: &'static str, path: &str, err: opendal::Error) -> Box<RusticError> {
    RusticError::with_source(ErrorKind::Backend, what, err).attach_context("path", path.to_string())
}

impl ObjectBackend {
    pub(crate) fn new(store: &ObjectStore, prefix: &str) -> Result<Self> {
        Ok(Self {
            op: operator(store, prefix)?,
            location: store.display(prefix),
            pending_keys: None,
        })
    }

    /// A backend for creating the repository: see `pending_keys`.
    pub(crate) fn for_init(store: &ObjectStore, prefix: &str) -> Result<Self> {
        Ok(Self {
            pending_keys: Some(Mutex::default()),
            ..Self::new(store, prefix)?
        })
    }

    pub(crate) fn has_config(&self) -> Result<bool> {
        self.op.exists("config").map_err(|e| {
            Error::Repository(format!(
                "cannot reach the object store for {}: {e}",
                self.location
            ))
        })
    }

    /// Removes every object below the prefix.
    pub(crate) fn destroy(&self) -> Result<()> {
        self.op
            .delete_options(
                "/",
                opendal::options::DeleteOptions {
                    recursive: true,
                    ..Default::default()
                },
            )
            .map_err(|e| Error::Repository(format!("deleting {}: {e}", self.location)))
    }

    /// Whether the store answers and takes writes below the prefix: one listing, then a small
    /// object written and deleted.
    pub(crate) fn probe(&self) -> Result<()> {
        let fail = |what: &str, e: opendal::Error| {
            Error::Repository(format!("{what} {}: {e}", self.location))
        };
        self.op
            .list_options(
                "/",
                ListOptions {
                    limit: Some(1),
                    ..Default::default()
                },
            )
            .map_err(|e| fail("listing", e))?;
        let probe = format!(".readyz-{}", std::process::id());
        self.op
            .write(&probe, Vec::<u8>::new())
            .map_err(|e| fail("writing to", e))?;
        self.op.delete(&probe).map_err(|e| fail("deleting from", e))
    }

    /// Bytes stored below the prefix.
    pub(crate) fn size(&self) -> Result<u64> {
        let entries = self
            .op
            .list_options(
                "/",
                ListOptions {
                    recursive: true,
                    ..Default::default()
                },
            )
            .map_err(|e| Error::Repository(format!("listing {}: {e}", self.location)))?;
        Ok(entries
            .iter()
            .filter(|e| e.metadata().is_file())
            .map(|e| e.metadata().content_length())
            .sum())
    }

    fn list_entries(&self, tpe: FileType) -> RusticResult<Vec<(Id, u64)>> {
        if tpe == FileType::Config {
            let exists = self
                .op
                .exists("config")
                .map_err(|e| backend_err("Checking `{path}` failed.", "config", e))?;
            return Ok(if exists {
                vec![(Id::default(), 0)]
            } else {
                vec![]
            });
        }
        let dir = format!("{}/", tpe.dirname());
        let entries = self
            .op
            .list_options(
                &dir,
                ListOptions {
                    recursive: true,
                    ..Default::default()
                },
            )
            // A failed listing must fail the operation: a partial list would make prune delete
            // data that is in use, or check miss damage.
            .map_err(|e| backend_err("Listing `{path}` failed.", &dir, e))?;
        Ok(entries
            .iter()
            .filter(|e| e.metadata().is_file())
            .filter_map(|e| {
                Id::parse_some(e.name(), tpe).map(|id| (id, e.metadata().content_length()))
            })
            .collect())
    }
}

impl ReadBackend for ObjectBackend {
    fn location(&self) -> String {
        self.location.clone()
    }

    fn list_with_size(&self, tpe: FileType) -> RusticResult<Vec<(Id, u32)>> {
        self.list_entries(tpe)?
            .into_iter()
            .map(|(id, size)| {
                let size = u32::try_from(size).map_err(|_| {
                    RusticError::new(
                        ErrorKind::Backend,
                        "Repository file `{id}` is larger than 4 GiB.",
                    )
                    .attach_context("id", id.to_hex().to_string())
                })?;
                Ok((id, size))
            })
            .collect()
    }

    fn list(&self, tpe: FileType) -> RusticResult<Vec<Id>> {
        Ok(self.list_entries(tpe)?.into_iter().map(|e| e.0).collect())
    }

    fn warmup_path(&self, tpe: FileType, id: &Id) -> String {
        object_path(tpe, id)
    }

    fn read_full(&self, tpe: FileType, id: &Id) -> RusticResult<Bytes> {
        let path = object_path(tpe, id);
        self.op
            .read(&path)
            .map(|b| b.to_bytes())
            .map_err(|e| backend_err("Reading `{path}` failed.", &path, e))
    }

    fn read_partial(
        &self,
        tpe: FileType,
        id: &Id,
        _cacheable: bool,
        offset: u32,
        length: u32,
    ) -> RusticResult<Bytes> {
        let path = object_path(tpe, id);
        let start = u64::from(offset);
        self.op
            .read_options(
                &path,
                ReadOptions {
                    range: (start..start + u64::from(length)).into(),
                    ..Default::default()
                },
            )
            .map(|b| b.to_bytes())
            .map_err(|e| backend_err("Reading `{path}` failed.", &path, e))
    }
}

impl WriteBackend for ObjectBackend {
    fn create(&self) -> RusticResult<()> {
        // Object stores have no directories; the bucket or container must exist.
        Ok(())
    }

    fn write_bytes(
        &self,
        tpe: FileType,
        id: &Id,
        _cacheable: bool,
        content: BytesList,
    ) -> RusticResult<()> {
        let path = object_path(tpe, id);
        let body = opendal::Buffer::from(content.into_vec());
        if tpe == FileType::Config {
            return self.write_config(&path, body);
        }
        if let (FileType::Key, Some(pending)) = (tpe, &self.pending_keys) {
            pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((*id, body));
            return Ok(());
        }
        self.op
            .write(&path, body)
            .map(|_| ())
            .map_err(|e| backend_err("Writing `{path}` failed.", &path, e))
    }

    fn remove(&self, tpe: FileType, id: &Id, _cacheable: bool) -> RusticResult<()> {
        let path = object_path(tpe, id);
        self.op
            .delete(&path)
            .map_err(|e| backend_err("Removing `{path}` failed.", &path, e))
    }
}

impl ObjectBackend {
    /// `config` is written once, when the repository is created: only if no other writer
    /// created it first.
    fn write_config(&self, path: &str, body: opendal::Buffer) -> RusticResult<()> {
        let conditional = self.op.info().capability().write_with_if_not_exists;
        let result = if conditional {
            self.op.write_options(
                path,
                body,
                WriteOptions {
                    if_not_exists: true,
                    ..Default::default()
                },
            )
        } else {
            match self.op.exists(path) {
                Ok(true) => Err(opendal::Error::new(
                    opendal::ErrorKind::ConditionNotMatch,
                    "config exists",
                )),
                Ok(false) => self.op.write(path, body),
                Err(e) => Err(e),
            }
        };
        let pending = self
            .pending_keys
            .as_ref()
            .map(|p| std::mem::take(&mut *p.lock().unwrap_or_else(|e| e.into_inner())));
        match result {
            Ok(_) => {
                // This creation won: its key files follow. (An opener that sees `config`
                // before them finds no key yet; `open_or_init` waits for them.)
                for (id, body) in pending.unwrap_or_default() {
                    let path = object_path(FileType::Key, &id);
                    self.op
                        .write(&path, body)
                        .map_err(|e| backend_err("Writing `{path}` failed.", &path, e))?;
                }
                Ok(())
            }
            Err(e) if e.kind() == opendal::ErrorKind::ConditionNotMatch => Err(RusticError::new(
                ErrorKind::Backend,
                "A repository already exists at `{path}`.",
            )
            .attach_context("path", self.location.clone())),
            Err(e) => Err(backend_err("Writing `{path}` failed.", path, e)),
        }
    }
}

/// Parses a restic repository string naming an object store, as [`ObjectStore::restic_repository`]
/// prints it: `s3:http(s)://HOST[:PORT]/BUCKET/PREFIX` or `azure:CONTAINER:/PREFIX`, with the
/// credentials from `env` (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_DEFAULT_REGION`;
/// `AZURE_ACCOUNT_NAME`, `AZURE_ACCOUNT_KEY`, and `AZURE_ENDPOINT` for an emulator). Returns
/// the store and the prefix; `Ok(None)` for anything else (a local path).
pub fn from_restic_repository(
    repo: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<(ObjectStore, String)>> {
    let need = |name: &str| {
        env(name).ok_or_else(|| Error::Repository(format!("{repo}: {name} is not set")))
    };
    if let Some(rest) = repo.strip_prefix("s3:") {
        let (scheme, rest) = rest.split_once("://").ok_or_else(|| {
            Error::Repository(format!("{repo}: expected s3:http(s)://HOST/BUCKET/PREFIX"))
        })?;
        let mut parts = rest.splitn(3, '/');
        let host = parts.next().unwrap_or_default();
        let bucket = parts
            .next()
            .filter(|b| !b.is_empty())
            .ok_or_else(|| Error::Repository(format!("{repo}: no bucket")))?;
        let prefix = parts.next().unwrap_or_default().trim_matches('/');
        let store = ObjectStore::S3 {
            bucket: bucket.into(),
            endpoint: Some(format!("{scheme}://{host}")),
            region: env("AWS_DEFAULT_REGION").unwrap_or_else(|| "us-east-1".into()),
            access_key_id: need("AWS_ACCESS_KEY_ID")?,
            secret_access_key: need("AWS_SECRET_ACCESS_KEY")?,
        };
        return Ok(Some((store, prefix.into())));
    }
    if let Some(rest) = repo.strip_prefix("azure:") {
        let (container, prefix) = rest.split_once(':').unwrap_or((rest, ""));
        let store = ObjectStore::Azblob {
            container: container.into(),
            endpoint: env("AZURE_ENDPOINT"),
            account_name: need("AZURE_ACCOUNT_NAME")?,
            account_key: need("AZURE_ACCOUNT_KEY")?,
        };
        return Ok(Some((store, prefix.trim_matches('/').into())));
    }
    Ok(None)
}
