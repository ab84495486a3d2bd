// corral's dashboard: the node list, live through server-sent events; a chosen node's
// processes and the tail of a chosen log; kill, sKill and run on the chosen nodes.
// Every value from the master is put on the page as text (textContent), never as HTML.
"use strict";

const STATES = ["READY", "CONNECTING", "MISSING", "GONE"];
const NOTES_KEPT = 200;
const LOG_KEPT = 256 * 1024; // characters of a followed log kept on the page

const $ = (id) => document.getElementById(id);
let csrf = null;
let stream = null;
const rows = new Map(); // node name -> {tr, cells, data, receivedAt}
const chosen = new Set();
let selected = null; // whose processes are shown: {kind: "node" | "job", name}
let jobsTimer = null;
let procsTimer = null;
let procsFetching = false;
let procsAgain = false;
let followed = null; // {ref, offset, timer}

// --- formatting -------------------------------------------------------------------------

function bytes(n) {
  if (n === null || n === undefined) return "-";
  const units = ["B", "K", "M", "G", "T"];
  let value = n, unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
  return unit === 0 ? `${value}B` : `${value.toFixed(1)}${units[unit]}`;
}

function fixed(value, digits) {
  return value === null || value === undefined ? "-" : Number(value).toFixed(digits);
}

function duration(seconds) {
  if (seconds === null || seconds === undefined || seconds < 0) return "-";
  if (seconds < 60) return `${seconds.toFixed(1)}s`;
  const s = Math.floor(seconds);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  return h ? `${h}h${String(m).padStart(2, "0")}m` : `${m}m${String(s % 60).padStart(2, "0")}s`;
}

// Node order as the console lists it: n1 n2 n10, not n1 n10 n2.
function naturalKey(name) {
  return name.split(/(\d+)/).map((part, i) => (i % 2 ? part.padStart(12, "0") : part)).join("");
}

// A thousand rows change every second: touch the page only where a value did change.
function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// --- talking to the master --------------------------------------------------------------

async function post(path, body) {
  const reply = await fetch(path, {
    method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf || "" },
    body: JSON.stringify(body),
  });
  if (reply.status === 401) { showLogin("Your session ended: log in again."); }
  const data = await reply.json().catch(() => ({}));
  if (!reply.ok) throw new Error(data.error || `${reply.status} ${reply.statusText}`);
  return data;
}

async function get(path) {
  const reply = await fetch(path, { credentials: "same-origin" });
  if (reply.status === 401) { showLogin("Your session ended: log in again."); }
  const data = await reply.json().catch(() => ({}));
  if (!reply.ok) throw new Error(data.error || `${reply.status} ${reply.statusText}`);
  return data;
}

// --- login ------------------------------------------------------------------------------

function showLogin(message) {
  closeStream();
  csrf = null;
  $("dash").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  setLink("off", "offline");
  $("token").focus();
}

function showDashboard(about) {
  csrf = about.csrf;
  $("login").hidden = true;
  $("dash").hidden = false;
  $("logout").hidden = false;
  openStream();
}

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const token = $("token").value;
  $("token").value = "";
  let reply;
  try {
    reply = await fetch("/login", {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ token }),
    });
  } catch (_) {
    $("login-error").textContent = "The master does not answer.";
    return;
  }
  const data = await reply.json().catch(() => ({}));
  if (!reply.ok) {
    $("login-error").textContent = data.error || `refused (${reply.status})`;
    return;
  }
  showDashboard(data);
});

$("logout").addEventListener("click", async () => {
  try { await post("/logout", {}); } catch (_) { /* the session is gone either way */ }
  showLogin("Logged out.");
});

// --- the event stream -------------------------------------------------------------------

function setLink(state, text) {
  $("link").dataset.link = state;
  $("link").textContent = text;
}

function closeStream() {
  if (stream) { stream.close(); stream = null; }
}

