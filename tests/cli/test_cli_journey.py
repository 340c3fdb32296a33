"""Azure's "Back up Azure Files with the Azure CLI" and "Restore Azure Files with the Azure CLI" journeys with the
real Azure CLI (`az backup ...`, azure-cli from PyPI) against the real server, with nothing but `az backup`
commands: no `az rest` fallbacks and no xfails. The tests run in file order and share state (`S`).
`az rest` appears once, to read the job list page by page and compare it with what `az backup job list` got.
"""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest

from conftest import BIG, SUB, H, seed_managed_identity_profile

RG = "rsvault-cli"
VAULT = "clivault"
CLOUD = "rsvault"
CONT = H.storage_container()  # StorageContainer;Storage;rg1;acct1
ITEM = H.share_item("share1")
BIG_ITEM = H.share_item("bigshare")
POLICY = "clishare"
AFS = ["--backup-management-type", "AzureStorage", "--workload-type", "AzureFileShare"]
V = H.vault_path(VAULT, rg=RG)
TERMINAL = H.TERMINAL_JOB
S: dict = {}


def need(*keys):
    missing = [k for k in keys if k not in S]
    if missing:
        pytest.skip(f"prerequisite step(s) did not complete: {', '.join(missing)}")


def vargs():
    return ["-g", RG, "-v", VAULT]


def dmy(d: dt.date) -> str:
    return d.strftime("%d-%m-%Y")


def job_show(az, job_id) -> dict:
    return az("backup", "job", "show", *vargs(), "-n", job_id).json


def poll_job(az, job_id, timeout=90) -> dict:
    """`az backup job show` until the job is terminal (az backup job wait sleeps 30 s per round)."""
    end = time.monotonic() + timeout
    while True:
        j = job_show(az, job_id)
        if j["properties"]["status"] in TERMINAL or time.monotonic() > end:
            return j
        time.sleep(0.5)


def jobs(az, *filters) -> list[dict]:
    return az("backup", "job", "list", *vargs(), *filters).json


def rest(az, method, url, body=None, ok=True):
    args = ["rest", "--method", method, "--url", url]
    if body is not None:
        args += ["--body", json.dumps(body)]
    return az(*args, ok=ok)


def api(path: str, version: str = "2025-08-01") -> str:
    return f"{path}{'&' if '?' in path else '?'}api-version={version}"


# ---------------------------------------------------------------------------------------------------
# Pointing az at rsvault
# ---------------------------------------------------------------------------------------------------
def test_cloud_and_managed_identity(cli):
    az, base = cli.az, cli.server.base_url
    az("cloud", "register", "--name", CLOUD, "--endpoint-resource-manager", base + "/",
       "--endpoint-active-directory-resource-id", base + "/",
       "--endpoint-active-directory", "https://login.rsvault.invalid", "--skip-endpoint-discovery", output=None)
    az("cloud", "set", "--name", CLOUD, output=None)
    shown = az("cloud", "show").json
    assert shown["name"] == CLOUD and shown["isActive"] is True, shown
    assert shown["endpoints"]["resourceManager"] == base + "/", shown
    seed_managed_identity_profile(az.config_dir, CLOUD)
    acct = az("account", "show").json
    assert acct["id"] == SUB and acct["environmentName"] == CLOUD, acct
    assert acct["user"] == {"name": "systemAssignedIdentity", "type": "servicePrincipal",
                            "assignedIdentityInfo": "MSI"}, acct
    tok = az("account", "get-access-token").json
    assert tok["accessToken"] == cli.server.token, "az must hand out rsvault's admin token"
    assert tok["subscription"] == SUB, tok
    assert cli.mi.requests, "the CLI never asked the managed-identity endpoint"
    assert {r["resource"] for r in cli.mi.requests} == {base + "/"}, cli.mi.requests
    S["cloud"] = True


