// The console's shell: the key, the scope it grants, and switching between the views.
import { api, forgetKey, h, saveKey, savedKey, session } from "./api.js";
import { showBudgets } from "./budgets.js";
import { showJobs, stopJobs } from "./jobs.js";
import { initPlan } from "./plan.js";
import { showReports } from "./reports.js";
import { showStudies } from "./studies.js";
import { showWebhooks } from "./webhooks.js";

const $ = (id) => document.getElementById(id);
const views = {
  plan: () => {}, jobs: showJobs, studies: showStudies, reports: showReports, budgets: showBudgets,
  webhooks: showWebhooks,
};

export function showView(name) {
  for (const v of Object.keys(views)) $(`view-${v}`).hidden = v !== name;
  for (const b of document.querySelectorAll("#tabs button")) {
    if (b.dataset.view === name) b.setAttribute("aria-current", "page");
    else b.removeAttribute("aria-current");
  }
  if (name !== "jobs") stopJobs();
  views[name]();
}

async function start() {
  try {
    session.me = await api("/v1/keys/me");
  } catch (err) {
    forgetKey();
    $("login-error").textContent = err.message;
    return;
  }
  const canSubmit = session.me.scope !== "read";
  document.body.classList.toggle("read-only", !canSubmit);
  for (const el of document.querySelectorAll(".submit-only")) el.hidden = !canSubmit;
  $("login").hidden = true;
  $("views").hidden = false;
  const team = session.me.team ? ` · team ${session.me.team}` : "";
  $("who").replaceChildren(
    `${session.me.name} (${session.me.scope}${team}) `,
    h("button", { type: "button", id: "logout", onclick: () => { forgetKey(); location.reload(); } }, "forget key"),
  );
  try {
    await initPlan({ canSubmit, onSubmitted: () => showView("jobs") });
  } catch (err) {
    $("plan-error").textContent = err.message;
  }
  showView("plan");
  $("tabs").hidden = false; // only now: a tab clicked earlier would be undone by showView("plan")
}

$("login-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  saveKey($("key-input").value.trim());
  start();
});
for (const b of document.querySelectorAll("#tabs button")) {
  b.addEventListener("click", () => showView(b.dataset.view));
}
if (savedKey()) start();
