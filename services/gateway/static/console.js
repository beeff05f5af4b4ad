// The Rehost console: everything it shows is read from the documented API with the caller's
// token; /console/stream only says when to read again. Text from the API is only ever set as
// text (never as HTML).
"use strict";

const STATES = ["waiting", "initialize", "replicate", "syncing", "stopping", "stopped",
  "cloning", "cutovering", "finished", "error", "deleting", "unavailable"];
const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem("rehost-token");
let stream = null;

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (value !== null && value !== undefined) node.setAttribute(name, value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) {
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
  }
  return node;
}

class SignedOut extends Error {}

async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    headers: { "X-Auth-Token": token, "Content-Type": "application/json", ...(options.headers || {}) },
  });
  const body = response.headers.get("content-type")?.includes("json") ? await response.json() : null;
  if (response.status === 401) throw new SignedOut(body?.error_msg || "Signed out.");
  if (!response.ok) throw new Error(body?.error_msg || `${response.status}`);
  return body;
}

// -- signing in --------------------------------------------------------------------------

async function signIn(event) {
  event.preventDefault();
  const form = new FormData(event.target);
  const wanted = form.get("token").trim()
    ? { token: form.get("token").trim() }
    : { ak: form.get("ak").trim(), sk: form.get("sk") };
  const response = await fetch("/console/session", {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(wanted),
  });
  const body = await response.json();
  if (!response.ok) {
    $("sign-in-error").textContent = body.error_msg || "Signing in failed.";
    return;
  }
  token = body.token;
  sessionStorage.setItem("rehost-token", token);
  event.target.reset();
  start(body.domain_id);
}

function signOut(reason = "") {
  token = null;
  sessionStorage.removeItem("rehost-token");
  if (stream) stream.abort();
  $("app").hidden = true;
  $("sign-out").hidden = true;
  $("sign-in").hidden = false;
  $("tenant").textContent = "";
  $("sign-in-error").textContent = reason;
}

async function start(domain) {
  $("sign-in").hidden = true;
  $("app").hidden = false;
  $("sign-out").hidden = false;
  $("tenant").textContent = domain ? `tenant ${domain}` : "";
  await reloadAll();
  follow();
}

// -- what the page shows -----------------------------------------------------------------

async function loadServers() {
  const counts = await api("/v3/sources/overview");
  $("overview").replaceChildren(...Object.entries(counts)
    .filter(([, n]) => n > 0)
    .map(([state, n]) => el("span", { class: "count", "data-state": state }, state, el("b", {}, n))));
  const filter = new FormData($("server-filter"));
  const query = new URLSearchParams({ limit: "50" });
  if (filter.get("state")) query.set("state", filter.get("state"));
  if (filter.get("name")) query.set("name", filter.get("name"));
  const listed = await api(`/v3/sources?${query}`);
  $("server-rows").replaceChildren(...listed.source_servers.map((s) =>
    el("tr", { "data-server": s.id },
      el("td", {}, s.name || s.hostname), el("td", {}, s.ip),
      el("td", {}, el("span", { class: "badge", "data-status": s.state }, s.state)),
      el("td", {}, s.migration_cycle || ""), el("td", {}, s.task_id || ""))));
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "";
  return seconds >= 3600 ? `${Math.floor(seconds / 3600)} h ${Math.round((seconds % 3600) / 60)} min`
    : seconds >= 60 ? `${Math.round(seconds / 60)} min` : `${seconds} s`;
}

function bar(percent, label, attrs = {}) {
  const value = Math.max(0, Math.min(100, Number(percent) || 0));
  return el("div", { class: "bar", role: "progressbar", "aria-valuenow": value,
    "aria-valuemin": 0, "aria-valuemax": 100, ...attrs },
    el("span", { style: `width: ${value}%` }), el("em", {}, `${label} ${value}%`));
}

async function loadTasks() {
  const listed = await api("/v3/tasks?limit=20");
  $("task-list").replaceChildren(...listed.tasks.map((task) => {
    const lock = task.lock?.held
      ? `target ${task.target_server?.vm_id} locked (fencing token ${task.lock.fencing_token})`
      : "no target lock";
    const figures = [
      task.migrate_speed !== null && task.migrate_speed !== undefined ? `${task.migrate_speed} Mbit/s` : null,
      task.remain_seconds !== null && task.remain_seconds !== undefined ? `${duration(task.remain_seconds)} left` : null,
    ].filter(Boolean).join(" · ");
    return el("div", { class: "item", "data-task": task.id },
      el("div", { class: "title" }, el("strong", {}, task.name),
        el("span", { class: "badge state", "data-status": task.state }, task.state),
        el("span", { class: "meta figures" }, figures)),
      el("div", { class: "meta lock" }, lock),
      (task.sub_tasks || []).map((sub) => bar(sub.progress, sub.name, { "data-subtask": sub.name })));
  }));
}

async function operate(executeUuid, operation, extra = {}) {
  try {
    await api(`/v1/job/script/orders/${executeUuid}/operation`, {
      method: "PUT", body: JSON.stringify({ operation_type: operation, ...extra }),
    });
  } catch (error) {
    if (error instanceof SignedOut) return signOut(error.message);
    alert(error.message);
  }
  loadExecutions();
}

function button(label, action, attrs = {}) {
  return el("button", { type: "button", onclick: action, ...attrs }, label);
}

