//! Starts and drives a real server process.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::blocking::{Client, Response};
use serde_json::{json, Value};

pub const SUB: &str = "00000000-0000-0000-0000-000000000001";
pub const API: &str = "2026-02-01";

pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    /// A temp dir with a file share (`share/`) and a VM disk image with holes and zero regions.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let share = dir.path().join("share");
        std::fs::create_dir_all(share.join("sub/deeper")).unwrap();
        std::fs::write(share.join("a.txt"), b"hello rsvault\n").unwrap();
        std::fs::write(share.join("empty"), b"").unwrap();
        let big: Vec<u8> = (0..3_000_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        std::fs::write(share.join("sub/big.bin"), &big).unwrap();
        std::fs::write(share.join("sub/deeper/note.md"), b"# note\n").unwrap();
        std::fs::set_permissions(
            share.join("sub/deeper/note.md"),
            std::fs::Permissions::from_mode(0o640),
        )
        .unwrap();
        std::os::unix::fs::symlink("a.txt", share.join("link")).unwrap();
        let vm = dir.path().join("vms");
        std::fs::create_dir_all(&vm).unwrap();
        make_disk(&vm.join("disk0.img"), 16 << 20);
        std::fs::create_dir_all(dir.path().join("restore")).unwrap();
        Self { dir }
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    pub fn config(&self, extra: &str) -> String {
        format!(
            r#"restore_roots = ["{root}"]
[server]
retry_after_seconds = 1
{extra}
[[source]]
kind = "vm"
resource_group = "rg1"
name = "vm1"
disks = ["{disk}"]

[[source]]
kind = "fileshare"
resource_group = "rg1"
storage_account = "acct1"
share = "share1"
path = "{share}"
"#,
            root = self.path("restore").display(),
            disk = self.path("vms/disk0.img").display(),
            share = self.path("share").display(),
        )
    }
}

/// A sparse disk image: data at the start and in the middle, a hole, and explicit zero blocks.
pub fn make_disk(path: &Path, size: u64) {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::File::create(path).unwrap();
    f.set_len(size).unwrap();
    let data: Vec<u8> = (0..1_048_576u32)
        .map(|i| (i.wrapping_mul(40503) >> 7) as u8)
        .collect();
    f.write_all(&data).unwrap();
    f.seek(SeekFrom::Start(size / 2)).unwrap();
    f.write_all(&data[..512 * 1024]).unwrap();
    f.write_all(&vec![0u8; 2 << 20]).unwrap();
    f.sync_all().unwrap();
}

pub struct Server {
    pub child: Child,
    pub base: String,
    pub token: String,
    pub client: Client,
    pub data: PathBuf,
    pub config: PathBuf,
    /// The SHA-256 fingerprint the server printed for its certificate.
    pub fingerprint: Option<String>,
}

impl Server {
    pub fn start(env: &Env, extra: &str) -> Self {
        let data = env.path("data");
        let config = env.path("rsvault.toml");
        std::fs::write(&config, env.config(extra)).unwrap();
        Self::start_with(&data, &config)
    }

    pub fn start_with(data: &Path, config: &Path) -> Self {
        Self::start_with_env(data, config, &[])
    }

    /// Starts the server with extra environment variables (e.g. `RSVAULT_FAILPOINTS`).
    pub fn start_with_env(data: &Path, config: &Path, vars: &[(&str, &str)]) -> Self {
        let mut s = Self::start_with_args(data, &["--config".as_ref(), config.as_os_str()], vars);
        s.config = config.to_path_buf();
        s
    }