function openStream() {
  closeStream();
  setLink("retry", "connecting…");
  stream = new EventSource("/events");
  stream.addEventListener("open", () => setLink("live", "live"));
  stream.addEventListener("snapshot", (e) => snapshot(JSON.parse(e.data)));
  stream.addEventListener("nodes", (e) => nodesChanged(JSON.parse(e.data)));
  stream.addEventListener("procs", (e) => procsChanged(JSON.parse(e.data)));
  stream.addEventListener("notes", (e) => notes(JSON.parse(e.data)));
  stream.addEventListener("logout", () => showLogin("Your session ended: log in again."));
  stream.addEventListener("error", () => {
    // The browser retries by itself unless the stream was refused (closed): then ask
    // whether the session still stands, and reopen (or log in) ourselves.
    setLink("retry", "reconnecting…");
    if (stream && stream.readyState === EventSource.CLOSED) {
      closeStream();
      setTimeout(resume, 2000);
    }
  });
}

async function resume() {
  try {
    const reply = await fetch("/api/session", { credentials: "same-origin" });
    if (reply.status === 401) { showLogin("Your session ended: log in again."); return; }
    if (!reply.ok) throw new Error(String(reply.status));
    showDashboard(await reply.json());
  } catch (_) {
    setTimeout(resume, 2000); // the master is away: keep trying
  }
}

// --- the node list ----------------------------------------------------------------------

const NODE_CELLS = ["choose", "name", "state", "age", "rtt", "load", "cpu", "mem", "disk",
                    "procs"];
const WIDE = new Set(["rtt", "cpu", "disk"]);

function newRow(name) {
  const tr = element("tr");
  tr.dataset.node = name;
  const cells = {};
  for (const key of NODE_CELLS) {
    const td = element("td", WIDE.has(key) ? "wide" : "");
    if (["age", "rtt", "cpu", "mem", "disk", "procs"].includes(key)) td.classList.add("num");
    cells[key] = td;
    tr.appendChild(td);
  }
  const box = element("input");
  box.type = "checkbox";
  box.setAttribute("aria-label", `choose ${name}`);
  box.addEventListener("click", (e) => e.stopPropagation());
  box.addEventListener("change", () => {
    if (box.checked) chosen.add(name); else chosen.delete(name);
    chosenChanged();
  });
  cells.choose.appendChild(box);
  cells.box = box;
  cells.name.textContent = name;
  const pill = element("span", "state");
  cells.state.appendChild(pill);
  cells.pill = pill;
  tr.addEventListener("click", () => select(name));
  const row = { tr, cells, data: null, receivedAt: 0 };
  rows.set(name, row);
  return row;
}

function fill(row, data) {
  const c = row.cells;
  const before = row.data;
  row.data = data;
  row.receivedAt = performance.now();
  if (c.pill.dataset.state !== data.state) c.pill.dataset.state = data.state;
  setText(c.pill, data.state);
  const title = `${data.host} ${data.addr} id ${data.id}`;
  if (c.name.title !== title) c.name.title = title;
  setText(c.rtt, fixed(data.rtt, 2));
  // The second part of load and memory is left out at a phone's width (class extra).
  pair(c.load, data.load ? data.load[0].toFixed(2) : "-",
       data.load ? ` / ${data.load[1].toFixed(2)} / ${data.load[2].toFixed(2)}` : "");
  setText(c.cpu, data.cpu === null ? "-" : `${data.cpu.toFixed(0)}%`);
  pair(c.mem, bytes(data.mem), data.memTotal ? ` / ${bytes(data.memTotal)}` : "");
  setText(c.disk, bytes(data.disk));
  setText(c.procs, data.procs === null ? "-" : String(data.procs));
  showAge(row);
  if (showing("node", data.name) && before && before.procs !== data.procs) {
    refreshProcs();
  }
}

function pair(td, main, extra) {
  if (!td.firstChild) td.append(element("span"), element("span", "extra"));
  setText(td.firstChild, main);
  setText(td.lastChild, extra);
}

function showAge(row) {
  const data = row.data;
  let text = "-";
  if (data.state === "GONE" && data.seen) {
    text = `gone since ${new Date(data.seen * 1000).toLocaleTimeString()}`;
  } else if (data.age !== null) {
    text = `${(data.age + (performance.now() - row.receivedAt) / 1000).toFixed(1)}s`;
  }
  setText(row.cells.age, text);
}

function placeRows() {
  const body = $("nodes").querySelector("tbody");
  const ordered = [...rows.values()].sort((a, b) =>
    naturalKey(a.tr.dataset.node) < naturalKey(b.tr.dataset.node) ? -1 : 1);
  const fragment = document.createDocumentFragment();
  for (const row of ordered) fragment.appendChild(row.tr);
  body.appendChild(fragment);
  $("nodes-empty").hidden = rows.size > 0;
}

