// The whole rsvault journey with the official Azure JavaScript SDKs at their default api-versions
// (@azure/arm-recoveryservicesbackup 12.x -> 2023-06-01, @azure/arm-recoveryservices 6.x -> 2024-04-01),
// against the real server started by harness.mjs.
//
// The tests run in file order and share state (S); a step whose prerequisite failed is skipped with the
// name of the missing step, so the first failure is the one to read.
//
//   cd tests/js && npm ci && node --test          # RSVAULT_BIN=... to test another binary

import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { after, before, test } from "node:test";

import { getContinuationToken } from "@azure/arm-recoveryservicesbackup";

import {
  MAX_WAIT_MS, RECORDER, SRC_RG, SUB, Server, TERMINAL_JOB, VAULT_RG, accountId, capture, filterTime, makeDisk,
  makeRandomFile, makeShare, opIdFrom, sha256File, sharePolicyBody, shareItem, storageContainer, tmpRoot,
  tomlConfig, treeSnapshot, vaultPath, vmContainer, vmId, vmItem, vmPolicyBody, waitFor,
} from "./harness.mjs";

const VAULT = "jsvault";
const API = "2023-06-01";
const POLL = { updateIntervalInMs: 100 };
const S = {};
const E = {}; // environment: paths, server, clients

function need(t, ...keys) {
  const missing = keys.filter((k) => !(k in S));
  if (missing.length) {
    t.skip(`prerequisite step(s) did not complete: ${missing.join(", ")}`);
    return false;
  }
  return true;
}

const ci = (a, b) => String(a ?? "").toLowerCase() === String(b ?? "").toLowerCase();
const lower = (h) => Object.fromEntries(Object.entries(h || {}).map(([k, v]) => [k.toLowerCase(), v]));
const iso = (d) => (d instanceof Date ? d.toISOString() : d);

async function collect(iter) {
  const out = [];
  for await (const x of iter) out.push(x);
  return out;
}

/** The 202 contract of an async operation: Location (+ Azure-AsyncOperation), Retry-After integer > 0. */
function checkAsyncHeaders(resp, { azureAsync = true } = {}) {
  assert.equal(resp.status, 202, `expected 202, got ${resp.status}: ${JSON.stringify(resp.headers)}`);
  const h = lower(resp.headers);
  assert.ok((h.location || "").startsWith(E.srv.baseUrl + "/"), `Location must be absolute on the server: ${JSON.stringify(h)}`);
  assert.ok(h.location.includes(`api-version=${API}`), `Location must carry the caller's api-version: ${h.location}`);
  assert.match(h["retry-after"] || "", /^[1-9][0-9]*$/, `Retry-After must be integer seconds > 0: ${JSON.stringify(h)}`);
  if (azureAsync) {
    assert.ok((h["azure-asyncoperation"] || "").startsWith(E.srv.baseUrl + "/"), `Azure-AsyncOperation missing: ${JSON.stringify(h)}`);
    assert.ok(h["azure-asyncoperation"].includes(`api-version=${API}`), h["azure-asyncoperation"]);
  }
  return h;
}

async function getJob(jobId, bk = E.bk, vault = VAULT) {
  return bk.jobDetails.get(vault, VAULT_RG, jobId);
}

async function waitJob(jobId, { bk = E.bk, vault = VAULT, timeoutMs = MAX_WAIT_MS } = {}) {
  return waitFor(() => getJob(jobId, bk, vault), (j) => TERMINAL_JOB.has(j.properties.status),
    { timeoutMs, intervalMs: 200, what: `job ${jobId} to finish` });
}

/** Poll vault-level backupOperations/{op} (what az backup does) until it carries a jobId. */
async function jobIdOfOperation(opId, { bk = E.bk, vault = VAULT } = {}) {
  const st = await waitFor(() => bk.backupOperationStatuses.get(vault, VAULT_RG, opId),
    (s) => s.status !== "InProgress" || s.properties?.jobId, { intervalMs: 200, what: `operation ${opId} to report a jobId` });
  assert.ok(["InProgress", "Succeeded"].includes(st.status), JSON.stringify(st));
  assert.equal(st.properties?.objectType, "OperationStatusJobExtendedInfo", JSON.stringify(st));
  assert.ok(st.properties.jobId, JSON.stringify(st));
  assert.equal(st.name, opId, `operation status name must be the operation id: ${JSON.stringify(st)}`);
  return st.properties.jobId;
}

async function listJobs(filter) {
  return collect(E.bk.backupJobs.list(VAULT, VAULT_RG, filter ? { filter } : {}));
}

// ------------------------------------------------------------------------------------------------
// Environment
// ------------------------------------------------------------------------------------------------
before(async () => {
  const root = tmpRoot("rsvault-js-");
  E.root = root;
  E.restoreRoot = path.join(root, "restore");
  E.share = path.join(root, "shares", "share1");
  E.disk = path.join(root, "vms", "vm1", "disk0.img");
  fs.mkdirSync(E.restoreRoot, { recursive: true });
  makeShare(E.share, 1);
  makeDisk(E.disk, 2 * 1024 * 1024, 2);
  const cfg = tomlConfig({
    restoreRoots: [E.restoreRoot],
    sources: [
      { kind: "vm", resource_group: SRC_RG, name: "vm1", disks: [E.disk] },
      { kind: "fileshare", resource_group: SRC_RG, storage_account: "acct1", share: "share1", path: E.share },
    ],
    retryAfter: 1,
    pageSize: 2, // so that job lists page
  });
  fs.mkdirSync(path.join(root, "server"));
  E.srv = await new Server(path.join(root, "server"), cfg).start();
  E.bk = E.srv.backupClient();
  E.rs = E.srv.vaultClient();
  assert.equal(E.bk.apiVersion, API, "the backup SDK's default api-version changed");
});

after(async () => {
  for (const s of [E.slow, E.srv]) {
    if (s) {
      const rc = await s.stop();
      console.log(`[rsvault ${s.name} server exited with ${rc}; log at ${s.logPath}]`);
    }
  }
  if (process.env.RSVAULT_JS_RECORD) fs.writeFileSync(process.env.RSVAULT_JS_RECORD, JSON.stringify(RECORDER, null, 1));
  if (!process.env.RSVAULT_KEEP_TMP && E.root) fs.rmSync(E.root, { recursive: true, force: true });
});

