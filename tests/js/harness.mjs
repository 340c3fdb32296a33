// Test harness for the JavaScript SDK journey: starts the real rsvault binary on an ephemeral port
// with a temp data dir and generated sources (the same approach as tests/python/conftest.py), and
// builds the official SDK clients pointed at it.
//
// RSVAULT_BIN selects the binary (default: <repo>/target/debug/rsvault).

import { spawn } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import https from "node:https";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { RecoveryServicesBackupClient } from "@azure/arm-recoveryservicesbackup";
import { RecoveryServicesClient } from "@azure/arm-recoveryservices";
import { isTokenCredential } from "@azure/core-auth";

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const REPO = path.resolve(HERE, "..", "..");
export const BIN = path.resolve(REPO, process.env.RSVAULT_BIN || path.join("target", "debug", "rsvault"));

export const SUB = "6a2f1b6e-3a52-4d8e-9b7f-0c4a5e6d7f80";
export const VAULT_RG = "rsvault-js";
export const SRC_RG = "rg1";
export const MAX_WAIT_MS = Number(process.env.RSVAULT_TEST_TIMEOUT || "90") * 1000;
export const TERMINAL_JOB = new Set(["Completed", "CompletedWithWarnings", "Failed", "Cancelled"]);

// ---------------------------------------------------------------------------------------------
// Every response any client sees lands here (status, method, url, a body snippet), so that the
// suite can fail on any 5xx at the end.
// ---------------------------------------------------------------------------------------------
export const RECORDER = [];

function record(method, url, status, body) {
  RECORDER.push({ method, url, status, body: (body || "").slice(0, 300) });
}

// ---------------------------------------------------------------------------------------------
// Sources: deterministic incompressible bytes (SHA-256 counter stream), as in conftest.py.
// ---------------------------------------------------------------------------------------------
export function randBytes(seed, n) {
  const out = Buffer.alloc(n);
  let off = 0;
  let ctr = 0;
  while (off < n) {
    const d = crypto.createHash("sha256").update(`${seed}:${ctr++}`).digest();
    off += d.copy(out, off, 0, Math.min(32, n - off));
  }
  return out;
}

const BASE_MTIME_S = 1_700_000_000.123;

function write(p, data, mode, mtimeS) {
  fs.mkdirSync(path.dirname(p), { recursive: true });
  fs.writeFileSync(p, data);
  fs.chmodSync(p, mode);
  fs.utimesSync(p, mtimeS, mtimeS);
}

export function makeShare(dir, seed = 1) {
  fs.mkdirSync(dir, { recursive: true });
  write(path.join(dir, "a.txt"), Buffer.from("hello rsvault\n".repeat(20)), 0o644, BASE_MTIME_S);
  write(path.join(dir, "b.bin"), randBytes(seed, 200 * 1024), 0o600, BASE_MTIME_S + 1);
  write(path.join(dir, "empty.txt"), Buffer.alloc(0), 0o644, BASE_MTIME_S + 2);
  write(path.join(dir, "run.sh"), Buffer.from("#!/bin/sh\necho hi\n"), 0o755, BASE_MTIME_S + 3);
  write(path.join(dir, "sub", "c.txt"), Buffer.from("nested file\n".repeat(100)), 0o640, BASE_MTIME_S + 4);
  write(path.join(dir, "sub", "deep", "d.bin"), randBytes(seed + 100, 64 * 1024 + 7), 0o444, BASE_MTIME_S + 5);
  fs.chmodSync(path.join(dir, "sub"), 0o750);
}

export function makeDisk(p, size, seed) {
  fs.mkdirSync(path.dirname(p), { recursive: true });
  const fd = fs.openSync(p, "w");
  try {
    fs.ftruncateSync(fd, size);
    fs.writeSync(fd, randBytes(seed, 256 * 1024), 0, 256 * 1024, 0);
    const tail = randBytes(seed + 1, 4096);
    fs.writeSync(fd, tail, 0, tail.length, size - 4096);
  } finally {
    fs.closeSync(fd);
  }
}

