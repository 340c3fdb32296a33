"""Shared fixtures for the rsvault end-to-end suite.

Every test talks HTTPS to the real `rsvault` binary, started on an ephemeral port with a temp data dir
and real (small, generated) sources.  Set RSVAULT_BIN to test another binary; the default is
`target/debug/rsvault` in the repository root (`cargo build -p rsvault`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import shutil
import signal
import stat
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Callable, Optional
from urllib.parse import urlsplit

import pytest
import requests
from azure.core.credentials import AccessToken

REPO = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("RSVAULT_BIN", str(REPO / "target" / "debug" / "rsvault")))
if not BIN.is_absolute():
    BIN = REPO / BIN

SUB = "6a2f1b6e-3a52-4d8e-9b7f-0c4a5e6d7f80"  # any subscription id works
VAULT_RG = "rsvault-tests"
SRC_RG = "rg1"
MAX_WAIT = float(os.environ.get("RSVAULT_TEST_TIMEOUT", "90"))

TERMINAL_JOB = {"Completed", "CompletedWithWarnings", "Failed", "Cancelled"}


# --------------------------------------------------------------------------------------------------
# Response recorder: every response the suite sees (SDK and raw) lands here, so that wire rules
# (no 5xx, x-ms-request-id, client request id echo) can be checked over the whole session.
# --------------------------------------------------------------------------------------------------
class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.entries: list[dict] = []

    def add(self, method, url, status, req_headers, resp_headers, body_snippet):
        with self.lock:
            self.entries.append(
                {
                    "method": method,
                    "url": url,
                    "status": status,
                    "client_request_id": _hget(req_headers, "x-ms-client-request-id"),
                    "request_id": _hget(resp_headers, "x-ms-request-id"),
                    "echo": _hget(resp_headers, "x-ms-client-request-id"),
                    "body": body_snippet,
                }
            )

    def sdk_hook(self, pipeline_response):
        req = pipeline_response.http_request
        resp = pipeline_response.http_response
        try:
            body = resp.text()[:300]
        except Exception:  # streamed bodies
            body = "<stream>"
        self.add(req.method, req.url, resp.status_code, req.headers, resp.headers, body)

    def requests_hook(self, resp, *args, **kwargs):
        self.add(resp.request.method, resp.request.url, resp.status_code, resp.request.headers,
                 resp.headers, resp.text[:300] if resp.content is not None else "")
        return resp


def _hget(headers, name):
    if headers is None:
        return None
    for k, v in headers.items():
        if k.lower() == name.lower():
            return v
    return None


RECORDER = Recorder()


# --------------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------------
BASE_MTIME_NS = 1_700_000_000_123_456_789


def _write(path: Path, data: bytes, mode: int, mtime_ns: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, mode)
    os.utime(path, ns=(mtime_ns, mtime_ns))


def make_share(path: Path, seed: int = 1) -> None:
    """A small tree: text, binary, empty, executable, read-only, a subdir two levels deep."""
    rnd = _rand(seed)
    path.mkdir(parents=True, exist_ok=True)
    _write(path / "a.txt", b"hello rsvault\n" * 20, 0o644, BASE_MTIME_NS)
    _write(path / "b.bin", rnd(200 * 1024), 0o600, BASE_MTIME_NS + 1_000_000_001)
    _write(path / "empty.txt", b"", 0o644, BASE_MTIME_NS + 2_000_000_002)
    _write(path / "run.sh", b"#!/bin/sh\necho hi\n", 0o755, BASE_MTIME_NS + 3_000_000_003)
    _write(path / "sub" / "c.txt", b"nested file\n" * 100, 0o640, BASE_MTIME_NS + 4_000_000_004)
    _write(path / "sub" / "deep" / "d.bin", rnd(64 * 1024 + 7), 0o444, BASE_MTIME_NS + 5_000_000_005)
    os.chmod(path / "sub", 0o750)


def make_disk(path: Path, size: int = 4 * 1024 * 1024, seed: int = 2) -> None:
    """A disk image with random data, an explicit zero region, holes, and unaligned writes."""
    rnd = _rand(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.truncate(size)  # all hole
        f.seek(0)
        f.write(rnd(256 * 1024))  # "boot" area
        f.seek(1024 * 1024)
        f.write(b"\0" * (512 * 1024))  # explicit zeros (allocated, not a hole)
        f.seek(2 * 1024 * 1024 + 4096 + 17)
        f.write(rnd(128 * 1024 + 3))  # unaligned data
        f.seek(size - 4096)
        f.write(rnd(4096))  # last block; 3 MiB .. size-4K stays a hole
    os.utime(path, ns=(BASE_MTIME_NS, BASE_MTIME_NS))


def make_random_file(path: Path, size: int, seed: int = 3) -> None:
    rnd = _rand(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 1 << 20)
            f.write(rnd(n))
            left -= n


def _rand(seed: int) -> Callable[[int], bytes]:
    """Deterministic, incompressible bytes (SHA-256 counter stream) - reproducible failures."""
    state = {"ctr": 0}

    def gen(n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            out += hashlib.sha256(f"{seed}:{state['ctr']}".encode()).digest()
            state["ctr"] += 1
        return bytes(out[:n])

    return gen


def tree_snapshot(root: Path) -> dict[str, dict]:
    """relative path -> {type, mode, size, sha256, mtime_ns} for everything below root."""
    out: dict[str, dict] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            rel = str(p.relative_to(root))
            entry = {"mode": stat.S_IMODE(st.st_mode), "mtime_ns": st.st_mtime_ns}
            if stat.S_ISDIR(st.st_mode):
                entry["type"] = "dir"
            elif stat.S_ISREG(st.st_mode):
                entry["type"] = "file"
                entry["size"] = st.st_size
                entry["sha256"] = hashlib.sha256(p.read_bytes()).hexdigest()
            else:
                entry["type"] = "other"
            out[rel] = entry
    return out


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------------
LISTEN_RE = re.compile(r"rsvault listening on (https://[0-9.]+:(\d+))")
TOKEN_RE = re.compile(r"admin token:\s*(\S+)")


def toml_config(restore_roots, sources, retry_after=1, page_size=200, bps=0, restore_accounts=()) -> str:
    """`restore_accounts`: (resource group, account name, root) of restore roots named as storage accounts."""
    def q(s):
        return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = ["restore_roots = [" + ", ".join(q(r) for r in restore_roots) + "]", ""]
    lines += ["[server]", f"retry_after_seconds = {retry_after}", f"page_size = {page_size}", ""]
    lines += ["[limits]", f"backup_bytes_per_second = {bps}", ""]
    for s in sources:
        lines.append("[[source]]")
        for k, v in s.items():
            if isinstance(v, list):
                lines.append(f"{k} = [" + ", ".join(q(x) for x in v) + "]")
            else:
                lines.append(f"{k} = {q(v)}")
        lines.append("")
    for rg, name, root in restore_accounts:
        lines += ["[[restore_account]]", f"resource_group = {q(rg)}", f"name = {q(name)}", f"root = {q(root)}", ""]
    return "\n".join(lines)


class Server:
    def __init__(self, root: Path, config_text: str, name: str = "main") -> None:
        self.root = root
        self.name = name
        self.data = root / "data"
        self.config_path = root / "rsvault.toml"
        self.config_path.write_text(config_text)
        self.log_path = root / "server.log"
        self.proc: Optional[subprocess.Popen] = None
        self.base_url = ""
        self.port = 0
        self.token = ""
        self._lines: list[str] = []
        self._cv = threading.Condition()

    @property
    def cert(self) -> str:
        return str(self.data / "tls" / "cert.pem")

    def start(self, timeout: float = 60) -> "Server":
        if not BIN.exists():
            pytest.fail(f"rsvault binary not found at {BIN}; build it with `cargo build -p rsvault` "
                        f"or set RSVAULT_BIN", pytrace=False)
        self.data.mkdir(parents=True, exist_ok=True)
        self._lines = []
        # The admin token is printed on the first start only (the server keeps just its hash):
        # a restart keeps the one this object saw then.
        previous = self.token
        self.token = ""
        logf = open(self.log_path, "ab")
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "info")
        env.setdefault("RUST_BACKTRACE", "1")
        self.proc = subprocess.Popen(
            [str(BIN), "serve", "--data", str(self.data), "--listen", "127.0.0.1:0",
             "--config", str(self.config_path)],
            stdout=subprocess.PIPE, stderr=logf, stdin=subprocess.DEVNULL, cwd=str(self.root), env=env,
        )
        t = threading.Thread(target=self._pump, args=(self.proc, logf), daemon=True)
        t.start()
        deadline = time.monotonic() + timeout
        listen = None
        with self._cv:
            while True:
                for line in self._lines:
                    m = LISTEN_RE.search(line)
                    if m:
                        listen = m
                    m2 = TOKEN_RE.search(line)
                    if m2:
                        self.token = m2.group(1)
                if listen and (self.token or previous):
                    break
                if self.proc.poll() is not None:
                    raise RuntimeError(f"rsvault exited with {self.proc.returncode} during start:\n"
                                       + self.tail())
                left = deadline - time.monotonic()
                if left <= 0:
                    self.stop()
                    raise RuntimeError("rsvault did not print its listening line in time:\n" + self.tail())
                self._cv.wait(min(left, 0.2))
        self.base_url = listen.group(1)
        self.port = int(listen.group(2))
        assert self.port != 0, "server printed port 0 instead of the bound port"
        if not self.token:
            self.token = previous
        # wait for the certificate to exist (written before listening, but be tolerant of ordering)
        end = time.monotonic() + 10
        while not Path(self.cert).exists() and time.monotonic() < end:
            time.sleep(0.05)
        return self

    def _pump(self, proc, logf):
        for raw in proc.stdout:  # type: ignore[union-attr]
            logf.write(b"[stdout] " + raw)
            logf.flush()
            with self._cv:
                self._lines.append(raw.decode(errors="replace"))
                self._cv.notify_all()
        with self._cv:
            self._cv.notify_all()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout: float = 15) -> Optional[int]:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        rc = self.proc.returncode
        self.proc = None
        return rc

    def tail(self, n: int = 60) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return "<no log>"
        return "\n".join(lines[-n:])

    # ---- clients -------------------------------------------------------------------------------
    def credential(self):
        return StaticToken(self.token)

    def backup_client(self, **kw):
        from azure.mgmt.recoveryservicesbackup import RecoveryServicesBackupClient

        return RecoveryServicesBackupClient(
            self.credential(), SUB, base_url=self.base_url, connection_verify=self.cert,
            polling_interval=0.2, retry_total=0, raw_response_hook=RECORDER.sdk_hook, **kw,
        )

    def vault_client(self, **kw):
        from azure.mgmt.recoveryservices import RecoveryServicesClient

        return RecoveryServicesClient(
            self.credential(), SUB, base_url=self.base_url, connection_verify=self.cert,
            polling_interval=0.2, retry_total=0, raw_response_hook=RECORDER.sdk_hook, **kw,
        )

    def http(self, token: Optional[str] = "__default__") -> "Raw":
        return Raw(self, self.token if token == "__default__" else token)


class StaticToken:
    """The smallest TokenCredential: hands out rsvault's admin token."""

    def __init__(self, token: str) -> None:
        self.token = token

    def get_token(self, *scopes, **kwargs) -> AccessToken:
        return AccessToken(self.token, int(time.time()) + 3600)


