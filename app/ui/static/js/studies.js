// Studies: pilots of candidate methods on fractions of the data, the frontier of predicted
// full-data eval loss against $ (80% intervals), each candidate's pilot curve and fitted law,
// the recommendation with its reasons, and running the chosen candidate on the whole data.
import { api, h, session, usd } from "./api.js";

const $ = (id) => document.getElementById(id);
const COLORS = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c"];
const CURVE_POINTS = 30; // samples of the fitted law between the smallest pilot and the full data
const charts = {};
let current = null; // the study shown
let wired = false;

const loss = (x) => (x == null ? "-" : x.toFixed(3));
const interval = (i, fmt) => (i ? `${fmt(i.value)} (${fmt(i.low)} – ${fmt(i.high)})` : "-");
const color = (i) => COLORS[i % COLORS.length];

function draw(id, config) {
  if (charts[id]) charts[id].destroy();
  charts[id] = new window.Chart($(id), config);
}

// Chart.js draws no error bars: each interval is a two-point line of its own.
function bar(from, to, i) {
  return {
    type: "line", data: [from, to], borderColor: color(i), borderWidth: 2, pointRadius: 0,
    fill: false, showLine: true, label: "", intervalOf: i,
  };
}

function frontierChart(study) {
  const shown = study.candidates.filter((c) => c.predicted_eval_loss && c.predicted_cost_usd);
  const onFrontier = new Set(study.frontier);
  const datasets = shown.map((c) => ({
    type: "scatter", label: `${c.name}${onFrontier.has(c.index) ? " (frontier)" : ""}`,
    data: [{ x: c.predicted_cost_usd.value, y: c.predicted_eval_loss.value }],
    backgroundColor: onFrontier.has(c.index) ? color(c.index) : "#fff",
    borderColor: color(c.index), borderWidth: 2, pointRadius: onFrontier.has(c.index) ? 7 : 5,
  }));
  for (const c of shown) {
    const [x, y] = [c.predicted_cost_usd, c.predicted_eval_loss];
    datasets.push(bar({ x: x.value, y: y.low }, { x: x.value, y: y.high }, c.index));
    datasets.push(bar({ x: x.low, y: y.value }, { x: x.high, y: y.value }, c.index));
  }
  if (study.target_eval_loss != null && shown.length) {
    const xs = shown.flatMap((c) => [c.predicted_cost_usd.low, c.predicted_cost_usd.high]);
    datasets.push({
      type: "line", label: `target ${loss(study.target_eval_loss)}`,
      data: [{ x: Math.min(...xs), y: study.target_eval_loss }, { x: Math.max(...xs), y: study.target_eval_loss }],
      borderColor: "#1d2330", borderDash: [4, 4], pointRadius: 0, fill: false,
    });
  }
  $("study-frontier").dataset.candidates = String(shown.length);
  $("study-frontier").dataset.frontier = study.frontier.join(",");
  draw("study-frontier", {
    type: "scatter", data: { datasets },
    options: {
      animation: false,
      plugins: { legend: { labels: { filter: (item) => item.text !== "" } } },
      scales: {
        x: { title: { display: true, text: "predicted full-data cost ($)" } },
        y: { title: { display: true, text: "predicted full-data eval loss" } },
      },
    },
  });
}

function curvesChart(study) {
  const datasets = [];
  let pilots = 0;
  for (const c of study.candidates) {
    const points = c.pilots.filter((p) => p.eval_loss != null).map((p) => ({ x: p.rows, y: p.eval_loss }));
    pilots += points.length;
    datasets.push({
      type: "scatter", label: `${c.name} pilots`, data: points, backgroundColor: color(c.index),
      borderColor: color(c.index), pointRadius: 5,
    });
    if (c.fit && points.length) {
      const lo = Math.min(...points.map((p) => p.x));
      const law = [];
      for (let k = 0; k <= CURVE_POINTS; k += 1) {
        const d = lo + ((study.full_rows - lo) * k) / CURVE_POINTS;
        law.push({ x: d, y: c.fit.e + c.fit.b * (d / study.full_rows) ** -c.fit.beta });
      }
      datasets.push({
        type: "line", label: `${c.name} fit`, data: law, borderColor: color(c.index),
        borderDash: [6, 3], pointRadius: 0, fill: false,
      });
    }
    if (c.predicted_eval_loss) {
      const p = c.predicted_eval_loss;
      datasets.push(bar({ x: study.full_rows, y: p.low }, { x: study.full_rows, y: p.high }, c.index));
    }
  }
  $("study-curves").dataset.pilots = String(pilots);
  draw("study-curves", {
    type: "scatter", data: { datasets },
    options: {
      animation: false,
      plugins: { legend: { labels: { filter: (item) => item.text !== "" } } },
      scales: {
        x: { type: "linear", title: { display: true, text: "training examples (the full data at the right)" } },
        y: { title: { display: true, text: "eval loss" } },
      },
    },
  });
}

