// The playground page: an input pod, each policy's settings and switch, each policy's
// answer on the input, the mutating policies chained as the API server calls them, and
// what the model sees in the input and in the final pod. The whole state lives in the URL
// fragment. Results are also written, as JSON, into #results for tests and scripts.

import init, { toJson, explain, admissionRequest } from "./pkg/sidecar_playground.js";
import { Policy } from "./wapc.js";

const started = performance.now();
// Alphabetical, as the API server calls the mutating webhooks Kubewarden registers
// (clusterwide-sidecar-…).
const POLICIES = [
  "sidecar-injector-policy",
  "sidecar-lifecycle-policy",
  "sidecar-ordering-policy",
  "sidecar-resources-policy",
];
const DEFAULT_EXAMPLE = "istio-legacy-job.yaml";

const $ = (id) => document.getElementById(id);
const el = (tag, attrs = {}, ...children) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
};

let examples;
const policies = {};
let state;

function defaultState() {
  return {
    example: DEFAULT_EXAMPLE,
    input: examples.pods[DEFAULT_EXAMPLE],
    operation: "CREATE",
    settings: Object.fromEntries(POLICIES.map((p) => [p, examples.settings[p] ?? "{}"])),
    enabled: Object.fromEntries(POLICIES.map((p) => [p, true])),
  };
}

