// Reports: estimated vs actual per job (y = x is a perfect estimate), spend over time, downloads.
import { api, h } from "./api.js";

const $ = (id) => document.getElementById(id);
const PAGES = 5; // at most 5 x 100 finished jobs in the scatter: enough to see a bias
const COLORS = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c"];
const charts = {};
let wired = false;

async function finishedJobs() {
  const out = [];
  let cursor = null;
  for (let i = 0; i < PAGES; i += 1) {
    const page = await api(`/v1/jobs?status=succeeded&limit=100${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
    out.push(...page.items);
    cursor = page.next_cursor;
    if (!cursor) break;
  }
  return out;
}

function draw(id, config) {
  if (charts[id]) charts[id].destroy();
  charts[id] = new window.Chart($(id), config);
}

function scatter(jobs) {
  const quantity = $("scatter-quantity").value;
  const [est, act, unit] = quantity === "cost"
    ? ["est_cost_usd", "act_cost_usd", "$"] : ["est_gpu_hours", "act_gpu_hours", "GPU-hours"];
  const by = $("scatter-group").value;
  const points = jobs.filter((j) => j[est] != null && j[act] != null);
  const groups = [...new Set(points.map((j) => j[by]))].sort();
  const top = Math.max(1e-9, ...points.flatMap((j) => [j[est], j[act]]));
  const datasets = groups.map((g, i) => ({
    type: "scatter", label: g, backgroundColor: COLORS[i % COLORS.length],
    data: points.filter((j) => j[by] === g).map((j) => ({ x: j[est], y: j[act], id: j.id })),
  }));
  datasets.push({
    type: "line", label: "y = x", data: [{ x: 0, y: 0 }, { x: top, y: top }],
    borderColor: "#1d2330", borderDash: [4, 4], pointRadius: 0, fill: false,
  });
  $("scatter").dataset.points = String(points.length);
  draw("scatter", {
    type: "scatter", data: { datasets },
    options: {
      animation: false,
      scales: {
        x: { title: { display: true, text: `estimated ${unit}` }, min: 0 },
        y: { title: { display: true, text: `actual ${unit}` }, min: 0 },
      },
    },
  });
}

async function spend() {
  const tag = $("spend-tag").value.trim();
  const query = tag ? `&group_by=${encodeURIComponent(`tag:${tag}`)}` : "";
  const report = await api(`/v1/reports/spend?bucket=day${query}`);
  const days = [...new Set(report.rows.map((r) => r.bucket_start))].sort();
  const groups = [...new Set(report.rows.map((r) => r.group ?? "(untagged)"))].sort();
  const datasets = groups.map((g, i) => ({
    label: g, backgroundColor: COLORS[i % COLORS.length],
    data: days.map((d) => report.rows
      .filter((r) => r.bucket_start === d && (r.group ?? "(untagged)") === g)
      .reduce((sum, r) => sum + r.spend_usd, 0)),
  }));
  $("spend").dataset.rows = String(report.rows.length);
  draw("spend", {
    type: "bar", data: { labels: days, datasets },
    options: {
      animation: false,
      scales: { x: { stacked: true }, y: { stacked: true, title: { display: true, text: "$ spent" } } },
    },
  });
}

const pct = (q) => (q.mean_pct_error == null ? "-" : `${q.mean_pct_error.toFixed(1)}% (n=${q.n})`);

async function errorTable() {
  const report = await api("/v1/reports/estimate-vs-actual?group_by=method");
  $("eva-table").tBodies[0].replaceChildren(...report.rows.map((r) => h("tr", { "data-group": r.group ?? "" },
    h("td", {}, r.group ?? "-"), h("td", {}, r.jobs), h("td", {}, r.spend_usd.toFixed(4)),
    h("td", {}, pct(r.cost_usd)), h("td", {}, pct(r.gpu_hours)), h("td", { class: "peak", title: `like with like: allocated vs allocated on ${r.peak_compared.allocated} GPU jobs, must-fit vs peak RSS on ${r.peak_compared.per_gpu}` }, pct(r.peak_bytes)))));
}

const perUnit = (x) => (x == null ? "-" : `$${x.toPrecision(3)}`);

async function benefitTable() {
  const report = await api("/v1/reports/benefit");
  $("benefit-table").tBodies[0].replaceChildren(...report.rows.map((r) => h("tr", { "data-method": r.method },
    h("td", {}, r.method), h("td", {}, r.jobs), h("td", {}, r.cost_usd.toFixed(4)),
    h("td", {}, r.eval_loss_improvement.toFixed(3)),
    h("td", { class: "per-unit" }, perUnit(r.usd_per_eval_loss_unit)),
    h("td", {}, perUnit(r.median_usd_per_eval_loss_unit)))));
}

// A plain link cannot send the key, so downloads are fetched with it and saved from a blob.
async function download(button) {
  const resp = await api(button.dataset.url, { raw: true });
  const url = URL.createObjectURL(await resp.blob());
  const a = h("a", { href: url, download: button.dataset.file });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

export async function showReports() {
  const report = (fn) => async () => {
    try { await fn(); } catch (err) { $("reports-error").textContent = err.message; }
  };
  if (!wired) {
    wired = true;
    let jobs = [];
    const redraw = () => scatter(jobs);
    $("scatter-quantity").addEventListener("change", redraw);
    $("scatter-group").addEventListener("change", redraw);
    $("spend-tag").addEventListener("change", report(spend));
    for (const b of document.querySelectorAll("button.download")) {
      b.addEventListener("click", report(() => download(b)));
    }
    showReports.load = report(async () => { jobs = await finishedJobs(); scatter(jobs); });
  }
  $("reports-error").textContent = "";
  await Promise.all([
    showReports.load(), report(spend)(), report(errorTable)(), report(benefitTable)(),
  ]);
  document.getElementById("view-reports").dataset.ready = "true";
}
