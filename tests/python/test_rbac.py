"""Who may do what (issue 12), through the official SDKs: azure-mgmt-authorization assigns Azure's
built-in roles at Azure's scopes, the backup SDK surfaces denials as `AuthorizationFailed`, and
azure-mgmt-monitor reads the activity log. Tokens come from `rsvault token issue`."""

from __future__ import annotations

import base64
import datetime as dt
import json
import subprocess
import time
import uuid

import pytest
import requests
from azure.core.exceptions import HttpResponseError

from conftest import BIN, RECORDER, SUB, StaticToken, share_policy_body, share_item, storage_container, \
    account_id, wait_for

BACKUP_READER = "a795c7a0-d4a2-40c1-ae25-d81f01202912"
BACKUP_OPERATOR = "00c29273-979b-4161-815c-10b084fb9324"
READER = "acdd72a7-3385-48ef-bd42-f606fba81ae7"
RG_A, RG_B = "rbac-a", "rbac-b"
VAULT = "rbacvault"


def role_id(guid: str) -> str:
    return f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{guid}"


def vault_id(rg: str) -> str:
    return f"/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.RecoveryServices/vaults/{VAULT}"


def issue(server, principal: str, expires_in: int | None = None) -> str:
    args = [str(BIN), "token", "issue", "--principal-id", principal, "--data", str(server.data),
            "--config", str(server.config_path)]
    if expires_in is not None:
        args += ["--expires-in", str(expires_in)]
    out = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def clients(server, token):
    from azure.mgmt.authorization import AuthorizationManagementClient
    from azure.mgmt.monitor import MonitorManagementClient
    from azure.mgmt.recoveryservicesbackup import RecoveryServicesBackupClient

    kw = dict(base_url=server.base_url, connection_verify=server.cert, retry_total=0,
              raw_response_hook=RECORDER.sdk_hook)
    cred = StaticToken(token)
    return (AuthorizationManagementClient(cred, SUB, **kw),
            RecoveryServicesBackupClient(cred, SUB, polling_interval=0.2, **kw),
            MonitorManagementClient(cred, SUB, **kw))


@pytest.fixture(scope="module")
def setup(server, raw):
    """Two vaults named alike in two resource groups, each with the share protected; a token that
    expires in a second (checked at the end of the module, past the clock-skew leeway)."""
    short = issue(server, "py-operator", expires_in=1)
    issued_at = time.monotonic()
    for rg in (RG_A, RG_B):
        v = vault_id(rg)
        r = raw.put(v, json={"location": "westus", "sku": {"name": "Standard"}})
        assert r.status_code in (200, 201), r.text
        r = raw.put(f"{v}/backupPolicies/fspol", json=share_policy_body())
        assert r.status_code == 200, r.text
        item = f"{v}/backupFabrics/Azure/protectionContainers/{storage_container()}/protectedItems/{share_item()}"
        r = raw.put(item, json={"properties": {"protectedItemType": "AzureFileShareProtectedItem",
                                               "sourceResourceId": account_id(), "policyId": f"{v}/backupPolicies/fspol"}})
        assert r.status_code == 202, r.text
        wait_for(lambda: raw.get(item), lambda x: x.status_code == 200, what="item protected")
    authz, _, _ = clients(server, server.token)
    from azure.mgmt.authorization.models import RoleAssignmentCreateParameters

    made = {}
    for principal, role, scope in [
        ("py-reader", BACKUP_READER, vault_id(RG_A)),
        ("py-operator", BACKUP_OPERATOR, f"/subscriptions/{SUB}/resourceGroups/{RG_A}"),
        ("py-auditor", READER, f"/subscriptions/{SUB}"),
    ]:
        a = authz.role_assignments.create(scope, str(uuid.uuid4()), RoleAssignmentCreateParameters(
            role_definition_id=role_id(role), principal_id=principal, principal_type="ServicePrincipal"))
        assert a.principal_id == principal and a.scope == scope and a.role_definition_id == role_id(role)
        made[principal] = a
    return {"short": short, "issued_at": issued_at, "assignments": made}


def backup_body():
    return {"properties": {"objectType": "AzureFileShareBackupRequest"}}