DEFAULT_API = "2026-02-01"


class Raw:
    """requests.Session bound to one server: path-relative calls with api-version and a client id."""

    def __init__(self, server: Server, token: Optional[str]) -> None:
        self.server = server
        self.s = requests.Session()
        self.s.verify = server.cert
        if token is not None:
            self.s.headers["Authorization"] = f"Bearer {token}"
        self.s.hooks["response"].append(RECORDER.requests_hook)

    def url(self, path: str) -> str:
        if path.startswith("http"):
            return path
        return self.server.base_url + path

    def request(self, method: str, path: str, api_version: Optional[str] = DEFAULT_API, params=None,
                headers=None, **kw) -> requests.Response:
        params = dict(params or {})
        if api_version is not None and not path.startswith("http"):
            params.setdefault("api-version", api_version)
        h = {"x-ms-client-request-id": str(uuid.uuid4())}
        h.update(headers or {})
        kw.setdefault("timeout", 30)
        # explicit: a session's verify loses to REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE from the environment
        kw.setdefault("verify", self.server.cert)
        return self.s.request(method, self.url(path), params=params, headers=h, **kw)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def put(self, path, **kw):
        return self.request("PUT", path, **kw)

    def post(self, path, **kw):
        return self.request("POST", path, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)


# --------------------------------------------------------------------------------------------------
# ids and helpers
# --------------------------------------------------------------------------------------------------
def vault_path(vault: str, rg: str = VAULT_RG, sub: str = SUB) -> str:
    return f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.RecoveryServices/vaults/{vault}"


