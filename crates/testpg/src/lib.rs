//! A throwaway PostgreSQL cluster for tests and benchmarks: `initdb` into a temporary directory,
//! `pg_ctl start` on a free loopback port (no Unix socket), and `pg_ctl stop` + removal on drop.
//!
//! PostgreSQL refuses to run as root, so when the tests run as root the cluster belongs to the
//! `postgres` user (commands run through `runuser`). The binaries are found on `PATH` or in
//! Debian's `/usr/lib/postgresql/<version>/bin`; `.ci/run` installs the `postgresql` package where
//! they are missing. A test that needs PostgreSQL and finds none fails: it never passes silently.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
}

/// Where `initdb` and `pg_ctl` are.
fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .find(|p| p.join("initdb").is_file() && p.join("pg_ctl").is_file())
    }) {
        return dir;
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    versions.retain(|p| p.join("initdb").is_file());
    versions.sort();
    versions.pop().unwrap_or_else(|| {
        panic!("PostgreSQL's initdb/pg_ctl are needed for this test and were not found on PATH or in /usr/lib/postgresql/*/bin: apt-get install postgresql (.ci/run does)")
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

impl Cluster {
    /// Starts a cluster tuned for tests (no fsync: a crash of the machine loses nothing we keep).
    pub fn start() -> Self {
        Self::start_with(&[
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
        ])
    }

    /// Starts a cluster with PostgreSQL's durable defaults (for benchmarks).
    pub fn start_durable() -> Self {
        Self::start_with(&[])
    }

    fn start_with(settings: &[&str]) -> Self {
        let bin = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("rsvault-pg-")
            .tempdir()
            .expect("temp dir");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("cluster dir");
        let owner = as_root().then(|| {
            let user = nix::unistd::User::from_name("postgres")
                .ok()
                .flatten()
                .expect("running as root: PostgreSQL needs the `postgres` user (apt-get install postgresql)");
            // The postgres user must reach the cluster directory through the temp dir.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
            std::os::unix::fs::chown(&data, Some(user.uid.as_raw()), Some(user.gid.as_raw())).unwrap();
            std::os::unix::fs::chown(dir.path(), Some(user.uid.as_raw()), Some(user.gid.as_raw())).unwrap();
            user
        });
        let run = |program: &str, args: &[&str]| -> std::process::Output {
            let mut cmd = if owner.is_some() {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(bin.join(program));
                c
            } else {
                Command::new(bin.join(program))
            };
            cmd.args(args)
                .output()
                .unwrap_or_else(|e| panic!("running {program}: {e}"))
        };
        let data_s = data.to_str().unwrap();
        let out = run(
            "initdb",
            &[
                "-D",
                data_s,
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let log = dir.path().join("postgres.log");
        for attempt in 0..5 {
            let port = free_port();
            let mut opts = format!("-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories= -c max_connections=200");
            for pair in settings.chunks(2) {
                opts.push_str(&format!(" {} {}", pair[0], pair[1]));
            }
            let out = run(
                "pg_ctl",
                &[
                    "-D",
                    data_s,
                    "-l",
                    log.to_str().unwrap(),
                    "-o",
                    &opts,
                    "-w",
                    "-t",
                    "30",
                    "start",
                ],
            );
            if out.status.success() {
                return Self { dir, bin, port };
            }
            if attempt == 4 {
                panic!(
                    "pg_ctl start failed: {}\n{}",
                    String::from_utf8_lossy(&out.stderr),
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        }
        unreachable!()
    }

    /// Creates database `name` and returns its URL.
    pub fn create_db(&self, name: &str) -> String {
        let mut admin = postgres::Client::connect(&self.url("postgres"), postgres::NoTls)
            .expect("connecting to the test cluster");
        admin
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .expect("CREATE DATABASE");
        self.url(name)
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

fn as_root() -> bool {
    nix::unistd::geteuid().is_root()
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let mut cmd = if as_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"])
                .arg(self.bin.join("pg_ctl"));
            c
        } else {
            Command::new(self.bin.join("pg_ctl"))
        };
        let _ = cmd
            .args([
                "-D",
                data.to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ])
            .output();
    }
}
