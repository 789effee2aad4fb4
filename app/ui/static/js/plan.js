// Plan: a model, a dataset, hardware -> full / LoRA / QLoRA side by side, and submit one.
import { api, gib, h, hours, range, usd } from "./api.js";

const $ = (id) => document.getElementById(id);
const METHODS = ["full", "lora", "qlora"];
const PARTS = [
  ["weights", "#4c72b0"], ["gradients", "#dd8452"], ["optimizer_states", "#55a868"],
  ["master_weights", "#c44e52"], ["activations", "#8172b3"], ["logits", "#937860"],
  ["overhead", "#8c8c8c"],
];
let current = null; // the last estimate and how its model was named
let options = {};

function choice(name) { return document.querySelector(`input[name=${name}]:checked`).value; }
function num(id) { const v = $(id).value; return v === "" ? undefined : Number(v); }

function toggle(name, attr) {
  const pick = () => {
    for (const el of document.querySelectorAll(`[${attr}]`)) {
      el.hidden = el.getAttribute(attr) !== choice(name);
    }
  };
  for (const r of document.querySelectorAll(`input[name=${name}]`)) r.addEventListener("change", pick);
  pick();
}

async function loadDatasets() {
  const page = await api("/v1/datasets?limit=100");
  const select = $("ds-select");
  select.replaceChildren(...page.items.map((d) =>
    h("option", { value: d.id }, `${d.name} · ${d.num_examples} examples · ${d.total_tokens} tokens`)));
}

async function upload() {
  const file = $("ds-file").files[0];
  if (!file) return;
  const form = new FormData();
  form.append("file", file);
  form.append("name", file.name);
  if (choice("model_kind") === "path" && $("model-path").value) form.append("model_path", $("model-path").value);
  $("ds-upload-status").textContent = "uploading…";
  try {
    const ds = await api("/v1/datasets", { method: "POST", form });
    await loadDatasets();
    $("ds-select").value = ds.id;
    $("ds-upload-status").textContent = `uploaded ${ds.name}: ${ds.num_examples} examples`;
  } catch (err) {
    $("ds-upload-status").textContent = "";
    $("plan-error").textContent = err.message;
  }
}

export async function initPlan({ canSubmit, onSubmitted }) {
  options = { canSubmit, onSubmitted };
  toggle("model_kind", "data-kind");
  toggle("data_kind", "data-data");
  const [models, gpus, prices] = await Promise.all([
    api("/v1/catalog/models"), api("/v1/catalog/gpus"), api("/v1/catalog/prices"),
  ]);
  $("model-catalog").replaceChildren(...models.models.map((m) => h("option", { value: m.id }, m.id)));
  $("hw-gpu").replaceChildren(
    h("option", { value: "" }, "any (cheapest that fits)"),
    ...gpus.gpus.map((g) => h("option", { value: g.id }, `${g.name} · ${g.memory_gib} GiB`)),
  );
  const providers = [...new Set(prices.prices.map((p) => p.provider))].sort();
  $("hw-provider").replaceChildren(
    h("option", { value: "" }, "any"), ...providers.map((p) => h("option", { value: p }, p)));
  await loadDatasets();
  $("ds-file").addEventListener("change", upload);
  $("plan-form").addEventListener("submit", (ev) => { ev.preventDefault(); estimate(); });
  $("submit-form").addEventListener("submit", (ev) => { ev.preventDefault(); submitJob(); });
}

function request() {
  const kind = choice("model_kind");
  let model;
  if (kind === "catalog") model = $("model-catalog").value;
  else if (kind === "path") model = { path: $("model-path").value };
  else {
    try { model = { config: JSON.parse($("model-config").value) }; } catch (err) {
      throw new Error(`model config: not valid JSON (${err.message}); paste a config.json`);
    }
  }
  const dataset = choice("data_kind") === "uploaded"
    ? { dataset_id: $("ds-select").value }
    : { num_examples: num("ds-examples"), avg_tokens: num("ds-avg"), max_tokens: num("ds-max") };
  const training = { micro_batch_size: num("tr-mb"), epochs: num("tr-epochs"), precision: $("tr-precision").value };
  if (num("tr-seq")) training.seq_len = num("tr-seq");
  const hardware = { pricing: $("hw-pricing").value };
  if ($("hw-gpu").value) hardware.gpu = $("hw-gpu").value;
  if (num("hw-count")) hardware.num_gpus = num("hw-count");
  if ($("hw-provider").value) hardware.provider = $("hw-provider").value;
  const body = { model, dataset, training, hardware };
  if (num("budget")) body.budget_usd = num("budget");
  return { body, kind };
}