// The fragment: the state as JSON, base64url of its UTF-8 bytes.
function encodeState(s) {
  const bytes = new TextEncoder().encode(JSON.stringify(s));
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function decodeState(text) {
  const bin = atob(text.replace(/-/g, "+").replace(/_/g, "/"));
  const bytes = Uint8Array.from(bin, (c) => c.charCodeAt(0));
  return JSON.parse(new TextDecoder().decode(bytes));
}

function readFragment() {
  const hash = location.hash.replace(/^#/, "");
  if (!hash) return defaultState();
  try {
    return { ...defaultState(), ...decodeState(hash) };
  } catch (e) {
    return defaultState();
  }
}

function saveFragment() {
  history.replaceState(null, "", "#" + encodeState(state));
}

/** YAML or JSON text as an object; `{}` for blank settings. */
function readSettings(text) {
  return text.trim() === "" ? {} : JSON.parse(toJson(text));
}

/** One policy on one object: validate_settings, then validate, as policy-server does. */
async function evaluate(name, settingsText, object, operation) {
  let settings;
  try {
    settings = readSettings(settingsText);
  } catch (e) {
    return { settingsValid: false, settingsMessage: `settings: ${e.message ?? e}` };
  }
  const policy = policies[name];
  const check = JSON.parse(await policy.call("validate_settings", JSON.stringify(settings)));
  if (!check.valid) return { settingsValid: false, settingsMessage: check.message };
  const answer = JSON.parse(
    await policy.call("validate", JSON.stringify({ request: JSON.parse(admissionRequest(JSON.stringify(object), operation)), settings })),
  );
  return {
    settingsValid: true,
    allowed: answer.accepted,
    message: answer.message ?? null,
    // As the AdmissionResponse carries them: null when the policy gave none.
    warnings: answer.warnings ?? null,
    auditAnnotations: answer.audit_annotations ?? null,
    mutatedObject: answer.mutated_object ?? null,
  };
}

/** A line diff of two objects' pretty JSON (longest common subsequence). */
function diffLines(a, b) {
  const x = JSON.stringify(a, null, 2).split("\n");
  const y = JSON.stringify(b, null, 2).split("\n");
  const n = x.length, m = y.length;
  const lcs = Array.from({ length: n + 1 }, () => new Uint16Array(m + 1));
  for (let i = n - 1; i >= 0; i--)
    for (let j = m - 1; j >= 0; j--)
      lcs[i][j] = x[i] === y[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
  const out = [];
  let i = 0, j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && x[i] === y[j]) { i++; j++; continue; }
    if (j < m && (i === n || lcs[i][j + 1] >= lcs[i + 1][j])) out.push(["add", y[j++]]);
    else out.push(["del", x[i++]]);
  }
  return out;
}

function renderAnswer(name, r, before) {
  const card = el("div", { class: "policy", "data-policy": name });
  let badge;
  if (!r) badge = el("span", { class: "verdict off", text: "off" });
  else if (!r.settingsValid) badge = el("span", { class: "verdict invalid", text: "settings invalid" });
  else badge = el("span", { class: `verdict ${r.allowed ? "allowed" : "denied"}`, text: r.allowed ? "allowed" : "denied" });
  card.append(el("h3", {}, el("span", { text: name }), badge));
  if (!r) return card;
  if (!r.settingsValid) {
    card.append(el("p", { class: "message settings-message", text: r.settingsMessage }));
    return card;
  }
  if (r.message) card.append(el("p", { class: "message", text: r.message }));
  if (r.warnings?.length) {
    const ul = el("ul", { class: "warnings" });
    for (const w of r.warnings) ul.append(el("li", { text: w }));
    card.append(ul);
  }
  const audit = Object.entries(r.auditAnnotations ?? {});
  if (audit.length) {
    const ul = el("ul", { class: "audit" });
    for (const [k, v] of audit) ul.append(el("li", { text: `${k}: ${v}` }));
    card.append(ul);
  }
  if (r.mutatedObject) {
    const pre = el("pre", { class: "diff" });
    for (const [kind, line] of diffLines(before, r.mutatedObject)) {
      pre.append(el("span", { class: kind, text: (kind === "add" ? "+ " : "- ") + line }));
    }
    card.append(el("p", { text: "Patch, as a diff of the object:" }), pre);
  }
  return card;
}

const PHASES = [["Init", "init steps"], ["Sidecar", "sidecars"], ["Standard", "apps"], ["PostSidecar", "post-sidecars"]];
const EDGE_COLOURS = { annotation: "#1d6fb8", settings: "#e76f51", implied: "#adb5bd" };

/** The start order as a graph: nodes left to right in the order the graph asks for, one
 * row per lifecycle type; declared, settings and implied edges in their own colours. */
function drawGraph(view) {
  const e = view.explanation;
  const order = view.graph.startOrder ?? e.requiredStartOrder ?? e.startOrder;
  const type = Object.fromEntries(e.containers.map((c) => [c.name, c.type]));
  const cycle = new Set(view.graph.cycle ?? []);
  const step = Math.max(70, Math.min(120, 900 / Math.max(order.length, 1)));
  const width = 20 + step * order.length, height = 40 + 44 * PHASES.length;
  const pos = {};
  order.forEach((n, i) => {
    const row = Math.max(0, PHASES.findIndex(([t]) => t === type[n]));
    pos[n] = [20 + step * i + step / 2, 30 + 44 * row];
  });
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "graph");
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  const mk = (tag, attrs) => {
    const n = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
    return n;
  };
  PHASES.forEach(([, label], row) => {
    const t = mk("text", { x: 2, y: 14 + 44 * row, fill: "#889" });
    t.textContent = label;
    svg.append(t);
  });
  for (const edge of view.graph.edges) {
    const a = pos[edge.before], b = pos[edge.after];
    if (!a || !b) continue;
    const path = mk("path", {
      d: `M${a[0]},${a[1]} C${(a[0] + b[0]) / 2},${a[1] - 30} ${(a[0] + b[0]) / 2},${b[1] - 30} ${b[0]},${b[1]}`,
      fill: "none", stroke: EDGE_COLOURS[edge.kind], "stroke-width": edge.kind === "implied" ? 1 : 2,
      "stroke-dasharray": edge.kind === "implied" ? "3 3" : "", "data-kind": edge.kind,
    });
    const title = mk("title", {});
    title.textContent = `${edge.before} → ${edge.after}: ${edge.origin}`;
    path.append(title);
    svg.append(path);
  }
  for (const n of order) {
    const [x, y] = pos[n];
    svg.append(mk("circle", { cx: x, cy: y, r: 6, fill: cycle.has(n) ? "#d00000" : "#1d3557" }));
    const t = mk("text", { x, y: y + 18, "text-anchor": "middle", class: "node" });
    t.textContent = n;
    svg.append(t);
  }
  const box = el("div", { class: "graph-box" });
  box.append(svg);
  const legend = el("div", { class: "legend" });
  for (const [k, c] of Object.entries(EDGE_COLOURS)) {
    const i = el("i");
    i.style.background = c;
    legend.append(el("span", {}, i, k));
  }
  box.append(legend);
  if (view.graph.impliedLeftOut) box.append(el("p", { class: "hint", text: "Implied edges left out: too many to draw; the rows show them." }));
  if (view.graph.cycle) box.append(el("p", { class: "error", text: `cycle: ${view.graph.cycle.join(" → ")}` }));
  for (const i of view.graph.impossible) box.append(el("p", { class: "error", text: i }));
  return box;
}

