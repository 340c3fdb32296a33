"""Azure's "Back up a virtual machine with the Azure CLI" and "Restore a VM with the Azure CLI" journeys, with
nothing but `az backup` commands, against the real server: check-vm, enable-for-vm with the vault's
DefaultPolicy, backup-now, job wait, recoverypoint list, restore restore-disks to a staging storage account, and
the restored disks byte-identical to the source. The tests run in file order and share state (`S`).

`az` resolves the VM through Microsoft.Compute/virtualMachines (enable-for-vm, check-vm) and the staging account
through Microsoft.ClassicStorage (404) then Microsoft.Storage/storageAccounts (restore-disks); rsvault serves both
for its configured sources and restore accounts.
"""

from __future__ import annotations

import datetime as dt
import time

import pytest

from conftest import SUB, STAGING, VM, H, seed_managed_identity_profile

RG = "rsvault-cli"
VAULT = "clivmvault"
CLOUD = "rsvault"
VM_ID = f"/subscriptions/{SUB}/resourceGroups/{H.SRC_RG}/providers/Microsoft.Compute/virtualMachines/{VM}"
V = H.vault_path(VAULT, rg=RG)
S: dict = {}
# as Azure's docs type them: friendly names (the VM's name) need the backup management type
VMT = ["--backup-management-type", "AzureIaasVM"]


def need(*keys):
    missing = [k for k in keys if k not in S]
    if missing:
        pytest.skip(f"prerequisite step(s) did not complete: {', '.join(missing)}")


def vargs():
    return ["-g", RG, "-v", VAULT]


def poll_job(az, job_id, timeout=120) -> dict:
    end = time.monotonic() + timeout
    while True:
        j = az("backup", "job", "show", *vargs(), "-n", job_id).json
        if j["properties"]["status"] in H.TERMINAL_JOB or time.monotonic() > end:
            return j
        time.sleep(0.5)


@pytest.fixture(scope="module")
def az(cli):
    """The session's az, pointed at rsvault (registers the cloud when this file runs on its own)."""
    a = cli.az
    if a("cloud", "show", "--name", CLOUD, ok=False).rc != 0:
        base = cli.server.base_url
        a("cloud", "register", "--name", CLOUD, "--endpoint-resource-manager", base + "/",
          "--endpoint-active-directory-resource-id", base + "/",
          "--endpoint-active-directory", "https://login.rsvault.invalid", "--skip-endpoint-discovery", output=None)
    a("cloud", "set", "--name", CLOUD, output=None)
    seed_managed_identity_profile(a.config_dir, CLOUD)
    return a


def test_vault_with_default_policy(az):
    v = az("backup", "vault", "create", "-g", RG, "-n", VAULT, "-l", "westus").json
    assert v["name"] == VAULT, v
    pol = az("backup", "policy", "get-default-for-vm", *vargs()).json
    assert pol["name"] == "DefaultPolicy" and pol["properties"]["backupManagementType"] == "AzureIaasVM", pol
    props = az("backup", "vault", "backup-properties", "show", "-n", VAULT, "-g", RG).json
    assert props[0]["properties"]["storageType"] == "LocallyRedundant", props
    assert props[0]["properties"]["crossRegionRestoreFlag"] is False, props
    assert VAULT in [x["name"] for x in az("backup", "vault", "list").json]
    S["vault"] = v


def test_check_vm_before_protection(az):
    need("vault")
    r = az("backup", "protection", "check-vm", "--vm", VM, "-g", H.SRC_RG)
    assert r.stdout.strip() in ("", "null"), r


def test_enable_for_vm(az):
    need("vault")
    job = az("backup", "protection", "enable-for-vm", *vargs(), "--vm", VM_ID, "--policy-name", "DefaultPolicy").json
    assert job["properties"]["operation"] == "ConfigureBackup", job
    assert poll_job(az, job["name"])["properties"]["status"] == "Completed"
    vault_id = az("backup", "protection", "check-vm", "--vm-id", VM_ID).json
    assert vault_id.lower() == V.lower(), vault_id
    S["protected"] = True


def test_backup_now_and_job_wait(az):
    need("protected")
    retain = (dt.date.today() + dt.timedelta(days=30)).strftime("%d-%m-%Y")
    job = az("backup", "protection", "backup-now", *vargs(), "-c", VM, "-i", VM, *VMT, "--retain-until", retain).json
    assert job["properties"]["operation"] == "Backup" and job["properties"]["jobType"] == "AzureIaaSVMJob", job
    # `az backup job wait` sleeps 30 s per round while the job runs (custom.py, wait_for_job)
    done = az("backup", "job", "wait", *vargs(), "-n", job["name"]).json
    assert done["properties"]["status"] == "Completed", done
    S["backup_job"] = job["name"]


