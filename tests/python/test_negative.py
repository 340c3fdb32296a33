"""Bad input over raw HTTP: clear ARM errors with the right status, nothing written, no 5xx."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest
import requests

from conftest import (
    SUB, TERMINAL_JOB, VAULT_RG, account_id, op_id_from, share_item, share_policy_body, storage_container,
    tree_snapshot, vault_path, vm_container, vm_item, wait_for,
)

VAULT = "negvault"
V = vault_path(VAULT)
ITEM = f"{V}/backupFabrics/Azure/protectionContainers/{storage_container()}/protectedItems/{share_item('share2')}"


def arm_error(r, status, code=None):
    """Assert an ARM error envelope with the given status (and code)."""
    sent = r.request.body if isinstance(r.request.body, (bytes, type(None))) else r.request.body.encode()
    sent = (sent or b"")[:300].decode(errors="replace")
    assert r.status_code == status, (f"{r.request.method} {r.request.url} body={sent!r} -> {r.status_code} "
                                     f"{r.text[:500]}")
    try:
        body = r.json()
    except ValueError:
        pytest.fail(f"error body is not JSON: {r.headers.get('content-type')} {r.text[:300]!r}")
    assert isinstance(body.get("error"), dict), body
    assert isinstance(body["error"].get("code"), str) and body["error"]["code"], body
    assert isinstance(body["error"].get("message"), str) and body["error"]["message"], body
    assert body["error"]["code"] != "MissingSubscriptionRegistration"
    if code is not None:
        assert body["error"]["code"] == code, body
    assert "retry-after" not in {k.lower() for k in r.headers}, f"no Retry-After on a final 4xx: {r.headers}"
    check_ids(r)
    return body["error"]


def check_ids(r):
    assert r.headers.get("x-ms-request-id"), f"missing x-ms-request-id: {r.request.url}"
    sent = r.request.headers.get("x-ms-client-request-id")
    if sent:
        assert r.headers.get("x-ms-client-request-id") == sent, (sent, r.headers.get("x-ms-client-request-id"))


def wait_job(raw, job_id):
    return wait_for(lambda: raw.get(f"{V}/backupJobs/{job_id}").json(),
                    lambda j: j.get("properties", {}).get("status") in TERMINAL_JOB, interval=0.2,
                    what=f"job {job_id}")


def job_from_async(raw, r):
    assert r.status_code == 202, (r.status_code, r.text)
    op = op_id_from(r.headers["Azure-AsyncOperation"])
    st = wait_for(lambda: raw.get(f"{V}/backupOperations/{op}").json(),
                  lambda s: (s.get("properties") or {}).get("jobId") or s.get("status") != "InProgress",
                  interval=0.2, what="jobId")
    return st["properties"]["jobId"]


@pytest.fixture(scope="module")
def neg(raw, env):
    """A vault with share2 protected and backed up once (all over raw HTTP)."""
    r = raw.put(V, json={"location": "westus", "sku": {"name": "Standard"}, "properties": {}})
    assert r.status_code in (200, 201), r.text
    r = raw.post(f"{V}/backupFabrics/Azure/refreshContainers",
                 params={"$filter": "backupManagementType eq 'AzureStorage'"})
    assert r.status_code == 202, r.text
    wait_for(lambda: raw.get(r.headers["Location"]).status_code, lambda c: c == 204, interval=0.2,
             what="refresh")
    r = raw.put(f"{V}/backupFabrics/Azure/protectionContainers/{storage_container()}",
                json={"properties": {"containerType": "StorageContainer", "backupManagementType": "AzureStorage",
                                     "sourceResourceId": account_id(), "friendlyName": "acct1"}})
    assert r.status_code in (200, 202), r.text
    if r.status_code == 202:
        wait_for(lambda: raw.get(r.headers["Location"]).status_code, lambda c: c in (200, 204), interval=0.2,
                 what="register")
    r = raw.put(f"{V}/backupPolicies/sp", json=share_policy_body())
    assert r.status_code in (200, 202), r.text
    r = raw.put(ITEM, json={"properties": {"protectedItemType": "AzureFileShareProtectedItem",
                                           "sourceResourceId": account_id(), "policyId": f"{V}/backupPolicies/sp"}})
    assert r.status_code in (200, 202), r.text
    if r.status_code == 202:
        wait_for(lambda: raw.get(r.headers["Azure-AsyncOperation"]).json().get("status"),
                 lambda s: s != "InProgress", interval=0.2, what="protect")
    r = raw.post(f"{ITEM}/backup", json={"properties": {"objectType": "AzureFileShareBackupRequest"}})
    job_id = job_from_async(raw, r)
    job = wait_job(raw, job_id)
    assert job["properties"]["status"] == "Completed", job
    rps = raw.get(f"{ITEM}/recoveryPoints").json()["value"]
    assert len(rps) == 1, rps
    return {"job": job_id, "rp": rps[0]["name"]}


# ---------------------------------------------------------------------------------------------------
def test_no_token_401(server, raw):
    anon = server.http(token=None)
    arm_error(anon.get(V), 401)
    arm_error(anon.get(f"/subscriptions/{SUB}/providers/Microsoft.RecoveryServices/vaults"), 401)
    bad = server.http(token="not-the-token")
    arm_error(bad.get(f"{V}/backupJobs"), 401)
    arm_error(bad.post(f"{V}/backupJobsExport"), 401)


def test_missing_api_version(raw, neg):
    arm_error(raw.get(f"{V}/backupJobs", api_version=None), 400, "MissingApiVersionParameter")
    arm_error(raw.get(V, api_version=None), 400, "MissingApiVersionParameter")
    arm_error(raw.post(f"{ITEM}/backup", api_version=None,
                       json={"properties": {"objectType": "AzureFileShareBackupRequest"}}),
              400, "MissingApiVersionParameter")


@pytest.mark.parametrize("ver", ["banana", "2026-13-45", "2026-02", "2026-02-01x", "01-02-2026"])
def test_invalid_api_version(raw, neg, ver):
    arm_error(raw.get(f"{V}/backupJobs", api_version=ver), 400, "InvalidApiVersionParameter")


def test_empty_api_version(raw, neg):
    e = arm_error(raw.get(f"{V}/backupJobs", api_version=""), 400)
    assert e["code"] in ("MissingApiVersionParameter", "InvalidApiVersionParameter"), e


@pytest.mark.parametrize("ver", ["2016-12-01", "2019-05-13", "2026-02-01", "2026-03-31-preview", "2031-01-01"])
def test_any_published_or_later_api_version_accepted(raw, neg, ver):
    r = raw.get(f"{V}/backupJobs/{neg['job']}", api_version=ver)
    assert r.status_code == 200, (ver, r.text)
    check_ids(r)


def test_unknown_things_404(raw, neg):
    other = vault_path("no-such-vault")
    arm_error(raw.get(other), 404)
    arm_error(raw.get(f"{other}/backupJobs"), 404)
    arm_error(raw.get(f"{V}/backupJobs/{uuid.uuid4()}"), 404)
    r = raw.get(f"{V}/backupJobs/not-a-guid")
    arm_error(r, 404 if r.status_code != 400 else 400)
    arm_error(raw.post(f"{V}/backupJobs/{uuid.uuid4()}/cancel"), 404)
    arm_error(raw.get(f"{V}/backupPolicies/nope"), 404)
    arm_error(raw.get(f"{V}/backupOperations/{uuid.uuid4()}"), 404)
    arm_error(raw.get(f"{V}/backupFabrics/Azure/protectionContainers/{storage_container()}/protectedItems/"
                      f"{share_item('nosuchshare')}"), 404)
    arm_error(raw.get(f"{V}/backupFabrics/Azure/protectionContainers/{vm_container('ghost')}/protectedItems/"
                      f"{vm_item('ghost')}"), 404)
    arm_error(raw.get(f"{ITEM}/recoveryPoints/123456789"), 404)
    arm_error(raw.post(f"{ITEM}/recoveryPoints/123456789/restore",
                       json={"properties": {"objectType": "AzureFileShareRestoreRequest",
                                            "recoveryType": "OriginalLocation", "copyOptions": "Overwrite",
                                            "restoreRequestType": "FullShareRestore",
                                            "sourceResourceId": account_id()}}), 404)
    r = raw.get(f"{V}/noSuchCollection")
    arm_error(r, 404 if r.status_code != 400 else 400)


def test_paths_case_insensitive_and_percent_decoded(raw, neg):
    upper = V.replace("/subscriptions/", "/SUBSCRIPTIONS/").replace("/vaults/", "/VAULTS/")
    r = raw.get(f"{upper}/BACKUPJOBS/{neg['job']}")
    assert r.status_code == 200, r.text
    enc = ITEM.replace(";", "%3B")
    r = raw.get(enc)
    assert r.status_code == 200, r.text
    r = raw.get(ITEM.replace("AzureFileShare;share2", "azurefileshare;SHARE2"))
    assert r.status_code == 200, r.text


def test_malformed_json_400(raw, neg):
    for path, method in ((f"{V}/backupPolicies/broken", "PUT"), (f"{ITEM}/backup", "POST"), (ITEM, "PUT")):
        r = raw.request(method, path, data=b'{"properties": {', headers={"Content-Type": "application/json"})
        arm_error(r, 400)
    r = raw.put(f"{V}/backupPolicies/broken", data=b"[1,2,3]", headers={"Content-Type": "application/json"})
    arm_error(r, 400)
    arm_error(raw.get(f"{V}/backupPolicies/broken"), 404)  # nothing written


def test_wrong_object_type_and_enums_400(raw, neg):
    e = arm_error(raw.post(f"{ITEM}/backup", json={"properties": {"objectType": "NoSuchBackupRequest"}}), 400)
    assert "objectType" in e["message"] or "NoSuchBackupRequest" in e["message"], e
    arm_error(raw.post(f"{ITEM}/recoveryPoints/{neg['rp']}/restore",
                       json={"properties": {"objectType": "TotallyWrongRestoreRequest"}}), 400)
    arm_error(raw.post(f"{ITEM}/recoveryPoints/{neg['rp']}/restore",
                       json={"properties": {"objectType": "AzureFileShareRestoreRequest",
                                            "recoveryType": "AlternateLocation", "copyOptions": "Sometimes",
                                            "restoreRequestType": "FullShareRestore",
                                            "sourceResourceId": account_id(),
                                            "targetDetails": {"name": "x", "targetResourceId": account_id()}}}),
              400)
    body = share_policy_body()
    body["properties"]["backupManagementType"] = "NotAType"
    arm_error(raw.put(f"{V}/backupPolicies/badtype", json=body), 400)
    body = share_policy_body()
    body["properties"]["schedulePolicy"]["scheduleRunFrequency"] = "Fortnightly"
    arm_error(raw.put(f"{V}/backupPolicies/badenum", json=body), 400)
    arm_error(raw.get(f"{V}/backupPolicies/badtype"), 404)
    arm_error(raw.get(f"{V}/backupPolicies/badenum"), 404)
    arm_error(raw.put(ITEM, json={"properties": {"protectedItemType": "NoSuchItemType",
                                                 "policyId": f"{V}/backupPolicies/sp"}}), 400)


@pytest.mark.parametrize("flt", [
    "status eq Completed",                 # unquoted value
    "status ne 'Completed'",               # only eq
    "colour eq 'blue'",                    # unknown field
    "status eq 'Completed' or operation eq 'Backup'",
    "startTime eq 'yesterday'",
    "startTime eq '2026-01-01 13:00:00 PM'",  # 13 on a 12-hour clock
    "status eq 'NotAStatus'",
    "status eq 'Completed' and",
])
def test_bad_job_filter_400(raw, neg, flt):
    arm_error(raw.get(f"{V}/backupJobs", params={"$filter": flt}), 400)


@pytest.mark.parametrize("tok", ["!!!", "not-a-token", "AAAA", "%%%"])
def test_bad_skiptoken_400(raw, neg, tok):
    arm_error(raw.get(f"{V}/backupJobs", params={"$skipToken": tok}), 400)


def _restore_body(name, folder=None, rtype="FullShareRestore", path=None):
    props = {"objectType": "AzureFileShareRestoreRequest", "recoveryType": "AlternateLocation",
             "sourceResourceId": account_id(), "copyOptions": "Overwrite", "restoreRequestType": rtype,
             "targetDetails": {"name": name, "targetResourceId": account_id()}}
    if folder is not None or path is not None:
        props["restoreFileSpecs"] = [{"path": path, "fileSpecType": "File", "targetFolderPath": folder}]
    return {"properties": props}


@pytest.mark.parametrize("body", [
    _restore_body("../escape"),
    _restore_body("ok/../../escape"),
    _restore_body("/etc"),
    _restore_body("fine", folder="../../escape"),
    _restore_body("fine", rtype="ItemLevelRestore", path="../../../etc/passwd", folder="x"),
    _restore_body(".."),
])
def test_restore_target_escape_400(raw, neg, env, body):
    before_root = set(os.listdir(env.root))
    before_restore = tree_snapshot(env.restore_root)
    r = raw.post(f"{ITEM}/recoveryPoints/{neg['rp']}/restore", json=body)
    arm_error(r, 400)
    assert set(os.listdir(env.root)) == before_root, "something was written outside the restore roots"
    assert tree_snapshot(env.restore_root) == before_restore, "a rejected restore wrote below the restore root"


def test_restore_absolute_target_folder_is_contained(raw, neg, env):
    """targetFolderPath is a folder of the target share: a leading '/' may be refused (400) or taken as
    the share root, but nothing may land outside the restore root."""
    outside = Path("/tmp") / f"rsvault-escape-{uuid.uuid4().hex[:8]}"
    r = raw.post(f"{ITEM}/recoveryPoints/{neg['rp']}/restore", json=_restore_body("abs", folder=str(outside)))
    if r.status_code == 202:
        job = wait_job(raw, job_from_async(raw, r))
        assert job["properties"]["status"] == "Completed", job
        inside = env.restore_root / "abs" / str(outside).lstrip("/")
        assert (inside / "a.txt").exists(), sorted(str(p) for p in (env.restore_root / "abs").rglob("*"))
    else:
        arm_error(r, 400)
    assert not outside.exists(), f"restore wrote to {outside}, outside the restore roots"


def test_restore_symlink_escape_400(raw, neg, env, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    link = env.restore_root / "sneaky"
    link.symlink_to(outside)
    try:
        r = raw.post(f"{ITEM}/recoveryPoints/{neg['rp']}/restore", json=_restore_body("sneaky"))
        if r.status_code == 202:
            # accepted at the door: the job must then fail and write nothing outside
            job_id = job_from_async(raw, r)
            job = wait_job(raw, job_id)
            assert job["properties"]["status"] == "Failed", job
        else:
            arm_error(r, 400)
        assert list(outside.iterdir()) == [], "restore followed a symlink out of the restore root"
    finally:
        link.unlink()


def test_cancel_finished_job_400(raw, neg):
    e = arm_error(raw.post(f"{V}/backupJobs/{neg['job']}/cancel"), 400)
    assert any(w in e["message"].lower() for w in ("complet", "finish", "not cancellable", "cannot")), e


def test_backup_unprotected_item_400(raw, neg):
    # share1 exists as a source and its container is registered, but it is not protected in this vault
    item = f"{V}/backupFabrics/Azure/protectionContainers/{storage_container()}/protectedItems/{share_item('share1')}"
    r = raw.post(f"{item}/backup", json={"properties": {"objectType": "AzureFileShareBackupRequest"}})
    arm_error(r, 400)
    vm = f"{V}/backupFabrics/Azure/protectionContainers/{vm_container()}/protectedItems/{vm_item()}"
    arm_error(raw.post(f"{vm}/backup", json={"properties": {"objectType": "IaasVMBackupRequest"}}), 400)


def test_body_over_4mib_413(server, neg):
    """413 with an ARM body; and the client can tell: either the connection stays usable or the 413 says
    `Connection: close` (a silent close makes the next request on a keep-alive connection fail)."""
    s = server.http()
    big = {"properties": {"objectType": "AzureFileShareBackupRequest", "pad": "x" * (4 * 1024 * 1024 + 10)}}
    reqs = [("POST", f"{ITEM}/backup", json.dumps(big).encode()),
            ("PUT", f"{V}/backupPolicies/huge", b"{" + b" " * (5 * 1024 * 1024) + b"}")] * 2
    for i, (method, path, data) in enumerate(reqs):
        try:
            r = s.request(method, path, data=data, headers={"Content-Type": "application/json"})
        except requests.RequestException as e:
            pytest.fail(f"request {i} ({method} {len(data)} bytes): the connection failed instead of a 413: {e}")
        arm_error(r, 413)
        try:
            g = s.get(f"{V}/backupPolicies/huge")
        except requests.RequestException as e:
            pytest.fail(f"after a 413 (headers {dict(r.headers)}) the next request on the same keep-alive "
                        f"connection failed: the server closed it without `Connection: close`: {e}")
        arm_error(g, 404)


def test_forbidden_names_400(raw, neg):
    arm_error(raw.put(f"{V}/backupPolicies/bad%3Cname%3E", json=share_policy_body()), 400)
    arm_error(raw.put(vault_path("bad%20vault%2A"), json={"location": "westus", "sku": {"name": "Standard"}}), 400)


def test_delete_vault_with_protected_items_refused(raw, neg):
    r = raw.delete(V)
    assert r.status_code in (400, 409), r.text
    arm_error(r, r.status_code)
    assert raw.get(V).status_code == 200


def test_request_ids_on_every_response(raw, server, neg):
    for r in (raw.get(V), raw.get(f"{V}/backupJobs"), server.http(token=None).get(V),
              raw.get(V, api_version=None), raw.get(f"{V}/nothing/here")):
        check_ids(r)
    assert raw.get(V).headers["x-ms-request-id"] != raw.get(V).headers["x-ms-request-id"]


def test_policy_in_use_cannot_be_deleted(raw, neg):
    r = raw.delete(f"{V}/backupPolicies/sp")
    assert r.status_code in (400, 409), (r.status_code, r.text)
    arm_error(r, r.status_code)
    assert raw.get(f"{V}/backupPolicies/sp").status_code == 200


def test_protect_with_missing_or_mismatched_policy(raw, neg):
    vm = f"{V}/backupFabrics/Azure/protectionContainers/{vm_container('vm2')}/protectedItems/{vm_item('vm2')}"
    body = {"properties": {"protectedItemType": "Microsoft.Compute/virtualMachines",
                           "sourceResourceId": f"/subscriptions/{SUB}/resourceGroups/rg1/providers/"
                                               f"Microsoft.Compute/virtualMachines/vm2",
                           "policyId": f"{V}/backupPolicies/doesnotexist"}}
    r = raw.put(vm, json=body)
    assert r.status_code in (400, 404), (r.status_code, r.text)
    arm_error(r, r.status_code)
    # a file-share policy for a VM
    body["properties"]["policyId"] = f"{V}/backupPolicies/sp"
    arm_error(raw.put(vm, json=body), 400)
    arm_error(raw.get(vm), 404)  # nothing written


@pytest.mark.parametrize("props", [
    "AzureFileShareBackupRequest",
    {"objectType": "AzureFileShareBackupRequest", "recoveryPointExpiryTimeInUTC": 12},
    {"objectType": "AzureFileShareBackupRequest", "recoveryPointExpiryTimeInUTC": "soon"},
    {"objectType": 7},
], ids=["properties-string", "expiry-number", "expiry-garbage", "objectType-number"])
def test_backup_body_wrong_types_400(raw, neg, props):
    arm_error(raw.post(f"{ITEM}/backup", json={"properties": props}), 400)


@pytest.mark.parametrize("count", ["thirty", -5, 0, 1.5])
def test_policy_wrong_types_400(raw, neg, count):
    body = share_policy_body()
    body["properties"]["retentionPolicy"]["dailySchedule"]["retentionDuration"]["count"] = count
    arm_error(raw.put(f"{V}/backupPolicies/wrongtypes", json=body), 400)
    arm_error(raw.get(f"{V}/backupPolicies/wrongtypes"), 404)


def test_wrong_method_is_an_arm_error(raw, neg):
    for method, path in (("DELETE", f"{V}/backupJobs/{neg['job']}"), ("PUT", f"{V}/backupJobs"),
                         ("PATCH", f"{V}/backupPolicies/sp"), ("GET", f"{ITEM}/backup")):
        r = raw.request(method, path, json={})
        assert 400 <= r.status_code < 500, (method, path, r.status_code, r.text)
        arm_error(r, r.status_code)


def test_tampered_skiptoken_400(raw, neg):
    # enough jobs for a second page with page_size = 2
    for _ in range(2):
        r = raw.post(f"{ITEM}/backup", json={"properties": {"objectType": "AzureFileShareBackupRequest"}})
        wait_job(raw, job_from_async(raw, r))
    body = raw.get(f"{V}/backupJobs").json()
    nl = body.get("nextLink")
    assert nl, body
    from urllib.parse import parse_qs, urlsplit

    q = {k.lower(): v[0] for k, v in parse_qs(urlsplit(nl).query).items()}
    tok = q["$skiptoken"]
    assert tok and all(c.isalnum() or c in "-_.~" for c in tok), f"skip token must be URL-safe: {tok!r}"
    import base64

    garbage = base64.urlsafe_b64encode(b"garbage|zz").decode().rstrip("=")
    for bad in (tok[: len(tok) // 2], garbage, "!" + tok):
        arm_error(raw.get(f"{V}/backupJobs", params={"$skipToken": bad}), 400)
    # a token from one filter reused with another: refused or consistent, never a 5xx
    r = raw.get(f"{V}/backupJobs", params={"$skipToken": tok, "$filter": "status eq 'Completed'"})
    assert r.status_code in (200, 400), r.text


def test_concurrent_requests_no_5xx(raw, neg, server):
    """A bounded burst: 3 backups of one item (queued), policy writes and reads in 8 threads."""
    from concurrent.futures import ThreadPoolExecutor

    def backup(_):
        return raw.post(f"{ITEM}/backup", json={"properties": {"objectType": "AzureFileShareBackupRequest"}})

    def policy(i):
        return raw.put(f"{V}/backupPolicies/burst{i}", json=share_policy_body())

    def reads(i):
        return raw.get(f"{V}/backupJobs") if i % 2 else raw.get(f"{V}/backupPolicies")

    with ThreadPoolExecutor(8) as ex:
        futs = [ex.submit(backup, i) for i in range(3)]
        futs += [ex.submit(policy, i) for i in range(12)]
        futs += [ex.submit(reads, i) for i in range(24)]
        results = [f.result() for f in futs]
    bad = [(r.request.method, r.request.url, r.status_code, r.text[:200]) for r in results if r.status_code >= 400]
    assert not bad, bad
    jobs = [job_from_async(raw, r) for r in results[:3]]
    assert len(set(jobs)) == 3
    for j in jobs:
        assert wait_job(raw, j)["properties"]["status"] == "Completed"
    names = {p["name"] for p in raw.get(f"{V}/backupPolicies").json()["value"]}
    assert {f"burst{i}" for i in range(12)} <= names


def test_vaults_scoped_by_subscription(raw, neg):
    other = "11111111-2222-3333-4444-555555555555"
    r = raw.get(f"/subscriptions/{other}/providers/Microsoft.RecoveryServices/vaults", api_version="2026-08-01")
    assert r.status_code == 200, r.text
    assert VAULT not in [v["name"] for v in r.json()["value"]]
    arm_error(raw.get(vault_path(VAULT, sub=other)), 404)
    arm_error(raw.get(vault_path(VAULT, sub=other) + f"/backupJobs/{neg['job']}"), 404)
    r = raw.get(f"/subscriptions/{SUB}/resourceGroups/otherrg/providers/Microsoft.RecoveryServices/vaults",
                api_version="2026-08-01")
    assert r.status_code == 200 and VAULT not in [v["name"] for v in r.json()["value"]], r.text
    arm_error(raw.get(vault_path(VAULT, rg="otherrg")), 404)