// ------------------------------------------------------------------------------------------------
// Vault and discovery
// ------------------------------------------------------------------------------------------------
test("vault: create, get, list, idempotent PUT", async () => {
  const body = { location: "westus", sku: { name: "Standard" }, properties: { publicNetworkAccess: "Enabled" } };
  const v = await E.rs.vaults.beginCreateOrUpdateAndWait(VAULT_RG, VAULT, body, POLL);
  assert.equal(v.name, VAULT);
  assert.ok(ci(v.id, vaultPath(VAULT)), v.id);
  assert.ok(ci(v.type, "Microsoft.RecoveryServices/vaults"), v.type);
  assert.equal(v.location, "westus");
  assert.equal(v.properties.provisioningState, "Succeeded");
  assert.ok(["Standard", "RS0"].includes(v.sku.name), JSON.stringify(v.sku));
  const g = await E.rs.vaults.get(VAULT_RG, VAULT);
  assert.equal(g.id, v.id);
  assert.ok((await collect(E.rs.vaults.listByResourceGroup(VAULT_RG))).some((x) => x.name === VAULT));
  assert.ok((await collect(E.rs.vaults.listBySubscriptionId())).some((x) => x.name === VAULT));
  const again = await E.rs.vaults.beginCreateOrUpdateAndWait(VAULT_RG, VAULT, body, POLL);
  assert.equal(again.id, v.id);
  S.vault = v;
});

for (const bmt of ["AzureIaasVM", "AzureStorage"]) {
  test(`refresh containers (${bmt}): 202 + Location, operation result 202 -> 204`, async (t) => {
    if (!need(t, "vault")) return;
    const cap = capture();
    await E.bk.protectionContainers.refresh(VAULT, VAULT_RG, "Azure", { filter: `backupManagementType eq '${bmt}'`, onResponse: cap.onResponse });
    const h = checkAsyncHeaders(cap.responses[0], { azureAsync: false });
    const op = opIdFrom(h.location);
    const seen = [];
    await waitFor(async () => {
      const c = capture();
      await E.bk.protectionContainerRefreshOperationResults.get(VAULT, VAULT_RG, "Azure", op, { onResponse: c.onResponse });
      seen.push(c.responses[0].status);
      return c.responses[0].status;
    }, (code) => code === 204, { intervalMs: 200, what: "refresh operation result 204" });
    assert.ok(seen.every((c) => c === 202 || c === 204), JSON.stringify(seen));
    S[`refreshed_${bmt}`] = true;
  });
}

test("register the storage container (LRO)", async (t) => {
  if (!need(t, "vault")) return;
  const name = storageContainer();
  const body = {
    properties: {
      containerType: "StorageContainer", backupManagementType: "AzureStorage", sourceResourceId: accountId(),
      friendlyName: "acct1", acquireStorageAccountLock: "Acquire",
    },
  };
  const c = await E.bk.protectionContainers.beginRegisterAndWait(VAULT, VAULT_RG, "Azure", name, body, POLL);
  assert.ok(ci(c.name, name), JSON.stringify(c));
  assert.equal(c.properties.containerType, "StorageContainer");
  assert.equal(c.properties.backupManagementType, "AzureStorage");
  assert.equal(c.properties.registrationStatus, "Registered");
  assert.equal(c.properties.friendlyName, "acct1");
  const g = await E.bk.protectionContainers.get(VAULT, VAULT_RG, "Azure", name);
  assert.ok(ci(g.name, name));
  const listed = await collect(E.bk.backupProtectionContainers.list(VAULT, VAULT_RG, { filter: "backupManagementType eq 'AzureStorage'" }));
  assert.ok(listed.some((x) => ci(x.name, name)), JSON.stringify(listed));
  S.container = c;
});

test("protectable items: VM and file share", async (t) => {
  if (!need(t, "vault", "container")) return;
  const vms = await collect(E.bk.backupProtectableItems.list(VAULT, VAULT_RG, { filter: "backupManagementType eq 'AzureIaasVM'" }));
  const vm = vms.filter((x) => x.properties.friendlyName === "vm1");
  assert.equal(vm.length, 1, JSON.stringify(vms));
  let p = vm[0].properties;
  assert.equal(p.protectableItemType, "Microsoft.Compute/virtualMachines");
  assert.equal(p.backupManagementType, "AzureIaasVM");
  assert.ok(ci(p.virtualMachineId, vmId()), JSON.stringify(p));
  assert.equal(p.protectionState, "NotProtected");
  assert.ok(vm[0].name.toLowerCase().endsWith(`;${SRC_RG};vm1`), vm[0].name);
  assert.ok(vms.every((x) => x.properties.protectableItemType === "Microsoft.Compute/virtualMachines"));

  const shares = await collect(E.bk.backupProtectableItems.list(VAULT, VAULT_RG, { filter: "backupManagementType eq 'AzureStorage'" }));
  const sh = shares.filter((x) => x.properties.friendlyName === "share1");
  assert.equal(sh.length, 1, JSON.stringify(shares));
  p = sh[0].properties;
  assert.equal(p.protectableItemType, "AzureFileShare");
  assert.equal(p.backupManagementType, "AzureStorage");
  assert.equal(p.parentContainerFriendlyName, "acct1");
  assert.equal(p.protectionState, "NotProtected");
  S.protectable = true;
});