function snapshot(data) {
  const seen = new Set();
  for (const node of data.nodes) {
    seen.add(node.name);
    fill(rows.get(node.name) || newRow(node.name), node);
  }
  for (const name of [...rows.keys()]) if (!seen.has(name)) dropRow(name);
  placeRows();
  applyFilter();
  summarise();
  chosenChanged();
  if (selected) refreshProcs();
}

function nodesChanged(data) {
  let joined = false;
  for (const node of data.rows) {
    let row = rows.get(node.name);
    const fresh = !row;
    if (fresh) { row = newRow(node.name); joined = true; }
    fill(row, node);
    if (fresh) filterRow(row);
  }
  for (const name of data.removed) dropRow(name);
  if (joined) placeRows();
  summarise();
  if (data.removed.length) chosenChanged();
}

// A node forgotten (forget NODE) leaves the list, and its processes' view with it.
function dropRow(name) {
  rows.get(name)?.tr.remove();
  rows.delete(name);
  chosen.delete(name);
  $("nodes-empty").hidden = rows.size > 0;
  if (showing("node", name)) {
    selected = null;
    stopFollowing();
    $("detail").hidden = true;
  }
}

function summarise() {
  const counts = Object.fromEntries(STATES.map((s) => [s, 0]));
  for (const row of rows.values()) counts[row.data.state] += 1;
  const summary = $("summary");
  summary.replaceChildren();
  for (const state of STATES) {
    if (!counts[state] && state !== "READY") continue;
    const pill = element("span", "state", `${counts[state]} ${state}`);
    pill.dataset.state = state;
    pill.dataset.count = String(counts[state]);
    summary.appendChild(pill);
  }
}

function filterRow(row) {
  const words = $("filter").value.trim().toLowerCase();
  const hit = !words || row.tr.dataset.node.toLowerCase().includes(words)
    || row.data.state.toLowerCase() === words;
  row.tr.classList.toggle("filtered", !hit);
}

function applyFilter() {
  for (const row of rows.values()) filterRow(row);
}

$("filter").addEventListener("input", applyFilter);

$("choose-all").addEventListener("change", () => {
  const on = $("choose-all").checked;
  for (const [name, row] of rows) {
    if (row.tr.classList.contains("filtered")) continue;
    row.cells.box.checked = on;
    if (on) chosen.add(name); else chosen.delete(name);
  }
  chosenChanged();
});

function chosenChanged() {
  const count = chosen.size;
  $("chosen-count").textContent = count ? `${count} chosen` : "no node chosen";
  for (const id of ["kill-chosen", "skill-chosen", "run-button"]) $(id).disabled = !count;
}

// Heartbeat ages grow between updates: one pass a second over the shown rows.
setInterval(() => {
  for (const row of rows.values()) if (row.data && !row.tr.classList.contains("filtered")) showAge(row);
  ticking();
}, 1000);

// --- events -----------------------------------------------------------------------------

function notes(data) {
  const list = $("notes");
  const stamp = new Date().toLocaleTimeString();
  const lines = data.more ? [...data.lines, `… and ${data.more} more`] : data.lines;
  for (const line of lines) list.prepend(element("li", "", `${stamp}  ${line}`));
  $("notes-empty").hidden = list.children.length > 0;
  while (list.children.length > NOTES_KEPT) list.lastElementChild.remove();
}

// --- a node's or a job's processes ------------------------------------------------------

// What the processes panel shows: {kind: "node" | "job", name}.
function showing(kind, name) {
  return selected !== null && selected.kind === kind && (name === undefined || selected.name === name);
}

function select(name) {
  choose({ kind: "node", name });
}

function selectJob(job) {
  choose({ kind: "job", name: job });
}

function choose(target) {
  for (const tr of document.querySelectorAll("tr.selected")) tr.classList.remove("selected");
  selected = target;
  const table = target.kind === "node" ? "#nodes" : "#jobs";
  const attribute = target.kind === "node" ? "data-node" : "data-job";
  document.querySelector(`${table} tr[${attribute}='${target.name}']`)?.classList.add("selected");
  $("detail").hidden = false;
  $("detail-title").textContent = target.kind === "node"
    ? `Processes on ${target.name}` : `Processes of job ${target.name}`;
  $("job-actions").hidden = target.kind !== "job";
  $("detail-note").textContent = "";
  $("procs").querySelector("tbody").replaceChildren();
  stopFollowing();
  refreshProcs();
}

