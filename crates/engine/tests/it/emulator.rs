//! Object-store emulators started by the tests (issue #11): `moto_server` for S3, Azurite for
//! Azure Blob, each on a free port, each stopped when the test process ends (a watchdog shell
//! kills it when our end of its stdin closes, which the kernel does for us however we exit).
//!
//! Where the binaries come from: `RSVAULT_MOTO_SERVER` / `RSVAULT_AZURITE`, else the repo's
//! `.venv/bin/moto_server` and `tests/emulators/node_modules/.bin/azurite-blob` (what `.ci/run`
//! installs), else `PATH`. Missing in CI (`CI` set) is a failure; missing locally, the test says
//! so loudly and returns.
//!
//! This file is also compiled into the rsvault integration tests (`#[path]`), so it depends
//! only on std, `rsvault_engine` and the dev-dependencies both crates have.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rsvault_engine::ObjectStore;

pub const S3_KEY_ID: &str = "rsvault-test-key";
pub const S3_SECRET: &str = "rsvault-test-secret";
pub const BUCKET: &str = "rsvault-test";
/// Azurite's well-known development account (public, documented by Microsoft).
pub const AZ_ACCOUNT: &str = "devstoreaccount1";
pub const AZ_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
pub const CONTAINER: &str = "rsvault-test";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    S3,
    Azblob,
}