export function makeRandomFile(p, size, seed) {
  fs.mkdirSync(path.dirname(p), { recursive: true });
  const fd = fs.openSync(p, "w");
  try {
    let off = 0;
    let chunkNo = 0;
    while (off < size) {
      const n = Math.min(size - off, 1 << 20);
      const buf = randBytes(`${seed}/${chunkNo++}`, n);
      fs.writeSync(fd, buf, 0, n, off);
      off += n;
    }
  } finally {
    fs.closeSync(fd);
  }
}

export function sha256File(p) {
  return crypto.createHash("sha256").update(fs.readFileSync(p)).digest("hex");
}

/** relative path -> {type, mode, size, sha256, mtimeMs} for everything below root. */
export function treeSnapshot(root) {
  const out = {};
  const walk = (dir) => {
    for (const name of fs.readdirSync(dir).sort()) {
      const p = path.join(dir, name);
      const st = fs.lstatSync(p);
      const rel = path.relative(root, p);
      const e = { mode: st.mode & 0o7777, mtimeMs: Math.round(st.mtimeMs) };
      if (st.isDirectory()) {
        e.type = "dir";
        out[rel] = e;
        walk(p);
      } else if (st.isFile()) {
        e.type = "file";
        e.size = st.size;
        e.sha256 = sha256File(p);
        out[rel] = e;
      } else {
        e.type = "other";
        out[rel] = e;
      }
    }
  };
  walk(root);
  return out;
}

// ---------------------------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------------------------
export function tomlConfig({ restoreRoots, sources, retryAfter = 1, pageSize = 200, bps = 0 }) {
  const q = (s) => JSON.stringify(String(s));
  const lines = [`restore_roots = [${restoreRoots.map(q).join(", ")}]`, ""];
  lines.push("[server]", `retry_after_seconds = ${retryAfter}`, `page_size = ${pageSize}`, "");
  lines.push("[limits]", `backup_bytes_per_second = ${bps}`, "");
  for (const s of sources) {
    lines.push("[[source]]");
    for (const [k, v] of Object.entries(s)) {
      lines.push(Array.isArray(v) ? `${k} = [${v.map(q).join(", ")}]` : `${k} = ${q(v)}`);
    }
    lines.push("");
  }
  return lines.join("\n");
}

export class Server {
  constructor(root, configText, name = "main") {
    this.root = root;
    this.name = name;
    this.data = path.join(root, "data");
    this.configPath = path.join(root, "rsvault.toml");
    this.logPath = path.join(root, "server.log");
    fs.writeFileSync(this.configPath, configText);
    this.proc = null;
    this.baseUrl = "";
    this.port = 0;
    this.token = "";
  }

  get certPath() {
    return path.join(this.data, "tls", "cert.pem");
  }

