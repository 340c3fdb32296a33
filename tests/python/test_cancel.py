"""Cancel and throughput limit, on a second server instance whose config throttles backups.

A VM with a 24 MiB incompressible disk at 2 MiB/s takes ~12 s to back up: long enough to observe the job
in progress (progress, ETA, Cancellable), cancel it, and see Cancelling -> Cancelled with no recovery point.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time

import pytest
from azure.core.exceptions import HttpResponseError

from conftest import (
    account_id, share_item, share_policy_body, storage_container,
    SRC_RG, TERMINAL_JOB, VAULT_RG, Server, headers_cls, make_disk, make_random_file, op_id_from, toml_config,
    vm_container, vm_id, vm_item, vm_policy_body, wait_for,
)

VAULT = "cancelvault"
RATE = 2 * 1024 * 1024
BIG = 24 * 1024 * 1024
SMALL = 4 * 1024 * 1024


def d(m):
    return json.loads(json.dumps(m.as_dict(), default=str))


@pytest.fixture(scope="module")
def slow(tmp_path_factory):
    root = tmp_path_factory.mktemp("slow")
    make_random_file(root / "vms" / "bigvm" / "disk0.img", BIG, seed=5)
    make_disk(root / "vms" / "midvm" / "disk0.img", size=SMALL, seed=6)
    make_random_file(root / "shares" / "busy" / "big.bin", 8 * 1024 * 1024, seed=7)
    (root / "shares" / "busy" / "small.txt").write_text("small\n")
    (root / "restore").mkdir()
    cfg = toml_config(
        [root / "restore"],
        [{"kind": "vm", "resource_group": SRC_RG, "name": "bigvm", "disks": [str(root / "vms/bigvm/disk0.img")]},
         {"kind": "vm", "resource_group": SRC_RG, "name": "midvm", "disks": [str(root / "vms/midvm/disk0.img")]},
         {"kind": "fileshare", "resource_group": SRC_RG, "storage_account": "slowacct", "share": "busy",
          "path": str(root / "shares" / "busy")}],
        retry_after=1, page_size=200, bps=RATE, restore_accounts=[(SRC_RG, "restoreacct", root / "restore")])
    (root / "server").mkdir()
    srv = Server(root / "server", cfg, name="slow").start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def sbk(slow):
    bk = slow.backup_client()
    rs = slow.vault_client()
    rs.vaults.begin_create_or_update(VAULT_RG, VAULT, {"location": "westus", "sku": {"name": "Standard"}}).result()
    bk.protection_containers.refresh(VAULT, VAULT_RG, "Azure", filter="backupManagementType eq 'AzureIaasVM'")
    # protectable items appear once the refresh finished; protection PUT is what we need
    bk.protection_policies.create_or_update(VAULT, VAULT_RG, "p", vm_policy_body())
    pid = bk.protection_policies.get(VAULT, VAULT_RG, "p").id
    for vm in ("bigvm", "midvm"):
        bk.protected_items.begin_create_or_update(
            VAULT, VAULT_RG, "Azure", vm_container(vm), vm_item(vm),
            {"properties": {"protectedItemType": "Microsoft.Compute/virtualMachines",
                            "sourceResourceId": vm_id(vm), "policyId": pid}}).result()
    bk.protection_containers.begin_register(
        VAULT, VAULT_RG, "Azure", storage_container("slowacct"),
        {"properties": {"containerType": "StorageContainer", "backupManagementType": "AzureStorage",
                        "sourceResourceId": account_id("slowacct"), "friendlyName": "slowacct"}}).result()
    bk.protection_policies.create_or_update(VAULT, VAULT_RG, "sp", share_policy_body())
    spid = bk.protection_policies.get(VAULT, VAULT_RG, "sp").id
    bk.protected_items.begin_create_or_update(
        VAULT, VAULT_RG, "Azure", storage_container("slowacct"), share_item("busy"),
        {"properties": {"protectedItemType": "AzureFileShareProtectedItem",
                        "sourceResourceId": account_id("slowacct"), "policyId": spid}}).result()
    return bk


def trigger(bk, vm):
    status, h = bk.backups.trigger(VAULT, VAULT_RG, "Azure", vm_container(vm), vm_item(vm),
                                   {"properties": {"objectType": "IaasVMBackupRequest"}}, cls=headers_cls)
    assert status == 202
    h = {k.lower(): v for k, v in h.items()}
    op = op_id_from(h["azure-asyncoperation"])
    st = wait_for(lambda: d(bk.backup_operation_statuses.get(VAULT, VAULT_RG, op)),
                  lambda s: (s.get("properties") or {}).get("jobId") or s.get("status") not in ("InProgress",),
                  interval=0.1, what="jobId")
    assert (st.get("properties") or {}).get("jobId"), st
    return st["properties"]["jobId"]


def job(bk, jid):
    return d(bk.job_details.get(VAULT, VAULT_RG, jid))


def test_cancel_running_backup(sbk, slow):
    bk = sbk
    jid = trigger(bk, "bigvm")
    running = wait_for(lambda: job(bk, jid),
                       lambda j: j["properties"]["status"] != "InProgress"
                       or (j["properties"].get("extendedInfo") or {}).get("progressPercentage", 0) > 0,
                       timeout=60, interval=0.1, what="backup to make progress")
    p = running["properties"]
    assert p["status"] == "InProgress", f"backup of {BIG} bytes at {RATE} B/s finished too early: {p}"
    assert "Cancellable" in (p.get("actionsInfo") or []), p
    assert not p.get("endTime"), f"a running job has no endTime: {p}"
    assert jid in [x.name for x in bk.backup_jobs.list(VAULT, VAULT_RG, filter="status eq 'InProgress'")]
    assert jid not in [x.name for x in bk.backup_jobs.list(VAULT, VAULT_RG, filter="status eq 'Completed'")]
    ext = p.get("extendedInfo") or {}
    assert 0 < ext["progressPercentage"] < 100, ext
    assert ext.get("estimatedRemainingDuration"), ext
    tasks = {t["taskId"]: t for t in ext.get("tasksList") or []}
    assert "Transfer data to vault" in tasks, tasks

    status, h = bk.job_cancellations.trigger(VAULT, VAULT_RG, jid, cls=headers_cls)
    assert status == 202
    h = {k.lower(): v for k, v in h.items()}
    assert f"/backupJobs/{jid}/operationResults/".lower() in h["location"].lower(), h
    assert h.get("retry-after", "").isdigit() and int(h["retry-after"]) > 0, h
    t_cancel = time.monotonic()
    statuses = []

    def poll():
        j = job(bk, jid)
        statuses.append(j["properties"]["status"])
        return j

    final = wait_for(poll, lambda j: j["properties"]["status"] in TERMINAL_JOB, timeout=30, interval=0.05,
                     what="cancelled job to settle")
    took = time.monotonic() - t_cancel
    assert final["properties"]["status"] == "Cancelled", (final, statuses)
    assert set(statuses) <= {"Cancelling", "Cancelled"}, f"job went back to another state: {statuses}"
    assert took < 10, f"cancel took {took:.1f}s"
    print(f"statuses seen after cancel: {statuses[:3]}... ({len(statuses)} polls, {took:.2f}s)")
    assert "Cancellable" not in (final["properties"].get("actionsInfo") or [])
    assert final["properties"].get("endTime")
    # the cancel operation resolves (200/204), never stays 202
    op = op_id_from(h["location"])
    code = wait_for(lambda: bk.job_operation_results.get(VAULT, VAULT_RG, jid, op, cls=headers_cls)[0],
                    lambda c: c in (200, 204), timeout=20, interval=0.2, what="cancel operation result")
    assert code in (200, 204)
    # no recovery point from a cancelled backup
    rps = list(bk.recovery_points.list(VAULT, VAULT_RG, "Azure", vm_container("bigvm"), vm_item("bigvm")))
    assert rps == [], [r.name for r in rps]
    # cancelling again is refused: the job is finished
    with pytest.raises(HttpResponseError) as e:
        bk.job_cancellations.trigger(VAULT, VAULT_RG, jid)
    assert e.value.status_code == 400
    # cancelled jobs are found by the status filter
    assert jid in [x.name for x in bk.backup_jobs.list(VAULT, VAULT_RG, filter="status eq 'Cancelled'")]


def test_throughput_limit(sbk):
    """4 MiB (of which ~1.1 MiB non-zero, but all of it read) at 2 MiB/s cannot finish in under ~1.5 s."""
    bk = sbk
    jid = trigger(bk, "midvm")
    t0 = time.monotonic()
    final = wait_for(lambda: job(bk, jid), lambda j: j["properties"]["status"] in TERMINAL_JOB,
                     timeout=60, interval=0.1, what="throttled backup")
    wall = time.monotonic() - t0
    assert final["properties"]["status"] == "Completed", final
    s = dt.datetime.fromisoformat(final["properties"]["startTime"].replace("Z", "+00:00"))
    e = dt.datetime.fromisoformat(final["properties"]["endTime"].replace("Z", "+00:00"))
    assert (e - s).total_seconds() >= 1.5, (f"{SMALL} bytes at {RATE} B/s took {(e - s).total_seconds():.2f}s "
                                            f"by the job's times ({wall:.2f}s wall): limit not applied")
    assert len(list(bk.recovery_points.list(VAULT, VAULT_RG, "Azure", vm_container("midvm"),
                                            vm_item("midvm")))) == 1


def test_second_backup_while_running_is_queued(sbk):
    bk = sbk
    first = trigger(bk, "midvm")
    second = trigger(bk, "midvm")
    assert first != second
    j2 = job(bk, second)
    assert j2["properties"]["status"] not in ("Failed",), j2
    for jid in (first, second):
        f = wait_for(lambda: job(bk, jid), lambda j: j["properties"]["status"] in TERMINAL_JOB,
                     timeout=60, interval=0.2, what="queued backups")
        assert f["properties"]["status"] == "Completed", f
    rps = list(bk.recovery_points.list(VAULT, VAULT_RG, "Azure", vm_container("midvm"), vm_item("midvm")))
    assert len(rps) >= 2, [r.name for r in rps]


def test_file_changing_during_backup_is_a_warning(sbk, slow):
    """A file that changes while it is read ends the job CompletedWithWarnings, naming the file."""
    bk = sbk
    big = slow.root.parent / "shares" / "busy" / "big.bin"
    status, h = bk.backups.trigger(VAULT, VAULT_RG, "Azure", storage_container("slowacct"), share_item("busy"),
                                   {"properties": {"objectType": "AzureFileShareBackupRequest"}}, cls=headers_cls)
    assert status == 202
    op = op_id_from({k.lower(): v for k, v in h.items()}["azure-asyncoperation"])
    st = wait_for(lambda: d(bk.backup_operation_statuses.get(VAULT, VAULT_RG, op)),
                  lambda s: (s.get("properties") or {}).get("jobId"), interval=0.1, what="jobId")
    jid = st["properties"]["jobId"]
    deadline = time.monotonic() + 60
    final = None
    i = 0
    while time.monotonic() < deadline:
        with open(big, "ab") as f:  # grow the file while the (throttled) backup reads it
            f.write(os.urandom(4096))
        i += 1
        j = job(bk, jid)
        if j["properties"]["status"] in TERMINAL_JOB:
            final = j
            break
        time.sleep(0.05)
    assert final is not None, "backup did not finish"
    p = final["properties"]
    assert i > 3, f"the job finished before the file could change ({i} writes)"
    assert p["status"] == "CompletedWithWarnings", p
    errs = json.dumps(p.get("errorDetails") or [])
    assert "big.bin" in errs, f"errorDetails must name the changed file: {p.get('errorDetails')}"


def test_kill9_mid_backup_then_restart(sbk, slow):
    """kill -9 during a backup: after restart the job is Failed (interrupted) or Completed, never stuck;
    earlier recovery points still restore byte-identically; the next backup succeeds."""
    import signal

    from conftest import file_digest

    bk = sbk
    jid = trigger(bk, "bigvm")
    wait_for(lambda: job(bk, jid), lambda j: j["properties"]["status"] != "InProgress"
             or (j["properties"].get("extendedInfo") or {}).get("progressPercentage", 0) > 0,
             timeout=60, interval=0.1, what="backup to make progress")
    assert job(bk, jid)["properties"]["status"] == "InProgress"
    old_token = slow.token
    slow.stop(sig=signal.SIGKILL)
    slow.start()
    assert slow.token == old_token, "admin token must survive a restart"
    bk2 = slow.backup_client()
    final = wait_for(lambda: d(bk2.job_details.get(VAULT, VAULT_RG, jid)),
                     lambda j: j["properties"]["status"] in TERMINAL_JOB, timeout=90, interval=0.2,
                     what="interrupted job to be resolved after restart")
    p = final["properties"]
    assert p["status"] in ("Failed", "Completed"), p
    if p["status"] == "Failed":
        text = json.dumps(p.get("errorDetails") or []).lower()
        assert "interrupt" in text or "restart" in text, f"error must say the job was interrupted: {p}"
    # earlier recovery point of midvm restores byte-identically
    rps = [d(x) for x in bk2.recovery_points.list(VAULT, VAULT_RG, "Azure", vm_container("midvm"),
                                                 vm_item("midvm"))]
    assert rps, "recovery points lost after kill -9"
    restore_root = slow.root.parent / "restore"
    before = set(restore_root.rglob("*"))
    from conftest import SUB, account_id

    cap_status, h = None, None
    poller = bk2.restores.begin_trigger(
        VAULT, VAULT_RG, "Azure", vm_container("midvm"), vm_item("midvm"), rps[0]["name"],
        {"properties": {"objectType": "IaasVMRestoreRequest", "recoveryPointId": rps[0]["name"],
                        "recoveryType": "RestoreDisks", "sourceResourceId": vm_id("midvm"), "region": "westus",
                        "storageAccountId": account_id("restoreacct"),
                        "targetResourceGroupId": f"/subscriptions/{SUB}/resourceGroups/restorerg"}})
    poller.result()
    restore_jobs = [d(x) for x in bk2.backup_jobs.list(VAULT, VAULT_RG, filter="operation eq 'Restore'")]
    assert restore_jobs, "no Restore job"
    rj = wait_for(lambda: d(bk2.job_details.get(VAULT, VAULT_RG, restore_jobs[0]["name"])),
                  lambda j: j["properties"]["status"] in TERMINAL_JOB, timeout=60, interval=0.2, what="restore")
    assert rj["properties"]["status"] == "Completed", rj
    src = slow.root.parent / "vms" / "midvm" / "disk0.img"
    new = [x for x in restore_root.rglob("*") if x not in before and x.is_file()]
    assert any(x.stat().st_size == src.stat().st_size and file_digest(x) == file_digest(src) for x in new), \
        [(str(x), x.stat().st_size) for x in new]
    # and the next backup succeeds
    status, hh = bk2.backups.trigger(VAULT, VAULT_RG, "Azure", vm_container("midvm"), vm_item("midvm"),
                                     {"properties": {"objectType": "IaasVMBackupRequest"}}, cls=headers_cls)
    assert status == 202
    op = op_id_from({k.lower(): v for k, v in hh.items()}["azure-asyncoperation"])
    st = wait_for(lambda: d(bk2.backup_operation_statuses.get(VAULT, VAULT_RG, op)),
                  lambda s: (s.get("properties") or {}).get("jobId"), interval=0.2, what="jobId")
    nj = wait_for(lambda: d(bk2.job_details.get(VAULT, VAULT_RG, st["properties"]["jobId"])),
                  lambda j: j["properties"]["status"] in TERMINAL_JOB, timeout=60, interval=0.2, what="backup")
    assert nj["properties"]["status"] == "Completed", nj