def vm_id(name: str = "vm1", rg: str = SRC_RG) -> str:
    return f"/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{name}"


def account_id(name: str = "acct1", rg: str = SRC_RG) -> str:
    return f"/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.Storage/storageAccounts/{name}"


def vm_container(name: str = "vm1", rg: str = SRC_RG) -> str:
    return f"IaasVMContainer;iaasvmcontainerv2;{rg};{name}"


def vm_item(name: str = "vm1", rg: str = SRC_RG) -> str:
    return f"VM;iaasvmcontainerv2;{rg};{name}"


def storage_container(acct: str = "acct1", rg: str = SRC_RG) -> str:
    return f"StorageContainer;Storage;{rg};{acct}"


def share_item(share: str = "share1") -> str:
    return f"AzureFileShare;{share}"


def op_id_from(url: str) -> str:
    """Last path segment of a Location / Azure-AsyncOperation URL."""
    return urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1]


def headers_cls(pipeline_response, deserialized, headers):
    """cls= callback returning (status, headers) of the raw response."""
    r = pipeline_response.http_response
    return r.status_code, dict(r.headers)


def status_cls(pipeline_response, deserialized, headers):
    return pipeline_response.http_response.status_code, deserialized


def wait_for(fn: Callable, pred: Callable, timeout: float = MAX_WAIT, interval: float = 0.1, what: str = ""):
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = fn()
        if pred(last):
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")
        time.sleep(interval)