  async start(timeoutMs = 60_000) {
    if (!fs.existsSync(BIN)) {
      throw new Error(`rsvault binary not found at ${BIN}; build it with \`cargo build -p rsvault\` or set RSVAULT_BIN`);
    }
    fs.mkdirSync(this.data, { recursive: true });
    const log = fs.openSync(this.logPath, "a");
    const env = { ...process.env, RUST_LOG: process.env.RUST_LOG || "info", RUST_BACKTRACE: "1" };
    this.proc = spawn(BIN, ["serve", "--data", this.data, "--listen", "127.0.0.1:0", "--config", this.configPath], {
      cwd: this.root,
      env,
      stdio: ["ignore", "pipe", log],
    });
    let out = "";
    // Printed on the first start only (the server keeps just its hash): a restart keeps it.
    const previous = this.token;
    this.token = "";
    const exited = new Promise((resolve) => this.proc.once("exit", (code, sig) => resolve({ code, sig })));
    this.exited = exited;
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`rsvault did not print its listening line in ${timeoutMs} ms:\n${this.tail()}`)), timeoutMs);
      exited.then(({ code, sig }) => {
        clearTimeout(timer);
        reject(new Error(`rsvault exited (${code ?? sig}) during start:\n${this.tail()}`));
      });
      this.proc.stdout.on("data", (chunk) => {
        fs.appendFileSync(this.logPath, "[stdout] " + chunk.toString());
        out += chunk.toString();
        const m = out.match(/rsvault listening on (https:\/\/[0-9.]+:(\d+))/);
        const t = out.match(/admin token:\s*(\S+)/);
        if (t) this.token = t[1];
        if (m && (this.token || previous)) {
          this.baseUrl = m[1];
          this.port = Number(m[2]);
          if (!this.token) this.token = previous;
          clearTimeout(timer);
          resolve();
        }
      });
    });
    if (this.port === 0) throw new Error("server printed port 0 instead of the bound port");
    const end = Date.now() + 10_000;
    while (!fs.existsSync(this.certPath) && Date.now() < end) await sleep(50);
    this.ca = fs.readFileSync(this.certPath);
    return this;
  }

  alive() {
    return this.proc !== null && this.proc.exitCode === null && this.proc.signalCode === null;
  }

  async stop(signal = "SIGTERM") {
    if (!this.proc) return null;
    if (this.alive()) {
      this.proc.kill(signal);
      const t = setTimeout(() => this.proc && this.proc.kill("SIGKILL"), 15_000);
      await this.exited;
      clearTimeout(t);
    }
    const rc = this.proc.exitCode ?? this.proc.signalCode;
    this.proc = null;
    return rc;
  }

  tail(n = 60) {
    try {
      return fs.readFileSync(this.logPath, "utf8").split("\n").slice(-n).join("\n");
    } catch {
      return "<no log>";
    }
  }

  // ---- clients -------------------------------------------------------------------------------
  credential() {
    const token = this.token;
    // The smallest TokenCredential (the @azure/core-auth interface): hands out rsvault's admin token.
    const cred = {
      getToken: async () => ({ token, expiresOnTimestamp: Date.now() + 3600_000 }),
    };
    if (!isTokenCredential(cred)) throw new Error("credential is not a core-auth TokenCredential");
    return cred;
  }

  clientOptions(extra = {}) {
    return {
      endpoint: this.baseUrl,
      // trust rsvault's self-signed certificate for this client only
      tlsOptions: { ca: this.ca },
      retryOptions: { maxRetries: 0 },
      additionalPolicies: [
        {
          position: "perRetry", // below deserialization: sees error responses too
          policy: {
            name: "rsvaultRecorder",
            async sendRequest(request, next) {
              const response = await next(request);
              record(request.method, request.url, response.status, response.bodyAsText);
              return response;
            },
          },
        },
      ],
      ...extra,
    };
  }

  backupClient(extra = {}) {
    return new RecoveryServicesBackupClient(this.credential(), SUB, this.clientOptions(extra));
  }

  vaultClient(extra = {}) {
    return new RecoveryServicesClient(this.credential(), SUB, this.clientOptions(extra));
  }

  /** Raw HTTPS request with the same trust; token=null sends no Authorization header. */
  raw(method, urlOrPath, { token = this.token, body, apiVersion = "2023-06-01" } = {}) {
    const url = new URL(urlOrPath.startsWith("http") ? urlOrPath : this.baseUrl + urlOrPath);
    if (!urlOrPath.startsWith("http") && apiVersion && !url.searchParams.has("api-version")) {
      url.searchParams.set("api-version", apiVersion);
    }
    const headers = { "x-ms-client-request-id": crypto.randomUUID() };
    if (token) headers.Authorization = `Bearer ${token}`;
    let payload;
    if (body !== undefined) {
      payload = Buffer.from(JSON.stringify(body));
      headers["Content-Type"] = "application/json";
      headers["Content-Length"] = payload.length;
    }
    return new Promise((resolve, reject) => {
      const req = https.request(url, { method, headers, ca: this.ca, timeout: 30_000 }, (res) => {
        const chunks = [];
        res.on("data", (c) => chunks.push(c));
        res.on("end", () => {
          const buf = Buffer.concat(chunks);
          const text = buf.toString("utf8");
          record(method, url.toString(), res.statusCode, text);
          let json;
          try {
            json = text ? JSON.parse(text) : undefined;
          } catch {
            json = undefined;
          }
          resolve({ status: res.statusCode, headers: res.headers, text, json, body: buf });
        });
      });
      req.on("timeout", () => req.destroy(new Error(`timeout: ${method} ${url}`)));
      req.on("error", reject);
      if (payload) req.write(payload);
      req.end();
    });
  }
}