async function executionView(order) {
  const uuid = order.execute_uuid;
  const batches = (await api(`/v1/job/script/orders/${uuid}/batches`)).data;
  const details = await Promise.all(batches.map((b) =>
    api(`/v1/job/script/orders/${uuid}/batches/${b.batch_index}?limit=50`)));
  const stats = order.statistics || {};
  const threshold = order.properties?.execute_param?.success_rate;
  const running = order.status === "PROCESSING" || order.status === "PAUSED";
  return el("div", { class: "item", "data-execution": uuid },
    el("div", { class: "title" }, el("strong", {}, order.order_name),
      el("span", { class: "badge status", "data-status": order.status }, order.status),
      el("span", { class: "meta" },
        `${stats.success || 0} of ${stats.total || 0} hosts succeeded; success rate needed ${threshold}%`)),
    running ? el("div", { class: "actions" },
      order.status === "PROCESSING" ? button("Pause", () => operate(uuid, "PAUSE_ORDER"), { "data-op": "pause" }) : null,
      order.status === "PAUSED" ? button("Continue", () => operate(uuid, "CONTINUE_ORDER"), { "data-op": "continue" }) : null,
      button("Cancel", () => operate(uuid, "CANCEL_ORDER"), { "data-op": "cancel" })) : null,
    details.map((detail, i) => {
      const batch = detail.data;
      const skippable = running && batch.status === "READY";
      return el("div", { class: "batch", "data-batch": batch.batch_index },
        el("div", { class: "meta" }, `batch ${batch.batch_index}: `,
          el("span", { class: "badge", "data-status": batch.status }, batch.status),
          batches[i].success_rate !== null && batches[i].success_rate !== undefined ? ` success rate ${batches[i].success_rate}%` : "",
          skippable ? button("Skip batch", () => operate(uuid, "SKIP_BATCH", { batch_index: batch.batch_index }), { "data-op": "skip" }) : null),
        el("div", { class: "hosts" }, batch.execute_instances.map((host) =>
          el("span", { class: "host", "data-host": host.target_instance.agent_sn, "data-status": host.status,
            title: host.message || host.rehost_status || "" },
            `${host.target_instance.agent_sn} ${host.status}`,
            running && (host.status === "READY" || host.status === "PROCESSING")
              ? button("×", () => operate(uuid, "CANCEL_INSTANCE", { batch_index: batch.batch_index, instance_id: host.id }), { "aria-label": "Cancel host" })
              : null))));
    }));
}

async function loadExecutions() {
  const listed = (await api("/v1/job/script/orders?limit=5")).data;
  $("execution-list").replaceChildren(...await Promise.all(listed.data.map(executionView)));
}

function addEvent(event) {
  const when = event.occurred_at ? new Date(event.occurred_at).toLocaleTimeString() : "";
  const item = el("li", { "data-type": event.type }, `${when} ${event.type} ${event.aggregate_id || ""} `,
    el("span", { class: "trace" }, event.trace_id ? `trace ${event.trace_id}` : ""));
  const feed = $("event-feed");
  feed.prepend(item);
  while (feed.children.length > 50) feed.lastChild.remove();
}

// -- live ---------------------------------------------------------------------------------

const LOADERS = { source: loadServers, command: loadServers, task: loadTasks, script: loadExecutions };
const pending = new Map();

function soon(loader) {  // several events in a row: one reload
  if (pending.has(loader)) return;
  pending.set(loader, setTimeout(async () => {
    pending.delete(loader);
    try { await loader(); } catch (error) { if (error instanceof SignedOut) signOut(error.message); }
  }, 150));
}

async function reloadAll() {
  try {
    await Promise.all([loadServers(), loadTasks(), loadExecutions()]);
  } catch (error) {
    if (error instanceof SignedOut) signOut(error.message);
  }
}

function onMessage(kind, data) {
  if (kind === "rehost") {
    addEvent(data);
    const loader = LOADERS[String(data.type).split(".")[0]];
    if (loader) soon(loader);
  } else if (kind === "resync") {
    reloadAll();
  }
}

// EventSource cannot send a header, and the token may not go in a URL: the stream is read
// with fetch, its Server-Sent Events parsed here.
async function follow(delay = 1000) {
  if (!token) return;
  const controller = new AbortController();
  stream = controller;
  try {
    const response = await fetch("/console/stream", {
      headers: { "X-Auth-Token": token }, signal: controller.signal,
    });
    if (response.status === 401) return signOut((await response.json()).error_msg);
    if (!response.ok) throw new Error(`stream ${response.status}`);
    $("live").dataset.state = "on";
    $("live").textContent = "live";
    await reloadAll();  // whatever happened while it was not connected
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    delay = 1000;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const kind = /^event: (.*)$/m.exec(block)?.[1];
        const data = /^data: (.*)$/m.exec(block)?.[1];
        if (kind) onMessage(kind, data ? JSON.parse(data) : {});
      }
    }
  } catch (error) {
    if (controller.signal.aborted) return;
  }
  $("live").dataset.state = "off";
  $("live").textContent = "reconnecting";
  if (token) setTimeout(() => follow(Math.min(delay * 2, 10000)), delay);
}

// -- wiring --------------------------------------------------------------------------------

$("sign-in-form").addEventListener("submit", signIn);
$("sign-out").addEventListener("click", () => signOut());
$("server-filter").addEventListener("input", () => soon(loadServers));
$("server-filter").addEventListener("submit", (event) => event.preventDefault());
$("server-filter").state.append(...STATES.map((s) => el("option", { value: s }, s)));
if (token) {
  api("/console/session", { method: "POST", body: JSON.stringify({ token }) })
    .then((session) => start(session.domain_id))
    .catch((error) => signOut(error.message));
}
