//! Opening and initialising repositories, the guarded backend, snapshot listing, forget, prune and
//! key management. Everything that needs a `rustic_core::Repository` gets it from here.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use rustic_backend::LocalBackend;
use rustic_core::repofile::{KeyId, SnapshotFile};
use rustic_core::{
    BytesList, ConfigOptions, Credentials, ErrorKind, FileType, Id, KeyOptions, OpenStatus,
    ProgressBars, PruneOptions, ReadBackend, Repository, RepositoryBackends, RepositoryOptions,
    RusticError, RusticResult, WriteBackend,
};

use crate::objstore::ObjectBackend;
use crate::packsync::PackSync;
use crate::{Error, MasterKey, RepoConfig, Result, SnapshotInfo};

/// rustic's messages carry guidance, context and backtraces: keep the part a caller can act on
/// (any prefix the caller added, and rustic's "Message:" section).
pub(crate) fn concise(msg: &str) -> String {
    let (prefix, rest) = match msg.find("`rustic_core` experienced an error") {
        Some(i) => (&msg[..i], &msg[i..]),
        None => ("", msg),
    };
    let body = match rest.find("Message:\n") {
        Some(i) => rest[i + "Message:\n".len()..]
            .split("\n\n")
            .next()
            .unwrap_or(""),
        None => rest.split("\n\n").next().unwrap_or(rest),
    };
    format!("{prefix}{body}")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Turns a `rustic_core` error into the engine's error, keeping the message.
pub(crate) fn map_err(err: Box<RusticError>) -> Error {
    if err.is_incorrect_password() {
        Error::WrongKey("the vault key does not open any key of this repository".into())
    } else {
        Error::Repository(concise(&err.to_string()))
    }
}

/// A local backend that (a) writes small repository files (snapshots, indexes, keys) through a
/// temporary file and a rename, so a killed worker never leaves a truncated snapshot behind, and
/// (b) refuses to write a snapshot once `veto` is set: a cancelled backup cannot commit its
/// snapshot, whatever else it has already written (packs and indexes are harmless orphans at
/// worst, and `prune` reclaims them).
#[derive(Debug)]
///
/// On an object store (`root` is `None`) every write is already atomic: a PUT makes an object
/// visible whole or not at all ([`crate::objstore`]); the veto is checked the same way.
pub(crate) struct GuardedBackend {
    inner: Arc<dyn WriteBackend>,
    /// The local repository directory, for the temp-file-and-rename writes.
    root: Option<PathBuf>,
    /// Local packs, flushed in the background; settled before anything that names them.
    packs: Option<PackSync>,
    veto: Arc<AtomicBool>,
}

impl ReadBackend for GuardedBackend {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn list_with_size(&self, tpe: FileType) -> RusticResult<Vec<(Id, u32)>> {
        self.inner.list_with_size(tpe)
    }
    fn list(&self, tpe: FileType) -> RusticResult<Vec<Id>> {
        self.inner.list(tpe)
    }
    fn read_full(&self, tpe: FileType, id: &Id) -> RusticResult<Bytes> {
        self.inner.read_full(tpe, id)
    }
    fn read_partial(
        &self,
        tpe: FileType,
        id: &Id,
        cacheable: bool,
        offset: u32,
        length: u32,
    ) -> RusticResult<Bytes> {
        self.inner.read_partial(tpe, id, cacheable, offset, length)
    }
    fn warmup_path(&self, tpe: FileType, id: &Id) -> String {
        self.inner.warmup_path(tpe, id)
    }
}

impl WriteBackend for GuardedBackend {
    fn create(&self) -> RusticResult<()> {
        self.inner.create()
    }

    fn write_bytes(
        &self,
        tpe: FileType,
        id: &Id,
        cacheable: bool,
        content: BytesList,
    ) -> RusticResult<()> {
        if tpe == FileType::Snapshot && self.veto.load(Ordering::SeqCst) {
            return Err(RusticError::new(
                ErrorKind::Other,
                "the backup was cancelled; its snapshot is not written",
            ));
        }
        if let Some(packs) = &self.packs {
            let io_err = |err| {
                RusticError::with_source(
                    ErrorKind::InputOutput,
                    "Failed to write a pack file.",
                    err,
                )
            };
            if tpe == FileType::Pack {
                return packs.write_pack(id, content).map_err(io_err);
            }
            // An index, a snapshot, a key or the config may name (or lead to) the packs written
            // so far: they must be on disk first.
            packs.settle().map_err(io_err)?;
        }
        match (tpe, &self.root) {
            (FileType::Snapshot | FileType::Index | FileType::Key, Some(root)) => {
                let dir = root.join(tpe.dirname());
                let name = id.to_hex().to_string();
                atomic_write(&dir, &name, content).map_err(|err| {
                    RusticError::with_source(
                        ErrorKind::InputOutput,
                        "Failed to write repository file `{path}`.",
                        err,
                    )
                    .attach_context("path", dir.join(&name).display().to_string())
                })
            }
            _ => self.inner.write_bytes(tpe, id, cacheable, content),
        }
    }

    fn remove(&self, tpe: FileType, id: &Id, cacheable: bool) -> RusticResult<()> {
        self.inner.remove(tpe, id, cacheable)
    }
}

fn atomic_write(dir: &Path, name: &str, content: BytesList) -> std::io::Result<()> {
    fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = fs::File::create(&tmp)?;
        for part in content.into_vec() {
            file.write_all(&part)?;
        }
        file.sync_all()?;
        fs::rename(&tmp, dir.join(name))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn repo_path_str(cfg: &RepoConfig) -> Result<String> {
    cfg.path
        .to_str()
        .map(str::to_owned)
        .ok_or_else(|| Error::Repository(format!("repository path {:?} is not UTF-8", cfg.path)))
}

/// The backend `cfg` names, unguarded: a local directory or an object store prefix (`init`:
/// one that creates the repository).
fn backend(cfg: &RepoConfig, init: bool) -> Result<(Arc<dyn WriteBackend>, Option<PathBuf>)> {
    let path = repo_path_str(cfg)?;
    match &cfg.store {
        None => {
            let local =
                LocalBackend::new(&path, Vec::<(String, String)>::new()).map_err(map_err)?;
            Ok((Arc::new(local), Some(cfg.path.clone())))
        }
        Some(store) if init => Ok((Arc::new(ObjectBackend::for_init(store, &path)?), None)),
        Some(store) => Ok((Arc::new(ObjectBackend::new(store, &path)?), None)),
    }
}

/// The repository's backend for reading raw pack ranges (a restore reads runs of blobs itself,
/// [`crate::restore`]); read-only use, so unguarded.
pub(crate) fn pack_backend(cfg: &RepoConfig) -> Result<Arc<dyn WriteBackend>> {
    Ok(backend(cfg, false)?.0)
}

/// The repository's backend as every writer uses it: packs flushed in the background and
/// settled before anything names them, snapshots refused once `veto` is set.
pub(crate) fn guarded(
    cfg: &RepoConfig,
    veto: Arc<AtomicBool>,
    init: bool,
) -> Result<Arc<dyn WriteBackend>> {
    let (inner, root) = backend(cfg, init)?;
    let packs = root.clone().map(PackSync::new);
    Ok(Arc::new(GuardedBackend {
        inner,
        root,
        packs,
        veto,
    }))
}

fn new_repo(
    cfg: &RepoConfig,
    veto: Arc<AtomicBool>,
    bars: Option<Arc<dyn ProgressBars>>,
) -> Result<Repository<()>> {
    new_repo_for(cfg, veto, bars, false)
}

fn new_repo_for(
    cfg: &RepoConfig,
    veto: Arc<AtomicBool>,
    bars: Option<Arc<dyn ProgressBars>>,
    init: bool,
) -> Result<Repository<()>> {
    let backends = RepositoryBackends::new(guarded(cfg, veto, init)?, None);
    let mut opts = RepositoryOptions::default();
    // No local cache: on local disk it gains nothing; on an object store it would write below
    // the worker's $HOME, and every worker is a fresh process, so it would start cold anyway.
    opts.no_cache = true;
    match bars {
        Some(b) => Repository::new_with_progress(&opts, &backends, ArcBars(b)),
        None => Repository::new(&opts, &backends),
    }
    .map_err(map_err)
}

#[derive(Debug)]
struct ArcBars(Arc<dyn ProgressBars>);

impl ProgressBars for ArcBars {
    fn progress(
        &self,
        progress_type: rustic_core::ProgressType,
        prefix: &str,
    ) -> rustic_core::Progress {
        self.0.progress(progress_type, prefix)
    }
}

fn has_config(cfg: &RepoConfig) -> Result<bool> {
    match &cfg.store {
        None => Ok(cfg.path.join("config").is_file()),
        Some(store) => ObjectBackend::new(store, &repo_path_str(cfg)?)?.has_config(),
    }
}

/// Where the repository is, for messages: its directory, or `s3://BUCKET/PREFIX`.
pub(crate) fn describe(cfg: &RepoConfig) -> String {
    match &cfg.store {
        None => cfg.path.display().to_string(),
        Some(store) => store.display(&cfg.path.to_string_lossy()),
    }
}

/// Whether a repository exists at `repo` (its `config` file does). An unreachable object store
/// is an error, not "no".
pub fn exists(repo: &RepoConfig) -> Result<bool> {
    has_config(repo)
}

/// Whether the repository location answers and takes writes (`GET /readyz`): a directory that
/// exists and takes a file, or an object store prefix that lists and takes an object.
pub fn probe(repo: &RepoConfig) -> Result<()> {
    match &repo.store {
        Some(store) => ObjectBackend::new(store, &repo_path_str(repo)?)?.probe(),
        None => {
            let dir = &repo.path;
            if !dir.is_dir() {
                return Err(Error::Repository(format!(
                    "the repository location {} is missing",
                    dir.display()
                )));
            }
            let probe = dir.join(format!(".readyz-{}", std::process::id()));
            fs::write(&probe, b"")
                .and_then(|()| fs::remove_file(&probe))
                .map_err(|e| {
                    Error::Repository(format!(
                        "the repository location {} takes no writes: {e}",
                        dir.display()
                    ))
                })
        }
    }
}

/// Deletes the repository and everything in it (a deleted vault's backup data). A missing
/// repository is not an error.
pub fn destroy(repo: &RepoConfig) -> Result<()> {
    match &repo.store {
        None => match fs::remove_dir_all(&repo.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::Repository(format!(
                "deleting '{}': {e}",
                repo.path.display()
            ))),
            _ => Ok(()),
        },
        Some(store) => ObjectBackend::new(store, &repo_path_str(repo)?)?.destroy(),
    }
}

/// Bytes the repository occupies (0 if it does not exist).
pub fn size(repo: &RepoConfig) -> Result<u64> {
    fn dir_bytes(dir: &Path) -> u64 {
        let Ok(entries) = fs::read_dir(dir) else {
            return 0;
        };
        entries
            .flatten()
            .map(|e| match e.file_type() {
                Ok(t) if t.is_dir() => dir_bytes(&e.path()),
                Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
                _ => 0,
            })
            .sum()
    }
    match &repo.store {
        None => Ok(dir_bytes(&repo.path)),
        Some(store) => ObjectBackend::new(store, &repo_path_str(repo)?)?.size(),
    }
}

/// The `restic -r` argument that opens this repository with stock restic.
pub fn restic_repository(repo: &RepoConfig) -> String {
    match &repo.store {
        None => repo.path.display().to_string(),
        Some(store) => store.restic_repository(&repo.path.to_string_lossy()),
    }
}

/// The rustic form of a stored master key, checked: rustic copies the parts into fixed-size
/// arrays and would panic on a wrong length.
fn parse_master_key(key: &MasterKey) -> Result<rustic_core::repofile::MasterKey> {
    let malformed = |why: String| Error::WrongKey(format!("the master key is malformed: {why}"));
    let parsed: rustic_core::repofile::MasterKey =
        serde_json::from_str(key.as_str()).map_err(|e| malformed(e.to_string()))?;
    let lengths = (parsed.encrypt.len(), parsed.mac.k.len(), parsed.mac.r.len());
    if lengths != (32, 16, 16) {
        return Err(malformed(format!(
            "expected 32 + 16 + 16 key bytes, got {} + {} + {}",
            lengths.0, lengths.1, lengths.2
        )));
    }
    Ok(parsed)
}

/// Whether `err` is, or was caused by, a failed MAC check (rustic wraps the decryption error
/// in one naming the file).
fn is_mac_failure(err: &RusticError) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        // Sources are boxed once more on their way into `with_source`.
        let rustic = e
            .downcast_ref::<RusticError>()
            .or_else(|| e.downcast_ref::<Box<RusticError>>().map(|b| &**b));
        if rustic.is_some_and(|r| r.is_code("C001")) {
            return true;
        }
        cur = e.source();
    }
    false
}