def filter_time(t: dt.datetime) -> str:
    """The `yyyy-MM-dd hh:mm:ss AM` form that az backup sends."""
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %I:%M:%S %p")


def vm_policy_body(name_time="2026-01-01T02:00:00Z", days=30):
    return {
        "properties": {
            "backupManagementType": "AzureIaasVM",
            "timeZone": "UTC",
            "instantRpRetentionRangeInDays": 2,
            "schedulePolicy": {
                "schedulePolicyType": "SimpleSchedulePolicy",
                "scheduleRunFrequency": "Daily",
                "scheduleRunTimes": [name_time],
            },
            "retentionPolicy": {
                "retentionPolicyType": "LongTermRetentionPolicy",
                "dailySchedule": {
                    "retentionTimes": [name_time],
                    "retentionDuration": {"count": days, "durationType": "Days"},
                },
            },
        }
    }


def share_policy_body(name_time="2026-01-01T03:00:00Z", days=14):
    return {
        "properties": {
            "backupManagementType": "AzureStorage",
            "workLoadType": "AzureFileShare",
            "timeZone": "UTC",
            "schedulePolicy": {
                "schedulePolicyType": "SimpleSchedulePolicy",
                "scheduleRunFrequency": "Daily",
                "scheduleRunTimes": [name_time],
            },
            "retentionPolicy": {
                "retentionPolicyType": "LongTermRetentionPolicy",
                "dailySchedule": {
                    "retentionTimes": [name_time],
                    "retentionDuration": {"count": days, "durationType": "Days"},
                },
            },
        }
    }