def test_sdk_lists_and_reads_assignments_and_roles(server, setup):
    authz, _, _ = clients(server, server.token)
    at_a = list(authz.role_assignments.list_for_scope(vault_id(RG_A), filter="atScope()"))
    principals = {a.principal_id for a in at_a}
    # The vault's own assignment and the inherited ones (resource group, subscription).
    assert {"py-reader", "py-operator", "py-auditor"} <= principals, principals
    at_b = {a.principal_id for a in authz.role_assignments.list_for_scope(vault_id(RG_B), filter="atScope()")}
    assert "py-reader" not in at_b and "py-operator" not in at_b and "py-auditor" in at_b, at_b
    mine = list(authz.role_assignments.list_for_subscription(filter="principalId eq 'py-reader'"))
    assert [a.principal_id for a in mine] == ["py-reader"]
    got = authz.role_assignments.get_by_id(setup["assignments"]["py-reader"].id)
    assert got.role_definition_id == role_id(BACKUP_READER)
    d = authz.role_definitions.get(f"/subscriptions/{SUB}", BACKUP_OPERATOR)
    assert d.role_name == "Backup Operator" and d.role_type == "BuiltInRole"
    assert any(a.endswith("protectedItems/backup/action") for a in d.permissions[0].actions)
    by_name = list(authz.role_definitions.list(f"/subscriptions/{SUB}", filter="roleName eq 'Backup Reader'"))
    assert [x.name for x in by_name] == [BACKUP_READER]


def test_backup_reader_reads_but_cannot_back_up(server, setup):
    _, bk, _ = clients(server, issue(server, "py-reader"))
    items = list(bk.backup_protected_items.list(VAULT, RG_A))
    assert [i.name.lower() for i in items] == [share_item().lower()]
    list(bk.backup_jobs.list(VAULT, RG_A))
    with pytest.raises(HttpResponseError) as e:
        bk.backups.trigger(VAULT, RG_A, "Azure", storage_container(), share_item(), backup_body())
    assert e.value.status_code == 403
    assert e.value.error.code == "AuthorizationFailed", e.value
    assert "py-reader" in e.value.error.message and "backup/action" in e.value.error.message
    # Its vault-scope role says nothing about the vault of the same name in another group.
    with pytest.raises(HttpResponseError) as e:
        list(bk.backup_protected_items.list(VAULT, RG_B))
    assert e.value.status_code == 403 and e.value.error.code == "AuthorizationFailed"


def test_backup_operator_backs_up_but_cannot_stop_protection(server, setup):
    _, bk, _ = clients(server, issue(server, "py-operator"))
    # Assigned at the resource group: inherited by the vault in it.
    status, headers = bk.backups.trigger(VAULT, RG_A, "Azure", storage_container(), share_item(), backup_body(),
                                         cls=lambda p, d, h: (p.http_response.status_code, h))
    assert status == 202
    with pytest.raises(HttpResponseError) as e:
        bk.protected_items.delete(VAULT, RG_A, "Azure", storage_container(), share_item())
    assert e.value.status_code == 403 and e.value.error.code == "AuthorizationFailed"
    with pytest.raises(HttpResponseError) as e:
        bk.protection_policies.create_or_update(VAULT, RG_A, "other", share_policy_body())
    assert e.value.status_code == 403
    # Not inherited by the other resource group.
    with pytest.raises(HttpResponseError) as e:
        bk.backups.trigger(VAULT, RG_B, "Azure", storage_container(), share_item(), backup_body())
    assert e.value.status_code == 403


def test_only_owners_assign_roles(server, setup):
    authz, _, _ = clients(server, issue(server, "py-operator"))
    from azure.mgmt.authorization.models import RoleAssignmentCreateParameters

    with pytest.raises(HttpResponseError) as e:
        authz.role_assignments.create(vault_id(RG_A), str(uuid.uuid4()), RoleAssignmentCreateParameters(
            role_definition_id=role_id(BACKUP_OPERATOR), principal_id="py-friend"))
    assert e.value.status_code == 403 and e.value.error.code == "AuthorizationFailed"