fn to_master_key(r: &Repository<OpenStatus>) -> Result<MasterKey> {
    serde_json::to_string(&r.key())
        .map(MasterKey)
        .map_err(|e| Error::Repository(format!("cannot encode the master key: {e}")))
}

/// Opens an existing repository: with `cfg.master_key` if it has one (no key file is read and
/// nothing is derived), else, or if that key does not decrypt this repository, with the
/// password (scrypt through a key file). `veto` guards snapshot writes (see
/// [`GuardedBackend`]).
pub(crate) fn open_with(
    cfg: &RepoConfig,
    veto: Arc<AtomicBool>,
    bars: Option<Arc<dyn ProgressBars>>,
) -> Result<Repository<OpenStatus>> {
    if !has_config(cfg)? {
        return Err(Error::Repository(format!(
            "no repository at '{}'",
            describe(cfg)
        )));
    }
    if let Some(key) = &cfg.master_key {
        let failed = match parse_master_key(key) {
            Ok(key) => match new_repo(cfg, veto.clone(), bars.clone())?
                .open(&Credentials::Masterkey(key))
            {
                Ok(r) => return Ok(r),
                // The config's MAC does not check out under this key: another repository's.
                Err(e) if is_mac_failure(&e) => Error::WrongKey(
                    "the master key does not decrypt this repository (it belongs to another \
                     repository)"
                        .into(),
                ),
                Err(e) => return Err(map_err(e)),
            },
            Err(e) => e,
        };
        if cfg.password.is_empty() {
            return Err(failed);
        }
        // A stale key must not fail the job while the password still opens the repository;
        // the caller learns the current key from `master_key`.
        tracing::warn!(repo = %describe(cfg), "{failed}; opening with the password");
    }
    new_repo(cfg, veto, bars)?
        .open(&Credentials::password(&cfg.password))
        .map_err(map_err)
}