async function estimate() {
  $("plan-error").textContent = "";
  $("estimate-btn").disabled = true;
  try {
    const { body, kind } = request();
    const est = await api("/v1/estimates", { method: "POST", body });
    current = { est, kind, body };
    render(est);
  } catch (err) {
    $("plan-error").textContent = err.message;
  } finally {
    $("estimate-btn").disabled = false;
  }
}

// One verdict per method, in the order that decides it: memory, the fleet, the budget.
function badge(r) {
  if (!r.fits) return h("span", { class: "badge nofit" }, "does not fit");
  if (r.runnable === false) return h("span", { class: "badge nofit" }, "no worker can run it");
  if (r.over_budget) return h("span", { class: "badge overbudget" }, "over budget");
  if (r.tight) return h("span", { class: "badge tight" }, "tight");
  return h("span", { class: "badge fits" }, "fits");
}

// One bar against the GPU's memory (the black mark at its end): each part of the expected
// peak to scale; a peak larger than the GPU runs past the mark.
function memoryBar(r, capacity) {
  const scale = Math.max(capacity, r.memory.per_gpu_bytes);
  const bar = h("div", {
    class: "membar", "data-capacity-bytes": capacity, "data-scale-bytes": scale,
    title: `expected ${gib(r.memory.per_gpu_bytes)} of ${gib(capacity)}`,
  },
    PARTS.map(([part, color]) => {
      const bytes = r.memory.breakdown[part] || 0;
      return h("span", { style: `width:${(100 * bytes) / scale}%;background:${color}`, title: `${part}: ${gib(bytes)}` });
    }),
    h("i", { class: "cap", style: `left:${(100 * capacity) / scale}%`, title: `GPU memory ${gib(capacity)}` }));
  const legend = h("div", { class: "legend" }, PARTS.filter(([p]) => r.memory.breakdown[p]).map(([p, c]) =>
    h("span", {}, h("i", { style: `background:${c}` }), `${p.replace("_", " ")} ${gib(r.memory.breakdown[p])}`)));
  return [bar, legend];
}

// The memory of the result's GPU (older estimates did not carry it: its plan row does).
function capacityOf(est, method) {
  const r = est.results[method];
  if (r.gpu_memory_bytes) return r.gpu_memory_bytes;
  const plan = (est.plans[method] || []).find((p) => p.gpu === r.gpu);
  return plan ? plan.gpu_memory_bytes : null;
}

// The training settings the plan runs with, each memory lever that is on and why.
function levers(r) {
  const t = r.training;
  if (!t) return [];
  const setting = `micro-batch ${t.micro_batch_size} x ${t.gradient_accumulation_steps} · `
    + `${t.optimizer}${t.gradient_checkpointing ? " · gradient checkpointing" : ""}`
    + `${t.adapter_dtype ? ` · ${t.adapter_dtype} adapters` : ""}`;
  return [
    h("dt", {}, "training"), h("dd", { class: "training" }, setting),
    t.levers.length ? h("ul", { class: "levers" }, t.levers.map((l) =>
      h("li", { "data-lever": l.lever }, `${l.lever.replaceAll("_", " ")} (${l.chosen_by}): ${l.why}`))) : null,
  ];
}

