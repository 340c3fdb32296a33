"""Vault repositories in object storage (issue #11), through the Python SDK.

A server whose `[repository]` is an S3 bucket (`moto_server`) and one whose repositories are in an
Azure Blob container (Azurite), each emulator started here on a free port: backup and restore of a
share are byte-identical; stock `restic` lists and restores the S3 vault from `rsvault vault key
export`; the S3 emulator killed in the middle of a backup fails the job with a clear error in bounded
time while the server keeps answering.

In CI (`CI` set) a missing emulator fails the suite; locally the tests skip, saying so loudly.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import requests

from conftest import (
    REPO, BIN, SRC_RG, VAULT_RG, SUB, Server, account_id, headers_cls, make_random_file, make_share,
    op_id_from, share_item, share_policy_body, storage_container, toml_config, tree_snapshot, wait_for,
)

S3_KEY_ID = "rsvault-test-key"
S3_SECRET = "rsvault-test-secret"
BUCKET = "rsvault-py"
AZ_ACCOUNT = "devstoreaccount1"
# Azurite's well-known development key (public, documented by Microsoft).
AZ_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
CONTAINER = "rsvault-py"
VAULT = "objvault"


def _binary(kind: str) -> str:
    if kind == "s3":
        var, local, name = "RSVAULT_MOTO_SERVER", REPO / ".venv" / "bin" / "moto_server", "moto_server"
    else:
        var, local = "RSVAULT_AZURITE", REPO / "tests" / "emulators" / "node_modules" / ".bin" / "azurite-blob"
        name = "azurite-blob"
    found = os.environ.get(var) or (str(local) if local.exists() else None) or shutil.which(name)
    if not found:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is missing in CI: .ci/run must install it", pytrace=False)
        print(f"\n!!!!!!!! SKIPPED: {name} is not installed, so {kind} vaults are NOT tested !!!!!!!!\n")
        pytest.skip(f"{name} is not installed")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Emulator:
    def __init__(self, kind: str, root: Path) -> None:
        self.kind = kind
        self.port = _free_port()
        self.dir = root
        root.mkdir(parents=True, exist_ok=True)
        exe = _binary(kind)
        if kind == "s3":
            cmd = [exe, "-H", "127.0.0.1", "-p", str(self.port)]
        else:
            cmd = [exe, "--blobHost", "127.0.0.1", "--blobPort", str(self.port), "--location", str(root),
                   "--skipApiVersionCheck", "--loose", "--silent"]
        self.log = open(root / "emulator.log", "ab")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=self.log, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                assert self.proc.poll() is None, f"{kind} emulator exited: {(root / 'emulator.log').read_text()}"
                assert time.monotonic() < deadline, f"{kind} emulator did not start"
                time.sleep(0.1)
        self._create_bucket()

    @property
    def endpoint(self) -> str:
        base = f"http://127.0.0.1:{self.port}"
        return base if self.kind == "s3" else f"{base}/{AZ_ACCOUNT}"

    def _create_bucket(self) -> None:
        if self.kind == "s3":
            req = urllib.request.Request(f"{self.endpoint}/{BUCKET}", data=b"", method="PUT")
        else:
            path = f"/{AZ_ACCOUNT}/{CONTAINER}"
            date = email.utils.formatdate(usegmt=True)
            version = "2021-08-06"
            ctype = "application/octet-stream"  # urllib would add one of its own otherwise
            to_sign = ("PUT\n" + "\n" * 4 + ctype + "\n" + "\n" * 6 + f"x-ms-date:{date}\nx-ms-version:{version}\n"
                       f"/{AZ_ACCOUNT}{path}\nrestype:container")
            sig = base64.b64encode(hmac.new(base64.b64decode(AZ_KEY), to_sign.encode(), hashlib.sha256).digest())
            req = urllib.request.Request(
                f"http://127.0.0.1:{self.port}{path}?restype=container", data=b"", method="PUT",
                headers={"x-ms-date": date, "x-ms-version": version, "Content-Type": ctype,
                         "Authorization": f"SharedKey {AZ_ACCOUNT}:{sig.decode()}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            assert 200 <= r.status < 300, r.status

    def kill9(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        # (a launcher shim may have started the server as a child: it must be gone too)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
            except OSError:
                return
            subprocess.run(["fuser", "-k", "-9", f"{self.port}/tcp"], capture_output=True)
            time.sleep(0.1)
        raise AssertionError(f"the {self.kind} emulator still answers on port {self.port}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        # (a launcher shim may have started the server as a child of its own)
        subprocess.run(["fuser", "-k", f"{self.port}/tcp"], capture_output=True)
        self.log.close()


def repository_toml(kind: str, emu: Emulator, secrets: Path) -> str:
    secrets.mkdir(parents=True, exist_ok=True)
    if kind == "s3":
        (secrets / "s3-secret").write_text(S3_SECRET + "\n")
        return (f'\n[repository]\nlocation = "s3://{BUCKET}/vaults"\nendpoint = "{emu.endpoint}"\n'
                f'region = "us-east-1"\naccess_key_id = "{S3_KEY_ID}"\n'
                f'secret_access_key_file = "{secrets / "s3-secret"}"\n')
    (secrets / "az-key").write_text(AZ_KEY + "\n")
    return (f'\n[repository]\nlocation = "azblob://{CONTAINER}/vaults"\nendpoint = "{emu.endpoint}"\n'
            f'account_name = "{AZ_ACCOUNT}"\naccount_key_file = "{secrets / "az-key"}"\n')


def d(m):
    return json.loads(json.dumps(m.as_dict(), default=str))


class Setup:
    def __init__(self, kind: str, root: Path) -> None:
        self.kind = kind
        self.root = root
        self.share = root / "shares" / "objshare"
        self.big = root / "shares" / "bigshare"
        self.restore = root / "restore"
        make_share(self.share, seed=41)
        make_random_file(self.big / "big.bin", 32 * 1024 * 1024, seed=43)
        self.restore.mkdir()
        self.emu = Emulator(kind, root / "emulator")
        try:
            self._start(root)
        except BaseException:
            self.emu.stop()
            raise

    def _start(self, root: Path) -> None:
        kind = self.kind
        cfg = toml_config(
            [self.restore],
            [{"kind": "fileshare", "resource_group": SRC_RG, "storage_account": "objacct", "share": "objshare",
              "path": str(self.share)},
             {"kind": "fileshare", "resource_group": SRC_RG, "storage_account": "objacct", "share": "bigshare",
              "path": str(self.big)}],
            retry_after=1, bps=4 * 1024 * 1024)
        cfg += "\n[scheduler]\nenabled = false\n" + repository_toml(kind, self.emu, root / "secrets")
        (root / "server").mkdir()
        self.server = Server(root / "server", cfg, name=f"objstore-{kind}").start()
        self.bk = self.server.backup_client()
        rs = self.server.vault_client()
        rs.vaults.begin_create_or_update(VAULT_RG, VAULT, {"location": "westus", "sku": {"name": "Standard"}}).result()
        self.bk.protection_containers.begin_register(
            VAULT, VAULT_RG, "Azure", storage_container("objacct"),
            {"properties": {"containerType": "StorageContainer", "backupManagementType": "AzureStorage",
                            "sourceResourceId": account_id("objacct"), "friendlyName": "objacct"}}).result()
        self.bk.protection_policies.create_or_update(VAULT, VAULT_RG, "sp", share_policy_body())
        pid = self.bk.protection_policies.get(VAULT, VAULT_RG, "sp").id
        for share in ("objshare", "bigshare"):
            self.bk.protected_items.begin_create_or_update(
                VAULT, VAULT_RG, "Azure", storage_container("objacct"), share_item(share),
                {"properties": {"protectedItemType": "AzureFileShareProtectedItem",
                                "sourceResourceId": account_id("objacct"), "policyId": pid}}).result()

    def job(self, jid):
        return d(self.bk.job_details.get(VAULT, VAULT_RG, jid))

    def trigger_backup(self, share: str) -> str:
        status, h = self.bk.backups.trigger(
            VAULT, VAULT_RG, "Azure", storage_container("objacct"), share_item(share),
            {"properties": {"objectType": "AzureFileShareBackupRequest"}}, cls=headers_cls)
        assert status == 202
        h = {k.lower(): v for k, v in h.items()}
        op = op_id_from(h["azure-asyncoperation"])
        st = wait_for(lambda: d(self.bk.backup_operation_statuses.get(VAULT, VAULT_RG, op)),
                      lambda s: (s.get("properties") or {}).get("jobId"), what="jobId")
        return st["properties"]["jobId"]

    def wait_job(self, jid, timeout=120):
        return wait_for(lambda: self.job(jid), lambda j: j["properties"]["status"] != "InProgress",
                        timeout=timeout, interval=0.2, what=f"job {jid}")

    def stop(self):
        self.server.stop()
        self.emu.stop()


@pytest.fixture(scope="module", params=["s3", "azblob"])
def objstore(request, tmp_path_factory):
    _binary(request.param)
    s = Setup(request.param, tmp_path_factory.mktemp(f"objstore-{request.param}"))
    yield s
    s.stop()


def test_backup_and_restore_round_trip_byte_identical(objstore):
    s = objstore
    jid = s.trigger_backup("objshare")
    job = s.wait_job(jid)
    assert job["properties"]["status"] == "Completed", job
    rps = list(s.bk.recovery_points.list(VAULT, VAULT_RG, "Azure", storage_container("objacct"),
                                         share_item("objshare")))
    assert len(rps) == 1
    body = {"properties": {
        "objectType": "AzureFileShareRestoreRequest", "recoveryType": "AlternateLocation",
        "sourceResourceId": account_id("objacct"), "copyOptions": "Overwrite",
        "restoreRequestType": "FullShareRestore", "targetDetails": {"name": "back"}}}
    cap = {}

    def hook(resp):
        if resp.http_request.method == "POST":
            cap.update({k.lower(): v for k, v in resp.http_response.headers.items()})
    s.bk.restores.begin_trigger(VAULT, VAULT_RG, "Azure", storage_container("objacct"), share_item("objshare"),
                                rps[0].name, body, raw_response_hook=hook).result()
    op = op_id_from(cap["azure-asyncoperation"])
    st = wait_for(lambda: d(s.bk.backup_operation_statuses.get(VAULT, VAULT_RG, op)),
                  lambda x: (x.get("properties") or {}).get("jobId"), what="restore jobId")
    rjob = s.wait_job(st["properties"]["jobId"])
    assert rjob["properties"]["status"] == "Completed", rjob
    assert tree_snapshot(s.restore / "back") == tree_snapshot(s.share)
    # Nothing of the repository is on local disk: it is all in the store.
    assert not (s.server.data / "repos").exists() or not any((s.server.data / "repos").rglob("config"))
    usage = s.server.http().get(
        f"/subscriptions/{SUB}/resourceGroups/{VAULT_RG}/providers/Microsoft.RecoveryServices/vaults/{VAULT}"
        "/backupUsageSummaries", params={"$filter": "type eq 'BackupStorageUsageSummary'"})
    assert usage.status_code == 200, usage.text
    assert usage.json()["value"][0]["currentValue"] > 200 * 1024, usage.json()


def _export_key(s: Setup) -> dict:
    out = subprocess.run(
        [str(BIN), "vault", "key", "export", "--vault", f"{SUB}/{VAULT_RG}/{VAULT}",
         "--data", str(s.server.data), "--config", str(s.server.config_path)],
        capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_restic_lists_and_restores_the_s3_vault_from_the_exported_key(objstore, tmp_path):
    s = objstore
    if s.kind != "s3":
        pytest.skip("restic's azure: backend cannot address Azurite's path-style endpoint")
    if not shutil.which("restic"):
        if os.environ.get("CI"):
            pytest.fail("restic is missing in CI", pytrace=False)
        pytest.skip("restic is not installed")
    key = _export_key(s)
    assert key["repository"] == f"s3:{s.emu.endpoint}/{BUCKET}/vaults/{SUB.lower()}/{VAULT_RG}/{VAULT}", key
    pw = tmp_path / "pw"
    pw.write_text(key["password"])
    env = dict(os.environ, AWS_ACCESS_KEY_ID=S3_KEY_ID, AWS_SECRET_ACCESS_KEY=S3_SECRET)

    def restic(*args):
        out = subprocess.run(["restic", "-r", key["repository"], "--password-file", str(pw), "--no-cache", *args],
                             capture_output=True, text=True, env=env, timeout=120)
        assert out.returncode == 0, out.stderr
        return out.stdout

    snaps = json.loads(restic("snapshots", "--json"))
    assert len(snaps) >= 1, snaps
    restic("restore", snaps[0]["id"], "--target", str(tmp_path / "t"))
    restored = tmp_path / "t" / str(s.share).lstrip("/")
    if not restored.exists():  # the snapshot's tree holds the share's contents at its root
        restored = tmp_path / "t"
    assert tree_snapshot(restored) == tree_snapshot(s.share)


def test_readiness_probes_the_object_store(objstore, tmp_path):
    """/readyz answers 200 while the bucket or container answers and takes writes, and 503 naming the
    repository once it does not (a probe by an engine worker, bounded, its answer kept 10 s)."""
    s = objstore
    raw = s.server.http(token=None)
    r = raw.get("/readyz", api_version=None)
    assert r.status_code == 200, r.text
    assert r.json()["checks"]["repository"] == "ok", r.text
    if s.kind != "s3":
        return
    # A second server on a bucket that does not exist: not ready, and it says why.
    cfg = s.server.config_path.read_text().replace(f"s3://{BUCKET}/", "s3://no-such-bucket/")
    assert "no-such-bucket" in cfg
    (tmp_path / "server").mkdir()
    other = Server(tmp_path / "server", cfg, name="objstore-nobucket").start()
    try:
        # (plain requests: the session's recorder fails a test on any 5xx, and this 503 is the point)
        r = requests.get(other.base_url + "/readyz", verify=other.cert, timeout=60)
        assert r.status_code == 503, r.text
        body = r.json()
        assert body["checks"]["store"] == "ok", body
        assert "repository" in body["reason"] and "no-such-bucket" in body["reason"], body
    finally:
        other.stop()


def test_store_killed_mid_backup_fails_the_job_in_bounded_time(objstore):
    s = objstore
    if s.kind != "s3":
        pytest.skip("the kill test runs on S3 (the engine suite covers outages on both)")
    # The repository exists (the round trip ran first in this module); this one is slow (4 MiB/s).
    jid = s.trigger_backup("bigshare")
    wait_for(lambda: s.job(jid),
             lambda j: j["properties"]["status"] != "InProgress"
             or int(((j["properties"].get("extendedInfo") or {}).get("propertyBag") or {})
                    .get("Bytes Done", "0")) > 4 * 1024 * 1024,
             timeout=60, interval=0.1, what="the backup to make progress")
    before = s.job(jid)["properties"]
    assert before["status"] == "InProgress", before
    s.emu.kill9()
    killed = time.monotonic()
    job = s.wait_job(jid, timeout=300)
    took = time.monotonic() - killed
    p = job["properties"]
    assert p["status"] == "Failed", job
    msg = json.dumps(p.get("errorDetails") or p.get("extendedInfo") or {})
    assert "rsvault-py" in msg or "Writing" in msg or "object store" in msg, msg
    assert took < 240, f"the job failed only {took:.0f} s after the store died"
    print(f"\n[S3 killed mid-backup: job Failed {took:.1f} s later]")
    # The server still answers.
    assert s.bk.protection_policies.get(VAULT, VAULT_RG, "sp").name == "sp"
    assert s.server.alive()