/// Opens with the password only: key management needs to know which key file it opened.
fn open_password(cfg: &RepoConfig) -> Result<Repository<OpenStatus>> {
    let cfg = RepoConfig {
        master_key: None,
        ..cfg.clone()
    };
    open(&cfg)
}

pub(crate) fn open(cfg: &RepoConfig) -> Result<Repository<OpenStatus>> {
    open_with(cfg, Arc::new(AtomicBool::new(false)), None)
}

/// Creates a new repository (restic format v2, zstd compression at the default level) protected
/// by `repo.password`. Fails if a repository already exists there (see [`open_or_init`]).
///
/// The repository is built in a sibling temporary directory and renamed into place, so two
/// racing initialisations cannot interleave their key and config files: one wins, the other
/// gets "already exists".
pub fn init(repo: &RepoConfig) -> Result<()> {
    init_master_key(repo).map(|_| ())
}

/// [`init`], returning the new repository's master key.
fn init_master_key(repo: &RepoConfig) -> Result<MasterKey> {
    let exists = || {
        Error::Repository(format!(
            "a repository already exists at '{}'",
            describe(repo)
        ))
    };
    if has_config(repo)? {
        return Err(exists());
    }
    let mut config = ConfigOptions::default();
    config.set_version = Some(2);
    if repo.store.is_some() {
        // No rename on an object store: `config` is written last and only if absent
        // (objstore.rs), which settles a race the same way.
        let repo = RepoConfig {
            master_key: None,
            ..repo.clone()
        };
        return new_repo_for(&repo, Arc::new(AtomicBool::new(false)), None, true)?
            .init(
                &Credentials::password(&repo.password),
                &KeyOptions::default(),
                &config,
            )
            .map_err(|e| match has_config(&repo) {
                Ok(true) => exists(),
                _ => map_err(e),
            })
            .and_then(|r| to_master_key(&r));
    }
    let name = repo
        .path
        .file_name()
        .ok_or_else(|| Error::Repository(format!("bad repository path '{}'", repo.path.display())))?
        .to_string_lossy()
        .into_owned();
    let parent = repo
        .path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(parent)
        .map_err(|e| Error::Repository(format!("creating '{}': {e}", parent.display())))?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let tmp = parent.join(format!(".{name}.init-{}-{nanos}", std::process::id()));
    let tmp_cfg = RepoConfig {
        path: tmp.clone(),
        password: repo.password.clone(),
        master_key: None,
        store: None,
    };
    let created = fs::create_dir_all(&tmp)
        .map_err(|e| Error::Repository(format!("creating '{}': {e}", tmp.display())))
        .and_then(|()| new_repo(&tmp_cfg, Arc::new(AtomicBool::new(false)), None))
        .and_then(|r| {
            r.init(
                &Credentials::password(&repo.password),
                &KeyOptions::default(),
                &config,
            )
            .map_err(map_err)
        })
        .and_then(|r| to_master_key(&r));
    let key = match created {
        Ok(key) => key,
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    // Renaming onto a missing or empty directory succeeds; onto a repository it fails.
    match fs::rename(&tmp, &repo.path) {
        Ok(()) => Ok(key),
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            if has_config(repo)? {
                Err(exists())
            } else {
                Err(Error::Repository(format!(
                    "cannot create the repository at '{}': {e}",
                    repo.path.display()
                )))
            }
        }
    }
}

