// The dashboard (/ui/) in headless Chromium: sign in with the token, see the vault's item, start
// a backup from the page and watch it complete live, follow a job's log, cancel a running job.
// Screenshots of each step go to tests/ui/artifacts/ (kept by CI as test artifacts).
//
// RSVAULT_BIN selects the binary (default <repo>/target/debug/rsvault); CHROMIUM the browser
// (default /usr/bin/chromium, Debian's package).

import { spawn } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import https from "node:https";
import os from "node:os";
import path from "node:path";
import readline from "node:readline";
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";

import { chromium } from "playwright-core";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, "..", "..");
const BIN = path.resolve(REPO, process.env.RSVAULT_BIN || path.join("target", "debug", "rsvault"));
const ARTIFACTS = path.join(HERE, "artifacts");
const SUB = "sub1";
const VAULT = `/subscriptions/${SUB}/resourceGroups/rg1/providers/Microsoft.RecoveryServices/vaults/vault1`;
const ITEM = `${VAULT}/backupFabrics/Azure/protectionContainers/StorageContainer;Storage;rg1;acct1/protectedItems/AzureFileShare;share1`;

let dir, server, base, token, ca, browser, page;

function api(method, p, body) {
  const url = new URL(`${p}${p.includes("?") ? "&" : "?"}api-version=2026-02-01`, base);
  return new Promise((resolve, reject) => {
    const req = https.request(url, {
      method,
      ca,
      headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
    }, (res) => {
      let text = "";
      res.on("data", (c) => (text += c));
      res.on("end", () => {
        if (res.statusCode >= 400) reject(new Error(`${method} ${p}: ${res.statusCode} ${text}`));
        else resolve(text ? JSON.parse(text) : null);
      });
    });
    req.on("error", reject);
    req.end(body === undefined ? undefined : JSON.stringify(body));
  });
}

