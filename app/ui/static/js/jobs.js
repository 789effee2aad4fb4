// Jobs: the tenant's jobs with live progress (percent, tokens/s, ETA, $ against the budget).
import { api, duration, gib, h, session, usd } from "./api.js";

const $ = (id) => document.getElementById(id);
const ACTIVE = new Set(["queued", "running", "cancel_requested"]);
const REFRESH_MS = 2000;
const progress = new Map(); // job id -> {after, first, last}: what its events said so far
let timer = null;
let generation = 0; // a refresh loop of an older showJobs() stops rescheduling itself
let pinned = null; // the id (or unique start) typed into "find": show that one job only

export function stopJobs() { clearTimeout(timer); timer = null; }

export function showJobs() {
  stopJobs();
  generation += 1;
  refresh(generation);
}

async function follow(job) {
  const seen = progress.get(job.id) || { after: 0, first: null, last: null };
  for (;;) {
    const page = await api(`/v1/jobs/${job.id}/events?after=${seen.after}&limit=500`);
    for (const e of page.items) {
      if (e.kind !== "progress") continue;
      if (!seen.first) seen.first = e;
      seen.last = e;
    }
    if (!page.items.length || page.next_after == null) break;
    seen.after = page.next_after;
  }
  progress.set(job.id, seen);
  return seen;
}

// Steps per second between the first and the latest progress event, projected to the end.
function eta(seen) {
  const { first, last } = seen;
  if (!first || !last || last.step <= first.step || !last.total_steps) return null;
  const rate = (last.step - first.step) / ((Date.parse(last.created_at) - Date.parse(first.created_at)) / 1000);
  return rate > 0 ? (last.total_steps - last.step) / rate : null;
}

// Memory like with like: on a GPU the allocated peak against the estimate's allocated bytes;
// on the CPU the process's peak resident set against what must fit.
function memory(job) {
  const cpu = job.act_peak_kind === "cpu_rss";
  const est = cpu ? job.est_peak_bytes : (job.est_allocated_bytes ?? job.est_peak_bytes);
  return `${gib(est)} / ${gib(job.act_peak_bytes)}`;
}

function memoryTitle(job) {
  return `allocated ${gib(job.est_allocated_bytes)} est · reserved ${gib(job.est_reserved_bytes)} est, `
    + `${gib(job.act_reserved_bytes)} metered · per GPU (must fit) ${gib(job.est_peak_bytes)} est, `
    + `${gib(job.act_device_peak_bytes)} on the device`;
}

function row(job, seen, canSubmit) {
  const done = !ACTIVE.has(job.status);
  const last = seen && seen.last;
  const pct = job.status === "succeeded" ? 100
    : last && last.total_steps ? (100 * last.step) / last.total_steps : 0;
  const tps = done ? job.act_tokens_per_s : last && last.tokens_per_s;
  const spent = done ? job.act_cost_usd : last && last.accrued_cost_usd;
  const cancel = canSubmit && ACTIVE.has(job.status) && job.status !== "cancel_requested"
    ? h("button", { type: "button", class: "cancel", onclick: () => cancelJob(job.id) }, "cancel") : null;
  return h("tr", { "data-job": job.id, "data-status": job.status },
    h("td", { class: "id" }, job.id), // whole: the id the CLI and the API take
    h("td", { class: "status", title: job.error || job.status_detail || "" }, job.status),
    h("td", {}, job.method), h("td", {}, job.model_ref),
    h("td", {}, `${job.num_gpus}× ${job.gpu}`),
    h("td", { class: "progress" }, h("progress", { max: 100, value: pct.toFixed(1) }), ` ${pct.toFixed(0)}%`),
    h("td", { class: "tps" }, tps == null ? "-" : tps.toFixed(0)),
    h("td", { class: "eta" }, done ? "-" : duration(seen ? eta(seen) : null)),
    h("td", { class: "spent" }, `${usd(spent)} / ${job.max_cost_usd == null ? "no cap" : usd(job.max_cost_usd)}`),
    h("td", { class: "memory", title: memoryTitle(job) }, memory(job)),
    h("td", {}, cancel));
}

async function refresh(gen) {
  try {
    const page = pinned
      ? { items: [await api(`/v1/jobs/${encodeURIComponent(pinned)}`)] }
      : await api("/v1/jobs?limit=50");
    const seen = await Promise.all(page.items.map((j) =>
      ACTIVE.has(j.status) || !progress.has(j.id) ? follow(j) : progress.get(j.id)));
    const canSubmit = session.me.scope !== "read";
    $("jobs-table").tBodies[0].replaceChildren(...page.items.map((j, i) => row(j, seen[i], canSubmit)));
    $("jobs-error").textContent = "";
  } catch (err) {
    if (pinned) $("jobs-table").tBodies[0].replaceChildren(); // no stale rows beside the error
    $("jobs-error").textContent = err.message;
  }
  if (gen === generation && !$("view-jobs").hidden) timer = setTimeout(() => refresh(gen), REFRESH_MS);
}

// The API takes a unique start of an id anywhere it takes the id (409 if several match).
$("job-find").addEventListener("submit", (ev) => {
  ev.preventDefault();
  pinned = $("job-find-id").value.trim() || null;
  $("job-find-clear").hidden = !pinned;
  showJobs();
});
$("job-find-clear").addEventListener("click", () => {
  pinned = null;
  $("job-find-id").value = "";
  $("job-find-clear").hidden = true;
  showJobs();
});

async function cancelJob(id) {
  try {
    await api(`/v1/jobs/${id}/cancel`, { method: "POST" });
  } catch (err) {
    $("jobs-error").textContent = err.message;
  }
  showJobs();
}