/// Idempotent: opens the repository (checking the key) if it exists, creates it otherwise. Safe
/// against a concurrent initialisation of the same path.
pub fn open_or_init(repo: &RepoConfig) -> Result<()> {
    open_or_init_master_key(repo).map(|_| ())
}

/// [`open_or_init`], returning the repository's master key (see [`master_key`]). On a new
/// repository the key costs nothing extra: `init` made it.
pub fn open_or_init_master_key(repo: &RepoConfig) -> Result<MasterKey> {
    if has_config(repo)? {
        return master_key(repo);
    }
    match init_master_key(repo) {
        Err(_) if has_config(repo)? => {
            // Another creation won. On an object store its key file follows its config by one
            // request: give it a moment.
            let mut tries = 0;
            loop {
                match master_key(repo) {
                    Err(Error::Repository(_)) if repo.store.is_some() && tries < 20 => {
                        tries += 1;
                        std::thread::sleep(std::time::Duration::from_millis(100));
                    }
                    other => return other,
                }
            }
        }
        other => other,
    }
}

/// The repository's master key, for [`RepoConfig::master_key`]: derived from the password once
/// (one scrypt), it opens the repository from then on without any derivation. Key files added,
/// rotated or removed later wrap the same master key, so it stays valid for the repository's
/// life.
pub fn master_key(repo: &RepoConfig) -> Result<MasterKey> {
    to_master_key(&open(repo)?)
}