// ------------------------------------------------------------------------------------------------
// Policies
// ------------------------------------------------------------------------------------------------
test("policies: create, get, filtered list, delete (LRO)", async (t) => {
  if (!need(t, "vault")) return;
  await E.bk.protectionPolicies.createOrUpdate(VAULT, VAULT_RG, "vmdaily", vmPolicyBody());
  await E.bk.protectionPolicies.createOrUpdate(VAULT, VAULT_RG, "sharedaily", sharePolicyBody());
  const vp = await E.bk.protectionPolicies.get(VAULT, VAULT_RG, "vmdaily");
  const sp = await E.bk.protectionPolicies.get(VAULT, VAULT_RG, "sharedaily");
  assert.equal(vp.name, "vmdaily");
  assert.ok(ci(vp.id, `${vaultPath(VAULT)}/backupPolicies/vmdaily`), vp.id);
  assert.ok(ci(vp.type, "Microsoft.RecoveryServices/vaults/backupPolicies"), vp.type);
  assert.equal(vp.properties.backupManagementType, "AzureIaasVM");
  assert.equal(vp.properties.schedulePolicy.schedulePolicyType, "SimpleSchedulePolicy");
  assert.equal(vp.properties.schedulePolicy.scheduleRunFrequency, "Daily");
  assert.equal(iso(vp.properties.schedulePolicy.scheduleRunTimes[0]), "2026-01-01T02:00:00.000Z");
  assert.equal(vp.properties.retentionPolicy.retentionPolicyType, "LongTermRetentionPolicy");
  assert.deepEqual(vp.properties.retentionPolicy.dailySchedule.retentionDuration, { count: 30, durationType: "Days" });
  assert.equal(sp.properties.backupManagementType, "AzureStorage");
  assert.equal(sp.properties.workLoadType, "AzureFileShare");
  assert.equal(sp.properties.retentionPolicy.dailySchedule.retentionDuration.count, 14);

  const vmList = (await collect(E.bk.backupPolicies.list(VAULT, VAULT_RG, { filter: "backupManagementType eq 'AzureIaasVM'" }))).map((x) => x.name);
  assert.ok(vmList.includes("vmdaily") && !vmList.includes("sharedaily"), JSON.stringify(vmList));
  const all = (await collect(E.bk.backupPolicies.list(VAULT, VAULT_RG))).map((x) => x.name);
  assert.ok(all.includes("vmdaily") && all.includes("sharedaily"), JSON.stringify(all));

  await E.bk.protectionPolicies.createOrUpdate(VAULT, VAULT_RG, "throwaway", vmPolicyBody(undefined, 7));
  assert.equal((await E.bk.protectionPolicies.get(VAULT, VAULT_RG, "throwaway")).name, "throwaway");
  await E.bk.protectionPolicies.beginDeleteAndWait(VAULT, VAULT_RG, "throwaway", POLL);
  await assert.rejects(E.bk.protectionPolicies.get(VAULT, VAULT_RG, "throwaway"), (e) => e.statusCode === 404);
  S.vmPolicyId = vp.id;
  S.sharePolicyId = sp.id;
});

// ------------------------------------------------------------------------------------------------
// Protection
// ------------------------------------------------------------------------------------------------
/**
 * Configure protection. In 2023-06-01 the JS SDK's protectedItems.createOrUpdate is a plain call: on 202 it
 * returns an empty body, and the caller follows the operation itself (vault-level operation status, then
 * the item's operationResults Location), as the portal and az do.
 */
async function protect(container, item, body, t) {
  const cap = capture();
  const res = await E.bk.protectedItems.createOrUpdate(VAULT, VAULT_RG, "Azure", container, item, body, { onResponse: cap.onResponse });
  const resp = cap.responses[0];
  t?.diagnostic(`PUT protectedItems/${item} -> ${resp.status}`);
  if (resp.status === 200) return res;
  const h = checkAsyncHeaders(resp);
  const op = opIdFrom(h["azure-asyncoperation"]);
  assert.equal(opIdFrom(h.location), op, "Location and Azure-AsyncOperation name the same operation");
  const st = await waitFor(() => E.bk.protectedItemOperationStatuses.get(VAULT, VAULT_RG, "Azure", container, item, op),
    (s) => s.status !== "InProgress", { intervalMs: 100, what: "protect operation" });
  assert.equal(st.status, "Succeeded", JSON.stringify(st));
  assert.ok(st.startTime instanceof Date && st.endTime instanceof Date, JSON.stringify(st));
  const vst = await E.bk.backupOperationStatuses.get(VAULT, VAULT_RG, op);
  assert.equal(vst.status, "Succeeded", JSON.stringify(vst));
  const c = capture();
  const result = await E.bk.protectedItemOperationResults.get(VAULT, VAULT_RG, "Azure", container, item, op, { onResponse: c.onResponse });
  assert.ok([200, 204].includes(c.responses[0].status), JSON.stringify(c.responses));
  return c.responses[0].status === 200 ? result : E.bk.protectedItems.get(VAULT, VAULT_RG, "Azure", container, item);
}

async function configureJob(friendly) {
  const jobs = await listJobs("operation eq 'ConfigureBackup'");
  const mine = jobs.filter((j) => j.properties.entityFriendlyName === friendly);
  assert.ok(mine.length, `no ConfigureBackup job for ${friendly}: ${JSON.stringify(jobs)}`);
  return mine[0];
}

test("protect the VM", async (t) => {
  if (!need(t, "vault", "vmPolicyId")) return;
  const body = { properties: { protectedItemType: "Microsoft.Compute/virtualMachines", sourceResourceId: vmId(), policyId: S.vmPolicyId } };
  const item = await protect(vmContainer(), vmItem(), body, t);
  const p = item.properties;
  assert.ok(ci(item.name, vmItem()), JSON.stringify(item));
  assert.equal(p.protectedItemType, "Microsoft.Compute/virtualMachines");
  assert.ok(["Protected", "IRPending"].includes(p.protectionState), JSON.stringify(p));
  assert.ok(ci(p.policyId, S.vmPolicyId), JSON.stringify(p));
  assert.ok(ci(p.sourceResourceId, vmId()));
  assert.equal(p.friendlyName, "vm1");
  assert.equal(p.workloadType, "VM");
  const g = await E.bk.protectedItems.get(VAULT, VAULT_RG, "Azure", vmContainer(), vmItem(), { filter: "expand eq 'extendedinfo'" });
  assert.ok(["Protected", "IRPending"].includes(g.properties.protectionState));
  const job = await configureJob("vm1");
  assert.equal(job.properties.jobType, "AzureIaaSVMJob");
  assert.equal((await waitJob(job.name)).properties.status, "Completed");
  S.vmProtected = true;
});

test("protect the file share", async (t) => {
  if (!need(t, "vault", "sharePolicyId", "container")) return;
  const body = { properties: { protectedItemType: "AzureFileShareProtectedItem", sourceResourceId: accountId(), policyId: S.sharePolicyId } };
  const item = await protect(storageContainer(), shareItem(), body, t);
  const p = item.properties;
  assert.equal(p.protectedItemType, "AzureFileShareProtectedItem");
  assert.ok(["Protected", "IRPending"].includes(p.protectionState), JSON.stringify(p));
  assert.ok(ci(p.policyId, S.sharePolicyId));
  assert.equal(p.friendlyName, "share1");
  const job = await configureJob("share1");
  assert.equal(job.properties.jobType, "AzureStorageJob");
  assert.equal((await waitJob(job.name)).properties.status, "Completed");
  const names = new Set((await collect(E.bk.backupProtectedItems.list(VAULT, VAULT_RG))).map((x) => x.name.toLowerCase()));
  assert.ok(names.has(vmItem().toLowerCase()) && names.has(shareItem().toLowerCase()), JSON.stringify([...names]));
  const onlyVm = await collect(E.bk.backupProtectedItems.list(VAULT, VAULT_RG, { filter: "backupManagementType eq 'AzureIaasVM' and itemType eq 'VM'" }));
  assert.deepEqual(onlyVm.map((x) => x.name.toLowerCase()), [vmItem().toLowerCase()]);
  S.shareProtected = true;
});

