// rsvault's dashboard: plain JavaScript over the same REST API every client uses, no external
// resources (it works offline). The token stays in this tab's sessionStorage.
"use strict";
const API = "api-version=2026-02-01";
const $ = (id) => document.getElementById(id);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
let token = sessionStorage.getItem("rsvault.token");
let sub = sessionStorage.getItem("rsvault.sub") || "";
let vault = null;       // the selected vault's id
let openJob = null;     // { id, next }
let timer = null;

async function call(method, path, body) {
  const url = path.startsWith("https://") ? path : `${path}${path.includes("?") ? "&" : "?"}${API}`;
  const r = await fetch(url, {
    method,
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  const json = text ? JSON.parse(text) : null;
  if (!r.ok) throw new Error(json?.error?.message || `${method} ${path}: ${r.status}`);
  return json;
}

function age(t) {
  if (!t) return "";
  const s = Math.max(0, (Date.now() - Date.parse(t)) / 1000);
  if (s < 120) return `${Math.round(s)} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${Math.round(s / 3600)} h`;
  return `${Math.round(s / 86400)} d`;
}

function progressOf(p) {
  const bag = p.extendedInfo?.propertyBag || {};
  const pct = p.extendedInfo?.progressPercentage ?? (bag["Progress Percentage"] !== undefined ? Number(bag["Progress Percentage"]) : null);
  const eta = p.extendedInfo?.estimatedRemainingDuration ?? bag["Estimated Remaining Duration"] ?? "";
  return { pct: p.status === "Completed" ? 100 : pct, eta };
}

async function signin(ev) {
  ev?.preventDefault();
  if (ev) {
    token = $("token").value.trim();
    sub = $("sub").value.trim();
  }
  try {
    const vaults = await call("GET", `/subscriptions/${encodeURIComponent(sub)}/providers/Microsoft.RecoveryServices/vaults`);
    sessionStorage.setItem("rsvault.token", token);
    sessionStorage.setItem("rsvault.sub", sub);
    $("signin").hidden = true;
    $("app").hidden = false;
    $("signout").hidden = false;
    $("who").textContent = `subscription ${sub}`;
    $("vault").innerHTML = vaults.value.map((v) => `<option value="${esc(v.id)}">${esc(v.name)}</option>`).join("");
    vault = vaults.value[0]?.id || null;
    refresh();
  } catch (e) {
    $("signin").hidden = false;
    $("signin-error").textContent = e.message;
  }
}

async function refresh() {
  clearTimeout(timer);
  try {
    if (vault) await Promise.all([items(), jobs(), job()]);
    $("status").textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (e) {
    $("status").textContent = e.message;
  }
  timer = setTimeout(refresh, 1000);
}

async function items() {
  const list = await call("GET", `${vault}/backupProtectedItems`);
  $("items").tBodies[0].innerHTML = list.value.map((it) => {
    const p = it.properties;
    const stale = (p.healthDetails || []).find((d) => d.title === "BackupStale");
    return `<tr data-id="${esc(it.id)}"><td>${esc(p.friendlyName)}</td><td>${esc(p.protectionState)}</td>
      <td class="${esc(p.healthStatus)}" title="${esc(stale?.message)}">${esc(p.healthStatus)}${stale ? " (stale)" : ""}</td>
      <td class="${esc(p.lastBackupStatus)}">${esc(p.lastBackupStatus)}</td><td>${esc(age(p.lastBackupTime))}</td>
      <td>${esc(p.lastProvenRestorableTime ? age(p.lastProvenRestorableTime) + " ago" : "never")}</td>
      <td><button class="backup" data-id="${esc(it.id)}" data-kind="${esc(p.workloadType)}">Back up now</button></td></tr>`;
  }).join("");
}

async function jobs() {
  const f = $("filter-text").value.trim();
  const list = await call("GET", `${vault}/backupJobs${f ? `?$filter=${encodeURIComponent(f)}` : ""}`);
  $("jobs").tBodies[0].innerHTML = list.value.slice(0, 200).map((j) => {
    const p = j.properties;
    const { pct } = progressOf(p);
    return `<tr class="job" data-id="${esc(j.name)}"><td>${esc(p.operation)}</td><td>${esc(p.entityFriendlyName)}</td>
      <td class="${esc(p.status)}">${esc(p.status)}</td><td>${pct === null ? "" : `${Number(pct).toFixed(1)}%`}</td><td>${esc(p.startTime)}</td></tr>`;
  }).join("");
}

async function job() {
  if (!openJob) return;
  const j = await call("GET", `${vault}/backupJobs/${openJob.id}`);
  const p = j.properties;
  const { pct, eta } = progressOf(p);
  $("job-status").textContent = p.status;
  $("job-status").className = p.status;
  $("job-progress").value = pct ?? 0;
  $("job-eta").textContent = eta ? `ETA ${eta.replace(/^PT/, "").toLowerCase()}` : "";
  $("cancel").hidden = !(p.actionsInfo || []).includes("Cancellable");
  $("job-tasks").innerHTML = (p.extendedInfo?.tasksList || []).map((t) => `<li>${esc(t.taskId)}: ${esc(t.status)}</li>`).join("");
  const log = await call("GET", `${vault}/backupJobs/${openJob.id}/rsvault/log?start=${openJob.next}`);
  for (const l of log.lines) {
    $("job-log").textContent += `${l.t} ${l.level.padEnd(7)} ${l.msg}\n`;
    openJob.next = l.n + 1;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("sub").value = sub;
  $("signin").addEventListener("submit", signin);
  $("signout").addEventListener("click", () => { sessionStorage.clear(); location.reload(); });
  $("vault").addEventListener("change", (e) => { vault = e.target.value; openJob = null; $("job").hidden = true; refresh(); });
  $("filter").addEventListener("submit", (e) => { e.preventDefault(); refresh(); });
  $("jobs").addEventListener("click", (e) => {
    const tr = e.target.closest("tr.job");
    if (!tr) return;
    openJob = { id: tr.dataset.id, next: 0 };
    $("job-id").textContent = tr.dataset.id;
    $("job-log").textContent = "";
    $("job").hidden = false;
    refresh();
  });
  $("items").addEventListener("click", async (e) => {
    const b = e.target.closest("button.backup");
    if (!b) return;
    const objectType = b.dataset.kind === "VM" ? "IaasVMBackupRequest" : "AzureFileShareBackupRequest";
    try {
      await call("POST", `${b.dataset.id}/backup`, { properties: { objectType } });
      refresh();
    } catch (err) { $("status").textContent = err.message; }
  });
  $("cancel").addEventListener("click", async () => {
    try { await call("POST", `${vault}/backupJobs/${openJob.id}/cancel`); refresh(); } catch (err) { $("status").textContent = err.message; }
  });
  $("close").addEventListener("click", () => { openJob = null; $("job").hidden = true; });
  if (token && sub) signin(); else $("signin").hidden = false;
});