pub(crate) fn snapshot_info(snap: &SnapshotFile) -> SnapshotInfo {
    let ts = snap.time.timestamp();
    let time =
        chrono::DateTime::from_timestamp(ts.as_second(), ts.subsec_nanosecond().max(0) as u32)
            .unwrap_or_default();
    let (files, bytes_total) = snap.summary.as_ref().map_or((0, 0), |s| {
        (s.total_files_processed, s.total_bytes_processed)
    });
    SnapshotInfo {
        id: snap.id.to_hex().to_string(),
        time,
        tags: snap.tags.iter().cloned().collect(),
        paths: snap.paths.iter().cloned().collect(),
        files,
        bytes_total,
    }
}

/// All snapshots, oldest first.
pub fn snapshots(repo: &RepoConfig) -> Result<Vec<SnapshotInfo>> {
    let r = open(repo)?;
    let mut snaps = r.get_all_snapshots().map_err(map_err)?;
    snaps.sort_by(|a, b| a.time.cmp(&b.time));
    Ok(snaps.iter().map(snapshot_info).collect())
}

pub(crate) fn find_snapshot(
    r: &Repository<impl rustic_core::Open>,
    id: &str,
) -> Result<SnapshotFile> {
    let snaps = r.get_all_snapshots().map_err(map_err)?;
    let matches: Vec<_> = snaps
        .into_iter()
        .filter(|s| !id.is_empty() && s.id.to_hex().to_string().starts_with(id))
        .collect();
    match matches.len() {
        1 => Ok(matches.into_iter().next().expect("one match")),
        _ => Err(Error::SnapshotNotFound(id.to_string())),
    }
}