async function shot(name) {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`), fullPage: true });
}

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "rsvault-ui-"));
  const share = path.join(dir, "share");
  fs.mkdirSync(path.join(share, "sub"), { recursive: true });
  fs.writeFileSync(path.join(share, "a.txt"), "hello dashboard\n");
  // 4 MB of incompressible data at 1 MB/s: each backup runs for a few seconds.
  const big = Buffer.alloc(4 << 20);
  for (let off = 0; off < big.length; off += 32) {
    crypto.createHash("sha256").update(String(off)).digest().copy(big, off);
  }
  fs.writeFileSync(path.join(share, "sub", "big.bin"), big);
  const config = path.join(dir, "rsvault.toml");
  fs.writeFileSync(config, [
    `restore_roots = [${JSON.stringify(path.join(dir, "restore"))}]`,
    "[limits]",
    "backup_bytes_per_second = 1000000",
    "[scheduler]",
    "enabled = false",
    "[[source]]",
    'kind = "fileshare"',
    'resource_group = "rg1"',
    'storage_account = "acct1"',
    'share = "share1"',
    `path = ${JSON.stringify(share)}`,
    // 999 more shares (one directory): the dashboard must stay usable with 1,000 items.
    ...Array.from({ length: 999 }, (_, i) => [
      "[[source]]", 'kind = "fileshare"', 'resource_group = "rg2"', 'storage_account = "many"',
      `share = "s${i}"`, `path = ${JSON.stringify(share)}`,
    ].join("\n")),
    "",
  ].join("\n"));
  const data = path.join(dir, "data");
  server = spawn(BIN, ["serve", "--data", data, "--listen", "127.0.0.1:0", "--config", config], {
    stdio: ["ignore", "pipe", "ignore"],
  });
  const lines = readline.createInterface({ input: server.stdout });
  for await (const line of lines) {
    const m = line.match(/^rsvault listening on (\S+)/);
    if (m) base = m[1];
    // The admin token is printed once, at the first start (the server keeps only its hash).
    const t = line.match(/admin token:\s*(\S+)/);
    if (t) token = t[1];
    if (line.startsWith("TLS certificate")) break;
  }
  if (!token) throw new Error("the server printed no admin token");
  ca = fs.readFileSync(path.join(data, "tls", "cert.pem"));
  await api("PUT", VAULT, { location: "westus" });
  await api("PUT", `${VAULT}/backupPolicies/daily`, { properties: {
    backupManagementType: "AzureStorage", timeZone: "UTC",
    schedulePolicy: { schedulePolicyType: "SimpleSchedulePolicy", scheduleRunFrequency: "Daily", scheduleRunTimes: ["2026-01-01T02:00:00Z"] },
    retentionPolicy: { retentionPolicyType: "SimpleRetentionPolicy", retentionDuration: { count: 30, durationType: "Days" } },
  } });
  await api("PUT", ITEM, { properties: { protectedItemType: "AzureFileShareProtectedItem", policyId: `${VAULT}/backupPolicies/daily` } });
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox"],
  });
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1200, height: 900 } });
  page = await context.newPage();
});

after(async () => {
  await browser?.close();
  server?.kill("SIGKILL");
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

test("the dashboard signs in, backs up live, follows a log and cancels a job", { timeout: 120_000 }, async () => {
  await page.goto(`${base}/ui/`);
  await page.fill("#token", "not-the-token");
  await page.fill("#sub", SUB);
  await page.click("#signin button");
  await page.waitForSelector("#signin-error:has-text('token')");
  await page.fill("#token", token);
  await page.click("#signin button");
  const row = page.locator("#items tbody tr", { hasText: "share1" });
  await row.waitFor();
  assert.match(await row.textContent(), /IRPending/);
  await shot("1-signed-in");

  // A backup started on the page shows up running, then completed, without a reload.
  await row.locator("button.backup").click();
  const job = page.locator("#jobs tbody tr", { hasText: "Backup" }).first();
  await job.locator("td.InProgress").waitFor();
  await shot("2-backup-running");
  await job.click();
  await page.locator("#job-status.Completed").waitFor({ timeout: 60_000 });
  await page.locator("#job-log", { hasText: "Job ended Completed." }).waitFor();
  assert.equal(await page.locator("#job-progress").evaluate((p) => p.value), 100);
  assert.match(await page.locator("#job-log").textContent(), /Backup started on node/);
  await page.locator("#jobs tbody tr td.Completed").first().waitFor();
  await row.locator("td.Completed").waitFor();
  await shot("3-backup-completed");

  // A second backup, cancelled from its detail view (new data, so it has to read it again).
  fs.writeFileSync(path.join(dir, "share", "sub", "big.bin"), crypto.randomBytes(4 << 20));
  await page.click("#close");
  await row.locator("button.backup").click();
  const running = page.locator("#jobs tbody tr", { has: page.locator("td.InProgress") }).first();
  await running.waitFor();
  await running.click();
  await page.locator("#cancel:visible").click();
  await page.locator("#job-status.Cancelled").waitFor({ timeout: 60_000 });
  await shot("4-cancelled");
  const jobs = await api("GET", `${VAULT}/backupJobs`);
  const backups = jobs.value.filter((j) => j.properties.operation === "Backup");
  assert.deepEqual(backups.map((j) => j.properties.status).sort(), ["Cancelled", "Completed"]);
});

test("a vault with 1,000 protected items lists them all and stays live", { timeout: 180_000 }, async () => {
  const policy = `${VAULT}/backupPolicies/daily`;
  for (let i = 0; i < 999; i += 50) {
    await Promise.all(Array.from({ length: Math.min(50, 999 - i) }, (_, k) => api("PUT",
      `${VAULT}/backupFabrics/Azure/protectionContainers/StorageContainer;Storage;rg2;many/protectedItems/AzureFileShare;s${i + k}`,
      { properties: { protectedItemType: "AzureFileShareProtectedItem", policyId: policy } })));
  }
  await page.reload();
  await page.locator("#items tbody tr", { hasText: "s998" }).waitFor();
  assert.equal(await page.locator("#items tbody tr").count(), 1000);
  // Still refreshing: the status line changes while 1,000 rows are redrawn each pass.
  const before = await page.locator("#status").textContent();
  await page.waitForFunction((b) => document.getElementById("status").textContent !== b, before, { timeout: 20_000 });
  assert.match(await page.locator("#status").textContent(), /^updated /);
  await shot("5-thousand-items");
});