// ------------------------------------------------------------------------------------------------
// Backup: trigger -> Azure-AsyncOperation -> operation status -> jobId -> job until Completed
// ------------------------------------------------------------------------------------------------
async function triggerBackup(container, item, objectType) {
  const expiry = new Date(Date.now() + 30 * 86400_000);
  expiry.setUTCMilliseconds(0);
  const cap = capture();
  await E.bk.backups.trigger(VAULT, VAULT_RG, "Azure", container, item,
    { properties: { objectType, recoveryPointExpiryTimeInUTC: expiry } }, { onResponse: cap.onResponse });
  const h = checkAsyncHeaders(cap.responses[0]);
  assert.ok(h.location.split("?")[0].includes("/operationResults/"), h.location);
  assert.ok(h["azure-asyncoperation"].split("?")[0].includes("/operationsStatus/"), h["azure-asyncoperation"]);
  const op = opIdFrom(h["azure-asyncoperation"]);
  assert.equal(opIdFrom(h.location), op);
  const jobId = await jobIdOfOperation(op);
  const itemSt = await E.bk.protectedItemOperationStatuses.get(VAULT, VAULT_RG, "Azure", container, item, op);
  assert.ok(["InProgress", "Succeeded"].includes(itemSt.status), JSON.stringify(itemSt));
  assert.equal(itemSt.properties?.jobId, jobId, JSON.stringify(itemSt));
  return { op, jobId, h };
}

function checkFinishedJob(job, jobType, friendly, bmt) {
  const p = job.properties;
  assert.ok(job.name && ci(job.id, `${vaultPath(VAULT)}/backupJobs/${job.name}`), JSON.stringify(job));
  assert.ok(ci(job.type, "Microsoft.RecoveryServices/vaults/backupJobs"), job.type);
  assert.equal(p.jobType, jobType);
  assert.equal(p.operation, "Backup");
  assert.equal(p.status, "Completed");
  assert.equal(p.entityFriendlyName, friendly);
  assert.equal(p.backupManagementType, bmt);
  assert.ok(p.startTime instanceof Date && p.endTime instanceof Date, "startTime/endTime deserialize as dates");
  assert.ok(p.startTime <= p.endTime, JSON.stringify(p));
  assert.match(p.duration || "", /^PT[0-9.]+S$|^PT/, `duration is ISO 8601: ${p.duration}`);
  assert.ok(!(p.actionsInfo || []).includes("Cancellable"), JSON.stringify(p.actionsInfo));
  const tasks = p.extendedInfo?.tasksList || [];
  assert.ok(tasks.length, `extendedInfo.tasksList is empty: ${JSON.stringify(p)}`);
  assert.ok(tasks.every((x) => x.taskId && x.status === "Completed"), JSON.stringify(tasks));
  assert.ok(Object.keys(p.extendedInfo?.propertyBag || {}).length, `extendedInfo.propertyBag is empty: ${JSON.stringify(p)}`);
  return p;
}

test("backup the VM", async (t) => {
  if (!need(t, "vmProtected")) return;
  const t0 = new Date();
  const { jobId, h } = await triggerBackup(vmContainer(), vmItem(), "IaasVMBackupRequest");
  const job = await waitJob(jobId);
  const p = checkFinishedJob(job, "AzureIaaSVMJob", "vm1", "AzureIaasVM");
  const ids = p.extendedInfo.tasksList.map((x) => x.taskId);
  assert.ok(ids.includes("Take Snapshot") && ids.includes("Transfer data to vault"), JSON.stringify(ids));
  assert.equal(p.extendedInfo.propertyBag["VM Name"], "vm1");
  assert.ok("Backup Size" in p.extendedInfo.propertyBag, JSON.stringify(p.extendedInfo.propertyBag));
  assert.ok(p.startTime >= new Date(t0.getTime() - 5000), `${p.startTime} vs ${t0}`);
  // the Location of the trigger resolves (200/204) once done
  const r = await E.srv.raw("GET", h.location);
  assert.ok([200, 204].includes(r.status), `${r.status} ${r.text}`);
  const item = await E.bk.protectedItems.get(VAULT, VAULT_RG, "Azure", vmContainer(), vmItem(), { filter: "expand eq 'extendedinfo'" });
  assert.equal(item.properties.lastBackupStatus, "Completed", JSON.stringify(item.properties));
  assert.ok(item.properties.lastBackupTime instanceof Date && item.properties.lastBackupTime >= new Date(t0.getTime() - 5000));
  assert.equal(item.properties.extendedInfo?.recoveryPointCount, 1, JSON.stringify(item.properties.extendedInfo));
  S.vmBackupJob = jobId;
  S.backupJobs = [jobId];
});

test("backup the file share twice (second after a change)", async (t) => {
  if (!need(t, "shareProtected")) return;
  const { jobId } = await triggerBackup(storageContainer(), shareItem(), "AzureFileShareBackupRequest");
  const p = checkFinishedJob(await waitJob(jobId), "AzureStorageJob", "share1", "AzureStorage");
  assert.equal(p.storageAccountName, "acct1");
  S.snapshotAtFirstBackup = treeSnapshot(E.share);
  const added = path.join(E.share, "added-later.txt");
  fs.writeFileSync(added, "not in the first recovery point\n");
  let second;
  try {
    second = (await triggerBackup(storageContainer(), shareItem(), "AzureFileShareBackupRequest")).jobId;
    assert.equal((await waitJob(second)).properties.status, "Completed");
  } finally {
    fs.unlinkSync(added);
  }
  S.shareBackupJob = jobId;
  (S.backupJobs ||= []).push(jobId, second);
});