pub struct Emulator {
    pub kind: Kind,
    pub port: u16,
    /// The watchdog shell; its stdin is our pipe.
    watchdog: Child,
    /// The emulator's own pid (for kill -9 in fault tests).
    pub pid: u32,
    /// Azurite's data (kept across a restart on the same port).
    pub dir: PathBuf,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/<name> is two levels below the repo")
        .to_path_buf()
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// The emulator's binary, or `None` after a loud message (locally only: in CI it panics).
pub fn binary(kind: Kind) -> Option<PathBuf> {
    let (var, local, name, install) = match kind {
        Kind::S3 => (
            "RSVAULT_MOTO_SERVER",
            repo_root().join(".venv/bin/moto_server"),
            "moto_server",
            "pip install 'moto[server]' (see tests/python/requirements.txt)",
        ),
        Kind::Azblob => (
            "RSVAULT_AZURITE",
            repo_root().join("tests/emulators/node_modules/.bin/azurite-blob"),
            "azurite-blob",
            "cd tests/emulators && npm ci",
        ),
    };
    let found = std::env::var_os(var)
        .map(PathBuf::from)
        .or_else(|| local.is_file().then_some(local))
        .or_else(|| on_path(name));
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{name} is missing in CI: .ci/run must install it ({install})"
        );
        eprintln!(
            "\n!!!!!!!! SKIPPED: {name} is not installed, so the {kind:?} backend is NOT tested. \
             Install it: {install} !!!!!!!!\n"
        );
    }
    found
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A unique prefix per call, so tests sharing an emulator never meet.
pub fn unique_prefix(name: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

impl Emulator {
    /// Starts the emulator on a free port and creates the bucket or container.
    pub fn start(kind: Kind) -> Option<Self> {
        let dir = std::env::temp_dir().join(unique_prefix("rsvault-emu"));
        std::fs::create_dir_all(&dir).unwrap();
        Self::start_on(kind, free_port(), dir)
    }

    fn start_on(kind: Kind, port: u16, dir: PathBuf) -> Option<Self> {
        let bin = binary(kind)?;
        let cmd = match kind {
            Kind::S3 => format!(
                "'{}' -H 127.0.0.1 -p {port} >'{}/moto.log' 2>&1",
                bin.display(),
                dir.display()
            ),
            Kind::Azblob => format!(
                "'{}' --blobHost 127.0.0.1 --blobPort {port} --location '{}' --skipApiVersionCheck --loose --silent >'{}/azurite.log' 2>&1",
                bin.display(),
                dir.display(),
                dir.display()
            ),
        };
        // The watchdog: start the emulator, say its pid, and kill it when stdin closes.
        let mut watchdog = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "{cmd} & c=$!; echo $c; cat >/dev/null; kill $c 2>/dev/null; sleep 1; kill -9 $c 2>/dev/null"
            ))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(watchdog.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let pid: u32 = line.trim().parse().unwrap();
        let emu = Self {
            kind,
            port,
            watchdog,
            pid,
            dir,
        };
        emu.wait_ready();
        emu.create_bucket();
        Some(emu)
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok((status, _)) = http(self.port, "GET", "/", &[]) {
                if status > 0 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{:?} emulator did not start on port {} (log in {})",
                self.kind,
                self.port,
                self.dir.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn create_bucket(&self) {
        let (status, body) = match self.kind {
            // moto accepts unsigned requests.
            Kind::S3 => http(self.port, "PUT", &format!("/{BUCKET}"), &[]).unwrap(),
            Kind::Azblob => {
                let path = format!("/{AZ_ACCOUNT}/{CONTAINER}");
                let date = httpdate();
                let version = "2021-08-06";
                // Shared Key: the canonical resource repeats the account in path-style URLs.
                let to_sign = format!(
                    "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n/{AZ_ACCOUNT}{path}\nrestype:container"
                );
                let sig = sign_shared_key(&to_sign);
                http(
                    self.port,
                    "PUT",
                    &format!("{path}?restype=container"),
                    &[
                        ("x-ms-date", date.as_str()),
                        ("x-ms-version", version),
                        (
                            "Authorization",
                            format!("SharedKey {AZ_ACCOUNT}:{sig}").as_str(),
                        ),
                    ],
                )
                .unwrap()
            }
        };
        // 409: exists already (a restart on kept data).
        assert!(
            (200..300).contains(&status) || status == 409,
            "creating the bucket: {status} {body}"
        );
    }

    pub fn endpoint(&self) -> String {
        match self.kind {
            Kind::S3 => format!("http://127.0.0.1:{}", self.port),
            Kind::Azblob => format!("http://127.0.0.1:{}/{AZ_ACCOUNT}", self.port),
        }
    }

    pub fn store(&self) -> ObjectStore {
        match self.kind {
            Kind::S3 => ObjectStore::S3 {
                bucket: BUCKET.into(),
                endpoint: Some(self.endpoint()),
                region: "us-east-1".into(),
                access_key_id: S3_KEY_ID.into(),
                secret_access_key: S3_SECRET.into(),
            },
            Kind::Azblob => ObjectStore::Azblob {
                container: CONTAINER.into(),
                endpoint: Some(self.endpoint()),
                account_name: AZ_ACCOUNT.into(),
                account_key: AZ_KEY.into(),
            },
        }
    }

    /// The emulator dies at once (SIGKILL), as a crashed store would.
    pub fn kill9(&self) {
        let _ = Command::new("kill")
            .args(["-9", &self.pid.to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts it again on the same port, with the same data where the emulator keeps any
    /// (Azurite does; moto starts empty).
    pub fn restart(mut self) -> Self {
        let (kind, port, dir) = (self.kind, self.port, std::mem::take(&mut self.dir));
        drop(self);
        Self::start_on(kind, port, dir).expect("the emulator was there a moment ago")
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        // Closing its stdin makes the watchdog kill the emulator.
        drop(self.watchdog.stdin.take());
        let _ = self.watchdog.wait();
        if !self.dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn sign_shared_key(to_sign: &str) -> String {
    use base64::Engine;
    use hmac::{Hmac, Mac};
    let key = base64::engine::general_purpose::STANDARD
        .decode(AZ_KEY)
        .unwrap();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(to_sign.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// An RFC 1123 date for `x-ms-date`.
fn httpdate() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let wd = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][days.rem_euclid(7) as usize];
    let mn = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(m - 1) as usize];
    format!(
        "{wd}, {d:02} {mn} {y} {:02}:{:02}:{:02} GMT",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// One HTTP/1.1 request with an empty body; returns the status and body.
fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n"
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, out))
}

/// A TCP forwarder in front of an emulator, for outages without losing the emulator's data:
/// `cut()` drops every open connection and refuses new ones until `restore()`;
/// `fail_next(n)` answers the next `n` requests `503 Service Unavailable` (throttling).
pub struct Proxy {
    pub port: u16,
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
    fail: std::sync::Arc<AtomicU64>,
    pub failed: std::sync::Arc<AtomicU64>,
    open: std::sync::Arc<std::sync::Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    pub fn start(target: u16) -> Self {
        use std::sync::atomic::AtomicBool;
        use std::sync::{Arc, Mutex};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let down = Arc::new(AtomicBool::new(false));
        let fail = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (d, f, fd, o) = (down.clone(), fail.clone(), failed.clone(), open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(mut client) = client else { continue };
                if d.load(Ordering::SeqCst) {
                    continue; // dropped: the connection is reset
                }
                let take = f
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                if take {
                    fd.fetch_add(1, Ordering::SeqCst);
                    std::thread::spawn(move || {
                        // Read the request head, then refuse it.
                        let mut head = Vec::new();
                        let mut b = [0u8; 1];
                        while !head.ends_with(b"\r\n\r\n") && client.read(&mut b).unwrap_or(0) == 1
                        {
                            head.push(b[0]);
                        }
                        let _ = client.write_all(
                            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        );
                    });
                    continue;
                }
                let Ok(upstream) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                {
                    let mut open = o.lock().unwrap();
                    open.push(client.try_clone().unwrap());
                    open.push(upstream.try_clone().unwrap());
                }
                let (mut c2, mut u2) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
                let mut upstream = upstream;
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut client, &mut upstream);
                    let _ = upstream.shutdown(std::net::Shutdown::Write);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut u2, &mut c2);
                    let _ = c2.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        Self {
            port,
            down,
            fail,
            failed,
            open,
        }
    }

    pub fn cut(&self) {
        self.down.store(true, Ordering::SeqCst);
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    pub fn restore(&self) {
        self.down.store(false, Ordering::SeqCst);
    }

    /// The next `n` connections get 503; open connections are closed so the client has to
    /// make new ones (it keeps them alive otherwise).
    pub fn fail_next(&self, n: u64) {
        self.fail.store(n, Ordering::SeqCst);
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    /// `store` with its endpoint pointed at this proxy.
    pub fn store(&self, emu: &Emulator) -> ObjectStore {
        let endpoint = emu
            .endpoint()
            .replace(&format!(":{}", emu.port), &format!(":{}", self.port));
        match emu.store() {
            ObjectStore::S3 {
                bucket,
                region,
                access_key_id,
                secret_access_key,
                ..
            } => ObjectStore::S3 {
                bucket,
                endpoint: Some(endpoint),
                region,
                access_key_id,
                secret_access_key,
            },
            ObjectStore::Azblob {
                container,
                account_name,
                account_key,
                ..
            } => ObjectStore::Azblob {
                container,
                endpoint: Some(endpoint),
                account_name,
                account_key,
            },
        }
    }
}
