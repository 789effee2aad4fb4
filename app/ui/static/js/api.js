// Talking to the API with the session's key, and the console's one set of units.
const KEY = "tunecost.key";
export const GIB = 2 ** 30; // memory is shown in GiB everywhere (CLI, demo, console)

// Who the key belongs to (GET /v1/keys/me), filled in by the shell once the key is accepted.
export const session = { me: null };

export function savedKey() { return sessionStorage.getItem(KEY); }
export function saveKey(key) { sessionStorage.setItem(KEY, key); }
export function forgetKey() { sessionStorage.removeItem(KEY); }

// An API error: the problem+json's detail (and the fields it names), as one readable line.
export class ApiError extends Error {
  constructor(status, problem) {
    const fields = (problem.errors || [])
      .map((e) => `${(e.loc || []).join(".")}: ${e.msg || ""}`);
    super([`${status} ${problem.title || ""}: ${problem.detail || ""}`, ...fields].join("\n"));
    this.status = status;
    this.problem = problem;
  }
}

export async function api(path, { method = "GET", body, form, raw = false } = {}) {
  const headers = { Authorization: `Bearer ${savedKey()}` };
  let payload;
  if (form) payload = form;
  else if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  const resp = await fetch(path, { method, headers, body: payload });
  if (!resp.ok) {
    let problem = {};
    try { problem = await resp.json(); } catch { problem = { detail: resp.statusText }; }
    throw new ApiError(resp.status, problem);
  }
  return raw ? resp : resp.json();
}

// h("div", {class: "x"}, "text", child): elements built from text, never from HTML strings.
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "style") el.style.cssText = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export const gib = (bytes) => (bytes == null ? "-" : `${(bytes / GIB).toFixed(2)} GiB`);
export const usd = (x) => (x == null ? "-" : `$${x < 1 ? x.toFixed(4) : x.toFixed(2)}`);
export const hours = (x) => (x == null ? "-" : x < 1 ? `${(x * 60).toFixed(1)} min` : `${x.toFixed(2)} h`);
export function range(r, fmt) { return r ? ` (${fmt(r.low)} – ${fmt(r.high)})` : ""; }
export function duration(seconds) {
  if (seconds == null || !isFinite(seconds)) return "-";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
}