def test_activity_log_through_azure_mgmt_monitor(server, setup):
    start = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    end = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    flt = f"eventTimestamp ge '{start}' and eventTimestamp le '{end}' and resourceGroupName eq '{RG_A}'"
    _, _, mon = clients(server, issue(server, "py-auditor"))
    events = list(mon.activity_logs.list(filter=flt))
    denied = [e for e in events if e.caller == "py-reader" and e.status.value == "Failed"
              and e.operation_name.value.endswith("protectedItems/backup/action")]
    assert denied, [(e.caller, e.operation_name.value, e.status.value) for e in events][:20]
    ev = denied[0]
    assert ev.sub_status.value == "Forbidden"
    assert ev.http_request.client_ip_address == "127.0.0.1"
    assert ev.authorization.action.endswith("backup/action")
    assert ev.resource_group_name == RG_A
    ok = [e for e in events if e.caller == "py-operator" and e.status.value == "Accepted"]
    assert ok, "the operator's backup is logged"
    # A Backup Reader may not read the activity log (Microsoft.Insights/eventtypes/values/read).
    _, _, mon = clients(server, issue(server, "py-reader"))
    with pytest.raises(HttpResponseError) as e:
        list(mon.activity_logs.list(filter=flt))
    assert e.value.status_code == 403


def test_forged_and_expired_tokens_are_401(server, setup):
    url = f"{server.base_url}{vault_id(RG_A)}/backupJobs?api-version=2026-02-01"

    def status(token):
        r = requests.get(url, headers={"Authorization": f"Bearer {token}"}, verify=server.cert, timeout=10)
        return r.status_code, r.json()["error"]["code"] if r.status_code != 200 else None

    good = issue(server, "py-reader")
    assert status(good) == (200, None)
    h, p, s = good.split(".")
    claims = json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
    claims["oid"] = claims["sub"] = "py-auditor"
    forged = ".".join([h, base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("="), s])
    assert status(forged) == (401, "InvalidAuthenticationToken")
    sig = bytearray(base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)))
    sig[5] ^= 1
    assert status(".".join([h, p, base64.urlsafe_b64encode(bytes(sig)).decode().rstrip("=")])) == \
        (401, "InvalidAuthenticationToken")
    left = 32 - (time.monotonic() - setup["issued_at"])  # past the 30 s leeway
    if left > 0:
        time.sleep(left)
    assert status(setup["short"]) == (401, "ExpiredAuthenticationToken")


def test_past_the_budget_429_with_retry_after_and_the_sdk_waits(tmp_path):
    """A caller over `[limits] reads_per_minute` gets 429 TooManyRequests with Retry-After; the
    SDK's ARM retry policy waits that long and then succeeds."""
    from conftest import Server, toml_config

    (tmp_path / "restore").mkdir()
    cfg = toml_config([tmp_path / "restore"], []).replace("[limits]", "[limits]\nreads_per_minute = 30", 1)
    srv = Server(tmp_path, cfg, name="limits").start()
    try:
        from azure.mgmt.authorization.models import RoleAssignmentCreateParameters
        from azure.mgmt.recoveryservicesbackup import RecoveryServicesBackupClient

        authz, _, _ = clients(srv, srv.token)
        authz.role_assignments.create(f"/subscriptions/{SUB}", str(uuid.uuid4()), RoleAssignmentCreateParameters(
            role_definition_id=role_id(READER), principal_id="py-busy"))
        token = issue(srv, "py-busy")
        raw = srv.http(token)
        v = vault_id(RG_A)
        seen = []
        for _ in range(40):
            r = raw.get(f"/subscriptions/{SUB}/providers/Microsoft.RecoveryServices/vaults")
            seen.append(r.status_code)
            if r.status_code == 429:
                break
            assert r.status_code == 200, r.text
            assert int(r.headers["x-ms-ratelimit-remaining-subscription-reads"]) >= 0
        assert seen[-1] == 429 and len(seen) >= 30, seen
        assert r.json()["error"]["code"] == "TooManyRequests"
        wait = int(r.headers["Retry-After"])
        assert 1 <= wait <= 2, wait
        # The SDK retries a 429 after Retry-After (its default policy; retry_total > 0).
        bk = RecoveryServicesBackupClient(StaticToken(token), SUB, base_url=srv.base_url,
                                          connection_verify=srv.cert, retry_total=3,
                                          raw_response_hook=RECORDER.sdk_hook)
        t0 = time.monotonic()
        with pytest.raises(HttpResponseError) as e:
            bk.backup_jobs.list(VAULT, RG_A).next()  # the vault does not exist here: 404 after the wait
        assert e.value.status_code == 404, e.value
        assert time.monotonic() - t0 >= 0.9, "the SDK did not wait for Retry-After"
    finally:
        srv.stop()
