"""The whole user journey with the official Azure SDKs (default api-versions), against the real server.

The tests run in file order and share state (`S`); a step whose prerequisite failed is skipped with the
name of the failed step, so the first failure is the one to read.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import stat
import time
from pathlib import Path

import pytest
import requests
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from conftest import (
    MAX_WAIT, SRC_RG, SUB, TERMINAL_JOB, VAULT_RG, account_id, file_digest, filter_time,
    headers_cls, op_id_from, share_item, share_policy_body, status_cls, storage_container, tree_snapshot,
    vault_path, vm_container, vm_id, vm_item, vm_policy_body, wait_for,
)

VAULT = "journeyvault"
VM_POLICY = "vmdaily"
SHARE_POLICY = "sharedaily"
S: dict = {}


def need(*keys):
    missing = [k for k in keys if k not in S]
    if missing:
        pytest.skip(f"prerequisite step(s) did not complete: {', '.join(missing)}")


def d(model) -> dict:
    """SDK model -> wire-shaped dict (rest names)."""
    return json.loads(json.dumps(model.as_dict(), default=str))


def ci(a, b) -> bool:
    return (a or "").lower() == (b or "").lower()


def get_job(bk, job_id) -> dict:
    return d(bk.job_details.get(VAULT, VAULT_RG, job_id))


def wait_job(bk, job_id, timeout=MAX_WAIT) -> dict:
    return wait_for(lambda: get_job(bk, job_id), lambda j: j["properties"]["status"] in TERMINAL_JOB,
                    timeout=timeout, interval=0.2, what=f"job {job_id} to finish")


def job_id_of_operation(bk, op_id) -> tuple[dict, str]:
    """Poll vault-level backupOperations/{op} (what az backup does) until it carries a jobId."""
    st = wait_for(lambda: d(bk.backup_operation_statuses.get(VAULT, VAULT_RG, op_id)),
                  lambda s: s.get("status") != "InProgress" or (s.get("properties") or {}).get("jobId"),
                  interval=0.2, what=f"operation {op_id} to report a jobId")
    assert st.get("status") in ("InProgress", "Succeeded"), st
    props = st.get("properties") or {}
    assert props.get("objectType") == "OperationStatusJobExtendedInfo", st
    assert props.get("jobId"), st
    return st, props["jobId"]


class Capture:
    """raw_response_hook that keeps the responses of one SDK call (and still records them globally)."""

    def __init__(self):
        from conftest import RECORDER

        self.rec = RECORDER
        self.responses = []

    def __call__(self, pipeline_response):
        self.rec.sdk_hook(pipeline_response)
        r = pipeline_response.http_response
        self.responses.append((pipeline_response.http_request.method, r.status_code, dict(r.headers)))

    def first(self, method):
        return next(x for x in self.responses if x[0] == method)


def check_async_headers(status, headers, azure_async=True):
    h = {k.lower(): v for k, v in headers.items()}
    assert status == 202, (status, headers)
    assert h.get("location", "").startswith("https://127.0.0.1:"), headers
    assert "api-version=" in h["location"], headers
    ra = h.get("retry-after")
    assert ra is not None and ra.isdigit() and int(ra) > 0, f"Retry-After must be integer seconds > 0: {headers}"
    if azure_async:
        assert h.get("azure-asyncoperation", "").startswith("https://127.0.0.1:"), headers
        assert "api-version=" in h["azure-asyncoperation"], headers
    return h


# ---------------------------------------------------------------------------------------------------
# Vault and discovery
# ---------------------------------------------------------------------------------------------------
def test_create_vault(rs):
    body = {"location": "westus", "sku": {"name": "Standard"}, "properties": {"publicNetworkAccess": "Enabled"}}
    v = rs.vaults.begin_create_or_update(VAULT_RG, VAULT, body).result()
    v = d(v)
    assert v["name"] == VAULT
    assert ci(v["id"], vault_path(VAULT))
    assert ci(v["type"], "Microsoft.RecoveryServices/vaults")
    assert v["location"] == "westus"
    assert v["properties"]["provisioningState"] == "Succeeded"
    assert v["sku"]["name"] in ("Standard", "RS0")
    g = d(rs.vaults.get(VAULT_RG, VAULT))
    assert g["id"] == v["id"] and g["name"] == VAULT
    assert VAULT in [x.name for x in rs.vaults.list_by_resource_group(VAULT_RG)]
    assert VAULT in [x.name for x in rs.vaults.list_by_subscription_id()]
    # idempotent PUT keeps the same vault
    again = d(rs.vaults.begin_create_or_update(VAULT_RG, VAULT, body).result())
    assert again["id"] == v["id"]
    S["vault"] = v


@pytest.mark.parametrize("bmt", ["AzureIaasVM", "AzureStorage"])
def test_refresh_containers(bk, bmt):
    need("vault")
    status, headers = bk.protection_containers.refresh(
        VAULT, VAULT_RG, "Azure", filter=f"backupManagementType eq '{bmt}'", cls=headers_cls)
    h = check_async_headers(status, headers, azure_async=False)
    op = op_id_from(h["location"])
    seen = []

    def poll():
        code, _ = bk.protection_container_refresh_operation_results.get(VAULT, VAULT_RG, "Azure", op,
                                                                         cls=headers_cls)
        seen.append(code)
        return code

    wait_for(poll, lambda c: c == 204, interval=0.2, what="refresh operation result 204")
    assert set(seen) <= {202, 204}, seen
    S.setdefault("refreshed", set()).add(bmt)


def test_register_storage_container(bk):
    need("vault")
    name = storage_container()
    body = {"properties": {"containerType": "StorageContainer", "backupManagementType": "AzureStorage",
                           "sourceResourceId": account_id(), "friendlyName": "acct1",
                           "acquireStorageAccountLock": "Acquire"}}
    c = d(bk.protection_containers.begin_register(VAULT, VAULT_RG, "Azure", name, body).result())
    assert ci(c["name"], name), c
    assert c["properties"]["containerType"] == "StorageContainer"
    assert c["properties"]["backupManagementType"] == "AzureStorage"
    assert c["properties"]["registrationStatus"] == "Registered", c
    assert c["properties"]["friendlyName"] == "acct1"
    g = d(bk.protection_containers.get(VAULT, VAULT_RG, "Azure", name))
    assert ci(g["name"], name)
    listed = [d(x) for x in bk.backup_protection_containers.list(
        VAULT, VAULT_RG, filter="backupManagementType eq 'AzureStorage'")]
    assert any(ci(x["name"], name) for x in listed), listed
    S["container"] = c


def test_protectable_items(bk):
    need("vault", "container")
    vms = [d(x) for x in bk.backup_protectable_items.list(
        VAULT, VAULT_RG, filter="backupManagementType eq 'AzureIaasVM'")]
    vm = [x for x in vms if x["properties"].get("friendlyName") == "vm1"]
    assert len(vm) == 1, vms
    p = vm[0]["properties"]
    assert p["protectableItemType"] == "Microsoft.Compute/virtualMachines", p
    assert p["backupManagementType"] == "AzureIaasVM"
    assert ci(p.get("virtualMachineId"), vm_id()), p
    assert p.get("protectionState") == "NotProtected", p
    assert vm[0]["name"].lower().endswith(f";{SRC_RG};vm1"), vm[0]
    assert all(x["properties"]["protectableItemType"] == "Microsoft.Compute/virtualMachines" for x in vms)

    shares = [d(x) for x in bk.backup_protectable_items.list(
        VAULT, VAULT_RG, filter="backupManagementType eq 'AzureStorage'")]
    sh = [x for x in shares if x["properties"].get("friendlyName") == "share1"]
    assert len(sh) == 1, shares
    p = sh[0]["properties"]
    assert p["protectableItemType"] == "AzureFileShare", p
    assert p["backupManagementType"] == "AzureStorage"
    assert p.get("parentContainerFriendlyName") == "acct1", p
    assert p.get("protectionState") == "NotProtected", p
    S["protectable"] = True


# ---------------------------------------------------------------------------------------------------
# Policies
# ---------------------------------------------------------------------------------------------------
def test_policies(bk):
    need("vault")
    vp = bk.protection_policies.create_or_update(VAULT, VAULT_RG, VM_POLICY, vm_policy_body())
    sp = bk.protection_policies.create_or_update(VAULT, VAULT_RG, SHARE_POLICY, share_policy_body())
    # create_or_update may legitimately return None on 202; GET is the truth
    vp = d(bk.protection_policies.get(VAULT, VAULT_RG, VM_POLICY))
    sp = d(bk.protection_policies.get(VAULT, VAULT_RG, SHARE_POLICY))
    assert vp["name"] == VM_POLICY and ci(vp["id"], vault_path(VAULT) + f"/backupPolicies/{VM_POLICY}")
    assert ci(vp["type"], "Microsoft.RecoveryServices/vaults/backupPolicies")
    assert vp["properties"]["backupManagementType"] == "AzureIaasVM"
    rp = vp["properties"]["retentionPolicy"]
    assert rp["retentionPolicyType"] == "LongTermRetentionPolicy"
    assert rp["dailySchedule"]["retentionDuration"] == {"count": 30, "durationType": "Days"}
    assert vp["properties"]["schedulePolicy"]["scheduleRunFrequency"] == "Daily"
    assert sp["properties"]["backupManagementType"] == "AzureStorage"
    assert sp["properties"]["retentionPolicy"]["dailySchedule"]["retentionDuration"]["count"] == 14

    vm_list = [x.name for x in bk.backup_policies.list(VAULT, VAULT_RG,
                                                       filter="backupManagementType eq 'AzureIaasVM'")]
    assert VM_POLICY in vm_list and SHARE_POLICY not in vm_list, vm_list
    all_list = [x.name for x in bk.backup_policies.list(VAULT, VAULT_RG)]
    assert {VM_POLICY, SHARE_POLICY} <= set(all_list), all_list
    S["vm_policy_id"] = vp["id"]
    S["share_policy_id"] = sp["id"]


def test_policy_delete(bk):
    need("vault")
    bk.protection_policies.create_or_update(VAULT, VAULT_RG, "throwaway", vm_policy_body(days=7))
    assert bk.protection_policies.get(VAULT, VAULT_RG, "throwaway").name == "throwaway"
    bk.protection_policies.begin_delete(VAULT, VAULT_RG, "throwaway").result()
    with pytest.raises(ResourceNotFoundError):
        bk.protection_policies.get(VAULT, VAULT_RG, "throwaway")
    assert "throwaway" not in [x.name for x in bk.backup_policies.list(VAULT, VAULT_RG)]


# ---------------------------------------------------------------------------------------------------
# Protection
# ---------------------------------------------------------------------------------------------------
def _configure_job(bk, friendly):
    jobs = [d(j) for j in bk.backup_jobs.list(VAULT, VAULT_RG, filter="operation eq 'ConfigureBackup'")]
    mine = [j for j in jobs if j["properties"]["entityFriendlyName"] == friendly]
    assert mine, f"no ConfigureBackup job for {friendly}: {jobs}"
    return mine[0]


def test_protect_vm(bk):
    need("vault", "vm_policy_id")
    body = {"properties": {"protectedItemType": "Microsoft.Compute/virtualMachines",
                           "sourceResourceId": vm_id(), "policyId": S["vm_policy_id"]}}
    cap = Capture()
    item = d(bk.protected_items.begin_create_or_update(VAULT, VAULT_RG, "Azure", vm_container(), vm_item(), body,
                                                       raw_response_hook=cap).result())
    method, status, headers = cap.first("PUT")
    if status == 202:
        check_async_headers(status, headers)
    else:
        assert status == 200, cap.responses
    p = item["properties"]
    assert ci(item["name"], vm_item()), item
    assert p["protectedItemType"] == "Microsoft.Compute/virtualMachines"
    assert p["protectionState"] in ("Protected", "IRPending"), p
    assert ci(p["policyId"], S["vm_policy_id"]), p
    assert ci(p.get("sourceResourceId"), vm_id())
    assert p.get("friendlyName") == "vm1"
    assert p.get("workloadType") == "VM"
    g = d(bk.protected_items.get(VAULT, VAULT_RG, "Azure", vm_container(), vm_item(),
                                 filter="expand eq 'extendedinfo'"))
    assert g["properties"]["protectionState"] in ("Protected", "IRPending")
    conts = [d(x) for x in bk.backup_protection_containers.list(
        VAULT, VAULT_RG, filter="backupManagementType eq 'AzureIaasVM'")]
    assert any(ci(c["name"], vm_container()) for c in conts), conts
    job = _configure_job(bk, "vm1")
    assert job["properties"]["jobType"] == "AzureIaaSVMJob"
    assert wait_job(bk, job["name"])["properties"]["status"] == "Completed"
    S["vm_protected"] = item


def test_protect_share(bk):
    need("vault", "share_policy_id", "container")
    body = {"properties": {"protectedItemType": "AzureFileShareProtectedItem",
                           "sourceResourceId": account_id(), "policyId": S["share_policy_id"]}}
    item = d(bk.protected_items.begin_create_or_update(VAULT, VAULT_RG, "Azure", storage_container(),
                                                       share_item(), body).result())
    p = item["properties"]
    assert p["protectedItemType"] == "AzureFileShareProtectedItem", p
    assert p["protectionState"] in ("Protected", "IRPending"), p
    assert ci(p["policyId"], S["share_policy_id"])
    assert p.get("friendlyName") == "share1"
    job = _configure_job(bk, "share1")
    assert job["properties"]["jobType"] == "AzureStorageJob"
    assert wait_job(bk, job["name"])["properties"]["status"] == "Completed"
    items = [d(x) for x in bk.backup_protected_items.list(VAULT, VAULT_RG)]
    names = {x["name"].lower() for x in items}
    assert {vm_item().lower(), share_item().lower()} <= names, names
    only_vm = [d(x) for x in bk.backup_protected_items.list(
        VAULT, VAULT_RG, filter="backupManagementType eq 'AzureIaasVM' and itemType eq 'VM'")]
    assert [x["name"].lower() for x in only_vm] == [vm_item().lower()], only_vm
    S["share_protected"] = item


# ---------------------------------------------------------------------------------------------------
# Backup
# ---------------------------------------------------------------------------------------------------
def _trigger_backup(bk, container, item, object_type):
    expiry = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=30)).replace(microsecond=0)
    body = {"properties": {"objectType": object_type,
                           "recoveryPointExpiryTimeInUTC": expiry.isoformat().replace("+00:00", "Z")}}
    status, headers = bk.backups.trigger(VAULT, VAULT_RG, "Azure", container, item, body, cls=headers_cls)
    h = check_async_headers(status, headers)
    assert "/operationResults/" in h["location"].split("?")[0], h
    assert "/operationsStatus/" in h["azure-asyncoperation"].split("?")[0], h
    op = op_id_from(h["azure-asyncoperation"])
    assert op_id_from(h["location"]) == op
    # item-level status and vault-level status resolve the same operation
    st, job_id = job_id_of_operation(bk, op)
    item_st = d(bk.protected_item_operation_statuses.get(VAULT, VAULT_RG, "Azure", container, item, op))
    assert item_st["status"] in ("InProgress", "Succeeded"), item_st
    assert (item_st.get("properties") or {}).get("jobId") == job_id, (item_st, st)
    return op, job_id, expiry, h


def _check_finished_job(job, job_type, friendly, bmt):
    p = job["properties"]
    assert job["name"] and ci(job["id"], vault_path(VAULT) + f"/backupJobs/{job['name']}"), job
    assert ci(job["type"], "Microsoft.RecoveryServices/vaults/backupJobs")
    assert p["jobType"] == job_type, p
    assert p["operation"] == "Backup", p
    assert p["status"] == "Completed", p
    assert p["entityFriendlyName"] == friendly, p
    assert p["backupManagementType"] == bmt, p
    start = dt.datetime.fromisoformat(p["startTime"].replace("Z", "+00:00"))
    end = dt.datetime.fromisoformat(p["endTime"].replace("Z", "+00:00"))
    assert start <= end, p
    assert p.get("duration"), p
    import isodate

    dur = isodate.parse_duration(p["duration"])
    assert abs(dur.total_seconds() - (end - start).total_seconds()) < 1.0, (p["duration"], start, end)
    assert "Cancellable" not in (p.get("actionsInfo") or []), p
    ext = p.get("extendedInfo") or {}
    tasks = ext.get("tasksList") or []
    assert tasks, f"extendedInfo.tasksList is empty: {p}"
    assert all(t.get("taskId") for t in tasks), tasks
    assert all(t.get("status") == "Completed" for t in tasks), tasks
    bag = ext.get("propertyBag") or {}
    assert bag, f"extendedInfo.propertyBag is empty: {p}"
    return p, tasks, bag


def test_backup_vm(bk, raw):
    need("vm_protected")
    t0 = dt.datetime.now(dt.timezone.utc)
    op, job_id, expiry, h = _trigger_backup(bk, vm_container(), vm_item(), "IaasVMBackupRequest")
    job = wait_job(bk, job_id)
    p, tasks, bag = _check_finished_job(job, "AzureIaaSVMJob", "vm1", "AzureIaasVM")
    ids = [t["taskId"] for t in tasks]
    assert "Take Snapshot" in ids and "Transfer data to vault" in ids, ids
    assert bag.get("VM Name") == "vm1", bag
    assert "Backup Size" in bag, bag
    assert p.get("virtualMachineVersion") in ("Compute", None), p
    # the wire form of the job: ISO 8601 duration, RFC 3339 UTC times
    wire = raw.get(vault_path(VAULT) + f"/backupJobs/{job_id}").json()
    assert wire["properties"]["duration"].startswith("PT"), wire["properties"]["duration"]
    assert wire["properties"]["startTime"].endswith("Z"), wire["properties"]["startTime"]
    # operation results Location: 200/204 once done
    r = raw.get(h["location"])
    assert r.status_code in (200, 204), (r.status_code, r.text)
    # the item tells the truth
    item = d(bk.protected_items.get(VAULT, VAULT_RG, "Azure", vm_container(), vm_item()))
    ip = item["properties"]
    assert ip.get("lastBackupStatus") == "Completed", ip
    assert ip.get("lastBackupTime"), ip
    assert dt.datetime.fromisoformat(ip["lastBackupTime"].replace("Z", "+00:00")) >= t0 - dt.timedelta(seconds=5)
    assert ip.get("healthStatus") in ("Passed", "ActionSuggested", None), ip
    ext = d(bk.protected_items.get(VAULT, VAULT_RG, "Azure", vm_container(), vm_item(),
                                   filter="expand eq 'extendedinfo'"))["properties"].get("extendedInfo") or {}
    assert ext.get("recoveryPointCount") == 1, f"expand eq 'extendedinfo' should count recovery points: {ext}"
    assert ext.get("oldestRecoveryPoint"), ext
    S["vm_backup_job"] = job_id
    S["vm_backup_time"] = t0
    S["vm_expiry"] = expiry
    S.setdefault("backup_jobs", []).append(job_id)


def test_backup_old_api_version_echoed(raw):
    """Clients of the 2016-12-01 era trigger backups and poll what the server hands back."""
    need("vm_backup_job")
    item = (vault_path(VAULT).replace("/subscriptions/", "/Subscriptions/") +
            f"/backupFabrics/Azure/protectionContainers/{vm_container()}/protectedItems/{vm_item()}")
    r = raw.post(item + "/backup", api_version="2016-12-01",
                 json={"properties": {"objectType": "IaasVMBackupRequest"}})
    assert r.status_code == 202, r.text
    for hname in ("Location", "Azure-AsyncOperation"):
        assert "api-version=2016-12-01" in r.headers[hname], r.headers
    st = wait_for(lambda: raw.get(r.headers["Azure-AsyncOperation"]).json(),
                  lambda x: (x.get("properties") or {}).get("jobId"), interval=0.2, what="jobId")
    jid = st["properties"]["jobId"]
    j = wait_for(lambda: raw.get(vault_path(VAULT) + f"/backupJobs/{jid}", api_version="2016-12-01").json(),
                 lambda x: x["properties"]["status"] in TERMINAL_JOB, interval=0.2, what="job")
    assert j["properties"]["status"] == "Completed", j
    S["vm_rp_count"] = 2
    S.setdefault("backup_jobs", []).append(jid)


def test_backup_share(bk):
    need("share_protected")
    t0 = dt.datetime.now(dt.timezone.utc)
    op, job_id, _, _ = _trigger_backup(bk, storage_container(), share_item(), "AzureFileShareBackupRequest")
    job = wait_job(bk, job_id)
    p, tasks, bag = _check_finished_job(job, "AzureStorageJob", "share1", "AzureStorage")
    assert p.get("storageAccountName") == "acct1", p
    S["share_backup_job"] = job_id
    S["share_backup_time"] = t0
    S.setdefault("backup_jobs", []).append(job_id)
    item = d(bk.protected_items.get(VAULT, VAULT_RG, "Azure", storage_container(), share_item()))
    assert item["properties"].get("lastBackupStatus") == "Completed", item


def test_second_share_backup_is_incremental_and_new_rp(bk, env):
    """A second backup after a change yields a second recovery point; the first still restores."""
    need("share_backup_job")
    (env.share / "added-later.txt").write_bytes(b"not in the first recovery point\n")
    try:
        _, job_id, _, _ = _trigger_backup(bk, storage_container(), share_item(), "AzureFileShareBackupRequest")
        assert wait_job(bk, job_id)["properties"]["status"] == "Completed"
        S.setdefault("backup_jobs", []).append(job_id)
    finally:
        (env.share / "added-later.txt").unlink()
    rps = [d(x) for x in bk.recovery_points.list(VAULT, VAULT_RG, "Azure", storage_container(), share_item())]
    assert len(rps) == 2, rps
    S["share_rps"] = rps


# ---------------------------------------------------------------------------------------------------
# Recovery points
# ---------------------------------------------------------------------------------------------------
def test_recovery_points_vm(bk):
    need("vm_backup_job")
    rps = [d(x) for x in bk.recovery_points.list(VAULT, VAULT_RG, "Azure", vm_container(), vm_item())]
    assert len(rps) == S.get("vm_rp_count", 1), rps
    for rp in rps:
        assert rp["name"].isdigit(), f"recovery point ids are decimal strings: {rp['name']!r}"
        assert ci(rp["id"], vault_path(VAULT) + f"/backupFabrics/Azure/protectionContainers/{vm_container()}"
                  f"/protectedItems/{vm_item()}/recoveryPoints/{rp['name']}"), rp["id"]
        assert ci(rp["type"], "Microsoft.RecoveryServices/vaults/backupFabrics/protectionContainers/"
                              "protectedItems/recoveryPoints")
        assert rp["properties"]["objectType"] == "IaasVMRecoveryPoint", rp
    rp = min(rps, key=lambda r: r["properties"]["recoveryPointTime"])  # the SDK-triggered backup
    t = dt.datetime.fromisoformat(rp["properties"]["recoveryPointTime"].replace("Z", "+00:00"))
    assert abs((t - S["vm_backup_time"]).total_seconds()) < 120, (t, S["vm_backup_time"])
    g = d(bk.recovery_points.get(VAULT, VAULT_RG, "Azure", vm_container(), vm_item(), rp["name"]))
    assert g["id"] == rp["id"] and g["name"] == rp["name"]
    expiry = (g["properties"].get("recoveryPointProperties") or {}).get("expiryTime")
    assert expiry, f"recoveryPointExpiryTimeInUTC of the backup request must be kept on the RP: {g}"
    got = dt.datetime.fromisoformat(expiry.replace("Z", "+00:00"))
    assert abs((got - S["vm_expiry"]).total_seconds()) < 1, (got, S["vm_expiry"])
    # date filters (az backup recoverypoint list form)
    now = dt.datetime.now(dt.timezone.utc)
    inside = (f"startDate eq '{filter_time(now - dt.timedelta(hours=1))}' and "
              f"endDate eq '{filter_time(now + dt.timedelta(hours=1))}'")
    past = "startDate eq '2016-01-01 12:00:00 AM' and endDate eq '2016-02-01 12:00:00 AM'"
    assert sorted(x.name for x in bk.recovery_points.list(VAULT, VAULT_RG, "Azure", vm_container(), vm_item(),
                                                          filter=inside)) == sorted(r["name"] for r in rps)
    assert [x.name for x in bk.recovery_points.list(VAULT, VAULT_RG, "Azure", vm_container(), vm_item(),
                                                    filter=past)] == []
    item = d(bk.protected_items.get(VAULT, VAULT_RG, "Azure", vm_container(), vm_item()))
    assert item["properties"].get("lastRecoveryPoint"), item
    S["vm_rp"] = rp["name"]
    S["vm_rps"] = sorted(r["name"] for r in rps)


def test_recovery_points_share(bk):
    need("share_rps")
    rps = S["share_rps"]
    for rp in rps:
        assert rp["name"].isdigit(), rp
        assert rp["properties"]["objectType"] == "AzureFileShareRecoveryPoint", rp
    times = [rp["properties"]["recoveryPointTime"] for rp in rps]
    # the first recovery point is the one without added-later.txt
    first = min(rps, key=lambda r: r["properties"]["recoveryPointTime"])
    g = d(bk.recovery_points.get(VAULT, VAULT_RG, "Azure", storage_container(), share_item(), first["name"]))
    assert g["name"] == first["name"], (g, times)
    S["share_rp"] = first["name"]


# ---------------------------------------------------------------------------------------------------
# Restore
# ---------------------------------------------------------------------------------------------------
def _restore(bk, container, item, rp, body):
    cap = Capture()
    bk.restores.begin_trigger(VAULT, VAULT_RG, "Azure", container, item, rp, body, raw_response_hook=cap).result()
    _, status, headers = cap.first("POST")
    h = check_async_headers(status, headers)
    op = op_id_from(h["azure-asyncoperation"])
    _, job_id = job_id_of_operation(bk, op)
    job = wait_job(bk, job_id)
    p = job["properties"]
    assert p["operation"] == "Restore", p
    assert p["status"] == "Completed", p
    S.setdefault("restore_jobs", []).append(job_id)
    return job


def _compare_trees(src_snapshot, dst: Path, skip=()):
    dst_snap = tree_snapshot(dst)
    problems = []
    for rel, e in src_snapshot.items():
        if rel in skip:
            continue
        got = dst_snap.get(rel)
        if got is None:
            problems.append(f"missing {rel}")
            continue
        if got["type"] != e["type"]:
            problems.append(f"{rel}: type {got['type']} != {e['type']}")
            continue
        if got["mode"] != e["mode"]:
            problems.append(f"{rel}: mode {oct(got['mode'])} != {oct(e['mode'])}")
        if e["type"] == "file":
            if got["sha256"] != e["sha256"] or got["size"] != e["size"]:
                problems.append(f"{rel}: content differs (size {got['size']} vs {e['size']})")
            if got["mtime_ns"] != e["mtime_ns"]:
                problems.append(f"{rel}: mtime_ns {got['mtime_ns']} != {e['mtime_ns']}")
    extra = sorted(set(dst_snap) - set(src_snapshot))
    if extra:
        problems.append(f"unexpected entries: {extra}")
    assert not problems, "restored tree differs from the source at backup time:\n" + "\n".join(problems)


def test_restore_share_full_alternate(bk, env):
    need("share_rp")
    src = tree_snapshot(env.share)
    target = env.restore_root / "fullrestore"
    body = {"properties": {
        "objectType": "AzureFileShareRestoreRequest", "recoveryType": "AlternateLocation",
        "sourceResourceId": account_id(), "copyOptions": "Overwrite", "restoreRequestType": "FullShareRestore",
        "targetDetails": {"name": "fullrestore", "targetResourceId": account_id()}}}
    job = _restore(bk, storage_container(), share_item(), S["share_rp"], body)
    assert job["properties"]["jobType"] == "AzureStorageJob"
    assert target.is_dir(), f"expected the share restored below {target}; restore root has " \
                            f"{sorted(str(p.relative_to(env.restore_root)) for p in env.restore_root.rglob('*'))}"
    _compare_trees(src, target)


def test_restore_share_full_alternate_target_folder(bk, env):
    """az backup restore restore-azurefileshare --target-folder sends restoreFileSpecs=[{targetFolderPath}]
    with FullShareRestore: the share lands in that folder of the target share."""
    need("share_rp")
    src = tree_snapshot(env.share)
    body = {"properties": {
        "objectType": "AzureFileShareRestoreRequest", "recoveryType": "AlternateLocation",
        "sourceResourceId": account_id(), "copyOptions": "Overwrite", "restoreRequestType": "FullShareRestore",
        "restoreFileSpecs": [{"targetFolderPath": "infolder"}],
        "targetDetails": {"name": "fullfolder", "targetResourceId": account_id()}}}
    _restore(bk, storage_container(), share_item(), S["share_rp"], body)
    target = env.restore_root / "fullfolder" / "infolder"
    assert target.is_dir(), (f"targetFolderPath ignored: expected {target}; fullfolder holds "
                             f"{sorted(p.name for p in (env.restore_root / 'fullfolder').iterdir())}")
    _compare_trees(src, target)


def test_restore_share_item_level_directory_and_fail_on_conflict(bk, env):
    """ItemLevelRestore of a folder brings its whole subtree; FailOnConflict never overwrites."""
    need("share_rp")
    body = {"properties": {
        "objectType": "AzureFileShareRestoreRequest", "recoveryType": "AlternateLocation",
        "sourceResourceId": account_id(), "copyOptions": "Overwrite", "restoreRequestType": "ItemLevelRestore",
        "restoreFileSpecs": [{"path": "sub", "fileSpecType": "Directory", "targetFolderPath": None}],
        "targetDetails": {"name": "ilrdir", "targetResourceId": account_id()}}}
    _restore(bk, storage_container(), share_item(), S["share_rp"], body)
    src = {k: v for k, v in tree_snapshot(env.share / "sub").items()}
    _compare_trees(src, env.restore_root / "ilrdir" / "sub")
    assert stat.S_IMODE((env.restore_root / "ilrdir" / "sub").stat().st_mode) == 0o750

    # FailOnConflict onto an existing different file: the job does not complete cleanly, the file is kept
    keep = env.restore_root / "ilrdir" / "sub" / "c.txt"
    keep.write_bytes(b"mine\n")
    body["properties"]["copyOptions"] = "FailOnConflict"
    body["properties"]["restoreFileSpecs"] = [{"path": "sub/c.txt", "fileSpecType": "File"}]
    cap = Capture()
    bk.restores.begin_trigger(VAULT, VAULT_RG, "Azure", storage_container(), share_item(), S["share_rp"], body,
                              raw_response_hook=cap).result()
    _, status, headers = cap.first("POST")
    h = check_async_headers(status, headers)
    _, job_id = job_id_of_operation(bk, op_id_from(h["azure-asyncoperation"]))
    job = wait_job(bk, job_id)
    assert job["properties"]["status"] in ("Failed", "CompletedWithWarnings"), job
    assert job["properties"].get("errorDetails"), f"a conflict must be reported in errorDetails: {job}"
    assert keep.read_bytes() == b"mine\n", "FailOnConflict overwrote an existing file"


def test_restore_share_item_level_overwrite_and_skip(bk, env):
    need("share_rp")
    base = env.restore_root / "ilr" / "restored"
    base.mkdir(parents=True)
    (base / "a.txt").write_bytes(b"stale content that Overwrite must replace\n")
    (base / "c.txt").write_bytes(b"kept by Skip\n")
    spec = lambda path: {"path": path, "fileSpecType": "File", "targetFolderPath": "restored"}  # noqa: E731
    body = {"properties": {
        "objectType": "AzureFileShareRestoreRequest", "recoveryType": "AlternateLocation",
        "sourceResourceId": account_id(), "copyOptions": "Overwrite", "restoreRequestType": "ItemLevelRestore",
        "restoreFileSpecs": [spec("a.txt")],
        "targetDetails": {"name": "ilr", "targetResourceId": account_id()}}}
    _restore(bk, storage_container(), share_item(), S["share_rp"], body)
    got = base / "a.txt"
    src = env.share / "a.txt"
    assert got.read_bytes() == src.read_bytes()
    assert stat.S_IMODE(got.stat().st_mode) == stat.S_IMODE(src.stat().st_mode)
    assert got.stat().st_mtime_ns == src.stat().st_mtime_ns
    # only the requested file came back
    assert sorted(p.name for p in base.iterdir()) == ["a.txt", "c.txt"], list(base.iterdir())

    body["properties"]["copyOptions"] = "Skip"
    body["properties"]["restoreFileSpecs"] = [{"path": "sub/c.txt", "fileSpecType": "File",
                                               "targetFolderPath": "restored"}]
    (base / "sub").mkdir()
    (base / "sub" / "c.txt").write_bytes(b"kept by Skip\n")
    _restore(bk, storage_container(), share_item(), S["share_rp"], body)
    assert (base / "sub" / "c.txt").read_bytes() == b"kept by Skip\n"


def test_restore_vm_disks(bk, env):
    need("vm_rp")
    before = {p for p in env.restore_root.rglob("*")}
    body = {"properties": {
        "objectType": "IaasVMRestoreRequest", "recoveryPointId": S["vm_rp"], "recoveryType": "RestoreDisks",
        "sourceResourceId": vm_id(), "region": "westus", "createNewCloudService": False,
        "originalStorageAccountOption": False,
        "storageAccountId": account_id("restoreacct"),
        "targetResourceGroupId": f"/subscriptions/{SUB}/resourceGroups/restorerg"}}
    job = _restore(bk, vm_container(), vm_item(), S["vm_rp"], body)
    assert job["properties"]["jobType"] == "AzureIaaSVMJob"
    new_files = [p for p in env.restore_root.rglob("*") if p not in before and p.is_file()]
    want = file_digest(env.disk)
    size = env.disk.stat().st_size
    matches = [p for p in new_files if p.stat().st_size == size and file_digest(p) == want]
    assert len(matches) == 1, (f"expected exactly one restored disk image identical to {env.disk} "
                               f"({size} bytes) below {env.restore_root}; new files: "
                               f"{[(str(p), p.stat().st_size) for p in new_files]}")
    S["vm_restored_disk"] = str(matches[0])


def test_restore_share_original_location(bk, env):
    """OriginalLocation + Overwrite puts the backup-time tree back over a damaged source."""
    need("share_rp")
    src = tree_snapshot(env.share)
    (env.share / "a.txt").write_bytes(b"damaged\n")
    (env.share / "sub" / "c.txt").unlink()
    body = {"properties": {
        "objectType": "AzureFileShareRestoreRequest", "recoveryType": "OriginalLocation",
        "sourceResourceId": account_id(), "copyOptions": "Overwrite", "restoreRequestType": "FullShareRestore"}}
    _restore(bk, storage_container(), share_item(), S["share_rp"], body)
    _compare_trees(src, env.share)


def test_vm2_two_disks_alternate_and_original_location(bk, env):
    """A two-disk VM: AlternateLocation restores both disks below the restore root, OriginalLocation
    overwrites the damaged source disks; then its protection and data are deleted."""
    need("vm_policy_id")
    body = {"properties": {"protectedItemType": "Microsoft.Compute/virtualMachines",
                           "sourceResourceId": vm_id("vm2"), "policyId": S["vm_policy_id"]}}
    bk.protected_items.begin_create_or_update(VAULT, VAULT_RG, "Azure", vm_container("vm2"), vm_item("vm2"),
                                              body).result()
    S["vm2_protected"] = True
    _, job_id, _, _ = _trigger_backup(bk, vm_container("vm2"), vm_item("vm2"), "IaasVMBackupRequest")
    assert wait_job(bk, job_id)["properties"]["status"] == "Completed"
    rp = [x.name for x in bk.recovery_points.list(VAULT, VAULT_RG, "Azure", vm_container("vm2"), vm_item("vm2"))]
    assert len(rp) == 1, rp
    disks = [env.disk2a, env.disk2b]
    want = {file_digest(p): p.stat().st_size for p in disks}
    before = set(env.restore_root.rglob("*"))
    alt = {"properties": {
        "objectType": "IaasVMRestoreRequest", "recoveryPointId": rp[0], "recoveryType": "AlternateLocation",
        "sourceResourceId": vm_id("vm2"), "region": "westus", "createNewCloudService": False,
        "originalStorageAccountOption": False, "storageAccountId": account_id("restoreacct"),
        "targetVirtualMachineId": f"/subscriptions/{SUB}/resourceGroups/restorerg/providers/"
                                  f"Microsoft.Compute/virtualMachines/vm2restored",
        "targetResourceGroupId": f"/subscriptions/{SUB}/resourceGroups/restorerg",
        "virtualNetworkId": f"/subscriptions/{SUB}/resourceGroups/restorerg/providers/Microsoft.Network/"
                            f"virtualNetworks/net1",
        "subnetId": f"/subscriptions/{SUB}/resourceGroups/restorerg/providers/Microsoft.Network/"
                    f"virtualNetworks/net1/subnets/default"}}
    _restore(bk, vm_container("vm2"), vm_item("vm2"), rp[0], alt)
    new = [p for p in env.restore_root.rglob("*") if p not in before and p.is_file()]
    got = {file_digest(p): p.stat().st_size for p in new}
    for digest, size in want.items():
        assert got.get(digest) == size, f"disk of {size} bytes not restored identically; new files: " \
                                         f"{[(str(p), p.stat().st_size) for p in new]}"
    # OriginalLocation: damage the source disks, restore over them
    originals = {p: p.read_bytes() for p in disks}
    for p in disks:
        with open(p, "r+b") as f:
            f.seek(4096)
            f.write(b"\xff" * 8192)
    orig = {"properties": {
        "objectType": "IaasVMRestoreRequest", "recoveryPointId": rp[0], "recoveryType": "OriginalLocation",
        "sourceResourceId": vm_id("vm2"), "region": "westus", "originalStorageAccountOption": True}}
    try:
        _restore(bk, vm_container("vm2"), vm_item("vm2"), rp[0], orig)
        for p, data in originals.items():
            assert p.read_bytes() == data, f"{p} not restored to its backup-time bytes"
    finally:
        for p, data in originals.items():
            p.write_bytes(data)
    _delete_item(bk, vm_container("vm2"), vm_item("vm2"), "vm2")
    # Soft-deleted (the vault's default): purged with the vault's soft delete off, below.
    g = d(bk.protected_items.get(VAULT, VAULT_RG, "Azure", vm_container("vm2"), vm_item("vm2")))
    assert g["properties"]["isScheduledForDeferredDelete"] is True, g
    del S["vm2_protected"]
    S["vm2_soft_deleted"] = True


# ---------------------------------------------------------------------------------------------------
# Jobs: list, filters, paging, export, old api-version
# ---------------------------------------------------------------------------------------------------
def _all_jobs(bk, flt=None):
    return [d(j) for j in bk.backup_jobs.list(VAULT, VAULT_RG, filter=flt)]


def test_job_list_filters(bk):
    need("vm_backup_job", "share_backup_job")
    jobs = _all_jobs(bk)
    ids = [j["name"] for j in jobs]
    assert len(ids) == len(set(ids)), "duplicate jobs across pages"
    assert set(S["backup_jobs"]) <= set(ids)
    starts = [j["properties"]["startTime"] for j in jobs]
    parsed = [dt.datetime.fromisoformat(s.replace("Z", "+00:00")) for s in starts]
    assert parsed == sorted(parsed, reverse=True), f"jobs must be newest first: {starts}"

    backups = _all_jobs(bk, "operation eq 'Backup'")
    assert backups and all(j["properties"]["operation"] == "Backup" for j in backups)
    assert set(S["backup_jobs"]) <= {j["name"] for j in backups}

    completed = _all_jobs(bk, "status eq 'Completed'")
    assert completed and all(j["properties"]["status"] == "Completed" for j in completed)

    storage = _all_jobs(bk, "backupManagementType eq 'AzureStorage'")
    assert storage and all(j["properties"]["backupManagementType"] == "AzureStorage" for j in storage)
    assert S["share_backup_job"] in {j["name"] for j in storage}
    assert S["vm_backup_job"] not in {j["name"] for j in storage}

    now = dt.datetime.now(dt.timezone.utc)
    lo, hi = filter_time(now - dt.timedelta(hours=1)), filter_time(now + dt.timedelta(hours=1))
    # az backup job list sorts clauses by key
    window = (f"backupManagementType eq 'AzureIaasVM' and endTime eq '{hi}' and operation eq 'Backup' "
              f"and startTime eq '{lo}' and status eq 'Completed'")
    w = _all_jobs(bk, window)
    assert S["vm_backup_job"] in {j["name"] for j in w}, w
    assert all(j["properties"]["backupManagementType"] == "AzureIaasVM" and j["properties"]["operation"] ==
               "Backup" for j in w)
    past = _all_jobs(bk, "startTime eq '2016-01-01 12:00:00 AM' and endTime eq '2016-01-02 12:00:00 AM'")
    assert past == [], past
    iso = _all_jobs(bk, f"startTime eq '{(now - dt.timedelta(hours=1)).strftime('%Y-%m-%dT%H:%M:%SZ')}' and "
                        f"endTime eq '{(now + dt.timedelta(hours=1)).strftime('%Y-%m-%dT%H:%M:%SZ')}'")
    assert {j["name"] for j in iso} == set(ids), "ISO 8601 window covering everything must list all jobs"
    # a narrow window around the job's own start, in the 12-hour form: PM/AM must be honoured
    vm_job = get_job(bk, S["vm_backup_job"])
    st = dt.datetime.fromisoformat(vm_job["properties"]["startTime"].replace("Z", "+00:00"))
    near = _all_jobs(bk, f"startTime eq '{filter_time(st - dt.timedelta(minutes=1))}' and "
                         f"endTime eq '{filter_time(st + dt.timedelta(minutes=1))}'")
    assert S["vm_backup_job"] in {j["name"] for j in near}, (filter_time(st), near)
    shifted = _all_jobs(bk, f"startTime eq '{filter_time(st - dt.timedelta(hours=12, minutes=1))}' and "
                            f"endTime eq '{filter_time(st - dt.timedelta(hours=11, minutes=59))}'")
    assert S["vm_backup_job"] not in {j["name"] for j in shifted}, "12 hours off: AM/PM confused"
    for midnight in ("00", "12"):
        assert _all_jobs(bk, f"startTime eq '2016-01-01 {midnight}:00:00 AM' and "
                             f"endTime eq '2016-01-02 {midnight}:00:00 AM'") == []
    one = _all_jobs(bk, f"jobId eq '{S['vm_backup_job']}'")
    assert [j["name"] for j in one] == [S["vm_backup_job"]]
    S["all_jobs"] = ids


def test_job_paging_raw(raw, bk):
    """page_size = 2 in the config: follow nextLink by hand and check every page."""
    need("all_jobs")
    assert len(S["all_jobs"]) > 2
    url = vault_path(VAULT) + "/backupJobs"
    r = raw.get(url)
    seen, pages = [], 0
    while True:
        assert r.status_code == 200, (r.status_code, r.text)
        body = r.json()
        pages += 1
        assert len(body["value"]) <= 2, body
        seen += [j["name"] for j in body["value"]]
        nl = body.get("nextLink")
        if not nl:
            break
        assert nl.startswith(raw.server.base_url + "/"), f"nextLink must be absolute: {nl}"
        assert "api-version=2026-02-01" in nl, f"nextLink must carry the caller's api-version: {nl}"
        assert pages < 100
        r = raw.get(nl)
    assert pages >= 2
    assert seen == S["all_jobs"] or set(seen) == set(S["all_jobs"]), (seen, S["all_jobs"])
    assert len(seen) == len(set(seen))
    # paging with a filter keeps the filter in nextLink
    r = raw.get(url, params={"$filter": "status eq 'Completed'"})
    body = r.json()
    if body.get("nextLink"):
        assert "filter" in body["nextLink"].lower(), body["nextLink"]
        r2 = raw.get(body["nextLink"])
        assert r2.status_code == 200
        assert all(j["properties"]["status"] == "Completed" for j in r2.json()["value"])


def test_export_jobs(bk, server):
    need("all_jobs")
    status, headers = bk.jobs.export(VAULT, VAULT_RG, cls=headers_cls)
    h = check_async_headers(status, headers, azure_async=False)
    assert "/backupJobs/operationResults/" in h["location"], h
    op = op_id_from(h["location"])

    def poll():
        return bk.export_jobs_operation_results.get(VAULT, VAULT_RG, op, cls=status_cls)

    code, res = wait_for(poll, lambda x: x[0] == 200, interval=0.2, what="export to finish")
    r = d(res)
    o = r["operation"]
    assert o["objectType"] == "ExportJobsOperationResultInfo", r
    assert o.get("blobUrl") and o.get("blobSasKey"), r
    assert o["blobSasKey"].startswith("?"), o["blobSasKey"]
    # a SAS link: no bearer token needed
    blob = requests.get(o["blobUrl"] + o["blobSasKey"], verify=server.cert, timeout=30)
    assert blob.status_code == 200, (blob.status_code, blob.text[:300])
    doc = blob.json()
    text = json.dumps(doc)
    for jid in S["all_jobs"]:
        assert jid in text, f"job {jid} missing from export"
    # export honours $filter
    status, headers = bk.jobs.export(VAULT, VAULT_RG, filter="operation eq 'Restore'", cls=headers_cls)
    op2 = op_id_from({k.lower(): v for k, v in headers.items()}["location"])
    _, res2 = wait_for(lambda: bk.export_jobs_operation_results.get(VAULT, VAULT_RG, op2, cls=status_cls),
                       lambda x: x[0] == 200, interval=0.2, what="filtered export")
    o2 = d(res2)["operation"]
    doc2 = requests.get(o2["blobUrl"] + o2["blobSasKey"], verify=server.cert, timeout=30).json()
    text2 = json.dumps(doc2)
    assert all(j in text2 for j in S["restore_jobs"]), "filtered export lost Restore jobs"
    assert not any(j in text2 for j in S["backup_jobs"]), "filtered export contains Backup jobs"
    # tampered signature is refused
    bad = requests.get(o["blobUrl"] + o["blobSasKey"][:-2] + "xx", verify=server.cert, timeout=30)
    assert bad.status_code in (401, 403), bad.status_code


def test_jobs_with_api_version_2019(server, raw):
    need("all_jobs")
    old = server.backup_client(api_version="2019-05-13")
    jid = S["vm_backup_job"]
    j = d(old.job_details.get(VAULT, VAULT_RG, jid))
    assert j["name"] == jid and j["properties"]["status"] == "Completed"
    listed = [x.name for x in old.backup_jobs.list(VAULT, VAULT_RG, filter="operation eq 'Backup'")]
    assert jid in listed
    allj = [x.name for x in old.backup_jobs.list(VAULT, VAULT_RG)]
    assert set(allj) >= set(S["all_jobs"])
    status, headers = old.jobs.export(VAULT, VAULT_RG, cls=headers_cls)
    h = check_async_headers(status, headers, azure_async=False)
    assert "api-version=2019-05-13" in h["location"], h
    code, res = wait_for(lambda: old.export_jobs_operation_results.get(VAULT, VAULT_RG, op_id_from(h["location"]),
                                                                        cls=status_cls),
                         lambda x: x[0] == 200, interval=0.2, what="export (2019-05-13)")
    assert d(res)["operation"].get("blobUrl"), d(res)
    r = raw.get(vault_path(VAULT).replace("/subscriptions/", "/Subscriptions/") + "/backupJobs",
                api_version="2019-05-13")
    assert r.status_code == 200, r.text
    assert "api-version=2019-05-13" in (r.json().get("nextLink") or "api-version=2019-05-13")
    # cancel of a finished job with the old client -> 400
    with pytest.raises(HttpResponseError) as e:
        old.job_cancellations.trigger(VAULT, VAULT_RG, jid)
    assert e.value.status_code == 400, e.value


# ---------------------------------------------------------------------------------------------------
# Stop protection, delete data, delete vault
# ---------------------------------------------------------------------------------------------------
def test_stop_protection_retain_data(bk):
    need("vm_rp")
    body = {"properties": {"protectedItemType": "Microsoft.Compute/virtualMachines",
                           "sourceResourceId": vm_id(), "protectionState": "ProtectionStopped"}}
    item = d(bk.protected_items.begin_create_or_update(VAULT, VAULT_RG, "Azure", vm_container(), vm_item(),
                                                       body).result())
    assert item["properties"]["protectionState"] == "ProtectionStopped", item
    g = d(bk.protected_items.get(VAULT, VAULT_RG, "Azure", vm_container(), vm_item()))
    assert g["properties"]["protectionState"] == "ProtectionStopped"
    jobs = _all_jobs(bk, "operation eq 'DisableBackup'")
    assert any(j["properties"]["entityFriendlyName"] == "vm1" for j in jobs), jobs
    rps = [x.name for x in bk.recovery_points.list(VAULT, VAULT_RG, "Azure", vm_container(), vm_item())]
    assert sorted(rps) == S["vm_rps"], "stop with retain data must keep recovery points"
    # backup of a stopped item is refused
    with pytest.raises(HttpResponseError) as e:
        bk.backups.trigger(VAULT, VAULT_RG, "Azure", vm_container(), vm_item(),
                           {"properties": {"objectType": "IaasVMBackupRequest"}})
    assert e.value.status_code == 400
    S["vm_stopped"] = True


def test_resume_protection(bk):
    """PUT with a policy again resumes a stopped item; backups work again."""
    need("vm_stopped")
    body = {"properties": {"protectedItemType": "Microsoft.Compute/virtualMachines",
                           "sourceResourceId": vm_id(), "policyId": S["vm_policy_id"]}}
    item = d(bk.protected_items.begin_create_or_update(VAULT, VAULT_RG, "Azure", vm_container(), vm_item(),
                                                       body).result())
    assert item["properties"]["protectionState"] in ("Protected", "IRPending"), item
    _, job_id, _, _ = _trigger_backup(bk, vm_container(), vm_item(), "IaasVMBackupRequest")
    assert wait_job(bk, job_id)["properties"]["status"] == "Completed"
    rps = [x.name for x in bk.recovery_points.list(VAULT, VAULT_RG, "Azure", vm_container(), vm_item())]
    assert len(rps) == len(S["vm_rps"]) + 1, rps


def _delete_item(bk, container, item, friendly):
    status, headers = bk.protected_items.delete(VAULT, VAULT_RG, "Azure", container, item, cls=headers_cls)
    if status == 202:
        h = check_async_headers(status, headers)
        assert "/backupOperationResults/" in h["location"] and "/backupOperations/" in h["azure-asyncoperation"], h
        _, job_id = job_id_of_operation(bk, op_id_from(h["azure-asyncoperation"]))
        job = wait_job(bk, job_id)
    else:
        assert status in (200, 204), status
        jobs = [j for j in _all_jobs(bk, "operation eq 'DeleteBackupData'")
                if j["properties"]["entityFriendlyName"] == friendly]
        assert jobs
        job = wait_job(bk, jobs[0]["name"])
    assert job["properties"]["operation"] == "DeleteBackupData", job
    assert job["properties"]["status"] == "Completed", job
    return job


def _item_gone(bk, container, item):
    with pytest.raises(ResourceNotFoundError):
        bk.protected_items.get(VAULT, VAULT_RG, "Azure", container, item)


def test_delete_is_soft_then_undelete(bk, rs):
    """As Azure: deleting backup data soft-deletes the item (kept, listed, the vault cannot go), and a
    PUT with isRehydrate (what `az backup protection undelete` sends) brings it back, points intact."""
    need("vm_stopped")
    cfg = d(bk.backup_resource_vault_configs.get(VAULT, VAULT_RG))
    assert cfg["properties"]["softDeleteFeatureState"] == "Enabled", cfg
    assert cfg["properties"]["softDeleteRetentionPeriodInDays"] == 14, cfg
    before = sorted(x.name for x in bk.recovery_points.list(VAULT, VAULT_RG, "Azure", vm_container(), vm_item()))
    _delete_item(bk, vm_container(), vm_item(), "vm1")
    g = d(bk.protected_items.get(VAULT, VAULT_RG, "Azure", vm_container(), vm_item()))
    assert g["properties"]["isScheduledForDeferredDelete"] is True, g
    assert g["properties"]["protectionState"] == "ProtectionStopped", g
    assert g["properties"]["deferredDeleteTimeInUTC"], g
    assert g["properties"]["deferredDeleteTimeRemaining"].startswith(("13.", "14.")), g
    listed = [i.name for i in bk.backup_protected_items.list(VAULT, VAULT_RG)]
    assert vm_item() in listed, listed
    assert sorted(x.name for x in bk.recovery_points.list(VAULT, VAULT_RG, "Azure", vm_container(), vm_item())) == before
    with pytest.raises(HttpResponseError) as e:
        rs.vaults.begin_delete(VAULT_RG, VAULT).result()
    assert e.value.status_code == 409, e.value
    assert "soft-deleted" in str(e.value), e.value
    body = {"properties": {"protectedItemType": "Microsoft.Compute/virtualMachines", "sourceResourceId": vm_id(),
                           "protectionState": "ProtectionStopped", "policyId": "", "isRehydrate": True}}
    item = d(bk.protected_items.begin_create_or_update(VAULT, VAULT_RG, "Azure", vm_container(), vm_item(),
                                                       body).result())
    assert item["properties"]["protectionState"] == "ProtectionStopped", item
    assert not item["properties"].get("isScheduledForDeferredDelete"), item
    assert any(j["properties"]["entityFriendlyName"] == "vm1" for j in _all_jobs(bk, "operation eq 'Undelete'"))
    assert sorted(x.name for x in bk.recovery_points.list(VAULT, VAULT_RG, "Azure", vm_container(), vm_item())) == before
    S["undeleted"] = True


def test_delete_vm_item_then_vault(bk, rs):
    need("undeleted")
    # With the vault's soft delete turned off (through backupconfig/vaultconfig, as `az backup vault
    # backup-properties set` does), deleting backup data is final.
    cfg = d(bk.backup_resource_vault_configs.update(
        VAULT, VAULT_RG, {"properties": {"softDeleteFeatureState": "Disabled", "enhancedSecurityState": "Disabled"}}))
    assert cfg["properties"]["softDeleteFeatureState"] == "Disabled", cfg
    _delete_item(bk, vm_container(), vm_item(), "vm1")
    _item_gone(bk, vm_container(), vm_item())
    if S.pop("vm2_soft_deleted", None):
        # A soft-deleted item's data goes at once once soft delete is off.
        _delete_item(bk, vm_container("vm2"), vm_item("vm2"), "vm2")
        _item_gone(bk, vm_container("vm2"), vm_item("vm2"))
    with pytest.raises((ResourceNotFoundError, HttpResponseError)) as e:
        list(bk.recovery_points.list(VAULT, VAULT_RG, "Azure", vm_container(), vm_item()))
    assert e.value.status_code == 404
    if "share_protected" in S:
        # still one protected item: the vault must refuse to go
        with pytest.raises(HttpResponseError) as e:
            rs.vaults.begin_delete(VAULT_RG, VAULT).result()
        assert 400 <= e.value.status_code < 500, e.value
        assert rs.vaults.get(VAULT_RG, VAULT).name == VAULT
        _delete_item(bk, storage_container(), share_item(), "share1")
        _item_gone(bk, storage_container(), share_item())
    rs.vaults.begin_delete(VAULT_RG, VAULT).result()
    with pytest.raises(ResourceNotFoundError):
        rs.vaults.get(VAULT_RG, VAULT)
    assert VAULT not in [v.name for v in rs.vaults.list_by_resource_group(VAULT_RG)]


def test_recreated_vault_starts_empty(bk, rs):
    """A vault of the same name after a delete has no jobs, items or policies from the old one."""
    need("vault")
    try:
        rs.vaults.get(VAULT_RG, VAULT)
        pytest.skip("vault was not deleted by the previous step")
    except ResourceNotFoundError:
        pass
    with pytest.raises(ResourceNotFoundError):
        list(bk.backup_jobs.list(VAULT, VAULT_RG))
    rs.vaults.begin_create_or_update(VAULT_RG, VAULT, {"location": "westus", "sku": {"name": "Standard"}}).result()
    try:
        assert list(bk.backup_jobs.list(VAULT, VAULT_RG)) == []
        assert list(bk.backup_policies.list(VAULT, VAULT_RG)) == [] or all(
            p.name not in (VM_POLICY, SHARE_POLICY) for p in bk.backup_policies.list(VAULT, VAULT_RG))
        assert list(bk.backup_protected_items.list(VAULT, VAULT_RG)) == []
    finally:
        rs.vaults.begin_delete(VAULT_RG, VAULT).result()