// At most one request in flight; a change meanwhile asks once more when it is back.
async function refreshProcs() {
  if (!selected) return;
  if (procsFetching) { procsAgain = true; return; }
  procsFetching = true;
  const target = selected;
  const path = target.kind === "node"
    ? `/api/processes?node=${encodeURIComponent(target.name)}`
    : `/api/job?job=${encodeURIComponent(target.name)}`;
  try {
    const data = await get(path);
    if (target === selected) showProcs(data);
  } catch (error) {
    if (target === selected) $("detail-note").textContent = String(error.message || error);
  } finally {
    procsFetching = false;
    if (procsAgain) { procsAgain = false; refreshProcs(); }
  }
}

function showProcs(data) {
  const clockSkew = Date.now() / 1000 - data.now;
  const body = $("procs").querySelector("tbody");
  body.replaceChildren(...data.rows.map((p) => procRow(p, clockSkew)));
  $("detail-note").textContent = data.total > data.rows.length
    ? `the newest ${data.rows.length} of ${data.total}` : `${data.total} processes`;
}

function procRow(p, skew) {
  const tr = element("tr");
  tr.dataset.ref = p.ref || "";
  tr.dataset.live = String(p.live);
  tr.appendChild(element("td", "", p.ref || "-"));
  tr.appendChild(element("td", "wide", p.job || "-"));
  const command = element("td", "command", p.command);
  command.title = p.command;
  tr.appendChild(command);
  const state = element("td", "pstate", p.status);
  state.dataset.live = String(p.live);
  state.dataset.failed = String(!p.live && p.status !== "exited 0");
  tr.appendChild(state);
  const runtime = element("td", "num runtime");
  if (p.started !== null) {
    // The page's clock and the node's differ: count from the node's start time as seen
    // through the master's clock.
    runtime.dataset.started = String(p.started + skew);
    runtime.textContent = p.live ? duration(Date.now() / 1000 - p.started - skew)
      : duration(p.ended ? p.ended - p.started : null);
  } else {
    runtime.textContent = "-";
  }
  tr.appendChild(runtime);
  tr.appendChild(element("td", "num wide", p.cpu === null ? "-" : `${p.cpu.toFixed(2)}s`));
  tr.appendChild(element("td", "num wide", bytes(p.rss)));
  const actions = element("td", "actions");
  if (p.ref) {
    const log = element("button", "small", "log");
    log.type = "button";
    log.addEventListener("click", () => follow(p.ref, p.live));
    actions.appendChild(log);
  }
  if (p.live && p.ref) {
    for (const [label, signal, cls] of [["kill", "INT", "small"], ["sKill", "KILL", "small danger"]]) {
      const button = element("button", cls, label);
      button.type = "button";
      button.dataset.action = label;
      button.addEventListener("click", () => signalOne(p.ref, signal, button));
      actions.appendChild(button);
    }
  }
  tr.appendChild(actions);
  return tr;
}

function ticking() {
  for (const td of document.querySelectorAll("#procs tr[data-live='true'] td.runtime")) {
    if (td.dataset.started) td.textContent = duration(Date.now() / 1000 - Number(td.dataset.started));
  }
}

function procsChanged(data) {
  const mine = (p) => (showing("node") ? p.node === selected.name
    : (p.job || "").split(".")[0] === selected.name);
  const touched = selected !== null && (data.rows.some(mine)
    || (showing("node") && data.more[selected.name]) || (showing("job") && Object.keys(data.more).length));
  if (touched) {
    // Changes come in bursts (exec -n 1000): gather a moment's worth into one request.
    clearTimeout(procsTimer);
    procsTimer = setTimeout(refreshProcs, 150);
  }
  if ($("jobs-panel").open && data.rows.some((p) => p.job)) {
    clearTimeout(jobsTimer);
    jobsTimer = setTimeout(refreshJobs, 1000);
  }
}

// --- jobs ----------------------------------------------------------------------------------

// Listing jobs asks every node of every job for its table: only while the panel is open.
$("jobs-panel").addEventListener("toggle", () => { if ($("jobs-panel").open) refreshJobs(); });