/// One snapshot by full id or unique prefix.
pub fn snapshot(repo: &RepoConfig, id: &str) -> Result<SnapshotInfo> {
    let r = open(repo)?;
    Ok(snapshot_info(&find_snapshot(&r, id)?))
}

/// Removes the given snapshots (full ids or unique prefixes). Their data stays until [`prune`].
pub fn forget(repo: &RepoConfig, ids: &[String]) -> Result<()> {
    let r = open(repo)?;
    let mut found = Vec::new();
    for id in ids {
        found.push(find_snapshot(&r, id)?.id);
    }
    r.delete_snapshots(&found).map_err(map_err)
}

/// Removes data no snapshot references (including orphan packs of killed or cancelled backups).
/// Must not run concurrently with a backup into the same repository: the service serialises.
pub fn prune(repo: &RepoConfig) -> Result<()> {
    let r = open(repo)?;
    let mut opts = PruneOptions::default();
    // The service never runs prune next to a backup, so the two-phase delete buys nothing.
    opts.instant_delete = true;
    let plan = r.prune_plan(&opts).map_err(map_err)?;
    r.prune(&opts, plan).map_err(map_err)
}

/// Adds `new_password` as a further key of the repository; returns the new key's id.
/// Rotation is `add_key` with the new password followed by `remove_key` of the old key's id
/// (opened with the new password).
pub fn add_key(repo: &RepoConfig, new_password: &str) -> Result<String> {
    let r = open_password(repo)?;
    let id = r
        .add_key(new_password, &KeyOptions::default())
        .map_err(map_err)?;
    Ok(id.to_hex().to_string())
}

/// The id of the key that `repo.password` opens (the master key is not used here).
pub fn key_id(repo: &RepoConfig) -> Result<String> {
    let r = open_password(repo)?;
    r.key_id()
        .map(|k| k.to_hex().to_string())
        .ok_or_else(|| Error::Repository("repository opened without a key file".into()))
}

/// All key ids of the repository.
pub fn list_keys(repo: &RepoConfig) -> Result<Vec<String>> {
    let r = open(repo)?;
    let keys: Vec<String> = r
        .list::<KeyId>()
        .map_err(map_err)?
        .map(|k| k.to_hex().to_string())
        .collect();
    Ok(keys)
}

/// Removes a key (full id or unique prefix). The key `repo.password` opens cannot be removed
/// (so the repository is opened with the password here, never with the master key).
pub fn remove_key(repo: &RepoConfig, key_id: &str) -> Result<()> {
    let r = open_password(repo)?;
    let ids: Vec<KeyId> = r.list::<KeyId>().map_err(map_err)?.collect();
    let matches: Vec<_> = ids
        .into_iter()
        .filter(|k| !key_id.is_empty() && k.to_hex().to_string().starts_with(key_id))
        .collect();
    if matches.len() != 1 {
        return Err(Error::Repository(format!("key '{key_id}' not found")));
    }
    r.delete_key(&matches[0]).map_err(map_err)
}