def test_az_login_identity_cannot_be_used(cli):
    """Why the profile is seeded instead of `az login --identity`: the CLI decodes the managed-identity
    token as a JWT to find the tenant (azure/cli/core/_profile.py, Profile.login_with_managed_identity:
    `jwt.decode(token, algorithms=['RS256'], options={"verify_signature": False})['tid']`), then lists
    subscriptions (GET /subscriptions). rsvault's admin token is opaque, so the decode fails."""
    need("cloud")
    r = cli.az("login", "--identity", "--allow-no-subscriptions", ok=False)
    assert r.rc != 0, r
    assert "DecodeError" in r.stderr and "Not enough segments" in r.stderr, r
    # the seeded account is untouched
    assert cli.az("account", "show").json["id"] == SUB


def test_cloud_register_with_endpoint_discovery(cli):
    """`az cloud register --endpoint-resource-manager URL` without --skip-endpoint-discovery GETs
    URL/metadata/endpoints?api-version=2022-09-01 anonymously (azure/cli/command_modules/cloud/custom.py,
    _populate_from_metadata_endpoint). Azure Resource Manager serves that document without a token."""
    need("cloud")
    cli.az("cloud", "register", "--name", "rsvault-discovered", "--endpoint-resource-manager",
           cli.server.base_url + "/", output=None)
    cli.az("cloud", "unregister", "--name", "rsvault-discovered", output=None)


# ---------------------------------------------------------------------------------------------------
# Vault and policy
# ---------------------------------------------------------------------------------------------------
def test_vault_create_show_list(cli):
    need("cloud")
    az = cli.az
    v = az("backup", "vault", "create", "-g", RG, "-n", VAULT, "-l", "westus").json
    assert v["name"] == VAULT and v["location"] == "westus", v
    assert v["id"].lower() == V.lower(), v["id"]
    assert v["type"].lower() == "microsoft.recoveryservices/vaults", v
    assert v["properties"]["provisioningState"] == "Succeeded", v
    assert v["resourceGroup"] == RG, v
    g = az("backup", "vault", "show", "-g", RG, "-n", VAULT).json
    assert g["id"] == v["id"]
    assert VAULT in [x["name"] for x in az("backup", "vault", "list", "-g", RG).json]
    S["vault"] = v


def test_policy_create_show_list(cli):
    need("vault")
    body = {"properties": {
        "backupManagementType": "AzureStorage", "workLoadType": "AzureFileShare", "timeZone": "UTC",
        "schedulePolicy": {"schedulePolicyType": "SimpleSchedulePolicy", "scheduleRunFrequency": "Daily",
                           "scheduleRunTimes": ["2026-01-01T03:00:00Z"]},
        "retentionPolicy": {"retentionPolicyType": "LongTermRetentionPolicy", "dailySchedule": {
            "retentionTimes": ["2026-01-01T03:00:00Z"], "retentionDuration": {"count": 14, "durationType": "Days"}}}}}
    f = cli.root / "policy.json"
    f.write_text(json.dumps(body))
    p = cli.az("backup", "policy", "create", *vargs(), "-n", POLICY, "--policy", f, *AFS).json
    assert p["name"] == POLICY, p
    g = cli.az("backup", "policy", "show", *vargs(), "-n", POLICY).json
    assert g["properties"]["backupManagementType"] == "AzureStorage", g
    assert g["properties"]["retentionPolicy"]["dailySchedule"]["retentionDuration"] == \
        {"count": 14, "durationType": "Days"}, g
    assert POLICY in [x["name"] for x in cli.az("backup", "policy", "list", *vargs()).json]
    S["policy_id"] = g["id"]