async function refreshJobs() {
  if (!$("jobs-panel").open) return;
  try {
    const data = await get("/api/jobs");
    $("jobs").querySelector("tbody").replaceChildren(...data.rows.map(jobRow));
    $("jobs-note").textContent = data.total > data.rows.length
      ? `the newest ${data.rows.length} of ${data.total}` : data.total ? "" : "No job yet: every exec and run makes one.";
    if (showing("job")) {
      document.querySelector(`#jobs tr[data-job='${selected.name}']`)?.classList.add("selected");
    }
  } catch (error) {
    $("jobs-note").textContent = String(error.message || error);
  }
}

function jobRow(j) {
  const tr = element("tr");
  tr.dataset.job = j.job;
  const command = element("td", "command", j.command);
  command.title = j.command;
  tr.append(element("td", "", j.job), command, element("td", "wide", j.nodes),
            element("td", "num", String(j.size)), element("td", "num", String(j.running)),
            element("td", "num", String(j.ended)), element("td", "num wide", String(j.lost)),
            element("td", "num", j.worst === null ? "-" : String(j.worst)));
  tr.addEventListener("click", () => selectJob(j.job));
  return tr;
}

for (const [id, signal] of [["kill-job", "INT"], ["skill-job", "KILL"]]) {
  $(id).addEventListener("click", () => {
    if (showing("job")) signalOne(selected.name, signal, $(id));
  });
}

async function signalOne(ref, signal, button) {
  button.disabled = true;
  try {
    const data = await post("/api/signal", { refs: [ref], signal });
    if (!data.ok) showOutput([data.text, ...data.errors].join("\n"));
  } catch (error) {
    showOutput(`error: ${error.message || error}`);
  } finally {
    button.disabled = false;
  }
}

// --- a log ------------------------------------------------------------------------------

function stopFollowing() {
  if (followed) clearTimeout(followed.timer);
  followed = null;
  $("logview").hidden = true;
}

async function follow(ref, live) {
  stopFollowing();
  const mine = { ref, offset: null, timer: null };
  followed = mine;
  $("logview").hidden = false;
  $("log-title").textContent = `Log of ${ref}${live ? " (following)" : ""}`;
  $("log-text").textContent = "";
  const step = async () => {
    if (followed !== mine) return;
    const query = mine.offset === null ? "lines=100" : `offset=${mine.offset}`;
    try {
      const data = await get(`/api/log?ref=${encodeURIComponent(ref)}&${query}`);
      if (followed !== mine) return;
      mine.offset = data.offset;
      const text = $("log-text").textContent + data.text;
      $("log-text").textContent = text.length > LOG_KEPT ? text.slice(-LOG_KEPT) : text;
      if (data.text) $("log-text").scrollTop = $("log-text").scrollHeight;
      if (data.ended) { $("log-title").textContent = `Log of ${ref}`; return; }
    } catch (error) {
      $("log-title").textContent = `Log of ${ref}: ${error.message || error}`;
      return;
    }
    mine.timer = setTimeout(step, 1000);
  };
  step();
}

// --- actions on the chosen nodes --------------------------------------------------------

function showOutput(text) {
  $("output").hidden = false;
  $("output-text").textContent = text;
}

$("output-close").addEventListener("click", () => { $("output").hidden = true; });

for (const id of ["kill-chosen", "skill-chosen"]) {
  $(id).addEventListener("click", async () => {
    const signal = $(id).dataset.signal;
    const nodes = [...chosen];
    const what = signal === "KILL" ? "SIGKILL" : "SIGINT";
    if (!window.confirm(`Send ${what} to every running process on ${nodes.join(", ")}?`)) return;
    try {
      const data = await post("/api/signal-all", { nodes, signal });
      showOutput([data.text || "no running process", ...data.errors].join("\n"));
    } catch (error) {
      showOutput(`error: ${error.message || error}`);
    }
  });
}

$("run-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const command = $("run-command").value;
  if (!command.trim() || !chosen.size) return;
  const nodes = [...chosen];
  $("run-button").disabled = true;
  showOutput(`running on ${nodes.join(", ")}…`);
  try {
    const data = await post("/api/run", { nodes, command });
    showOutput([data.text, ...data.errors].join("\n"));
  } catch (error) {
    showOutput(`error: ${error.message || error}`);
  } finally {
    chosenChanged();
  }
});

// --- start ------------------------------------------------------------------------------

resume();
