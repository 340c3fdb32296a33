//! Wiring for `rsvault serve`: data dir, store, token, TLS, recovery of interrupted jobs, HTTPS
//! listener and graceful shutdown.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;

use rsvault_api::{self as api, AppState};
use rsvault_jobs::config::{source_info, Config};
use rsvault_jobs::live::Runner;
use rsvault_jobs::secrets::{self, Kek};
use rsvault_jobs::service::{Service, ADMIN_TOKEN, EXPORT_SIGNING_KEY};
use rsvault_store::Store;

pub struct ServeOptions {
    pub data: PathBuf,
    pub listen: SocketAddr,
    pub config: Option<PathBuf>,
    /// Program + args that start an engine worker (normally this binary's `engine-worker`).
    pub worker: (PathBuf, Vec<String>),
    /// `--share`, `--disk`, `--restore-root`: added to the config file's.
    pub cli_sources: rsvault_jobs::config::CliSources,
}

pub fn load_config(data: &Path, explicit: Option<&Path>) -> anyhow::Result<Config> {
    match explicit {
        Some(p) => Config::load(p),
        None => {
            let p = data.join("rsvault.toml");
            if p.exists() {
                Config::load(&p)
            } else {
                Ok(Config::default())
            }
        }
    }
}

/// Makes the data dir private before anything is written into it: files rsvault creates are
/// 0600 and directories 0700 whatever the caller's umask (SQLite creates its `-wal` / `-shm`
/// files, and the engine workers their repository files, with the process umask), and a data dir
/// that is already open to group or others is tightened, with a warning, contents included.
///
/// Returns the umask the process had before, which restore workers write with (restored files
/// get their recorded modes; new folders of a restore target the operator's usual ones).
pub fn secure_data_dir(data: &Path) -> anyhow::Result<u32> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let private = nix::sys::stat::Mode::from_bits_truncate(0o077);
    let previous = nix::sys::stat::umask(private);
    if previous == private {
        // Called twice in one process (tests open several services): keep the first answer.
        if let Some(p) = ORIGINAL_UMASK.get() {
            return Ok(*p);
        }
    }
    let previous = *ORIGINAL_UMASK.get_or_init(|| previous.bits());
    if !data.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(data)
            .with_context(|| format!("creating data dir {}", data.display()))?;
        return Ok(previous);
    }
    let mode = std::fs::metadata(data)
        .with_context(|| format!("reading data dir {}", data.display()))?
        .permissions()
        .mode();
    if mode & 0o077 == 0 {
        return Ok(previous);
    }
    tracing::warn!(
        data = %data.display(),
        mode = format!("{:o}", mode & 0o777),
        "the data dir is open to other users; making it and its contents private (0700/0600)"
    );
    let mut stack = vec![data.to_path_buf()];
    while let Some(dir) = stack.pop() {
        tighten(&dir)?;
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let entry = entry?;
            let ty = entry.file_type()?;
            if ty.is_dir() {
                stack.push(entry.path());
            } else if ty.is_file() {
                tighten(&entry.path())?;
            }
        }
    }
    Ok(previous)
}

/// The process's umask before `secure_data_dir` made it private.
static ORIGINAL_UMASK: std::sync::OnceLock<u32> = std::sync::OnceLock::new();

/// Removes group and other permission bits (never follows a symlink: only files and dirs get here).
fn tighten(p: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::symlink_metadata(p)?;
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode & 0o700))
            .with_context(|| format!("making {} private", p.display()))?;
    }
    Ok(())
}

/// The deployment's key-encryption key file.
pub fn key_file(data: &Path, config: &Config) -> PathBuf {
    config
        .secrets
        .key_file
        .clone()
        .unwrap_or_else(|| data.join("master.key"))
}

