// lifeline browser client: follow an agent's health from any page, instead of a
// heartbeat loop of your own. Types: docs/client.d.ts.
//
//   import { subscribe } from "http://agent:9477/client.js";
//   const stop = subscribe({ checks: ["pbx-ws"] }, (health) => render(health));
//
// The module talks to the agent that served it. It follows /api/v1/events (Server-Sent
// Events); when the stream drops it reconnects with exponential backoff and jitter, and
// after every (re)connect it reloads the whole state from /health/detailed, so no change
// is missed. `cb` gets {status, score, checks, connected, agent} whenever any of that
// changes.

const AGENT = new URL("./", import.meta.url);
const FAILING = { unhealthy: true, disconnected: true };
const CHECK_EVENTS = [
  "connection:connected", "connection:disconnected", "connection:failed",
  "connection:reconnecting", "connection:reconnected", "connection:max_attempts_reached",
  "connection:auth_failed", "connection:health_degraded", "connection:health_check",
  "connection:restored",
];

// The agent's own rules (SPEC §4): overall status and weight-averaged score.
function overall(states) {
  let n = 0, healthy = 0, failing = 0, critical = 0, w = 0, sum = 0;
  for (const s of states) {
    if (s.status === "unknown") continue;
    n++;
    if (s.status === "healthy") healthy++;
    else if (FAILING[s.status]) { failing++; if (s.critical) critical++; }
    if (typeof s.score === "number") { w += s.weight; sum += s.weight * s.score; }
  }
  const status = n === 0 ? "unknown" : failing === n ? "down" : critical > 0 ? "partial"
    : healthy === n ? "healthy" : "degraded";
  return { status, score: w > 0 ? sum / w : n > 0 ? 0 : null };
}

function view(s) {
  return {
    status: s.status, score: s.score, latency_ms: s.latency_ms,
    error_kind: s.error_kind || null, message: s.last_error || s.message || "",
    since: s.since || null,
  };
}

/**
 * Follows the health of `options.checks` (every check when absent or empty) and calls
 * `cb` with `{status, score, checks, connected, agent}` on every change. Returns `stop`.
 */
export function subscribe(options, cb) {
  if (typeof options === "function") { cb = options; options = {}; }
  const opts = options || {};
  const base = opts.agent ? new URL(opts.agent, AGENT) : AGENT;
  const only = Array.isArray(opts.checks) && opts.checks.length ? new Set(opts.checks) : null;
  const minDelay = opts.minDelayMs > 0 ? opts.minDelayMs : 500;
  const maxDelay = opts.maxDelayMs > 0 ? opts.maxDelayMs : 30000;
  const withCredentials = !!opts.withCredentials;
  let es = null, timer = null, stopped = false, failures = 0, epoch = 0;
  let states = null;        // name -> /health/detailed state
  let agent = { status: "unknown", score: null };
  let connected = false, last = "";

  function emit() {
    if (stopped || !states) return;
    const picked = Object.values(states).filter((s) => !only || only.has(s.name));
    const checks = {};
    for (const s of picked) checks[s.name] = view(s);
    const o = only ? overall(picked) : agent;
    const h = { status: o.status, score: o.score, checks, connected, agent: { ...agent } };
    const key = JSON.stringify(h);
    if (key === last) return;
    last = key;
    try { cb(h); } catch (err) { setTimeout(() => { throw err; }); }
  }

  function retry() {
    if (stopped) return;
    if (es) { es.close(); es = null; }
    if (connected) { connected = false; emit(); }
    clearTimeout(timer);
    const ceiling = Math.min(maxDelay, minDelay * 2 ** Math.min(failures, 20));
    failures++;
    // "Equal jitter": half the delay fixed, half random, so clients spread out.
    const delay = ceiling / 2 + Math.random() * ceiling / 2;
    timer = setTimeout(open, delay);
  }

  async function resync(mine) {
    try {
      const r = await fetch(new URL("health/detailed", base), {
        cache: "no-store",
        credentials: withCredentials ? "include" : "same-origin",
      });
      if (!r.ok) throw new Error("HTTP " + r.status);
      const body = await r.json();
      if (stopped || mine !== epoch) return;
      states = {};
      for (const s of body.checks || []) states[s.name] = s;
      agent = { status: body.status, score: body.score };
      failures = 0;
      connected = true;
      emit();
    } catch (err) {
      if (mine === epoch) retry();
    }
  }

  function onCheck(name, m) {
    let d;
    try { d = JSON.parse(m.data); } catch (err) { return; }
    const s = states && d && states[d.check];
    if (!s) { resync(epoch); return; }
    if (d.status && d.status !== s.status) s.since = d.at;
    if (d.status) s.status = d.status;
    if ("score" in d) s.score = d.score;
    if (d.latency_ms !== null && d.latency_ms !== undefined) s.latency_ms = d.latency_ms;
    if (d.error_kind) { s.error_kind = d.error_kind; s.last_error = d.message || d.error_kind; }
    else if (d.status === "healthy") { s.error_kind = null; s.last_error = null; }
    if (!only || only.has(d.check)) emit();
  }

  function open() {
    if (stopped) return;
    const mine = ++epoch;
    es = new EventSource(new URL("api/v1/events", base), { withCredentials });
    es.onopen = () => resync(mine);
    es.onerror = () => { if (mine === epoch) retry(); };
    for (const name of CHECK_EVENTS) es.addEventListener(name, (m) => onCheck(name, m));
    es.addEventListener("agent:overall", (m) => {
      try {
        const d = JSON.parse(m.data);
        agent = { status: d.status, score: d.score };
        emit();
      } catch (err) { /* ignore */ }
    });
    es.addEventListener("agent:lagged", () => resync(mine));
  }

  open();
  return function stop() {
    stopped = true;
    clearTimeout(timer);
    if (es) { es.close(); es = null; }
  };
}
