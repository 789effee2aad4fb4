// Budgets: each budget's burn in its current period (spent, running, committed against the
// amount, with where the period is heading) and the period's forecast per group.
import { api, h, session, usd } from "./api.js";

const $ = (id) => document.getElementById(id);
let wired = false;

const pct = (part, whole) => Math.max(0, Math.min(100, (100 * part) / whole));
const day = (iso) => iso.slice(0, 10);

// One bar: spent | accrued | committed as shares of the amount, a tick where the projection
// lands (past the end when it overshoots, shown at the edge).
function burnBar(budget) {
  const b = budget.burn;
  const whole = Math.max(budget.amount_usd, b.projected_usd, b.total_usd);
  const seg = (cls, value, title) =>
    h("span", { class: cls, style: `width:${pct(value, whole)}%`, title: `${title}: ${usd(value)}` });
  return h("div", { class: "burnbar" },
    seg("seg-spent", b.spent_usd, "spent"),
    seg("seg-accrued", b.accrued_usd, "running so far"),
    seg("seg-committed", b.committed_usd, "committed"),
    h("i", { class: "mark-amount", style: `left:${pct(budget.amount_usd, whole)}%`, title: `budget ${usd(budget.amount_usd)}` }),
    h("i", { class: "mark-projected", style: `left:${pct(b.projected_usd, whole)}%`, title: `projected ${usd(b.projected_usd)}` }));
}

function card(budget) {
  const b = budget.burn;
  const over = b.total_usd > budget.amount_usd;
  const alerts = b.alerts.map((a) => `${a.threshold_pct}%`).join(", ") || "none yet";
  return h("div", { class: `card budget${over ? " over" : ""}`, "data-budget": budget.id },
    h("h3", {}, budget.name, " ",
      h("span", { class: `badge ${budget.action === "refuse" ? "nofit" : "tight"}` },
        budget.action === "refuse" ? "refuses new jobs at 100%" : "warns")),
    h("p", { class: "note" }, `${budget.tag_key}=${budget.tag_value} · ${budget.period} `,
      `${day(b.period_start)} – ${day(b.period_end)} (${b.days_left.toFixed(1)} days left)`),
    burnBar(budget),
    h("dl", {},
      h("dt", {}, "used"), h("dd", { class: "used" }, `${b.used_pct.toFixed(1)}% of ${usd(budget.amount_usd)}`),
      h("dt", {}, "spent"), h("dd", { class: "spent" }, usd(b.spent_usd)),
      h("dt", {}, "running"), h("dd", { class: "accrued" }, usd(b.accrued_usd)),
      h("dt", {}, "committed"), h("dd", { class: "committed" },
        `${usd(b.committed_usd)} (${usd(b.committed_low_usd)} – ${usd(b.committed_high_usd)})`),
      h("dt", {}, "left"), h("dd", { class: "left" }, usd(b.left_usd)),
      h("dt", {}, "projected"), h("dd", { class: "projected" },
        `${usd(b.projected_usd)} (${usd(b.projected_low_usd)} – ${usd(b.projected_high_usd)}) at ${usd(b.daily_rate_usd)}/day`),
      h("dt", {}, "thresholds crossed"), h("dd", { class: "alerts" }, alerts)));
}

async function loadBudgets() {
  const list = await api("/v1/budgets");
  $("budgets-list").replaceChildren(...(list.items.length ? list.items.map(card)
    : [h("p", { class: "note" }, "No budget yet.")]));
}

async function loadForecast() {
  const by = $("forecast-group").value.trim();
  const query = by ? `?group_by=${encodeURIComponent(`tag:${by}`)}` : "";
  const report = await api(`/v1/reports/forecast${query}`);
  const rows = [...report.rows, { ...report.total, group: "all" }];
  $("forecast-period").textContent =
    `${day(report.period.start)} – ${day(report.period.end)}, ${report.days_left.toFixed(1)} days left`;
  $("forecast-table").tBodies[0].replaceChildren(...rows.map((r) => h("tr", { "data-group": r.group ?? "" },
    h("td", {}, r.group ?? "(untagged)"), h("td", {}, usd(r.spent_usd)), h("td", {}, usd(r.accrued_usd)),
    h("td", {}, `${usd(r.committed_usd)} (${usd(r.committed_low_usd)} – ${usd(r.committed_high_usd)})`),
    h("td", {}, usd(r.daily_rate_usd)),
    h("td", { class: "projected" }, `${usd(r.projected_usd)} (${usd(r.projected_low_usd)} – ${usd(r.projected_high_usd)})`))));
}

function tags(text) {
  const [key, value] = text.split("=").map((s) => s.trim());
  return value ? { tag_key: key, tag_value: value } : {};
}

async function create(ev) {
  ev.preventDefault();
  const body = {
    name: $("budget-name").value.trim(),
    amount_usd: Number($("budget-amount").value),
    period: $("budget-period").value,
    action: $("budget-action").value,
    thresholds_pct: $("budget-thresholds").value.split(",").map((s) => Number(s.trim())).filter((x) => x > 0),
    team: $("budget-team").value.trim() || undefined,
    ...tags($("budget-tag").value),
  };
  try {
    await api("/v1/budgets", { method: "POST", body });
    $("budget-error").textContent = "";
    $("budget-form").reset();
    await loadBudgets();
  } catch (err) {
    $("budget-error").textContent = err.message;
  }
}

export async function showBudgets() {
  const guard = (fn) => async () => {
    try { await fn(); } catch (err) { $("budgets-error").textContent = err.message; }
  };
  if (!wired) {
    wired = true;
    $("budget-form").addEventListener("submit", create);
    $("forecast-group").addEventListener("change", guard(loadForecast));
  }
  $("budget-form").hidden = session.me.scope !== "admin";
  $("budgets-error").textContent = "";
  await Promise.all([guard(loadBudgets)(), guard(loadForecast)()]);
  $("view-budgets").dataset.ready = "true";
}