/// Loads the KEK, finishing a rotation that was cut short: if `KEY_FILE.new` exists, it becomes
/// the KEK when the store's keys are already wrapped with it, else it is dropped.
fn load_kek(store: &Store, key_file: &Path) -> anyhow::Result<Kek> {
    let pending = secrets::pending_path(key_file);
    if std::env::var_os(secrets::MASTER_KEY_ENV).is_none() && pending.exists() {
        let new = Kek::parse(&std::fs::read_to_string(&pending)?)
            .with_context(|| format!("reading {}", pending.display()))?;
        let vaults: Vec<rsvault_types::model::Vault> =
            store.tx(|tx| tx.list_prefix(rsvault_jobs::service::K_VAULT, ""))?;
        let rewrapped = vaults
            .iter()
            .any(|v| secrets::parse_wrapped(&v.wrapped_key).is_ok_and(|(id, _)| id == new.id()));
        if rewrapped {
            std::fs::rename(&pending, key_file).with_context(|| {
                format!("finishing the key rotation into {}", key_file.display())
            })?;
            tracing::warn!("finished a key rotation that was interrupted");
        } else {
            std::fs::remove_file(&pending)?;
        }
    }
    Kek::load_or_create(key_file)
}

/// Re-wraps every vault key under a new key-encryption key (`rsvault secrets rotate`). Runs with
/// the data dir's lock held, so no server uses the old KEK meanwhile. Returns (vaults, new KEK id).
pub fn rotate_kek(data: &Path, config: Config) -> anyhow::Result<(usize, String)> {
    anyhow::ensure!(
        std::env::var_os(secrets::MASTER_KEY_ENV).is_none(),
        "the key-encryption key comes from {}: rotate it there (set the new value for a \
         rotation with the key file unset is not supported)",
        secrets::MASTER_KEY_ENV
    );
    secure_data_dir(data)?;
    let _lock = lock_data_dir(data)?;
    let file = key_file(data, &config);
    let svc = open_service(data, config, (PathBuf::new(), vec![]))?;
    let new = Kek::generate();
    // Written first, so a crash after the store is re-wrapped still has the key (see load_kek).
    rsvault_jobs::fsutil::write_private(&secrets::pending_path(&file), new.encode().as_bytes())?;
    let n = svc.rewrap_keys(&new)?;
    std::fs::rename(secrets::pending_path(&file), &file)?;
    svc.store.compact()?;
    Ok((n, new.id().to_string()))
}

/// This node's default name: `HOST:PORT`, or `HOST-PID` where the port is not known in advance.
pub fn default_node_id(port: Option<u16>) -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "rsvault".into());
    match port {
        Some(p) if p != 0 => format!("{host}:{p}"),
        _ => format!("{host}-{}", std::process::id()),
    }
}

/// Takes the data dir's exclusive lock (`DATA/rsvault.lock`, holding the owner's pid), or says
/// which process holds it.
pub fn lock_data_dir(data: &Path) -> anyhow::Result<nix::fcntl::Flock<std::fs::File>> {
    use std::io::{Read, Seek, Write};
    let path = data.join("rsvault.lock");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    let mut lock = match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
    {
        Ok(l) => l,
        Err((mut file, _)) => {
            let mut owner = String::new();
            let _ = file.read_to_string(&mut owner);
            anyhow::bail!(
                "another rsvault process (pid {}) holds the lock {} on this data dir; \
                 one data dir (and its embedded SQLite store) serves one rsvault process",
                owner.trim(),
                path.display()
            );
        }
    };
    lock.set_len(0)?;
    lock.rewind()?;
    write!(lock, "{}", std::process::id())?;
    lock.flush()?;
    Ok(lock)
}

/// Makes sure the admin token exists; only its hash is kept, in the store (so every node accepts
/// it). A token an earlier release kept wrapped in the store, or in plain text in
/// `DATA/admin-token`, is converted. Returns the token when it was created now, to be shown once.
pub fn admin_token(svc: &Service, data: &Path) -> anyhow::Result<Option<String>> {
    let kept: Option<serde_json::Value> = svc
        .store
        .read(|tx| tx.get(rsvault_jobs::service::K_SECRET, "", ADMIN_TOKEN))?;
    if let Some(wrapped) = kept.as_ref().and_then(|w| w["wrapped"].as_str()) {
        let token = svc.kek.unwrap(wrapped, ADMIN_TOKEN)?;
        api::auth::adopt_admin_token(&svc.store, &token)?;
        svc.store
            .tx(|tx| tx.delete(rsvault_jobs::service::K_SECRET, "", ADMIN_TOKEN))?;
        tracing::warn!("the admin token was kept wrapped in the store; only its hash is kept now");
    }
    api::auth::ensure_admin_token(&svc.store, &data.join("admin-token"))
}

