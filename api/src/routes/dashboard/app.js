// The operator dashboard of hokusai-serve: reads the JSON API with the key the operator types
// (kept in sessionStorage) and renders it with DOM nodes and textContent only (data never
// reaches innerHTML). Refreshes every 10 s. Served by api/src/routes/dashboard.rs.
"use strict";

const KEY_STORAGE = "hokusai.dashboard.key";
const REFRESH_MS = 10000;
const EVENT_MODELS = 8; // models whose deployment events are fetched
const STATUSES = ["pending", "deploying", "deployed", "undeploying", "stopped", "failed",
  "rolling_back", "rollback_failed"];

const $ = (id) => document.getElementById(id);
let timer = null;
let loading = false;

/** An HTTP answer that is not 2xx, with the API's error body when there is one. */
class ApiFailure extends Error {
  constructor(status, code, detail, requestId) {
    super(`${status} ${code}${detail ? ": " + detail : ""}${requestId ? " (request " + requestId + ")" : ""}`);
    this.status = status;
  }
}

async function api(path, options = {}) {
  const key = sessionStorage.getItem(KEY_STORAGE);
  const headers = { Authorization: "Bearer " + key, Accept: "application/json" };
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method: options.method || "GET",
      headers,
      body: options.body === undefined ? undefined : JSON.stringify(options.body),
      cache: "no-store",
    });
  } catch (error) {
    throw new ApiFailure(0, "NETWORK", "the API did not answer (" + error.message + ")", null);
  }
  let body = null;
  try { body = await response.json(); } catch (_) { body = null; }
  if (!response.ok) {
    const code = body && body.error ? body.error : response.statusText || "ERROR";
    const detail = body && body.detail ? body.detail : "";
    const hint = response.status === 401 ? " — check the key"
      : response.status === 403 ? " — the key lacks the scope this needs"
      : response.status === 503 ? " — retry in a moment" : "";
    throw new ApiFailure(response.status, code, detail + hint, body && body.request_id);
  }
  return body;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null) continue;
    if (name === "class") node.className = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const text = (value) => (value === null || value === undefined || value === "" ? "–" : String(value));
const usd = (value) => (typeof value === "number" ? "$" + value.toFixed(value < 10 ? 4 : 2) : "–");
function when(value) {
  if (!value) return "–";
  const date = new Date(value);
  return isNaN(date) ? String(value) : date.toISOString().replace("T", " ").slice(0, 19) + "Z";
}
const pill = (status) => el("span", { class: "pill s-" + status }, status);

function fill(tbody, rows, columns, emptyText) {
  const body = $(tbody);
  body.replaceChildren();
  if (rows.length === 0) {
    body.append(el("tr", {}, el("td", { class: "empty", colspan: String(columns) }, emptyText)));
  }
  for (const row of rows) body.append(row);
}

function panelError(id, error) {
  const node = $(id);
  node.hidden = !error;
  node.textContent = error ? error.message : "";
}

/** The error banner of the last refresh (cleared by the next good one). */
function banner(message) {
  const node = $("banner");
  node.hidden = !message;
  node.textContent = message || "";
}

/** The outcome of the operator's last action (replay); refreshes leave it alone. */
function notice(message, ok) {
  const node = $("notice");
  node.hidden = !message;
  node.className = "banner" + (ok ? " info" : "");
  node.textContent = message || "";
}

async function settle(promise) {
  try { return { value: await promise }; } catch (error) { return { error }; }
}

async function refresh() {
  if (loading || !sessionStorage.getItem(KEY_STORAGE)) return;
  loading = true;
  try {
    const [models, failed, rollbackFailed, costs, dlq] = await Promise.all([
      settle(api("/api/v1/models")),
      settle(api("/api/v1/models?status=failed")),
      settle(api("/api/v1/models?status=rollback_failed")),
      settle(api("/api/v1/costs")),
      settle(api("/api/v1/admin/dlq")),
    ]);
    const fatal = [models, costs].map((r) => r.error).find(Boolean);
    banner(fatal ? fatal.message : null);
    renderCosts(costs);
    renderModels(models, costs);
    await renderRollouts(models);
    renderFailures(failed, rollbackFailed);
    renderDeadLetters(dlq);
    await renderEvents(models);
    $("refreshed").textContent = "refreshed " + new Date().toLocaleTimeString();
  } finally {
    loading = false;
  }
}