// ---------------------------------------------------------------------------------------------
// ids and helpers
// ---------------------------------------------------------------------------------------------
export const vaultPath = (vault, rg = VAULT_RG) =>
  `/subscriptions/${SUB}/resourceGroups/${rg}/providers/Microsoft.RecoveryServices/vaults/${vault}`;
export const vmId = (name = "vm1", rg = SRC_RG) =>
  `/subscriptions/${SUB}/resourceGroups/${rg}/providers/Microsoft.Compute/virtualMachines/${name}`;
export const accountId = (name = "acct1", rg = SRC_RG) =>
  `/subscriptions/${SUB}/resourceGroups/${rg}/providers/Microsoft.Storage/storageAccounts/${name}`;
export const vmContainer = (name = "vm1", rg = SRC_RG) => `IaasVMContainer;iaasvmcontainerv2;${rg};${name}`;
export const vmItem = (name = "vm1", rg = SRC_RG) => `VM;iaasvmcontainerv2;${rg};${name}`;
export const storageContainer = (acct = "acct1", rg = SRC_RG) => `StorageContainer;Storage;${rg};${acct}`;
export const shareItem = (share = "share1") => `AzureFileShare;${share}`;

/** Last path segment of a Location / Azure-AsyncOperation URL. */
export const opIdFrom = (url) => new URL(url).pathname.replace(/\/+$/, "").split("/").pop();

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function waitFor(fn, pred, { timeoutMs = MAX_WAIT_MS, intervalMs = 100, what = "" } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const last = await fn();
    if (pred(last)) return last;
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last value: ${JSON.stringify(last)}`);
    }
    await sleep(intervalMs);
  }
}

/** The `yyyy-MM-dd hh:mm:ss AM` form that az backup sends (UTC). */
export function filterTime(d) {
  const p = (n) => String(n).padStart(2, "0");
  const h = d.getUTCHours();
  const h12 = h % 12 === 0 ? 12 : h % 12;
  return `${d.getUTCFullYear()}-${p(d.getUTCMonth() + 1)}-${p(d.getUTCDate())} ${p(h12)}:${p(d.getUTCMinutes())}:${p(d.getUTCSeconds())} ${h < 12 ? "AM" : "PM"}`;
}

/** onResponse callback collecting (method, status, headers) of every raw response of one SDK call. */
export function capture() {
  const responses = [];
  const onResponse = (raw) => {
    responses.push({ method: raw.request.method, status: raw.status, headers: raw.headers.toJSON(), body: raw.bodyAsText });
  };
  return { responses, onResponse };
}

export function tmpRoot(prefix) {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

export function vmPolicyBody(time = "2026-01-01T02:00:00Z", days = 30) {
  return {
    properties: {
      backupManagementType: "AzureIaasVM",
      timeZone: "UTC",
      instantRpRetentionRangeInDays: 2,
      schedulePolicy: { schedulePolicyType: "SimpleSchedulePolicy", scheduleRunFrequency: "Daily", scheduleRunTimes: [new Date(time)] },
      retentionPolicy: {
        retentionPolicyType: "LongTermRetentionPolicy",
        dailySchedule: { retentionTimes: [new Date(time)], retentionDuration: { count: days, durationType: "Days" } },
      },
    },
  };
}

export function sharePolicyBody(time = "2026-01-01T03:00:00Z", days = 14) {
  return {
    properties: {
      backupManagementType: "AzureStorage",
      workLoadType: "AzureFileShare",
      timeZone: "UTC",
      schedulePolicy: { schedulePolicyType: "SimpleSchedulePolicy", scheduleRunFrequency: "Daily", scheduleRunTimes: [new Date(time)] },
      retentionPolicy: {
        retentionPolicyType: "LongTermRetentionPolicy",
        dailySchedule: { retentionTimes: [new Date(time)], retentionDuration: { count: days, durationType: "Days" } },
      },
    },
  };
}