// ------------------------------------------------------------------------------------------------
// Jobs: filters and paging
// ------------------------------------------------------------------------------------------------
test("job list: filters", async (t) => {
  if (!need(t, "vmBackupJob", "shareBackupJob")) return;
  const jobs = await listJobs();
  const ids = jobs.map((j) => j.name);
  assert.equal(ids.length, new Set(ids).size, "duplicate jobs across pages");
  for (const j of S.backupJobs) assert.ok(ids.includes(j), `backup job ${j} not listed`);
  const starts = jobs.map((j) => j.properties.startTime.getTime());
  assert.deepEqual(starts, [...starts].sort((a, b) => b - a), "jobs must be newest first");

  const backups = await listJobs("operation eq 'Backup'");
  assert.ok(backups.length >= 3 && backups.every((j) => j.properties.operation === "Backup"));
  assert.deepEqual(new Set(backups.map((j) => j.name)), new Set(S.backupJobs));

  const completed = await listJobs("status eq 'Completed'");
  assert.ok(completed.length && completed.every((j) => j.properties.status === "Completed"));

  const storage = await listJobs("backupManagementType eq 'AzureStorage'");
  assert.ok(storage.every((j) => j.properties.backupManagementType === "AzureStorage"));
  assert.ok(storage.some((j) => j.name === S.shareBackupJob) && !storage.some((j) => j.name === S.vmBackupJob));

  const now = Date.now();
  const lo = filterTime(new Date(now - 3600_000));
  const hi = filterTime(new Date(now + 3600_000));
  const w = await listJobs(`backupManagementType eq 'AzureIaasVM' and endTime eq '${hi}' and operation eq 'Backup' and startTime eq '${lo}' and status eq 'Completed'`);
  assert.deepEqual(w.map((j) => j.name), [S.vmBackupJob]);
  assert.deepEqual(await listJobs("startTime eq '2016-01-01 12:00:00 AM' and endTime eq '2016-01-02 12:00:00 AM'"), []);
  const one = await listJobs(`jobId eq '${S.vmBackupJob}'`);
  assert.deepEqual(one.map((j) => j.name), [S.vmBackupJob]);
  S.allJobs = ids;
});

test("job list: pages of page_size = 2, nextLink followed by the SDK", async (t) => {
  if (!need(t, "allJobs")) return;
  assert.ok(S.allJobs.length > 4, `need more than two pages of jobs: ${S.allJobs.length}`);
  const cap = capture();
  const pages = [];
  for await (const page of E.bk.backupJobs.list(VAULT, VAULT_RG, { onResponse: cap.onResponse }).byPage()) {
    pages.push(page.map((j) => j.name));
    assert.ok(pages.length < 100);
  }
  assert.ok(pages.length >= 3, `expected several pages: ${JSON.stringify(pages)}`);
  assert.ok(pages.every((p) => p.length <= 2), JSON.stringify(pages));
  assert.deepEqual(pages.flat(), S.allJobs, "paged listing must be the same jobs in the same order");
  // every response was a 200 and every nextLink was absolute, with the caller's api-version
  assert.equal(cap.responses.length, pages.length, "one request per page");
  for (const [i, r] of cap.responses.entries()) {
    assert.equal(r.status, 200);
    const nl = JSON.parse(r.body).nextLink;
    if (i < cap.responses.length - 1) {
      assert.ok(nl.startsWith(E.srv.baseUrl + "/"), `nextLink must be absolute: ${nl}`);
      assert.ok(nl.includes(`api-version=${API}`), `nextLink must carry the caller's api-version: ${nl}`);
    } else {
      assert.ok(!nl, `the last page has no nextLink: ${nl}`);
    }
  }
  // paging with a filter keeps the filter
  const fpages = [];
  for await (const page of E.bk.backupJobs.list(VAULT, VAULT_RG, { filter: "operation eq 'Backup'" }).byPage()) {
    fpages.push(page.map((j) => j.properties.operation));
  }
  assert.ok(fpages.length >= 2, JSON.stringify(fpages));
  assert.ok(fpages.flat().every((o) => o === "Backup"), JSON.stringify(fpages));
  assert.equal(fpages.flat().length, S.backupJobs.length);
  // resume from a continuation token
  const first = await E.bk.backupJobs.list(VAULT, VAULT_RG).byPage().next();
  const token = getContinuationToken(first.value);
  assert.ok(token, "first page must give a continuation token");
  const rest = [];
  for await (const page of E.bk.backupJobs.list(VAULT, VAULT_RG).byPage({ continuationToken: token })) rest.push(...page.map((j) => j.name));
  assert.deepEqual([...first.value.map((j) => j.name), ...rest], S.allJobs);
});

// ------------------------------------------------------------------------------------------------
// Recovery points
// ------------------------------------------------------------------------------------------------
test("recovery points: list, get, date filter", async (t) => {
  if (!need(t, "vmBackupJob", "shareBackupJob")) return;
  const vmRps = await collect(E.bk.recoveryPoints.list(VAULT, VAULT_RG, "Azure", vmContainer(), vmItem()));
  assert.equal(vmRps.length, 1, JSON.stringify(vmRps));
  const rp = vmRps[0];
  assert.match(rp.name, /^[0-9]+$/, "recovery point ids are decimal strings");
  assert.ok(ci(rp.id, `${vaultPath(VAULT)}/backupFabrics/Azure/protectionContainers/${vmContainer()}/protectedItems/${vmItem()}/recoveryPoints/${rp.name}`), rp.id);
  assert.ok(ci(rp.type, "Microsoft.RecoveryServices/vaults/backupFabrics/protectionContainers/protectedItems/recoveryPoints"), rp.type);
  assert.equal(rp.properties.objectType, "IaasVMRecoveryPoint");
  assert.ok(rp.properties.recoveryPointTime instanceof Date);
  const g = await E.bk.recoveryPoints.get(VAULT, VAULT_RG, "Azure", vmContainer(), vmItem(), rp.name);
  assert.equal(g.id, rp.id);

  const shareRps = await collect(E.bk.recoveryPoints.list(VAULT, VAULT_RG, "Azure", storageContainer(), shareItem()));
  assert.equal(shareRps.length, 2, JSON.stringify(shareRps));
  assert.ok(shareRps.every((x) => x.properties.objectType === "AzureFileShareRecoveryPoint"));
  const now = Date.now();
  const inside = `startDate eq '${filterTime(new Date(now - 3600_000))}' and endDate eq '${filterTime(new Date(now + 3600_000))}'`;
  const within = await collect(E.bk.recoveryPoints.list(VAULT, VAULT_RG, "Azure", storageContainer(), shareItem(), { filter: inside }));
  assert.deepEqual(within.map((x) => x.name).sort(), shareRps.map((x) => x.name).sort());
  const past = await collect(E.bk.recoveryPoints.list(VAULT, VAULT_RG, "Azure", storageContainer(), shareItem(),
    { filter: "startDate eq '2016-01-01 12:00:00 AM' and endDate eq '2016-02-01 12:00:00 AM'" }));
  assert.deepEqual(past, []);
  const firstShareRp = shareRps.reduce((a, b) => (a.properties.recoveryPointTime <= b.properties.recoveryPointTime ? a : b));
  S.vmRp = rp.name;
  S.shareRp = firstShareRp.name;
});