/** Per resource, a bar of what the pod requests: apps, sidecars, the init peak over
 * them, overhead; a red mark at any pod-level budget. */
function drawResources(e) {
  const box = el("div", { class: "resources" });
  box.append(el("p", {}, "QoS class: ", el("span", { class: "qos", text: e.qosClass })));
  const number = (q) => {
    const m = /^([0-9.e+-]+)([a-zA-Z]*)$/.exec(q ?? "0");
    if (!m) return 0;
    const units = { m: 1e-3, k: 1e3, M: 1e6, G: 1e9, T: 1e12, Ki: 1024, Mi: 1024 ** 2, Gi: 1024 ** 3, Ti: 1024 ** 4, "": 1 };
    return parseFloat(m[1]) * (units[m[2]] ?? 1);
  };
  for (const [resource, b] of Object.entries(e.requests)) {
    const apps = number(b.appSum), sidecars = number(b.sidecarSum), peak = number(b.initPeak);
    const overhead = number(b.overhead), budget = b.podLevel ? number(b.podLevel) : null;
    const initOver = Math.max(0, peak - apps - sidecars);
    const total = Math.max(apps + sidecars + initOver + overhead, budget ?? 0) || 1;
    const bar = el("div", { class: "bar", "data-resource": resource });
    for (const [cls, v, label] of [["apps", apps, "apps"], ["sidecars", sidecars, "sidecars"], ["init", initOver, "init peak above apps and sidecars"], ["overhead", overhead, "overhead"]]) {
      if (v <= 0) continue;
      const s = el("span", { class: `seg-${cls}`, title: `${label}: ${v}` });
      s.style.width = `${(100 * v) / total}%`;
      bar.append(s);
    }
    if (budget !== null) {
      const mark = el("span", { class: "budget", title: `pod-level: ${b.podLevel}` });
      mark.style.left = `${(100 * budget) / total}%`;
      bar.append(mark);
    }
    box.append(el("div", { text: `${resource} requests: effective ${b.effective}${b.podLevel ? ` (pod-level ${b.podLevel})` : ""}` }), bar);
  }
  box.append(el("div", { class: "legend" }, ...["apps", "sidecars", "init", "overhead"].map((c) => {
    const i = el("i", { class: `seg-${c}` });
    return el("span", {}, i, c);
  })));
  return box;
}

function renderModel(target, view) {
  target.replaceChildren();
  if (!view) {
    target.append(el("p", { text: "No pod in this object." }));
    return;
  }
  const e = view.explanation;
  target.append(el("p", { text: `${e.kind}${e.name ? " " + e.name : ""}${e.runsToCompletion ? " — runs to completion" : ""}` }));
  const table = el("table", { class: "containers" });
  table.append(el("tr", {}, el("th", { text: "container" }), el("th", { text: "list" }), el("th", { text: "type" }), el("th", { text: "why" })));
  for (const c of e.containers) {
    table.append(el("tr", {}, el("td", { text: c.name }), el("td", { text: c.list }), el("td", { class: `type-${c.type}`, text: c.type }), el("td", { text: c.reason })));
  }
  target.append(table, el("h3", { text: "Start order" }), drawGraph(view), el("h3", { text: "Resources" }), drawResources(e));
  if (e.findings.length) {
    const ul = el("ul");
    for (const f of e.findings) ul.append(el("li", { class: "finding", text: f.message }));
    target.append(el("h3", { text: "Findings" }), ul);
  }
}

function modelView(object) {
  const lifecycle = (() => {
    try { return readSettings(state.settings["sidecar-lifecycle-policy"]); } catch { return {}; }
  })();
  const ordering = (() => {
    try { return readSettings(state.settings["sidecar-ordering-policy"]); } catch { return {}; }
  })();
  return JSON.parse(explain(JSON.stringify(object), JSON.stringify(lifecycle.knownSidecars ?? {}), JSON.stringify(ordering)));
}