# ---------------------------------------------------------------------------------------------------
# Protection
# ---------------------------------------------------------------------------------------------------
def test_enable_for_azurefileshare(cli):
    """`az backup protection enable-for-azurefileshare`: refresh, register the storage account, inquire,
    find the share among the protectable items, PUT the protected item, follow the job; for both shares."""
    need("policy_id")
    for share in ("share1", "bigshare"):
        job = cli.az("backup", "protection", "enable-for-azurefileshare", *vargs(), "--storage-account", "acct1",
                     "--azure-file-share", share, "-p", POLICY).json
        assert job["properties"]["operation"] == "ConfigureBackup", job
        assert job["properties"]["entityFriendlyName"] == share, job
        assert poll_job(cli.az, job["name"])["properties"]["status"] == "Completed"
    items = cli.az("backup", "item", "list", *vargs(), *AFS).json
    names = sorted(x["name"].lower() for x in items)
    assert names == sorted([ITEM.lower(), BIG_ITEM.lower()]), items
    item = cli.az("backup", "item", "show", *vargs(), "-c", CONT, "-n", ITEM, *AFS).json
    assert item["properties"]["protectionState"] in ("Protected", "IRPending"), item
    assert item["properties"]["policyId"].lower() == S["policy_id"].lower(), item
    assert item["properties"]["friendlyName"] == "share1"
    S["protected"] = True


def test_item_list_table_before_first_backup(cli):
    """`az backup item list -o table` right after protection, before any backup."""
    need("protected")
    r = cli.az("backup", "item", "list", *vargs(), output="table")
    assert "share1" in r.stdout and "bigshare" in r.stdout, r


# ---------------------------------------------------------------------------------------------------
# Backup and jobs
# ---------------------------------------------------------------------------------------------------
def test_backup_now_and_job_wait(cli):
    need("protected")
    az = cli.az
    retain = dt.date.today() + dt.timedelta(days=30)
    S["snapshot_rp1"] = H.tree_snapshot(cli.share)
    job = az("backup", "protection", "backup-now", *vargs(), "-c", CONT, "-i", ITEM, *AFS,
             "--retain-until", dmy(retain)).json
    p = job["properties"]
    assert p["operation"] == "Backup" and p["jobType"] == "AzureStorageJob", job
    assert p["entityFriendlyName"] == "share1" and p["backupManagementType"] == "AzureStorage", job
    assert p["status"] in ("InProgress", "Completed"), job
    # az backup job wait polls job details until the job is no longer InProgress/Cancelling, sleeping 30 s
    # per round (custom.py, wait_for_job): run it in the background, collect it in test_job_wait_result
    S["wait"] = (job["name"], az.spawn("backup", "job", "wait", *vargs(), "-n", job["name"]))
    poll_job(az, job["name"])
    shown = job_show(az, job["name"])
    sp = shown["properties"]
    assert sp["status"] == "Completed" and sp["endTime"] and sp["duration"], shown
    assert sp["storageAccountName"] == "acct1", shown
    assert "Cancellable" not in (sp.get("actionsInfo") or []), shown
    assert all(t["status"] == "Completed" for t in sp["extendedInfo"]["tasksList"]), shown
    item = az("backup", "item", "show", *vargs(), "-c", CONT, "-n", ITEM, *AFS).json
    assert item["properties"]["lastBackupStatus"] == "Completed", item
    # the table views read lastBackupStatus / lastRecoveryPoint / containerName (backup/_format.py)
    table = az("backup", "item", "show", *vargs(), "-c", CONT, "-n", ITEM, *AFS, output="table")
    assert "share1" in table.stdout and "Completed" in table.stdout, table
    containers = az("backup", "container", "list", *vargs(), "--backup-management-type", "AzureStorage").json
    assert [c["properties"]["friendlyName"] for c in containers] == ["acct1"], containers
    S["backup_jobs"] = [job["name"]]


def test_second_backup_new_recovery_point(cli):
    need("backup_jobs")
    extra = cli.share / "added-later.txt"
    extra.write_bytes(b"not in the first recovery point\n")
    try:
        job = cli.az("backup", "protection", "backup-now", *vargs(), "-c", CONT, "-i", ITEM, *AFS).json
        assert poll_job(cli.az, job["name"])["properties"]["status"] == "Completed"
    finally:
        extra.unlink()
    S["backup_jobs"].append(job["name"])