// ------------------------------------------------------------------------------------------------
// Restore
// ------------------------------------------------------------------------------------------------
async function restore(container, item, rp, body) {
  const cap = capture();
  await E.bk.restores.beginTriggerAndWait(VAULT, VAULT_RG, "Azure", container, item, rp, body, { ...POLL, onResponse: cap.onResponse });
  const post = cap.responses.find((r) => r.method === "POST");
  const h = checkAsyncHeaders(post);
  const jobId = await jobIdOfOperation(opIdFrom(h["azure-asyncoperation"]));
  const job = await waitJob(jobId);
  assert.equal(job.properties.operation, "Restore", JSON.stringify(job.properties));
  return job;
}

function compareTrees(want, dir) {
  const got = treeSnapshot(dir);
  const problems = [];
  for (const [rel, e] of Object.entries(want)) {
    const g = got[rel];
    if (!g) { problems.push(`missing ${rel}`); continue; }
    if (g.type !== e.type) { problems.push(`${rel}: type ${g.type} != ${e.type}`); continue; }
    if (g.mode !== e.mode) problems.push(`${rel}: mode ${g.mode.toString(8)} != ${e.mode.toString(8)}`);
    if (e.type === "file") {
      if (g.sha256 !== e.sha256 || g.size !== e.size) problems.push(`${rel}: content differs (size ${g.size} vs ${e.size})`);
      if (g.mtimeMs !== e.mtimeMs) problems.push(`${rel}: mtime ${g.mtimeMs} != ${e.mtimeMs}`);
    }
  }
  const extra = Object.keys(got).filter((k) => !(k in want));
  if (extra.length) problems.push(`unexpected entries: ${extra.join(", ")}`);
  assert.deepEqual(problems, [], "restored tree differs from the source at backup time");
}

test("restore the file share to an alternate location: bytes, modes, mtimes on disk", async (t) => {
  if (!need(t, "shareRp", "snapshotAtFirstBackup")) return;
  const body = {
    properties: {
      objectType: "AzureFileShareRestoreRequest", recoveryType: "AlternateLocation", sourceResourceId: accountId(),
      copyOptions: "Overwrite", restoreRequestType: "FullShareRestore",
      targetDetails: { name: "jsrestore", targetResourceId: accountId() },
    },
  };
  const job = await restore(storageContainer(), shareItem(), S.shareRp, body);
  assert.equal(job.properties.jobType, "AzureStorageJob");
  assert.equal(job.properties.status, "Completed", JSON.stringify(job.properties));
  const target = path.join(E.restoreRoot, "jsrestore");
  assert.ok(fs.existsSync(target), `expected the share restored below ${target}: ${fs.readdirSync(E.restoreRoot)}`);
  compareTrees(S.snapshotAtFirstBackup, target);
  assert.ok(!fs.existsSync(path.join(target, "added-later.txt")), "the first recovery point predates added-later.txt");
  S.restored = true;
});

test("restore one file (ItemLevelRestore) to an alternate folder", async (t) => {
  if (!need(t, "shareRp")) return;
  const body = {
    properties: {
      objectType: "AzureFileShareRestoreRequest", recoveryType: "AlternateLocation", sourceResourceId: accountId(),
      copyOptions: "Overwrite", restoreRequestType: "ItemLevelRestore",
      restoreFileSpecs: [{ path: "sub/deep/d.bin", fileSpecType: "File", targetFolderPath: "picked" }],
      targetDetails: { name: "jsilr", targetResourceId: accountId() },
    },
  };
  const job = await restore(storageContainer(), shareItem(), S.shareRp, body);
  assert.equal(job.properties.status, "Completed", JSON.stringify(job.properties));
  const base = path.join(E.restoreRoot, "jsilr", "picked");
  const files = [];
  const walk = (d) => fs.readdirSync(d, { withFileTypes: true }).forEach((e) => (e.isDirectory() ? walk(path.join(d, e.name)) : files.push(path.join(d, e.name))));
  walk(base);
  assert.equal(files.length, 1, `only the requested file comes back: ${files}`);
  assert.equal(sha256File(files[0]), sha256File(path.join(E.share, "sub", "deep", "d.bin")));
  assert.equal(path.basename(files[0]), "d.bin");
});

// ------------------------------------------------------------------------------------------------
// Export
// ------------------------------------------------------------------------------------------------
test("export jobs: 202 -> operation result -> SAS blob with every job", async (t) => {
  if (!need(t, "allJobs")) return;
  const cap = capture();
  await E.bk.jobs.export(VAULT, VAULT_RG, { onResponse: cap.onResponse });
  const h = checkAsyncHeaders(cap.responses[0], { azureAsync: false });
  assert.ok(h.location.includes("/backupJobs/operationResults/"), h.location);
  const op = opIdFrom(h.location);
  let last;
  const res = await waitFor(async () => {
    const c = capture();
    const r = await E.bk.exportJobsOperationResults.get(VAULT, VAULT_RG, op, { onResponse: c.onResponse });
    last = c.responses[0].status;
    return { status: last, r };
  }, (x) => x.status === 200, { intervalMs: 200, what: "export to finish" });
  const o = res.r.operation;
  assert.equal(o.objectType, "ExportJobsOperationResultInfo", JSON.stringify(res.r));
  assert.ok(o.blobUrl && o.blobSasKey, JSON.stringify(o));
  assert.ok(o.blobSasKey.startsWith("?"), o.blobSasKey);
  const blob = await E.srv.raw("GET", o.blobUrl + o.blobSasKey, { token: null });
  assert.equal(blob.status, 200, blob.text.slice(0, 300));
  for (const j of S.allJobs) assert.ok(blob.text.includes(j), `job ${j} missing from the export`);
  const bad = await E.srv.raw("GET", o.blobUrl + o.blobSasKey.slice(0, -2) + "xx", { token: null });
  assert.ok([401, 403].includes(bad.status), `tampered SAS must be refused: ${bad.status}`);
});