function renderCosts(costs) {
  const counts = {};
  const list = $("status-counts");
  list.replaceChildren();
  if (costs.error) {
    $("hourly").textContent = "–";
    $("accrued").textContent = "–";
    $("idle-hourly").textContent = costs.error.message;
    $("month-to-date").textContent = "";
    list.append(el("li", {}, "unavailable"));
    return;
  }
  const report = costs.value;
  for (const model of report.models || []) {
    for (const d of model.deployments || []) counts[d.status] = (counts[d.status] || 0) + 1;
  }
  const seen = STATUSES.filter((s) => counts[s]).concat(Object.keys(counts).filter((s) => !STATUSES.includes(s)));
  if (seen.length === 0) list.append(el("li", {}, "no deployments"));
  for (const status of seen) {
    list.append(el("li", { class: "s-" + status, "data-status": status }, status + " " + counts[status]));
  }
  $("hourly").textContent = usd(report.current_hourly_usd);
  $("accrued").textContent = usd(report.accrued_cost_usd);
  $("month-to-date").textContent = typeof report.month_to_date_cost_usd === "number"
    ? "this month " + usd(report.month_to_date_cost_usd) : "";
  $("idle-hourly").textContent = typeof report.idle_hourly_usd === "number"
    ? "idle endpoints " + usd(report.idle_hourly_usd) + "/h" : "";
}

function renderModels(models, costs) {
  panelError("models-error", models.error);
  if (models.error) return;
  const byModel = {};
  if (costs.value) for (const m of costs.value.models || []) byModel[m.model_id] = m;
  const rows = (models.value.models || []).map((d) => {
    const cost = byModel[d.model_id] || {};
    const name = el("td", {}, el("strong", {}, d.model_id));
    if (cost.idle === true) name.append(el("span", { class: "pill idle", title: "deployed, billing, no recent prediction" }, "idle"));
    return el("tr", { "data-model": d.model_id },
      name,
      el("td", { class: "active-version" }, d.is_active ? text(d.model_version) : "none"),
      el("td", {}, pill(d.status)),
      el("td", {}, text(d.provider)),
      el("td", {}, text(d.provider_status)),
      el("td", { class: "num" }, usd(cost.current_hourly_usd)),
      el("td", { class: "num" }, usd(cost.accrued_cost_usd)),
      el("td", { class: "num" }, usd(cost.month_to_date_cost_usd)),
      el("td", {}, cost.last_prediction_at === undefined ? "–" : (cost.last_prediction_at ? when(cost.last_prediction_at) : "never")),
      el("td", {}, when(d.updated_at)));
  });
  fill("models", rows, 10, "No model is deployed.");
}

// Rollouts: the open (or just ended) rollout of each listed model, with the step's weight as
// a progress bar and the live error rate per track (docs/design/rollouts.md).
const ROLLOUT_MODELS = 20;
const RECENTLY_ENDED_MS = 10 * 60 * 1000;
const ROLLOUT_PILL = { running: "deploying", paused: "pending", promoted: "deployed", aborted: "failed" };

function rate(figure) {
  if (!figure || !figure.requests) return "–";
  return (100 * figure.errors / figure.requests).toFixed(1) + "% of " + figure.requests;
}

async function renderRollouts(models) {
  if (models.error) { panelError("rollouts-error", null); return; }
  const ids = [...new Set((models.value.models || []).map((d) => d.model_id))].slice(0, ROLLOUT_MODELS);
  const answers = await Promise.all(ids.map((id) =>
    settle(api("/api/v1/models/" + encodeURIComponent(id) + "/rollout"))));
  // A model that never had a rollout answers 404: not an error here.
  const failure = answers.map((a) => a.error).find((e) => e && e.status !== 404);
  panelError("rollouts-error", failure);
  const shown = answers.map((a) => a.value).filter((r) => r &&
    (r.state === "running" || r.state === "paused" ||
     (r.ended_at && Date.now() - Date.parse(r.ended_at) < RECENTLY_ENDED_MS)));
  const rows = shown.map((r) => {
    const bar = el("progress", { max: "100", value: String(r.weight), title: r.weight + "%" });
    return el("tr", { "data-rollout": r.model_id },
      el("td", {}, el("strong", {}, r.model_id)),
      el("td", {}, r.strategy),
      el("td", {}, el("span", { class: "pill s-" + ROLLOUT_PILL[r.state] }, r.state)),
      el("td", {}, bar, " ", "step " + (r.step + 1) + "/" + r.steps.length + " · " + r.weight + "%"),
      el("td", { class: "num" }, rate(r.figures.canary)),
      el("td", { class: "num" }, rate(r.figures.stable)),
      el("td", {}, r.next_decision_at ? when(r.next_decision_at) : "–"),
      el("td", { class: "reason" }, text(r.outcome)));
  });
  fill("rollouts", rows, 8, "No rollout in progress.");
}