def test_job_list_paged_and_filtered(cli):
    need("backup_jobs")
    az = cli.az
    all_jobs = jobs(az)
    ids = [j["name"] for j in all_jobs]
    assert len(ids) == len(set(ids)), "duplicate jobs across pages"
    # page_size = 2: the CLI's list followed nextLink; compare with the pages fetched one by one
    url, pages, raw_ids = api(f"{V}/backupJobs"), 0, []
    while url:
        body = rest(az, "get", url).json
        pages += 1
        assert len(body["value"]) <= 2, body
        raw_ids += [j["name"] for j in body["value"]]
        url = body.get("nextLink")
        assert pages < 50
    assert pages >= 2 and raw_ids == ids, (pages, raw_ids, ids)
    assert set(S["backup_jobs"]) <= set(ids)

    backups = jobs(az, "--operation", "Backup")
    assert sorted(j["name"] for j in backups) == sorted(S["backup_jobs"]), backups
    completed = jobs(az, "--status", "Completed")
    assert completed and all(j["properties"]["status"] == "Completed" for j in completed)
    storage = jobs(az, "--backup-management-type", "AzureStorage", "--operation", "Backup", "--status", "Completed")
    assert sorted(j["name"] for j in storage) == sorted(S["backup_jobs"]), storage
    today = dt.date.today()
    window = jobs(az, "--start-date", dmy(today - dt.timedelta(days=1)), "--end-date", dmy(today + dt.timedelta(days=1)))
    assert sorted(j["name"] for j in window) == sorted(ids), window
    assert jobs(az, "--start-date", "01-01-2016", "--end-date", "02-01-2016") == []
    table = az("backup", "job", "list", *vargs(), "--operation", "Backup", output="table")
    assert all(j in table.stdout for j in S["backup_jobs"]), table
    S["all_jobs"] = ids


def test_recoverypoint_list_show(cli):
    need("backup_jobs")
    az = cli.az
    rps = az("backup", "recoverypoint", "list", *vargs(), "-c", CONT, "-i", ITEM, *AFS).json
    assert len(rps) == 2, rps
    for rp in rps:
        assert rp["name"].isdigit(), rp
        assert rp["properties"]["objectType"] == "AzureFileShareRecoveryPoint", rp
    today = dt.date.today()
    ranged = az("backup", "recoverypoint", "list", *vargs(), "-c", CONT, "-i", ITEM, *AFS,
                "--start-date", dmy(today - dt.timedelta(days=1)), "--end-date", dmy(today + dt.timedelta(days=1))).json
    assert sorted(x["name"] for x in ranged) == sorted(x["name"] for x in rps)
    first = min(rps, key=lambda r: r["properties"]["recoveryPointTime"])
    shown = az("backup", "recoverypoint", "show", *vargs(), "-c", CONT, "-i", ITEM, *AFS, "-n", first["name"]).json
    assert shown["name"] == first["name"] and shown["id"] == first["id"], shown
    S["rp1"] = first["name"]


# ---------------------------------------------------------------------------------------------------
# Restore
# ---------------------------------------------------------------------------------------------------
def _check_restored(cli, target):
    assert target.is_dir(), f"nothing restored at {target}: {sorted(str(p) for p in cli.restore_root.rglob('*'))}"
    want, got = S["snapshot_rp1"], H.tree_snapshot(target)
    problems = [rel for rel, e in want.items()
                if rel not in got or got[rel].get("sha256") != e.get("sha256") or got[rel]["mode"] != e["mode"]
                or (e["type"] == "file" and got[rel]["mtime_ns"] != e["mtime_ns"])]
    extra = sorted(set(got) - set(want))
    assert not problems and not extra, f"restored tree differs: differing {problems}, unexpected {extra}"