// ------------------------------------------------------------------------------------------------
// Cancel a running job (second server whose config throttles backups)
// ------------------------------------------------------------------------------------------------
test("cancel a running backup: InProgress (Cancellable) -> Cancelling -> Cancelled, no recovery point", async () => {
  const RATE = 1024 * 1024;
  const BIG = 12 * 1024 * 1024;
  const root = path.join(E.root, "slow");
  const disk = path.join(root, "vms", "bigvm", "disk0.img");
  makeRandomFile(disk, BIG, 5);
  fs.mkdirSync(path.join(root, "restore"), { recursive: true });
  fs.mkdirSync(path.join(root, "server"), { recursive: true });
  const cfg = tomlConfig({
    restoreRoots: [path.join(root, "restore")],
    sources: [{ kind: "vm", resource_group: SRC_RG, name: "bigvm", disks: [disk] }],
    bps: RATE,
  });
  E.slow = await new Server(path.join(root, "server"), cfg, "slow").start();
  const bk = E.slow.backupClient();
  const rs = E.slow.vaultClient();
  const V = "jscancel";
  await rs.vaults.beginCreateOrUpdateAndWait(VAULT_RG, V, { location: "westus", sku: { name: "Standard" } }, POLL);
  await bk.protectionPolicies.createOrUpdate(V, VAULT_RG, "p", vmPolicyBody());
  const pid = (await bk.protectionPolicies.get(V, VAULT_RG, "p")).id;
  const pc = capture();
  await bk.protectedItems.createOrUpdate(V, VAULT_RG, "Azure", vmContainer("bigvm"), vmItem("bigvm"),
    { properties: { protectedItemType: "Microsoft.Compute/virtualMachines", sourceResourceId: vmId("bigvm"), policyId: pid } },
    { onResponse: pc.onResponse });
  if (pc.responses[0].status === 202) {
    const op = opIdFrom(lower(pc.responses[0].headers)["azure-asyncoperation"]);
    await waitFor(() => bk.backupOperationStatuses.get(V, VAULT_RG, op), (s) => s.status !== "InProgress", { what: "protect" });
  }
  const cap = capture();
  await bk.backups.trigger(V, VAULT_RG, "Azure", vmContainer("bigvm"), vmItem("bigvm"), { properties: { objectType: "IaasVMBackupRequest" } },
    { onResponse: cap.onResponse });
  assert.equal(cap.responses[0].status, 202);
  const jid = await jobIdOfOperation(opIdFrom(lower(cap.responses[0].headers)["azure-asyncoperation"]), { bk, vault: V });
  const running = await waitFor(() => bk.jobDetails.get(V, VAULT_RG, jid),
    (j) => j.properties.status !== "InProgress" || (j.properties.extendedInfo?.progressPercentage || 0) > 0,
    { timeoutMs: 60_000, intervalMs: 100, what: "backup to make progress" });
  const p = running.properties;
  assert.equal(p.status, "InProgress", `backup of ${BIG} bytes at ${RATE} B/s finished too early: ${JSON.stringify(p)}`);
  assert.ok((p.actionsInfo || []).includes("Cancellable"), JSON.stringify(p.actionsInfo));
  assert.ok(!p.endTime, "a running job has no endTime");
  assert.ok(p.extendedInfo.progressPercentage > 0 && p.extendedInfo.progressPercentage < 100, JSON.stringify(p.extendedInfo));
  assert.ok(p.extendedInfo.estimatedRemainingDuration, JSON.stringify(p.extendedInfo));

  const cc = capture();
  await bk.jobCancellations.trigger(V, VAULT_RG, jid, { onResponse: cc.onResponse });
  assert.equal(cc.responses[0].status, 202, JSON.stringify(cc.responses));
  const ch = lower(cc.responses[0].headers);
  assert.ok(ch.location.toLowerCase().includes(`/backupjobs/${jid}/operationresults/`), ch.location);
  assert.match(ch["retry-after"] || "", /^[1-9][0-9]*$/);
  const statuses = [];
  const t0 = Date.now();
  const final = await waitFor(async () => {
    const j = await bk.jobDetails.get(V, VAULT_RG, jid);
    statuses.push(j.properties.status);
    return j;
  }, (j) => TERMINAL_JOB.has(j.properties.status), { timeoutMs: 30_000, intervalMs: 50, what: "cancelled job to settle" });
  assert.equal(final.properties.status, "Cancelled", JSON.stringify(statuses));
  assert.ok(statuses.every((s) => s === "Cancelling" || s === "Cancelled"), `job went back to another state: ${statuses}`);
  assert.ok(Date.now() - t0 < 10_000, `cancel took ${Date.now() - t0} ms`);
  assert.ok(!(final.properties.actionsInfo || []).includes("Cancellable"));
  assert.ok(final.properties.endTime instanceof Date);
  // the cancel operation resolves (200/204)
  const op = opIdFrom(ch.location);
  await waitFor(async () => {
    const c = capture();
    await bk.jobOperationResults.get(V, VAULT_RG, jid, op, { onResponse: c.onResponse });
    return c.responses[0].status;
  }, (c) => c === 200 || c === 204, { timeoutMs: 20_000, intervalMs: 200, what: "cancel operation result" });
  assert.deepEqual(await collect(bk.recoveryPoints.list(V, VAULT_RG, "Azure", vmContainer("bigvm"), vmItem("bigvm"))), []);
  await assert.rejects(bk.jobCancellations.trigger(V, VAULT_RG, jid), (e) => e.statusCode === 400);
  const cancelled = await collect(bk.backupJobs.list(V, VAULT_RG, { filter: "status eq 'Cancelled'" }));
  assert.deepEqual(cancelled.map((j) => j.name), [jid]);
});

// ------------------------------------------------------------------------------------------------
// Stop protection, delete, delete vault
// ------------------------------------------------------------------------------------------------
test("stop protection, retain data", async (t) => {
  if (!need(t, "vmRp")) return;
  const body = { properties: { protectedItemType: "Microsoft.Compute/virtualMachines", sourceResourceId: vmId(), protectionState: "ProtectionStopped" } };
  const item = await protect(vmContainer(), vmItem(), body, t);
  assert.equal(item.properties.protectionState, "ProtectionStopped", JSON.stringify(item.properties));
  const g = await E.bk.protectedItems.get(VAULT, VAULT_RG, "Azure", vmContainer(), vmItem());
  assert.equal(g.properties.protectionState, "ProtectionStopped");
  const jobs = await listJobs("operation eq 'DisableBackup'");
  assert.ok(jobs.some((j) => j.properties.entityFriendlyName === "vm1"), JSON.stringify(jobs));
  const rps = await collect(E.bk.recoveryPoints.list(VAULT, VAULT_RG, "Azure", vmContainer(), vmItem()));
  assert.deepEqual(rps.map((x) => x.name), [S.vmRp], "stop with retain data keeps the recovery points");
  await assert.rejects(E.bk.backups.trigger(VAULT, VAULT_RG, "Azure", vmContainer(), vmItem(), { properties: { objectType: "IaasVMBackupRequest" } }),
    (e) => e.statusCode === 400);
  S.vmStopped = true;
});