def test_recoverypoint_list(az):
    need("backup_job")
    rps = az("backup", "recoverypoint", "list", *vargs(), "-c", VM, "-i", VM, *VMT).json
    assert len(rps) == 1 and rps[0]["properties"]["objectType"] == "IaasVMRecoveryPoint", rps
    S["rp"] = rps[0]["name"]


def test_restore_disks_byte_identical(az, cli):
    need("rp")
    job = az("backup", "restore", "restore-disks", *vargs(), "-c", VM, "-i", VM, "-r", S["rp"],
             "--storage-account", STAGING, "--target-resource-group", "restoredvms").json
    assert job["properties"]["operation"] == "Restore", job
    done = poll_job(az, job["name"])
    assert done["properties"]["status"] == "Completed", done
    target = cli.restore_root / "restoredvms" / f"{VM}-{S['rp']}"
    for disk in cli.vm_disks:
        restored = target / disk.name
        assert restored.is_file(), sorted(str(p) for p in cli.restore_root.rglob("*"))
        assert H.file_digest(restored) == H.file_digest(disk), f"{restored} differs from {disk}"
        assert restored.stat().st_size == disk.stat().st_size
    S["restored"] = True


def test_vault_commands(az):
    need("backup_job")
    items = az("backup", "item", "list", *vargs()).json
    assert [i["properties"]["friendlyName"] for i in items] == [VM], items
    containers = az("backup", "container", "list", *vargs(), "--backup-management-type", "AzureIaasVM").json
    assert [c["properties"]["friendlyName"] for c in containers] == [VM], containers
    ops = [j["properties"]["operation"] for j in az("backup", "job", "list", *vargs()).json]
    assert {"ConfigureBackup", "Backup"} <= set(ops), ops
    if "restored" in S:
        assert "Restore" in ops, ops


def _delete_data(az):
    r = az("backup", "protection", "disable", *vargs(), "-c", VM, "-i", VM, *VMT, "--delete-backup-data", "true", "-y").json
    assert r["properties"]["operation"] == "DeleteBackupData", r
    assert poll_job(az, r["name"])["properties"]["status"] == "Completed"


def test_disable_delete_is_soft_undelete_and_the_vault_stays(az):
    """`az backup vault create` asks for soft delete AlwaysOn: deleting backup data soft-deletes the
    item, `az backup protection undelete` brings it back, and the vault cannot be deleted while it
    holds soft-deleted data (as Azure)."""
    need("protected")
    props = az("backup", "vault", "backup-properties", "show", "-n", VAULT, "-g", RG).json
    assert any(p["properties"].get("softDeleteFeatureState") == "AlwaysON" for p in props), props
    _delete_data(az)
    items = az("backup", "item", "list", *vargs()).json
    assert [i["properties"]["isScheduledForDeferredDelete"] for i in items] == [True], items
    assert items[0]["properties"]["protectionState"] == "ProtectionStopped", items
    r = az("backup", "protection", "undelete", *vargs(), "-c", VM, "-i", VM, *VMT, "--workload-type", "VM").json
    assert r["properties"]["operation"] == "Undelete", r
    assert poll_job(az, r["name"])["properties"]["status"] == "Completed"
    items = az("backup", "item", "list", *vargs()).json
    assert [i["properties"]["isScheduledForDeferredDelete"] for i in items] == [False], items
    assert len(az("backup", "recoverypoint", "list", *vargs(), "-c", VM, "-i", VM, *VMT).json) >= 1
    # AlwaysOn cannot be turned off (az says so and leaves it).
    az("backup", "vault", "backup-properties", "set", "-n", VAULT, "-g", RG, "--soft-delete-feature-state", "Disable")
    props = az("backup", "vault", "backup-properties", "show", "-n", VAULT, "-g", RG).json
    assert any(p["properties"].get("softDeleteFeatureState") == "AlwaysON" for p in props), props
    _delete_data(az)
    gone = az("backup", "vault", "delete", "-g", RG, "-n", VAULT, "-y", ok=False)
    assert gone.rc != 0 and "soft-deleted" in gone.stderr, gone
    assert VAULT in [v["name"] for v in az("backup", "vault", "list", "-g", RG).json]


def test_server_log_clean(cli):
    text = cli.server.log_path.read_text(errors="replace")
    assert "panicked" not in text, cli.server.tail()