/// The deployment's token-signing key, published in the store for every node.
pub fn token_key(data: &Path, svc: &Service) -> anyhow::Result<api::auth::SigningKey> {
    let key =
        api::auth::SigningKey::load_or_create(&api::auth::signing_key_path(data, &svc.config))?;
    api::auth::publish_key(&svc.store, &key)?;
    Ok(key)
}

/// The export-link signing key, shared by every node through the store (wrapped by the KEK). A
/// key file from before (`DATA/signing-key`) becomes the shared key, so its links stay valid, and
/// is then removed.
fn signing_key(store: &Store, kek: &Kek, data: &Path) -> anyhow::Result<Vec<u8>> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let legacy = data.join("signing-key");
    let key = rsvault_jobs::service::shared_secret(store, kek, EXPORT_SIGNING_KEY, || {
        let bytes = std::fs::read(&legacy)
            .ok()
            .filter(|k| k.len() >= 32)
            .unwrap_or_else(|| (0..32).map(|_| rand::random::<u8>()).collect());
        b64.encode(bytes)
    })?;
    if legacy.exists() {
        std::fs::remove_file(&legacy)?;
    }
    Ok(b64.decode(key)?)
}

/// Builds the service over a data dir: the store, sources, signing key. Several services may
/// share one data dir (they coordinate through the store).
pub fn open_service(
    data: &Path,
    config: Config,
    worker: (PathBuf, Vec<String>),
) -> anyhow::Result<Arc<Service>> {
    let restore_umask = secure_data_dir(data)?;
    let store = match config.store.effective_url() {
        Some(url) => Store::open_url(&url)
            .with_context(|| format!("opening the store {}", rsvault_store::redact(&url)))?,
        None => Store::open(&data.join("rsvault.db")).context("opening the metadata store")?,
    };
    let kek = load_kek(&store, &key_file(data, &config))?;
    let sources = config.sources.iter().map(source_info).collect();
    let signing_key = signing_key(&store, &kek, data)?;
    Ok(Arc::new(Service {
        store,
        sources,
        peer_sources: Default::default(),
        data_dir: data.to_path_buf(),
        runner: Runner::new(worker, config.runner.max_concurrent_jobs(), restore_umask),
        signing_key,
        kek,
        node_id: config
            .node
            .id
            .clone()
            .unwrap_or_else(|| default_node_id(None)),
        config,
        metrics: Default::default(),
        ready_probe: Default::default(),
    }))
}