def _restore_commands(cli):
    """restore-azurefileshare (full share) and restore-azurefiles (item level), as a user types them."""
    full = ["backup", "restore", "restore-azurefileshare", *vargs(), "--rp-name", S["rp1"], "-c", CONT, "-i", ITEM,
            "--resolve-conflict", "Overwrite", "--restore-mode", "AlternateLocation",
            "--target-storage-account", "acct1", "--target-resource-group-name", H.SRC_RG,
            "--target-file-share", "clifull"]
    ilr = ["backup", "restore", "restore-azurefiles", *vargs(), "--rp-name", S["rp1"], "-c", CONT, "-i", ITEM,
           "--resolve-conflict", "Overwrite", "--restore-mode", "AlternateLocation",
           "--target-storage-account", H.account_id(), "--target-file-share", "cliilr", "--target-folder", "picked",
           "--source-file-type", "File", "--source-file-path", "sub/deep/d.bin"]
    return full, ilr


def _check_cli_restores(cli, full_job, ilr_job):
    for job in (full_job, ilr_job):
        assert job["properties"]["operation"] == "Restore", job
        assert poll_job(cli.az, job["name"])["properties"]["status"] == "Completed", job
    _check_restored(cli, cli.restore_root / "clifull")
    picked = [p for p in (cli.restore_root / "cliilr" / "picked").rglob("*") if p.is_file()]
    assert len(picked) == 1 and picked[0].name == "d.bin", picked
    assert H.file_digest(picked[0]) == H.file_digest(cli.share / "sub" / "deep" / "d.bin")


def test_restore_azurefileshare_and_azurefiles(cli):
    """`az backup restore restore-azurefileshare` (full share, to another share) and `restore-azurefiles` (one
    file, to a folder of another share), straight at rsvault: az resolves both storage accounts through
    Microsoft.ClassicStorage (404) and Microsoft.Storage, which rsvault serves for its file-share accounts."""
    need("rp1")
    full, ilr = _restore_commands(cli)
    r1 = cli.az(*full)
    r2 = cli.az(*ilr)
    _check_cli_restores(cli, r1.json, r2.json)
    S["restored"] = True


# ---------------------------------------------------------------------------------------------------
# Cancel a running job
# ---------------------------------------------------------------------------------------------------
def test_job_stop(cli):
    """backup-now of a share that takes BIG / RATE seconds, `az backup job stop`, then Cancelled."""
    need("protected")
    az = cli.az
    job = az("backup", "protection", "backup-now", *vargs(), "-c", CONT, "-i", BIG_ITEM, *AFS).json
    jid = job["name"]
    running = job_show(az, jid)
    assert running["properties"]["status"] == "InProgress", f"{BIG} bytes finished too early: {running}"
    assert "Cancellable" in (running["properties"].get("actionsInfo") or []), running
    az("backup", "job", "stop", *vargs(), "-n", jid, output=None)
    seen = []
    final = None
    end = time.monotonic() + 30
    while time.monotonic() < end:
        final = job_show(az, jid)
        seen.append(final["properties"]["status"])
        if final["properties"]["status"] in TERMINAL:
            break
        time.sleep(0.3)
    assert final["properties"]["status"] == "Cancelled", seen
    assert set(seen) <= {"Cancelling", "Cancelled"}, seen
    assert final["properties"]["endTime"], final
    assert az("backup", "job", "wait", *vargs(), "-n", jid).json["properties"]["status"] == "Cancelled"
    assert az("backup", "recoverypoint", "list", *vargs(), "-c", CONT, "-i", BIG_ITEM, *AFS).json == []
    again = az("backup", "job", "stop", *vargs(), "-n", jid, ok=False)
    # the 400 of a second cancel: az prints the ARM error's code and message (an error body without null
    # members, which azure-core would otherwise drop, leaving only the status)
    assert again.rc != 0 and "BMSUserErrorJobNotCancellable" in again.stderr, again
    assert jid in [j["name"] for j in jobs(az, "--status", "Cancelled")]


def test_job_wait_result(cli):
    """The `az backup job wait` started in test_backup_now_and_job_wait returns the Completed job."""
    need("wait")
    jid, proc = S["wait"]
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, (out, err)
    assert f"Waiting for job '{jid}'" in err, err
    job = json.loads(out)
    assert job["name"] == jid and job["properties"]["status"] == "Completed", job