async function deleteItem(container, item, t, { soft = false } = {}) {
  const cap = capture();
  await E.bk.protectedItems.delete(VAULT, VAULT_RG, "Azure", container, item, { onResponse: cap.onResponse });
  const r = cap.responses[0];
  t.diagnostic(`DELETE protectedItems/${item} -> ${r.status}`);
  let job;
  if (r.status === 202) {
    const h = checkAsyncHeaders(r);
    assert.ok(h.location.includes("/backupOperationResults/") && h["azure-asyncoperation"].includes("/backupOperations/"), JSON.stringify(h));
    job = await waitJob(await jobIdOfOperation(opIdFrom(h["azure-asyncoperation"])));
    // and the Location resolves once done
    const done = await waitFor(async () => {
      const c = capture();
      await E.bk.backupOperationResults.get(VAULT, VAULT_RG, opIdFrom(h.location), { onResponse: c.onResponse });
      return c.responses[0].status;
    }, (s) => s !== 202, { what: "backupOperationResults" });
    assert.ok([200, 204].includes(done), String(done));
  } else {
    assert.ok([200, 204].includes(r.status), String(r.status));
    const jobs = await listJobs("operation eq 'DeleteBackupData'");
    job = await waitJob(jobs[0].name);
  }
  assert.equal(job.properties.operation, "DeleteBackupData", JSON.stringify(job.properties));
  assert.equal(job.properties.status, "Completed", JSON.stringify(job.properties));
  if (!soft) await assert.rejects(E.bk.protectedItems.get(VAULT, VAULT_RG, "Azure", container, item), (e) => e.statusCode === 404);
}

test("deleting backup data soft-deletes (as Azure); isRehydrate undeletes", async (t) => {
  if (!need(t, "vmStopped")) return;
  const cfg = await E.bk.backupResourceVaultConfigs.get(VAULT, VAULT_RG);
  assert.equal(cfg.properties.softDeleteFeatureState, "Enabled", JSON.stringify(cfg));
  await deleteItem(vmContainer(), vmItem(), t, { soft: true });
  const g = await E.bk.protectedItems.get(VAULT, VAULT_RG, "Azure", vmContainer(), vmItem());
  assert.equal(g.properties.isScheduledForDeferredDelete, true, JSON.stringify(g.properties));
  assert.ok(g.properties.deferredDeleteTimeInUTC instanceof Date, JSON.stringify(g.properties));
  const rps = await collect(E.bk.recoveryPoints.list(VAULT, VAULT_RG, "Azure", vmContainer(), vmItem()));
  assert.deepEqual(rps.map((x) => x.name), [S.vmRp], "a soft-deleted item keeps its recovery points");
  await assert.rejects(E.rs.vaults.beginDeleteAndWait(VAULT_RG, VAULT, POLL), (e) => e.statusCode === 409);
  const undeleted = await E.bk.protectedItems.createOrUpdate(VAULT, VAULT_RG, "Azure", vmContainer(), vmItem(), {
    properties: { protectedItemType: "Microsoft.Compute/virtualMachines", sourceResourceId: vmId(), protectionState: "ProtectionStopped", policyId: "", isRehydrate: true },
  });
  t.diagnostic(`undelete -> ${JSON.stringify(undeleted?.properties?.protectionState)}`);
  const back = await waitFor(() => E.bk.protectedItems.get(VAULT, VAULT_RG, "Azure", vmContainer(), vmItem()),
    (i) => i.properties.isScheduledForDeferredDelete === false, { what: "undelete" });
  assert.equal(back.properties.protectionState, "ProtectionStopped");
  S.undeleted = true;
});

test("delete the VM item, the share item, then the vault", async (t) => {
  if (!need(t, "undeleted")) return;
  // With soft delete off, as `az backup vault backup-properties set --soft-delete-feature-state Disable` does.
  const cfg = await E.bk.backupResourceVaultConfigs.update(VAULT, VAULT_RG, { properties: { softDeleteFeatureState: "Disabled", enhancedSecurityState: "Disabled" } });
  assert.equal(cfg.properties.softDeleteFeatureState, "Disabled", JSON.stringify(cfg));
  await deleteItem(vmContainer(), vmItem(), t);
  await assert.rejects(collect(E.bk.recoveryPoints.list(VAULT, VAULT_RG, "Azure", vmContainer(), vmItem())), (e) => e.statusCode === 404);
  if (S.shareProtected) {
    // one protected item left: the vault refuses to go
    await assert.rejects(E.rs.vaults.beginDeleteAndWait(VAULT_RG, VAULT, POLL), (e) => e.statusCode >= 400 && e.statusCode < 500);
    assert.equal((await E.rs.vaults.get(VAULT_RG, VAULT)).name, VAULT);
    await deleteItem(storageContainer(), shareItem(), t);
  }
  await E.rs.vaults.beginDeleteAndWait(VAULT_RG, VAULT, POLL);
  await assert.rejects(E.rs.vaults.get(VAULT_RG, VAULT), (e) => e.statusCode === 404);
  assert.ok(!(await collect(E.rs.vaults.listByResourceGroup(VAULT_RG))).some((v) => v.name === VAULT));
});

test("wire: no 5xx from any response of the session, servers alive", () => {
  const bad = RECORDER.filter((r) => r.status >= 500);
  assert.deepEqual(bad, [], "server errors during the journey");
  assert.ok(RECORDER.length > 50, `few responses recorded: ${RECORDER.length}`);
  assert.ok(E.srv.alive(), `main server died:\n${E.srv.tail()}`);
  for (const r of RECORDER) {
    if (r.url.includes("api-version=")) assert.ok(/api-version=(2023-06-01|2024-04-01)/.test(r.url), `unexpected api-version: ${r.url}`);
  }
});