pub async fn serve(opts: ServeOptions) -> anyhow::Result<()> {
    let mut config = load_config(&opts.data, opts.config.as_deref())?;
    config.add_cli_sources(&opts.cli_sources)?;
    let mut worker = opts.worker.clone();
    worker
        .1
        .extend(["--parent-pid".to_string(), std::process::id().to_string()]);
    if config.server.worker_memory_mib > 0 {
        worker.1.extend([
            "--memory-mib".to_string(),
            config.server.worker_memory_mib.to_string(),
        ]);
    }
    secure_data_dir(&opts.data)?;
    // Held until the process exits: the embedded SQLite store and the interrupted-job recovery
    // below are one node's; a second server on this data dir would fail the first one's jobs.
    let _lock = lock_data_dir(&opts.data)?;
    if config.node.id.is_none() {
        config.node.id = Some(default_node_id(Some(opts.listen.port())));
    }
    let svc = open_service(&opts.data, config, worker)?;
    // Readiness checks that the repository location exists: a fresh data dir has it from the start.
    // Resolving it here also fails the start on missing object-store credentials.
    match svc.repositories().map_err(anyhow::Error::msg)? {
        rsvault_jobs::repository::Repositories::Directory(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?
        }
        rsvault_jobs::repository::Repositories::Object { .. } => {}
    }
    let fresh_token = admin_token(&svc, &opts.data)?;
    let auth = Arc::new(api::auth::Auth::new(
        &svc.config,
        token_key(&opts.data, &svc)?,
    ));
    let wrapped = svc
        .wrap_legacy_keys()
        .context("wrapping stored vault keys")?;
    if wrapped > 0 {
        tracing::warn!(
            vaults = wrapped,
            "wrapped vault keys that were stored in plain text"
        );
    }
    svc.register_node()
        .context("registering this node in the store")?;
    let (failed, requeued) = svc
        .recover_interrupted()
        .context("resolving interrupted jobs")?;
    if failed + requeued > 0 {
        tracing::warn!(
            failed,
            requeued,
            "resolved jobs left running by the previous process"
        );
    }

    tokio::spawn(rsvault_jobs::runner::dispatch(svc.clone()));
    if !svc.config.notify.webhook.is_empty() {
        tokio::spawn(rsvault_jobs::notify::run(svc.clone()));
    }
    if svc.config.scheduler.enabled {
        tokio::spawn(rsvault_jobs::scheduler::run(svc.clone()));
    }

    let _ = rustls::crypto::ring::default_provider().install_default();
    let (cert, key) = crate::tls::material(&opts.data, &svc.config.server, opts.listen)?;
    let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(&cert, &key)
        .await
        .with_context(|| format!("loading the TLS certificate {}", cert.display()))?;
    tokio::spawn(reload_tls_on_sighup(tls.clone(), cert.clone(), key.clone()));
    let app = api::router(AppState {
        svc: svc.clone(),
        auth,
        limits: Arc::new(api::limits::RateLimiter::default()),
    });
    tokio::spawn(purge_activity(svc.clone()));
    let handle = axum_server::Handle::new();
    let shutdown = handle.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: no new requests; running jobs are resolved at next start");
        shutdown.graceful_shutdown(Some(std::time::Duration::from_secs(5)));
    });
    let l = &svc.config.limits;
    let header_timeout = std::time::Duration::from_secs(l.header_read_timeout_seconds);
    let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(tls)
        .handshake_timeout(header_timeout)
        .acceptor(crate::conn::Hygiene::new(
            l.max_connections,
            std::time::Duration::from_secs(l.idle_timeout_seconds),
        ));
    let mut server = axum_server::bind(opts.listen)
        .acceptor(acceptor)
        .first_request_timeout(header_timeout)
        .handle(handle.clone());
    // hyper's header timer also runs while a keep-alive connection waits for its next request,
    // so it is the idle timeout: closing idle connections after a few seconds would race clients
    // that reuse them. New connections get the short bound (handshake and first request).
    server
        .http_builder()
        .http1()
        .header_read_timeout(Some(std::time::Duration::from_secs(l.idle_timeout_seconds)));
    let task = tokio::spawn(
        server.serve(app.into_make_service_with_connect_info::<std::net::SocketAddr>()),
    );
    let addr = handle
        .listening()
        .await
        .context("the listener did not start")?;
    println!("rsvault listening on https://{addr}");
    if let Some(token) = fresh_token {
        println!("admin token: {token}");
        println!(
            "(only its hash is stored; it is not printed again: `rsvault token rotate-admin` makes a new one)"
        );
    }
    println!(
        "TLS certificate: {} (SHA-256 {})",
        cert.display(),
        crate::tls::fingerprint(&cert)?
    );
    use std::io::Write;
    let _ = std::io::stdout().flush();
    task.await.context("server task")?.context("server")?;
    Ok(())
}

/// Reloads the certificate and key from their files on SIGHUP (a renewed certificate, without a
/// restart); a pair that does not load leaves the current one in place.
async fn reload_tls_on_sighup(
    tls: axum_server::tls_rustls::RustlsConfig,
    cert: PathBuf,
    key: PathBuf,
) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        return;
    };
    while hup.recv().await.is_some() {
        match tls.reload_from_pem_file(&cert, &key).await {
            Ok(()) => match crate::tls::fingerprint(&cert) {
                Ok(f) => tracing::info!(fingerprint = %f, "reloaded the TLS certificate"),
                Err(e) => tracing::warn!("reloaded the TLS certificate: {e}"),
            },
            Err(e) => tracing::error!(
                cert = %cert.display(),
                "the TLS certificate did not load; keeping the current one: {e}"
            ),
        }
    }
}

/// Deletes activity-log events past `[audit] retention_days`, hourly.
async fn purge_activity(svc: Arc<Service>) {
    loop {
        let s = svc.clone();
        let n = tokio::task::spawn_blocking(move || api::activity::purge(&s))
            .await
            .unwrap_or(0);
        if n > 0 {
            tracing::info!(
                events = n,
                "deleted activity-log events past their retention"
            );
        }
        tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