async function update() {
  const t0 = performance.now();
  saveFragment();
  const results = { ready: false, inputError: null, input: {}, chain: [], final: null, finalVerdicts: {}, model: {} };
  let object;
  try {
    object = JSON.parse(toJson(state.input));
    $("input-error").hidden = true;
  } catch (e) {
    results.inputError = String(e.message ?? e);
    $("input-error").textContent = results.inputError;
    $("input-error").hidden = false;
    results.ready = true;
    $("results").textContent = JSON.stringify(results);
    document.body.dataset.ready = "true";
    $("status").textContent = "the input does not read: " + results.inputError;
    return;
  }
  const verdicts = $("verdicts");
  verdicts.replaceChildren();
  for (const name of POLICIES) {
    const r = state.enabled[name] ? await evaluate(name, state.settings[name], object, state.operation) : null;
    results.input[name] = r;
    verdicts.append(renderAnswer(name, r, object));
  }
  // The chain: each enabled policy on the previous one's output; a rejection ends it.
  let current = object;
  const chain = $("chain");
  chain.replaceChildren();
  for (const name of POLICIES.filter((p) => state.enabled[p])) {
    const r = await evaluate(name, state.settings[name], current, state.operation);
    results.chain.push({ policy: name, ...r });
    chain.append(renderAnswer(name, r, current));
    if (!r.settingsValid || !r.allowed) break;
    if (r.mutatedObject) current = r.mutatedObject;
  }
  results.final = current;
  for (const name of POLICIES.filter((p) => state.enabled[p])) {
    results.finalVerdicts[name] = await evaluate(name, state.settings[name], current, state.operation);
  }
  try {
    const before = modelView(object), after = modelView(current);
    renderModel($("model-input"), before);
    renderModel($("model-final"), after);
    const drawn = (id) => [...document.querySelectorAll(`#${id} svg text.node`)].map((t) => t.textContent);
    const seen = (view, id) => view && {
      ...view.explanation,
      drawnOrder: drawn(id),
      cycle: view.graph.cycle,
      impossible: view.graph.impossible,
      marked: document.querySelectorAll(`#${id} svg circle[fill="#d00000"]`).length,
    };
    results.model = { input: seen(before, "model-input"), final: seen(after, "model-final") };
  } catch (e) {
    $("model-input").replaceChildren(el("p", { class: "error", text: String(e.message ?? e) }));
  }
  results.evaluateMs = performance.now() - t0;
  results.loadToReadyMs = window.loadToReadyMs;
  results.ready = true;
  $("results").textContent = JSON.stringify(results);
  document.body.dataset.ready = "true";
  $("status").textContent = `evaluated in ${results.evaluateMs.toFixed(0)} ms`;
}

let pending;
function schedule() {
  document.body.dataset.ready = "false";
  clearTimeout(pending);
  pending = setTimeout(update, 150);
}

function renderControls() {
  const select = $("example");
  select.replaceChildren(el("option", { value: "", text: "(your own)" }));
  for (const name of Object.keys(examples.pods)) select.append(el("option", { value: name, text: name }));
  select.value = state.example ?? "";
  select.onchange = () => {
    state.example = select.value;
    if (select.value) {
      state.input = examples.pods[select.value];
      $("input").value = state.input;
    }
    schedule();
  };
  $("operation").value = state.operation;
  $("operation").onchange = () => { state.operation = $("operation").value; schedule(); };
  const input = $("input");
  input.value = state.input;
  input.oninput = () => { state.input = input.value; state.example = ""; select.value = ""; schedule(); };
  input.ondragover = (e) => e.preventDefault();
  input.ondrop = async (e) => {
    e.preventDefault();
    const file = e.dataTransfer.files[0];
    if (!file) return;
    input.value = state.input = await file.text();
    state.example = "";
    select.value = "";
    schedule();
  };
  const settings = $("settings");
  settings.replaceChildren();
  for (const name of POLICIES) {
    const toggle = el("input", { type: "checkbox", "data-policy": name });
    toggle.checked = state.enabled[name];
    toggle.onchange = () => { state.enabled[name] = toggle.checked; schedule(); };
    const area = el("textarea", { spellcheck: "false", "data-policy": name, "aria-label": `${name} settings` });
    area.value = state.settings[name];
    area.oninput = () => { state.settings[name] = area.value; schedule(); };
    settings.append(el("div", { class: "policy settings" }, el("label", {}, toggle, ` ${name}`), area));
  }
}

async function main() {
  await init();
  examples = await (await fetch("examples.json")).json();
  await Promise.all(POLICIES.map(async (p) => { policies[p] = await Policy.load(p, `policies/${p}.wasm`); }));
  state = readFragment();
  renderControls();
  window.loadToReadyMs = performance.now() - started;
  window.addEventListener("hashchange", () => { state = readFragment(); renderControls(); schedule(); });
  await update();
}

main().catch((e) => {
  $("status").textContent = `the playground failed to start: ${e.message ?? e}`;
  document.body.dataset.ready = "error";
});