function card(est, method) {
  const r = est.results[method];
  const capacity = capacityOf(est, method);
  const recommended = est.recommendation.method === method;
  return h("div", { class: `card${recommended ? " recommended" : ""}`, "data-method": method },
    h("h3", {}, method, " ", badge(r), recommended ? " recommended" : ""),
    h("div", { class: "gpu" }, `${r.num_gpus}× ${r.gpu}${r.nodes > 1 ? ` on ${r.nodes} nodes` : ""} · ${r.strategy}`,
      r.billed_gpus !== r.num_gpus ? ` · ${r.billed_gpus} GPUs billed (whole instance)` : "",
      r.provider ? ` · ${r.provider} ${r.pricing}` : ""),
    memoryBar(r, capacity),
    h("dl", {},
      h("dt", {}, "memory per GPU (must fit)"), h("dd", { class: "memory" }, `${gib(r.memory.per_gpu_bytes)} (${gib(r.memory.low_bytes)} – ${gib(r.memory.high_bytes)}) of ${gib(capacity)}`),
      h("dt", {}, "allocated · reserved"), h("dd", { class: "memory-torch", title: "compare with torch.cuda.max_memory_allocated / max_memory_reserved" },
        `${gib(r.memory.allocated_bytes)} · ${gib(r.memory.reserved_bytes)}`),
      h("dt", {}, "trainable"), h("dd", {}, r.trainable_params.toLocaleString("en")),
      h("dt", {}, "time"), h("dd", { class: "hours" }, hours(r.hours) + range(r.hours_range, hours)),
      h("dt", {}, "GPU-hours"), h("dd", {}, r.gpu_hours.toFixed(3) + range(r.gpu_hours_range, (x) => x.toFixed(3))),
      h("dt", {}, "cost"), h("dd", { class: "cost" }, r.fits
        ? usd(r.cost_usd) + range(r.cost_usd_range, usd) : "- (does not fit: it cannot run as estimated)"),
      h("dt", {}, "artifact"), h("dd", {}, `${gib(r.artifact_bytes)} · storage ${usd(r.storage_cost_usd)}`),
      h("dt", {}, "basis"), h("dd", {}, `${r.basis}${r.calibration_jobs ? ` (${r.calibration_jobs} jobs)` : ""}`),
      levers(r)),
    r.notes.length ? h("ul", { class: "notes" }, r.notes.map((n) => h("li", {}, n))) : null);
}

function cheapest(est, method) {
  const plans = (est.plans[method] || []).filter((p) => p.fits && p.runnable !== false && p.cost_usd != null).slice(0, 3);
  return h("div", { class: "card" }, h("h3", {}, method),
    plans.length ? h("table", {}, h("tbody", {}, plans.map((p) => h("tr", {},
      h("td", {}, `${p.num_gpus}× ${p.gpu}`), h("td", {}, p.provider || "-"),
      h("td", {}, usd(p.cost_usd) + range(p.cost_usd_range, usd)), h("td", {}, hours(p.hours)),
      h("td", {}, p.tight ? "tight" : "")))))
      : h("p", {}, "no priced plan fits"));
}

function render(est) {
  const methods = METHODS.filter((m) => est.results[m]);
  $("recommendation").replaceChildren(
    h("h3", {}, est.recommendation.method ? `Recommended: ${est.recommendation.method}` : "No method to recommend"),
    h("ul", {}, est.recommendation.reasons.map((r) => h("li", {}, r))),
    est.notes.length ? h("ul", { class: "note est-notes" }, est.notes.map((n) => h("li", {}, n))) : null);
  $("methods").replaceChildren(...methods.map((m) => card(est, m)));
  $("cheapest").replaceChildren(...methods.map((m) => cheapest(est, m)));
  $("job-method").replaceChildren(...methods.map((m) => h("option", { value: m }, m)));
  if (est.recommendation.method) $("job-method").value = est.recommendation.method;
  $("plan-result").hidden = false;
}

function tags() {
  const out = {};
  for (const part of $("job-tags").value.split(",").map((s) => s.trim()).filter(Boolean)) {
    const at = part.indexOf("=");
    if (at < 1) throw new Error(`tags: '${part}' is not key=value`);
    out[part.slice(0, at).trim()] = part.slice(at + 1).trim();
  }
  return out;
}

async function submitJob() {
  $("submit-error").textContent = "";
  try {
    const body = { estimate_id: current.est.id, method: $("job-method").value, tags: tags() };
    if (num("job-budget")) body.max_cost_usd = num("job-budget");
    if (num("job-steps")) body.max_steps = num("job-steps");
    if ($("job-force").checked) body.force = true;
    if (current.kind === "config") {
      throw new Error("a pasted config has no weights to train: pick a catalog model or a local folder");
    }
    // A catalog model runs from the hub id of the same name; a local folder needs nothing more.
    if (current.kind === "catalog") body.model = { hub_id: current.body.model };
    if (!current.est.dataset_id) {
      throw new Error("a job trains on an uploaded dataset: pick one under Dataset and estimate again");
    }
    await api("/v1/jobs", { method: "POST", body });
    options.onSubmitted();
  } catch (err) {
    $("submit-error").textContent = err.message;
  }
}