# ---------------------------------------------------------------------------------------------------
# Stop protection, delete data, delete vault
# ---------------------------------------------------------------------------------------------------
def test_disable_protection_retain_data(cli):
    need("protected")
    r = cli.az("backup", "protection", "disable", *vargs(), "-c", CONT, "-i", ITEM, *AFS, "-y").json
    assert r["properties"]["operation"] == "DisableBackup", r
    assert poll_job(cli.az, r["name"])["properties"]["status"] == "Completed"
    item = cli.az("backup", "item", "show", *vargs(), "-c", CONT, "-n", ITEM, *AFS).json
    assert item["properties"]["protectionState"] == "ProtectionStopped", item
    rps = cli.az("backup", "recoverypoint", "list", *vargs(), "-c", CONT, "-i", ITEM, *AFS).json
    assert len(rps) == 2, "stop protection with retain data keeps the recovery points"
    S["stopped"] = True


def test_disable_protection_delete_data_is_soft_then_undelete(cli):
    """Soft delete, as Azure (AlwaysOn for a vault `az backup vault create` made): the deleted
    shares stay listed and flagged, `az backup protection undelete` brings one back with its points,
    and the vault cannot be deleted while it holds soft-deleted data."""
    need("stopped")
    az = cli.az
    for item in (ITEM, BIG_ITEM):
        r = az("backup", "protection", "disable", *vargs(), "-c", CONT, "-i", item, *AFS,
               "--delete-backup-data", "true", "-y").json
        assert r["properties"]["operation"] == "DeleteBackupData", r
        assert poll_job(az, r["name"])["properties"]["status"] == "Completed"
    items = az("backup", "item", "list", *vargs()).json
    assert sorted(i["properties"]["isScheduledForDeferredDelete"] for i in items) == [True, True], items
    shown = az("backup", "item", "show", *vargs(), "-c", CONT, "-n", ITEM, *AFS).json
    assert shown["properties"]["deferredDeleteTimeRemaining"].startswith(("13.", "14.")), shown
    r = az("backup", "protection", "undelete", *vargs(), "-c", CONT, "-i", ITEM, *AFS).json
    assert r["properties"]["operation"] == "Undelete", r
    assert poll_job(az, r["name"])["properties"]["status"] == "Completed"
    shown = az("backup", "item", "show", *vargs(), "-c", CONT, "-n", ITEM, *AFS).json
    assert shown["properties"]["isScheduledForDeferredDelete"] is False, shown
    assert shown["properties"]["protectionState"] == "ProtectionStopped", shown
    rps = az("backup", "recoverypoint", "list", *vargs(), "-c", CONT, "-i", ITEM, *AFS).json
    assert len(rps) == 2, "an undeleted share keeps its recovery points"
    refused = az("backup", "vault", "delete", "-g", RG, "-n", VAULT, "-y", ok=False)
    assert refused.rc != 0 and "soft-deleted" in refused.stderr, refused
    assert VAULT in [v["name"] for v in az("backup", "vault", "list", "-g", RG).json]
    # An empty vault goes.
    az("backup", "vault", "create", "-g", RG, "-n", "emptyvault", "-l", "westus", output=None)
    az("backup", "vault", "delete", "-g", RG, "-n", "emptyvault", "-y", output=None)
    shown = az("backup", "vault", "show", "-g", RG, "-n", "emptyvault", ok=False)
    assert shown.rc != 0 and "ResourceNotFound" in shown.stderr, shown


def test_server_log_clean(cli):
    """No panic and no 5xx in the server log over the whole CLI session."""
    text = cli.server.log_path.read_text(errors="replace")
    assert "panicked" not in text, cli.server.tail()
    failures = [r for r in cli.az.log if r.rc != 0 and " 50" in r.stderr and "status code" in r.stderr.lower()]
    assert not failures, failures