    /// Starts `rsvault serve --data DATA ARGS…` (no `--config` unless `args` has one).
    pub fn start_with_args(data: &Path, args: &[&std::ffi::OsStr], vars: &[(&str, &str)]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rsvault"))
            .envs(vars.iter().copied())
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start rsvault");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let mut base = None;
        let mut printed = None;
        let mut cert_path = None;
        let mut fingerprint = None;
        for line in lines.by_ref() {
            let line = line.unwrap();
            if let Some(rest) = line.strip_prefix("rsvault listening on ") {
                base = Some(rest.trim().to_string());
            }
            if let Some(rest) = line.strip_prefix("admin token: ") {
                printed = Some(rest.trim().to_string());
            }
            if let Some(rest) = line.strip_prefix("TLS certificate: ") {
                let path = rest.split(" (SHA-256").next().unwrap_or(rest).trim();
                fingerprint = rest
                    .split(" (SHA-256 ")
                    .nth(1)
                    .map(|f| f.trim_end_matches(')').to_string());
                cert_path = Some(PathBuf::from(path));
                break;
            }
        }
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let base = base.expect("server printed its address");
        // The admin token is printed once, when a deployment's store is first set up (the
        // server keeps just its hash): remember it per store — the shared one a config names,
        // else the data dir's own — for restarts and further nodes.
        let config = args
            .windows(2)
            .find(|w| w[0] == "--config")
            .map(|w| PathBuf::from(w[1]));
        let store = config
            .and_then(|c| std::fs::read_to_string(c).ok())
            .and_then(|c| {
                let at = c.find("[store]")?;
                let line = c[at..]
                    .lines()
                    .find(|l| l.trim_start().starts_with("url"))?;
                Some(line.split('"').nth(1)?.to_string())
            })
            .unwrap_or_else(|| data.display().to_string());
        static TOKENS: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());
        let known = || TOKENS.lock().unwrap_or_else(|p| p.into_inner());
        let token = match printed {
            Some(t) => {
                let mut k = known();
                k.retain(|(d, _)| d != &store);
                k.push((store, t.clone()));
                t
            }
            // Nodes of one store may start together: the one that set the store up may not have
            // told us its token yet.
            None => {
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    if let Some((_, t)) = known().iter().find(|(d, _)| d == &store) {
                        break t.clone();
                    }
                    assert!(
                        Instant::now() < deadline,
                        "the admin token of this store was printed when it was set up"
                    );
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        };
        let cert = std::fs::read(cert_path.expect("server printed its certificate")).unwrap();
        let client = Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&cert).unwrap())
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        Self {
            child,
            base,
            token,
            client,
            data: data.to_path_buf(),
            config: data.join("rsvault.toml"),
            fingerprint,
        }
    }

    /// Waits for the server process to exit by itself (a failpoint abort); panics after `secs`.
    pub fn wait_exit(&mut self, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "server did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn vault(&self, name: &str) -> String {
        format!("/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.RecoveryServices/vaults/{name}")
    }

    pub fn url(&self, path: &str) -> String {
        let sep = if path.contains('?') { '&' } else { '?' };
        format!("{}{path}{sep}api-version={API}", self.base)
    }

    pub fn req(&self, method: &str, path: &str, body: Option<Value>) -> Response {
        let url = if path.starts_with("https://") {
            path.to_string()
        } else {
            self.url(path)
        };
        let mut rb = self
            .client
            .request(method.parse().unwrap(), &url)
            .bearer_auth(&self.token);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().unwrap();
        // Contract hook: every response body is validated against the official swagger.
        let (status, version, headers) = (r.status(), r.version(), r.headers().clone());
        let bytes = r.bytes().unwrap();
        crate::contract::enforce(method, &url, status.as_u16(), &bytes);
        let mut rebuilt = http::Response::builder().status(status).version(version);
        *rebuilt.headers_mut().unwrap() = headers;
        Response::from(rebuilt.body(bytes).unwrap())
    }

    pub fn get(&self, path: &str) -> Value {
        let r = self.req("GET", path, None);
        let status = r.status();
        let body: Value = r.json().unwrap_or(Value::Null);
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// Creates vault `name`, a VM policy `vmpol` and a share policy `fspol`.
    pub fn setup_vault(&self, name: &str) -> String {
        let v = self.vault(name);
        let r = self.req(
            "PUT",
            &v,
            Some(json!({"location": "westus", "sku": {"name": "Standard"}})),
        );
        assert!(
            r.status() == 201 || r.status() == 200,
            "{}",
            r.text().unwrap()
        );
        for (pol, bmt) in [("vmpol", "AzureIaasVM"), ("fspol", "AzureStorage")] {
            let body = json!({"properties": {
                "backupManagementType": bmt,
                "schedulePolicy": {"schedulePolicyType": "SimpleSchedulePolicy", "scheduleRunFrequency": "Daily", "scheduleRunTimes": ["2026-01-01T02:00:00Z"]},
                "retentionPolicy": {"retentionPolicyType": "LongTermRetentionPolicy", "dailySchedule": {"retentionTimes": ["2026-01-01T02:00:00Z"], "retentionDuration": {"count": 30, "durationType": "Days"}}},
                "timeZone": "UTC"
            }});
            let r = self.req("PUT", &format!("{v}/backupPolicies/{pol}"), Some(body));
            assert_eq!(r.status(), 200, "{}", r.text().unwrap());
        }
        v
    }

    pub fn share_item(&self, vault: &str) -> String {
        format!("{vault}/backupFabrics/Azure/protectionContainers/StorageContainer;Storage;rg1;acct1/protectedItems/AzureFileShare;share1")
    }

    pub fn vm_item(&self, vault: &str) -> String {
        format!("{vault}/backupFabrics/Azure/protectionContainers/IaasVMContainer;iaasvmcontainerv2;rg1;vm1/protectedItems/VM;iaasvmcontainerv2;rg1;vm1")
    }

    pub fn protect(&self, vault: &str, item: &str) {
        let (ty, pol, src) = if item.contains("AzureFileShare") {
            ("AzureFileShareProtectedItem", "fspol", format!("/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Storage/storageAccounts/acct1"))
        } else {
            ("Microsoft.Compute/virtualMachines", "vmpol", format!("/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/vm1"))
        };
        let r = self.req(
            "PUT",
            item,
            Some(json!({"properties": {"protectedItemType": ty, "sourceResourceId": src, "policyId": format!("{vault}/backupPolicies/{pol}")}})),
        );
        assert_eq!(r.status(), 202, "{}", r.text().unwrap());
    }

    /// Vault `name` with its policies and the file share protected: (vault path, item path).
    pub fn protected_share(&self, name: &str) -> (String, String) {
        let v = self.setup_vault(name);
        let item = self.share_item(&v);
        self.protect(&v, &item);
        (v, item)
    }

    /// Backs `item` up and asserts the job Completed.
    pub fn backup_completed(&self, vault: &str, item: &str) {
        let job = self.wait_job(vault, &self.backup(item));
        assert_eq!(job["properties"]["status"], "Completed", "{job}");
    }

    /// Triggers a backup and returns the job id (through the operation status, as clients do).
    pub fn backup(&self, item: &str) -> String {
        let r = self.req("POST", &format!("{item}/backup"), Some(json!({"properties": {"objectType": if item.contains("AzureFileShare") {"AzureFileShareBackupRequest"} else {"IaasVMBackupRequest"}}})));
        assert_eq!(r.status(), 202, "{}", r.text().unwrap());
        let op_url = r.headers()["azure-asyncoperation"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(r.headers().contains_key("location"));
        assert!(
            r.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse::<u64>()
                .unwrap()
                > 0
        );
        self.job_of_operation(&op_url)
    }

    pub fn job_of_operation(&self, op_url: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let op: Value = self.req("GET", op_url, None).json().unwrap();
            if op["status"] != "InProgress" {
                assert_eq!(op["status"], "Succeeded", "{op}");
                return op["properties"]["jobId"].as_str().unwrap().to_string();
            }
            assert!(Instant::now() < deadline, "operation never finished: {op}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The job behind a 202 answer (its `Azure-AsyncOperation`, followed as clients do), once it
    /// has finished.
    pub fn accepted_job(&self, vault: &str, r: Response) -> Value {
        let op = r
            .headers()
            .get("azure-asyncoperation")
            .and_then(|h| h.to_str().ok())
            .map(str::to_string);
        assert_eq!(r.status(), 202, "{}", r.text().unwrap_or_default());
        let op = op.expect("a 202 names its Azure-AsyncOperation");
        self.wait_job(vault, &self.job_of_operation(&op))
    }

    /// The messages of a job's log.
    pub fn log_messages(&self, vault: &str, job: &Value) -> Vec<String> {
        let log = self.get(&format!(
            "{vault}/backupJobs/{}/rsvault/log",
            job["name"].as_str().unwrap()
        ));
        log["lines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["msg"].as_str().unwrap().to_string())
            .collect()
    }

    /// Polls a job until it leaves InProgress/Cancelling.
    pub fn wait_job(&self, vault: &str, job: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let j = self.get(&format!("{vault}/backupJobs/{job}"));
            let s = j["properties"]["status"].as_str().unwrap().to_string();
            if s != "InProgress" && s != "Cancelling" {
                return j;
            }
            assert!(Instant::now() < deadline, "job never finished: {j}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn recovery_points(&self, item: &str) -> Vec<Value> {
        self.get(&format!("{item}/recoveryPoints"))["value"]
            .as_array()
            .unwrap()
            .clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Asserts two trees have the same files, bytes, modes, mtimes and symlinks.
pub fn assert_same_tree(a: &Path, b: &Path) {
    use std::os::unix::fs::MetadataExt;
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let (pa, pb) = (a.join(&rel), b.join(&rel));
        let (ma, mb) = (
            std::fs::symlink_metadata(&pa).unwrap(),
            std::fs::symlink_metadata(&pb).unwrap_or_else(|e| panic!("{}: {e}", pb.display())),
        );
        assert_eq!(
            ma.file_type().is_symlink(),
            mb.file_type().is_symlink(),
            "{}",
            rel.display()
        );
        if ma.file_type().is_symlink() {
            assert_eq!(
                std::fs::read_link(&pa).unwrap(),
                std::fs::read_link(&pb).unwrap()
            );
            continue;
        }
        assert_eq!(
            ma.mode() & 0o7777,
            mb.mode() & 0o7777,
            "mode of {}",
            rel.display()
        );
        if ma.is_dir() {
            let mut names: Vec<_> = std::fs::read_dir(&pa)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            let mut names_b: Vec<_> = std::fs::read_dir(&pb)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            names.sort();
            names_b.sort();
            assert_eq!(names, names_b, "entries of {}", rel.display());
            stack.extend(names.into_iter().map(|n| rel.join(n)));
        } else {
            assert_eq!(ma.mtime(), mb.mtime(), "mtime of {}", rel.display());
            assert!(
                std::fs::read(&pa).unwrap() == std::fs::read(&pb).unwrap(),
                "bytes of {}",
                rel.display()
            );
        }
    }
}