function renderFailures(failed, rollbackFailed) {
  const error = failed.error || rollbackFailed.error;
  panelError("failures-error", error);
  if (error) return;
  const all = (failed.value.models || []).concat(rollbackFailed.value.models || []);
  all.sort((a, b) => String(b.updated_at).localeCompare(String(a.updated_at)));
  const rows = all.map((d) => el("tr", { "data-model": d.model_id },
    el("td", {}, d.model_id),
    el("td", {}, text(d.model_version)),
    el("td", {}, pill(d.status)),
    el("td", { class: "reason" }, text(d.error_message)),
    el("td", {}, when(d.updated_at))));
  fill("failures", rows, 5, "No failed deployment.");
}

function renderDeadLetters(dlq) {
  panelError("dlq-error", dlq.error);
  const all = $("replay-all");
  if (dlq.error) {
    $("dlq-count").textContent = "?";
    all.disabled = true;
    $("dead-letters").replaceChildren();
    return;
  }
  const letters = dlq.value || [];
  $("dlq-count").textContent = String(letters.length);
  all.disabled = letters.length === 0;
  const rows = letters.map((letter) => {
    const button = el("button", { type: "button", class: "replay", "data-id": letter.id }, "Replay");
    button.addEventListener("click", () => replay({ ids: [letter.id] }, button));
    return el("tr", { "data-id": letter.id },
      el("td", { class: "mono" }, letter.id),
      el("td", {}, text(letter.kind)),
      el("td", { class: "mono" }, text(letter.deployment_id)),
      el("td", { class: "num" }, text(letter.attempts)),
      el("td", { class: "reason" }, text(letter.last_error)),
      el("td", {}, when(letter.dead_lettered_at)),
      el("td", {}, button));
  });
  fill("dead-letters", rows, 7, "The dead-letter queue is empty.");
}

async function replay(body, button) {
  if (button) button.disabled = true;
  try {
    const answer = await api("/api/v1/admin/dlq/replay", { method: "POST", body });
    notice("Replayed " + answer.replayed.length + " dead letter(s).", true);
  } catch (error) {
    notice("Replay failed: " + error.message, false);
  }
  await refresh();
}

async function renderEvents(models) {
  if (models.error) { panelError("events-error", null); return; }
  const deployments = (models.value.models || [])
    .slice()
    .sort((a, b) => String(b.updated_at).localeCompare(String(a.updated_at)))
    .slice(0, EVENT_MODELS);
  const logs = await Promise.all(deployments.map((d) =>
    settle(api("/api/v1/deployments/" + encodeURIComponent(d.id) + "/events")).then((r) => ({ d, r }))));
  const failure = logs.map((l) => l.r.error).find(Boolean);
  panelError("events-error", failure);
  const events = [];
  for (const { d, r } of logs) {
    if (r.value) for (const e of r.value.events || []) events.push({ model: d.model_id, e });
  }
  events.sort((a, b) => String(b.e.created_at).localeCompare(String(a.e.created_at)));
  const rows = events.slice(0, 25).map(({ model, e }) => el("tr", {},
    el("td", {}, when(e.created_at)),
    el("td", {}, model),
    el("td", {}, e.kind),
    el("td", {}, e.from_status || e.to_status ? text(e.from_status) + " → " + text(e.to_status) : "–"),
    el("td", {}, text(e.message))));
  fill("events", rows, 5, "No event yet.");
}

function connected(on) {
  $("login").hidden = on;
  $("session").hidden = !on;
  $("cards").hidden = !on;
  $("panels").hidden = !on;
  $("intro").hidden = on;
  if (timer) clearInterval(timer);
  timer = on ? setInterval(refresh, REFRESH_MS) : null;
  if (on) refresh();
}

document.addEventListener("DOMContentLoaded", () => {
  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("key").value.trim();
    if (!key) return;
    sessionStorage.setItem(KEY_STORAGE, key);
    $("key").value = "";
    connected(true);
  });
  $("logout").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORAGE);
    banner(null);
    notice(null);
    connected(false);
  });
  $("refresh").addEventListener("click", refresh);
  $("replay-all").addEventListener("click", () => replay({ all: true }, $("replay-all")));
  connected(Boolean(sessionStorage.getItem(KEY_STORAGE)));
});