function candidateRow(study, c) {
  const pilots = c.pilots.map((p) => `${(p.fraction * 100).toFixed(0)}%: ${loss(p.eval_loss)} (${p.status}, ${usd(p.cost_usd)})`);
  const above = c.prob_above_target == null ? "-" : `${(c.prob_above_target * 100).toFixed(0)}%`;
  const fit = c.fit ? (c.fit.poor ? `poor: ${c.fit.poor}` : `β ${c.fit.beta.toFixed(2)}, rmse ${c.fit.residual_rmse.toPrecision(2)}`) : (c.note || "-");
  const recommended = study.recommendation && study.recommendation.candidate === c.index;
  return h("tr", { "data-candidate": c.index, class: recommended ? "recommended" : null },
    h("td", {}, c.name, study.frontier.includes(c.index) ? h("span", { class: "badge fits" }, "frontier") : null),
    h("td", { class: "loss" }, interval(c.predicted_eval_loss, loss)),
    h("td", { class: "cost" }, interval(c.predicted_cost_usd, usd)),
    h("td", { class: "above" }, above),
    h("td", { class: "per-unit" }, c.usd_per_eval_loss_unit == null ? "-" : `$${c.usd_per_eval_loss_unit.toPrecision(3)}`),
    h("td", { class: "fit" }, fit),
    h("td", { class: "pilots" }, pilots.join(" · ")));
}

function render(study) {
  current = study;
  $("study").hidden = false;
  $("study-id").textContent = study.id;
  const target = study.target_eval_loss == null ? "" : ` · target eval loss ${loss(study.target_eval_loss)}`;
  $("study-status").textContent = `${study.status} · ${study.progress.ended} of ${study.progress.pilots} pilots ended · pilots cost ${usd(study.pilot_cost_usd)} of ${usd(study.pilot_budget_usd)}${target}`;
  const rec = study.recommendation;
  $("study-recommendation").replaceChildren(rec
    ? h("div", { class: "card recommended" },
      h("h3", {}, rec.name ? `Recommended: ${rec.name}` : "No candidate recommended"),
      h("ul", {}, rec.reasons.map((r) => h("li", {}, r))))
    : h("p", { class: "note" }, "The recommendation comes when every pilot has ended."));
  $("study-candidates").tBodies[0].replaceChildren(...study.candidates.map((c) => candidateRow(study, c)));
  const canRun = session.me.scope !== "read" && study.status === "succeeded";
  $("study-run").hidden = !canRun;
  $("study-run-candidate").replaceChildren(...study.candidates.map((c) => h("option", {
    value: c.index, selected: rec && rec.candidate === c.index,
  }, c.name)));
  frontierChart(study);
  curvesChart(study);
  $("view-studies").dataset.ready = "true";
}

async function open(id) {
  $("studies-error").textContent = "";
  $("study-run-result").textContent = "";
  try {
    render(await api(`/v1/studies/${encodeURIComponent(id)}`));
  } catch (err) {
    $("studies-error").textContent = err.message;
  }
}

async function list() {
  const page = await api("/v1/studies?limit=50");
  $("studies-table").tBodies[0].replaceChildren(...page.items.map((s) => h("tr", { "data-study": s.id },
    h("td", { class: "id" }, h("a", { href: "#", onclick: (ev) => { ev.preventDefault(); open(s.id); } }, s.id)),
    h("td", {}, s.status), h("td", {}, `${s.progress.ended} / ${s.progress.pilots}`),
    h("td", {}, usd(s.pilot_cost_usd)),
    h("td", {}, s.recommendation ? s.recommendation.name || "none" : "-"))));
}

async function runFull(ev) {
  ev.preventDefault();
  $("study-run-error").textContent = "";
  try {
    const job = await api(`/v1/studies/${current.id}/run`, {
      method: "POST", body: { candidate: Number($("study-run-candidate").value) },
    });
    $("study-run-result").replaceChildren("Submitted job ", h("code", { class: "job" }, job.id), ` (${job.method}, estimated ${usd(job.est_cost_usd)}).`);
  } catch (err) {
    $("study-run-error").textContent = err.message;
  }
}

export async function showStudies() {
  if (!wired) {
    wired = true;
    $("study-run").addEventListener("submit", runFull);
  }
  $("view-studies").dataset.ready = "false";
  try {
    await list();
    if (current) await open(current.id);
    else $("view-studies").dataset.ready = "true";
  } catch (err) {
    $("studies-error").textContent = err.message;
  }
}