# --------------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------------
class Env:
    """Paths and the running server of one test session."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.restore_root = root / "restore"
        self.restore_root2 = root / "restore2"
        self.share = root / "shares" / "share1"
        self.share2 = root / "shares" / "share2"
        self.disk = root / "vms" / "vm1" / "disk0.img"
        self.disk2a = root / "vms" / "vm2" / "disk0.img"
        self.disk2b = root / "vms" / "vm2" / "disk1.img"
        self.server: Server


@pytest.fixture(scope="session")
def env(tmp_path_factory) -> Env:
    root = tmp_path_factory.mktemp("rsvault")
    e = Env(root)
    e.restore_root.mkdir()
    e.restore_root2.mkdir()
    make_share(e.share, seed=1)
    make_share(e.share2, seed=11)
    make_disk(e.disk, seed=2)
    make_disk(e.disk2a, size=2 * 1024 * 1024, seed=21)
    make_disk(e.disk2b, size=1024 * 1024, seed=22)
    sources = [
        {"kind": "vm", "resource_group": SRC_RG, "name": "vm1", "disks": [str(e.disk)]},
        {"kind": "vm", "resource_group": SRC_RG, "name": "vm2", "disks": [str(e.disk2a), str(e.disk2b)]},
        {"kind": "fileshare", "resource_group": SRC_RG, "storage_account": "acct1", "share": "share1",
         "path": str(e.share)},
        {"kind": "fileshare", "resource_group": SRC_RG, "storage_account": "acct1", "share": "share2",
         "path": str(e.share2)},
    ]
    cfg = toml_config([e.restore_root, e.restore_root2], sources, retry_after=1, page_size=2, bps=0,
                      restore_accounts=[(SRC_RG, "restoreacct", e.restore_root)])
    srv_root = root / "server"
    srv_root.mkdir()
    e.server = Server(srv_root, cfg).start()
    yield e
    rc = e.server.stop()
    print(f"\n[rsvault main server exited with {rc}; log at {e.server.log_path}]")


@pytest.fixture(scope="session")
def server(env) -> Server:
    return env.server


@pytest.fixture(scope="session")
def bk(server):
    return server.backup_client()


@pytest.fixture(scope="session")
def rs(server):
    return server.vault_client()


@pytest.fixture(scope="session")
def raw(server) -> Raw:
    return server.http()


@pytest.fixture(autouse=True)
def _no_server_errors(request):
    """Every test fails if any response during it was a 5xx, or if a server it used died."""
    start = len(RECORDER.entries)
    yield
    bad = [e for e in RECORDER.entries[start:] if e["status"] >= 500]
    dead = []
    e = request.node.funcargs.get("env") if hasattr(request.node, "funcargs") else None
    if e is not None and not e.server.alive():
        dead.append(f"main server is not running (exit {e.server.proc and e.server.proc.returncode}):\n"
                    + e.server.tail())
    msgs = [f"{x['method']} {x['url']} -> {x['status']} {x['body']}" for x in bad]
    if msgs or dead:
        pytest.fail("server errors during this test:\n" + "\n".join(msgs + dead), pytrace=False)


def pytest_sessionfinish(session, exitstatus):
    # keep the last log visible on failure when run under CI
    pass
